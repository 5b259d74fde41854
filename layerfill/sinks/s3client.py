"""The minio client for the cache's bucket, and the mapping of S3 failures to sink errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error
from urllib3.util import Retry, Timeout

from layerfill.config.settings import S3Settings
from layerfill.sinks.base import SinkUnavailable

NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"})
PAYLOAD_HASH = "x-amz-content-sha256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


def endpoint_parts(endpoint: str) -> tuple[str, bool]:
    """`host:port` and whether to use TLS, from `s3.endpoint` (`http(s)://host[:port]`)."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"s3.endpoint must be an http(s)://host[:port] URL, got {endpoint!r}")
    if parts.path.strip("/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"s3.endpoint must have no path, query or userinfo, got {endpoint!r}")
    return parts.netloc, parts.scheme == "https"


def make_http_pool(
    *,
    max_connections: int = 16,
    connect_timeout_s: float = 10.0,
    read_timeout_s: float = 300.0,
    retries: int = 3,
) -> urllib3.PoolManager:
    """Connections for `max_connections` concurrent transfers.

    Retries stay few and short: a storage outage should surface as SinkUnavailable within seconds, so
    the fetcher's own retry schedule (not this one) decides when to try again.
    """
    return urllib3.PoolManager(
        timeout=Timeout(connect=connect_timeout_s, read=read_timeout_s),
        maxsize=max_connections,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE"),  # None: the system's trust store
        retries=Retry(total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


class CacheMinio(Minio):
    """minio's client, except that a request whose caller names its payload hash (the `x-amz-content-sha256`
    header) is signed with that value instead of one computed from the body.

    Over plain http minio hashes every request body to sign it, and the S3 server hashes it again to check the
    signature: two SHA-256 passes per byte of every blob, on top of the fetcher's own digest check (a fill profile:
    the signing pass alone was 3.6% of a blob worker, and the server's pass competes for the same cores). The
    sink names the blob's own digest for a blob stored in one PUT, so the server verifies the content against it
    without the client hashing it twice, and `UNSIGNED-PAYLOAD` for multipart parts unless `s3.sign_parts` (the
    fetcher has verified the blob's digest before it completes the upload). minio (pinned) has no public hook for
    this; `_build_headers` is the internal call that computes the hash."""

    def _build_headers(  # type: ignore[override]
        self, host: str, headers: dict | None = None, body: bytes | None = None, creds: Any = None
    ) -> tuple[dict, Any]:
        named = headers.get(PAYLOAD_HASH) if headers else None
        if named is None or creds is None:
            return super()._build_headers(host, headers, body, creds)
        built, date = super()._build_headers(host, headers, None, creds)  # no body given: nothing hashed
        if body:
            built["Content-Length"] = str(len(body))
        built[PAYLOAD_HASH] = named
        return built, date


def make_minio(s3: S3Settings, http: urllib3.PoolManager | None = None) -> Minio:
    host, secure = endpoint_parts(s3.endpoint)
    return CacheMinio(
        host,
        access_key=s3.access_key or None,
        secret_key=s3.secret_key.get_secret_value() or None,
        secure=secure,
        region=s3.region,
        http_client=http or make_http_pool(),
    )


def is_not_found(exc: S3Error) -> bool:
    return exc.code in NOT_FOUND_CODES


@contextmanager
def s3_errors(action: str, key: str | None = None) -> Iterator[None]:
    """Turn connection failures and S3 error answers into SinkUnavailable naming what was attempted.

    Refused credentials or a missing bucket are configuration errors, but they also become
    SinkUnavailable: events wait in the retry topic until an operator fixes the setting.
    """
    where = f" {key}" if key else ""
    try:
        yield
    except S3Error as exc:
        raise SinkUnavailable(f"S3 {action}{where} failed: {exc.code}: {exc.message}") from exc
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise SinkUnavailable(f"S3 {action}{where} failed: {type(exc).__name__}: {exc}") from exc
