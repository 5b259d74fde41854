"""CacheMinio signs a request with the payload hash its caller names instead of hashing the body (pure: no I/O)."""

from __future__ import annotations

import hashlib

import pytest
from minio.credentials import Credentials

from layerfill.config.settings import S3Settings
from layerfill.sinks.s3client import PAYLOAD_HASH, UNSIGNED_PAYLOAD, CacheMinio, make_minio

pytestmark = pytest.mark.unit

BODY = b"x" * 1000
CREDS = Credentials("access", "secret")


def _client(endpoint: str = "http://127.0.0.1:19000") -> CacheMinio:
    client = make_minio(S3Settings(endpoint=endpoint, access_key="access", secret_key="secret"))
    assert isinstance(client, CacheMinio)
    return client


def test_without_a_named_hash_the_body_is_hashed_as_minio_does() -> None:
    headers, _ = _client()._build_headers("h", {"Content-Type": "a/b"}, BODY, CREDS)
    assert headers[PAYLOAD_HASH] == hashlib.sha256(BODY).hexdigest() and headers["Content-Length"] == "1000"


@pytest.mark.parametrize("named", [UNSIGNED_PAYLOAD, hashlib.sha256(b"the blob").hexdigest()])
def test_a_named_hash_is_used_and_the_body_not_hashed(named: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import minio.api

    def refuse(data: object) -> str:
        if data:
            raise AssertionError("the body was hashed")
        return hashlib.sha256(b"").hexdigest()

    monkeypatch.setattr(minio.api, "sha256_hash", refuse)
    headers, _ = _client()._build_headers("h", {PAYLOAD_HASH: named}, BODY, CREDS)
    assert headers[PAYLOAD_HASH] == named and headers["Content-Length"] == "1000" and headers["Host"] == "h"


def test_over_https_a_named_hash_skips_the_body_md5_too(monkeypatch: pytest.MonkeyPatch) -> None:
    import minio.api

    monkeypatch.setattr(minio.api, "md5sum_hash", lambda data: None if data is None else "md5-of-body")
    headers, _ = _client("https://s3.example.com")._build_headers("h", {PAYLOAD_HASH: UNSIGNED_PAYLOAD}, BODY, CREDS)
    assert "Content-MD5" not in headers and headers[PAYLOAD_HASH] == UNSIGNED_PAYLOAD


def test_parts_are_unsigned_by_default() -> None:
    assert S3Settings().sign_parts is False
