"""Validation of repository names, tags, digests and registry hosts against the OCI distribution grammar.

Everything that reaches a URL path or a storage key passes through here first: the grammar admits only
ASCII letters, digits and single separators, so `..`, percent-escapes, leading `/`, NUL and backslashes
cannot get through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_REPOSITORY_LENGTH = 255

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
# Only the algorithms registries actually use; others are refused until there is a need for them.
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"(sha256|sha512):([a-f0-9]+)")
_HOST_LABEL_RE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")
_IPV6_RE = re.compile(r"\[[a-fA-F0-9:.]+\]")
_PORT_RE = re.compile(r"[0-9]{1,5}")
_MAX_HOSTNAME_LENGTH = 253


class InvalidReference(ValueError):
    """A repository, tag, digest or registry that does not follow the grammar."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"invalid {field} {value!r}: {reason}")


def _require_str(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidReference(field, value, f"must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidReference(field, value, "must not be empty")
    return value


def validate_repository(name: object, field: str = "repository") -> str:
    """Return `name` if it is a valid repository name (e.g. `library/debian`), else raise."""
    value = _require_str(field, name)
    if len(value) > MAX_REPOSITORY_LENGTH:
        raise InvalidReference(field, value, f"longer than {MAX_REPOSITORY_LENGTH} characters")
    if _REPOSITORY_RE.fullmatch(value) is None:
        raise InvalidReference(
            field,
            value,
            "must be lower-case alphanumeric path components separated by '/', "
            "each joined by '.', '_', '__' or '-' (no '..', leading/trailing separators or other characters)",
        )
    return value


def validate_tag(tag: object, field: str = "tag") -> str:
    """Return `tag` if it is a valid tag (1-128 of [A-Za-z0-9_.-], not starting with '.' or '-')."""
    value = _require_str(field, tag)
    if _TAG_RE.fullmatch(value) is None:
        raise InvalidReference(field, value, "must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127} (at most 128 characters)")
    return value


@dataclass(frozen=True, slots=True)
class Digest:
    """A content digest such as `sha256:<64 hex>`."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, value: object, field: str = "digest") -> Digest:
        text = _require_str(field, value)
        match = _DIGEST_RE.fullmatch(text)
        if match is None:
            raise InvalidReference(field, text, "must be 'sha256:' + 64 or 'sha512:' + 128 lower-case hex characters")
        algorithm, hex_part = match.group(1), match.group(2)
        expected = _DIGEST_HEX_LENGTH[algorithm]
        if len(hex_part) != expected:
            raise InvalidReference(field, text, f"{algorithm} needs {expected} hex characters, got {len(hex_part)}")
        return cls(algorithm, hex_part)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def validate_digest(digest: object, field: str = "digest") -> str:
    """Return `digest` if it is a valid sha256/sha512 digest string, else raise."""
    return str(Digest.parse(digest, field))


def is_digest(value: str) -> bool:
    try:
        Digest.parse(value)
    except InvalidReference:
        return False
    return True


def validate_tag_or_digest(reference: object, field: str = "reference") -> str:
    """A manifest reference as used in `/v2/<name>/manifests/<reference>`: a tag or a digest."""
    value = _require_str(field, reference)
    if ":" in value:
        return validate_digest(value, field)
    return validate_tag(value, field)


def validate_registry(host: object, field: str = "registry") -> str:
    """Return `host` if it is `hostname[:port]`, `ipv4[:port]` or `[ipv6][:port]`, else raise."""
    value = _require_str(field, host)
    hostname, port = value, None
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            raise InvalidReference(field, value, "unterminated '[' in IPv6 address")
        hostname, rest = value[: end + 1], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise InvalidReference(field, value, "only ':port' may follow an IPv6 address")
            port = rest[1:]
        if _IPV6_RE.fullmatch(hostname) is None:
            raise InvalidReference(field, value, "bad IPv6 address")
    else:
        if value.count(":") > 1:
            raise InvalidReference(field, value, "IPv6 addresses must be written in brackets")
        if ":" in value:
            hostname, port = value.split(":", 1)
        if len(hostname) > _MAX_HOSTNAME_LENGTH:
            raise InvalidReference(field, value, f"host name longer than {_MAX_HOSTNAME_LENGTH}")
        labels = hostname.split(".")
        if not all(_HOST_LABEL_RE.fullmatch(label) for label in labels):
            raise InvalidReference(
                field, value, "host name must be dot-separated labels of letters, digits and inner '-'"
            )
    if port is not None and (_PORT_RE.fullmatch(port) is None or not 0 < int(port) <= 65535):
        raise InvalidReference(field, value, "port must be a number from 1 to 65535")
    return value


@dataclass(frozen=True, slots=True)
class ImageReference:
    """`registry/repository[:tag][@digest]`, with the registry always explicit."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, value: object, field: str = "image") -> ImageReference:
        text = _require_str(field, value)
        registry, sep, remainder = text.partition("/")
        if not sep or not ("." in registry or ":" in registry or registry == "localhost" or registry.startswith("[")):
            raise InvalidReference(
                field, text, "must start with a registry host (containing '.' or ':', or 'localhost')"
            )
        validate_registry(registry, f"{field}.registry")
        digest = None
        if "@" in remainder:
            remainder, digest = remainder.split("@", 1)
            digest = validate_digest(digest, f"{field}.digest")
        tag = None
        repository = remainder
        last_slash = remainder.rfind("/")
        colon = remainder.rfind(":")
        if colon > last_slash:
            repository, tag = remainder[:colon], validate_tag(remainder[colon + 1 :], f"{field}.tag")
        validate_repository(repository, f"{field}.repository")
        return cls(registry, repository, tag, digest)

    @property
    def reference(self) -> str:
        """What to put after `/manifests/`: the digest when pinned, else the tag (default `latest`)."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text
