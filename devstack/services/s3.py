"""An S3-compatible server (versitygw, posix backend) holding the proxy cache's storage bucket."""

from __future__ import annotations

from .base import Service


class S3Server(Service):
    name = "s3"

    @property
    def endpoint(self) -> str:
        return f"{self.ctx.host}:{self.ctx.ports.s3}"

    def _client(self):
        from minio import Minio

        s = self.ctx.secrets
        return Minio(self.endpoint, access_key=s.s3_access_key, secret_key=s.s3_secret_key, secure=False)

    def start(self) -> None:
        root = self.ctx.paths.data / "s3"
        root.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": "/usr/bin:/bin",
            "ROOT_ACCESS_KEY": self.ctx.secrets.s3_access_key,
            "ROOT_SECRET_KEY": self.ctx.secrets.s3_secret_key,
        }
        binary = str(self.ctx.paths.bin / "versitygw")
        self.process.start([binary, "--port", self.endpoint, "posix", str(root)], env=env)

    def healthy(self) -> bool:
        try:
            self._client().list_buckets()
            return True
        except Exception:
            return False

    def after_healthy(self) -> None:
        client = self._client()
        if not client.bucket_exists(self.ctx.s3_bucket):
            client.make_bucket(self.ctx.s3_bucket)

    def env(self) -> dict[str, str]:
        s = self.ctx.secrets
        return {
            "LAYERFILL_S3__ENDPOINT": f"http://{self.endpoint}",
            "LAYERFILL_S3__ACCESS_KEY": s.s3_access_key,
            "LAYERFILL_S3__SECRET_KEY": s.s3_secret_key,
            "LAYERFILL_S3__BUCKET": self.ctx.s3_bucket,
            "LAYERFILL_S3__ROOT_DIRECTORY": self.ctx.proxy_root,
        }
