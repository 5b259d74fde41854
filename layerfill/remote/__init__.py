"""Upstream registry client: `RegistryClient` over a transport chain (auth, retry, limit, redaction)."""

from layerfill.remote.blob import BlobStream
from layerfill.remote.client import RegistryClient
from layerfill.remote.credentials import Credentials
from layerfill.remote.errors import (
    BodyInterrupted,
    DigestMismatch,
    InvalidInput,
    ManifestTooLarge,
    NotFound,
    RateLimited,
    Unauthorized,
    UpstreamError,
)
from layerfill.remote.transport.limit import HostLimiter
from layerfill.remote.transport.retry import RetryPolicy
from layerfill.remote.transport.tokens import TokenCache

__all__ = [
    "BlobStream",
    "BodyInterrupted",
    "Credentials",
    "DigestMismatch",
    "HostLimiter",
    "InvalidInput",
    "ManifestTooLarge",
    "NotFound",
    "RateLimited",
    "RegistryClient",
    "RetryPolicy",
    "TokenCache",
    "Unauthorized",
    "UpstreamError",
]
