"""Typed errors of the upstream registry client.

Every error carries `transient` (worth retrying later: the Kafka retry topic uses it), the HTTP status
when there was one, and the URL with credentials and query secrets removed. Messages are scrubbed of
every secret the transports have seen, so an error can be logged or put in a dead-letter header as is.
"""

from __future__ import annotations

from layerfill.remote.transport.redact import redact_url, scrub


class UpstreamError(Exception):
    """The upstream registry (or its blob storage or token realm) failed the request."""

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status: int | None = None,
        transient: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.url = redact_url(url)
        self.status = status
        self.transient = transient
        self.retry_after = retry_after
        self.message = scrub(message)
        super().__init__(self.message)

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"status {self.status}")
        if self.url:
            parts.append(self.url)
        return " | ".join(parts)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, url={self.url!r}, status={self.status!r}, "
            f"transient={self.transient!r})"
        )

    def __reduce__(self) -> tuple[object, ...]:
        # Subclasses take keyword-only arguments, which the default exception pickling cannot replay.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[UpstreamError], args: tuple[object, ...], state: dict[str, object]) -> UpstreamError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class NotFound(UpstreamError):
    """404: the repository, manifest or blob does not exist upstream."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = 404) -> None:
        super().__init__(message, url=url, status=status, transient=False)


class Unauthorized(UpstreamError):
    """401 after authenticating, or 403: credentials missing, wrong or without access."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = 401) -> None:
        super().__init__(message, url=url, status=status, transient=False)


class RateLimited(UpstreamError):
    """429 still answered after the in-process retries (or with a Retry-After longer than we wait)."""

    def __init__(self, message: str, *, url: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, url=url, status=429, transient=True, retry_after=retry_after)


class ManifestTooLarge(UpstreamError):
    """The manifest is larger than the client accepts (declared or while streaming)."""

    def __init__(self, message: str, *, url: str | None = None, limit: int, size: int | None = None) -> None:
        self.limit = limit
        self.size = size
        super().__init__(message, url=url, transient=False)


class DigestMismatch(UpstreamError):
    """The bytes received do not hash to the digest asked for (or announced by the registry). Transient: a
    corrupting proxy or a torn body is usually passing (layerfill.kafka.classify states the rule)."""

    def __init__(self, *, expected: str, actual: str, url: str | None = None) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"digest mismatch: expected {expected}, got {actual}", url=url, transient=True)


class BodyInterrupted(UpstreamError):
    """The connection broke while the body was being read (reset, timeout, fewer bytes than announced)."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        super().__init__(message, url=url, status=status, transient=True)


def error_for_status(
    status: int,
    *,
    url: str | None,
    detail: str = "",
    retry_after: float | None = None,
) -> UpstreamError:
    """The typed error for a final (post-retry, post-auth) non-success HTTP status."""
    suffix = f": {detail}" if detail else ""
    if status == 404:
        return NotFound(f"not found upstream{suffix}", url=url, status=status)
    if status in (401, 403):
        word = "unauthorized" if status == 401 else "forbidden"
        return Unauthorized(f"{word} upstream{suffix}", url=url, status=status)
    if status == 429:
        return RateLimited(f"rate limited upstream{suffix}", url=url, retry_after=retry_after)
    transient = status >= 500 or status == 408
    return UpstreamError(
        f"upstream answered HTTP {status}{suffix}",
        url=url,
        status=status,
        transient=transient,
        retry_after=retry_after,
    )


class InvalidInput(ValueError):
    """A repository, reference, digest or setting the client refuses before building any URL."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"invalid {field} {value!r}: {reason}")
