"""A real, unmodified Quay (`up --with quay`), run as plain processes from the pinned source (quay_install.py):

- `quay-redis`: its own Redis; `quay-es`: the Elasticsearch stand-in its Kafka logs model talks to at start-up;
- `quay`: registry + API on one port (quay_runtime/quay_wsgi.py under gunicorn, gevent, no preload) with
  `LOGS_MODEL: elasticsearch` + the Kafka producer, so its action logs reach Kafka (the Kafka-logs source);
- `quay-dblogs`: a second web process, same database, storage and Redis, on the default database logs model,
  for the logs-API source. Two processes rather than one restarted per test: both sources can be tested on one
  stack without restarts, and a logs model is process configuration (a restart costs ~15 s; this costs ~300 MB);
- `quay-blobworker` (proxycacheblobworker) and `quay-secworker` (securityworker, against the devstack's Clair).

Quay's database lives in the devstack's PostgreSQL (`quay`, with pg_trgm); its storage is a LocalStorage
directory under the state dir."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from ..context import StackContext
from ..quay_install import QuayInstaller
from .base import Service, ServiceError, http_ok, port_open

RUNTIME = Path(__file__).resolve().parent.parent / "quay_runtime"
LOGS_TOPIC = "quay.logs"
# Far beyond any test run: the instance service key signs Quay's registry tokens (boot.py writes it at each start).
SERVICE_KEY_MINUTES = 60 * 24 * 30


class _QuayBase(Service):
    def __init__(self, ctx: StackContext) -> None:
        super().__init__(ctx)
        self.installer = QuayInstaller(ctx.paths)

    @property
    def root(self) -> Path:
        return self.ctx.paths.data / "quay"

    def quay_env(self, conf: Path) -> dict[str, str]:
        return {
            "PATH": f"{self.installer.python.parent}:/usr/bin:/bin",
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(self.installer.source),
            "QUAYCONF": str(conf),
            "QUAYRUN": str(self.root / "run"),
            "OTEL_SDK_DISABLED": "true",
        }


class QuayRedis(_QuayBase):
    name = "quay-redis"

    @property
    def endpoint(self) -> str:
        return f"{self.ctx.host}:{self.ctx.ports.quay_redis}"

    def start(self) -> None:
        data = self.root / "redis"
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            shutil.which("redis-server") or "/usr/bin/redis-server", "--bind", self.ctx.host,
            "--port", str(self.ctx.ports.quay_redis), "--dir", str(data), "--save", "", "--appendonly", "no",
            "--protected-mode", "no",
        ]  # fmt: skip
        self.process.start(argv, env={"PATH": "/usr/bin:/bin"})

    def healthy(self) -> bool:
        return port_open(self.ctx.host, self.ctx.ports.quay_redis)


class QuayEsStandIn(_QuayBase):
    name = "quay-es"

    @property
    def endpoint(self) -> str:
        return f"http://{self.ctx.host}:{self.ctx.ports.quay_es}"

    def start(self) -> None:
        argv = [str(self.installer.python), str(RUNTIME / "es_standin.py"), self.ctx.host, str(self.ctx.ports.quay_es)]
        self.process.start(argv, env={"PATH": "/usr/bin:/bin"})

    def healthy(self) -> bool:
        return http_ok(self.endpoint)


def quay_config(ctx: StackContext, port: int, logs: str) -> dict:
    """Quay's config.yaml for one web process; `logs` is "kafka" or "database"."""
    c = ctx
    redis = {"host": c.host, "port": c.ports.quay_redis}
    cfg: dict = {
        "SETUP_COMPLETE": True,
        "SERVER_HOSTNAME": f"{c.host}:{port}",
        "PREFERRED_URL_SCHEME": "http",
        "DB_URI": f"postgresql://postgres@{c.host}:{c.ports.postgres}/quay",
        "DATABASE_SECRET_KEY": c.secrets.quay_secret_key,
        "SECRET_KEY": c.secrets.quay_secret_key,
        "AUTHENTICATION_TYPE": "Database",
        "BUILDLOGS_REDIS": redis,
        "USER_EVENTS_REDIS": redis,
        "DISTRIBUTED_STORAGE_CONFIG": {
            "local_us": ["LocalStorage", {"storage_path": str(c.paths.data / "quay" / "storage")}]
        },
        "DISTRIBUTED_STORAGE_PREFERENCE": ["local_us"],
        "DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS": ["local_us"],
        "FEATURE_PROXY_CACHE": True,
        "FEATURE_USER_INITIALIZE": True,
        "FEATURE_MAILING": False,
        "FEATURE_ANONYMOUS_ACCESS": True,
        "FEATURE_USER_CREATION": True,
        "SUPER_USERS": [c.secrets.quay_admin],
        "SSRF_ALLOWED_HOSTS": [c.host],
        "INSTANCE_SERVICE_KEY_EXPIRATION": SERVICE_KEY_MINUTES,
        "FEATURE_SECURITY_SCANNER": True,
        "SECURITY_SCANNER_V4_ENDPOINT": f"http://{c.host}:{c.ports.clair}",
        "SECURITY_SCANNER_INDEXING_INTERVAL": 5,
        "SECURITY_SCANNER_V4_INDEX_MAX_LAYER_SIZE": "1G",
        "TESTING": False,
        "USERFILES_LOCATION": "local_us",
        "LOG_ARCHIVE_LOCATION": "local_us",
        "DEFAULT_TAG_EXPIRATION": "2w",
        "TAG_EXPIRATION_OPTIONS": ["2w"],
    }
    if logs == "kafka":
        cfg["LOGS_MODEL"] = "elasticsearch"
        cfg["LOGS_MODEL_CONFIG"] = {
            "producer": "kafka",
            "kafka_config": {
                "bootstrap_servers": [f"{c.host}:{c.ports.kafka}"],
                "topic": LOGS_TOPIC,
                "max_block_seconds": 5,
            },
            "elasticsearch_config": {"host": c.host, "port": c.ports.quay_es, "use_ssl": False},
        }
    return cfg


class QuayWeb(_QuayBase):
    name = "quay"
    logs = "kafka"
    workers = 2

    @property
    def port(self) -> int:
        return self.ctx.ports.quay if self.logs == "kafka" else self.ctx.ports.quay_dblogs

    @property
    def endpoint(self) -> str:
        return f"http://{self.ctx.host}:{self.port}"

    @property
    def conf(self) -> Path:
        return self.root / self.name / "conf"

    def write_config(self) -> None:
        stack = self.conf / "stack"
        stack.mkdir(parents=True, exist_ok=True)
        (stack / "config.yaml").write_text(yaml.safe_dump(quay_config(self.ctx, self.port, self.logs), sort_keys=False))
        for name in ("logging.conf", "logging_debug.conf"):
            src = self.installer.source / "conf" / name
            if src.exists():
                shutil.copy(src, self.conf / name)
        (self.root / "run").mkdir(parents=True, exist_ok=True)
        (self.root / "storage").mkdir(parents=True, exist_ok=True)

    def run_quay(self, argv: list[str], what: str, timeout: float = 300) -> None:
        env = self.quay_env(self.conf)
        res = subprocess.run(argv, cwd=self.installer.source, env=env, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise ServiceError(f"Quay {what} failed ({res.returncode}):\n{res.stdout[-2000:]}{res.stderr[-4000:]}")

    def prepare(self) -> None:
        """Config, then the instance service key (boot.py, at every start)."""
        self.write_config()
        self.run_quay([str(self.installer.python), "boot.py"], "boot.py")

    def start(self) -> None:
        gunicorn = str(self.installer.python.parent / "gunicorn")
        # Without --preload (preload_app=False): each worker builds the app, and its Kafka producer, after the fork.
        argv = [
            gunicorn, "--bind", f"{self.ctx.host}:{self.port}", "--worker-class", "gevent",
            "--workers", str(self.workers), "--timeout", "120", "--graceful-timeout", "5",
            "--chdir", str(self.installer.source), "--pythonpath", f"{self.installer.source},{RUNTIME}",
            "--log-level", "info", "quay_wsgi:application",
        ]  # fmt: skip
        self.process.start(argv, env=self.quay_env(self.conf), cwd=self.installer.source)

    def healthy(self) -> bool:
        # /health/instance answers 503 without nginx's sockets; an unauthenticated /v2/ answers 401.
        return http_ok(f"{self.endpoint}/v2/", ok=(401,))


class QuayDbLogsWeb(QuayWeb):
    name = "quay-dblogs"
    logs = "database"
    workers = 1


class QuayWorker(_QuayBase):
    """A Quay worker (`python -m workers.<module>`), with the Kafka-logs web process's configuration."""

    module = ""

    def __init__(self, ctx: StackContext, web: QuayWeb) -> None:
        super().__init__(ctx)
        self.web = web

    @property
    def endpoint(self) -> str:
        return f"workers.{self.module}"

    def start(self) -> None:
        argv = [str(self.installer.python), "-m", f"workers.{self.module}"]
        self.process.start(argv, env=self.quay_env(self.web.conf), cwd=self.installer.source)

    def healthy(self) -> bool:
        return self.process.pid() is not None


class QuayBlobWorker(QuayWorker):
    name = "quay-blobworker"
    module = "proxycacheblobworker"


class QuaySecurityWorker(QuayWorker):
    name = "quay-secworker"
    module = "securityworker.securityworker"
    optional = True


def ensure_database(ctx: StackContext) -> None:
    """The `quay` database with pg_trgm, in the devstack's PostgreSQL."""
    import psycopg

    with psycopg.connect(
        host=ctx.host, port=ctx.ports.postgres, user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        if not conn.execute("select 1 from pg_database where datname = 'quay'").fetchone():
            conn.execute('create database "quay"')
    with psycopg.connect(
        host=ctx.host, port=ctx.ports.postgres, user="postgres", dbname="quay", autocommit=True
    ) as conn:
        conn.execute("create extension if not exists pg_trgm")


def migrate(web: QuayWeb) -> None:
    """Quay's alembic migrations (idempotent: `upgrade head` on a current schema does nothing)."""
    web.write_config()
    alembic = str(web.installer.python.parent / "alembic")
    web.run_quay([alembic, "upgrade", "head"], "alembic upgrade head", timeout=600)


def quay_env(ctx: StackContext, setup: dict) -> dict[str, str]:
    """The env file's Quay entries: endpoints, the org, the robot's credentials, the logs topic."""
    c = ctx
    return {
        "LAYERFILL_DEVSTACK_QUAY_URL": f"http://{c.host}:{c.ports.quay}",
        "LAYERFILL_DEVSTACK_QUAY_REGISTRY": f"{c.host}:{c.ports.quay}",
        "LAYERFILL_DEVSTACK_QUAY_DBLOGS_URL": f"http://{c.host}:{c.ports.quay_dblogs}",
        "LAYERFILL_DEVSTACK_QUAY_DBLOGS_REGISTRY": f"{c.host}:{c.ports.quay_dblogs}",
        "LAYERFILL_DEVSTACK_QUAY_ORG": c.quay_org,
        "LAYERFILL_DEVSTACK_QUAY_ROBOT": setup["robot"],
        "LAYERFILL_DEVSTACK_QUAY_ROBOT_TOKEN": setup["robot_token"],
        "LAYERFILL_DEVSTACK_QUAY_ADMIN": c.secrets.quay_admin,
        "LAYERFILL_DEVSTACK_QUAY_ADMIN_PASSWORD": c.secrets.quay_admin_password,
        "LAYERFILL_DEVSTACK_QUAY_API_TOKEN": setup["api_token"],
        "LAYERFILL_DEVSTACK_QUAY_DB_URL": f"postgresql://postgres@{c.host}:{c.ports.postgres}/quay",
        "LAYERFILL_DEVSTACK_QUAY_LOGS_TOPIC": LOGS_TOPIC,
        "LAYERFILL_DEVSTACK_QUAY_STORAGE": str(c.paths.data / "quay" / "storage"),
        # `layerfill run quay-logs` on the devstack: the Kafka source against `quay` as it is.
        "LAYERFILL_QUAY_LOGS__QUAY_URL": f"http://{c.host}:{c.ports.quay}",
        "LAYERFILL_QUAY_LOGS__LOGS_TOPIC": LOGS_TOPIC,
        "LAYERFILL_QUAY_LOGS__KINDS_DATABASE_URL": f"postgresql://postgres@{c.host}:{c.ports.postgres}/quay",
        "LAYERFILL_QUAY_LOGS__API_TOKEN": setup["api_token"],
    }


def quay_routes(ctx: StackContext, setup: dict) -> list[dict]:
    """One route per Quay web process: the proxy org's repositories come from the devstack upstream, filled
    through Quay's own /v2 API (registry sink) with the robot's credentials."""
    c = ctx
    routes = []
    for port in (c.ports.quay, c.ports.quay_dblogs):
        routes.append(
            {
                "registry": f"{c.host}:{port}",
                "repository_prefix": c.quay_org,
                "upstream_url": f"http://{c.host}:{c.ports.upstream}",
                "sink": "registry",
                "proxy_url": f"http://{c.host}:{port}",
                "proxy_username": setup["robot"],
                "proxy_password": setup["robot_token"],
            }
        )
    return routes
