"""Last-line checks on everything the client puts into a URL.

Callers validate repositories and digests against the OCI grammar (layerfill.oci.reference) first; this
is defence in depth with its own, deliberately simple rules, so a bug upstream of the client cannot turn
an event into a path traversal or a request to an unexpected URL.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from layerfill.remote.errors import InvalidInput
from layerfill.remote.transport.redact import redact_url

_REPOSITORY_CHARS = re.compile(r"[a-z0-9._/-]+")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
_MAX_NAME = 255


def check_repository(value: object, field: str = "repository") -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(field, value, "must be a non-empty string")
    if len(value) > _MAX_NAME:
        raise InvalidInput(field, value, f"longer than {_MAX_NAME} characters")
    if ".." in value:
        raise InvalidInput(field, value, "must not contain '..'")
    if not _REPOSITORY_CHARS.fullmatch(value):
        raise InvalidInput(field, value, "may only contain [a-z0-9._/-]")
    if value.startswith("/") or value.endswith("/") or "//" in value:
        raise InvalidInput(field, value, "must not start or end with '/' or contain '//'")
    if any(part in (".", "") for part in value.split("/")):
        raise InvalidInput(field, value, "must not contain '.' path components")
    return value


def check_digest(value: object, field: str = "digest") -> str:
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise InvalidInput(field, value, "must be sha256:<64 hex> or sha512:<128 hex>, lower case")
    return value


def check_reference(value: object, field: str = "reference") -> str:
    """A tag or a digest, as it goes after /manifests/."""
    if isinstance(value, str) and ":" in value:
        return check_digest(value, field)
    if not isinstance(value, str) or ".." in value or not _TAG.fullmatch(value):
        raise InvalidInput(field, value, "must be a digest or a tag matching [A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
    return value


def check_upstream_prefix(value: object, field: str = "upstream_prefix") -> str:
    """'' or a repository path; returned with exactly one trailing '/' (so 'library' == 'library/')."""
    if value == "":
        return ""
    if not isinstance(value, str):
        raise InvalidInput(field, value, "must be a string")
    return check_repository(value.rstrip("/"), field) + "/"


def check_base_url(value: object, field: str = "base_url") -> str:
    """An http(s) URL without credentials, query or fragment; returned without a trailing '/'."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(field, value, "must be a non-empty http(s) URL")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        raise InvalidInput(field, redact_url(value), "is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInput(field, redact_url(value), "scheme must be http or https")
    if parts.username is not None or parts.password is not None:
        # Never echo the value: it holds a password. Credentials go in `credentials`.
        raise InvalidInput(field, redact_url(value), "must not contain credentials; pass them as credentials")
    if not parts.hostname:
        raise InvalidInput(field, value, "has no host")
    if parts.query or parts.fragment:
        raise InvalidInput(field, redact_url(value), "must not have a query or fragment")
    if ".." in parts.path.split("/"):
        raise InvalidInput(field, value, "path must not contain '..'")
    return value.rstrip("/")
