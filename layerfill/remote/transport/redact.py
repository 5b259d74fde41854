"""Keep passwords, tokens and signed-URL secrets out of exceptions, logs and reprs.

Three lines of defence:
- URLs are redacted before they are stored on an error or logged: userinfo is dropped and every query
  value is masked except a few known-harmless ones (blob-storage redirects carry signatures and access
  keys in the query string).
- Every secret the transports handle (passwords, Basic header values, bearer tokens) is remembered here,
  and `scrub` replaces any occurrence in text; errors and log records pass through it.
- Types that hold secrets (`Secret`, `Credentials`, tokens) never print them in `repr`/`str`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# Query parameters that carry no secret and help debugging (token realm requests, pagination).
SAFE_QUERY_KEYS = frozenset({"service", "scope", "n", "last"})
SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-amz-security-token", "x-registry-auth"}
)
# Secrets shorter than this are not scrubbed from free text: masking every "ab" would garble messages
# and still not protect a password that weak.
_MIN_SCRUB_LENGTH = 4
_MAX_REMEMBERED = 4096
# A query string glued to a URL or to a bare path (urllib3 logs "GET /path?query HTTP/1.1").
_QUERY_RE = re.compile(r"(?<=[^\s'\"<>?])\?([^\s'\"<>#]+)")


class _SecretRegistry:
    """Bounded, thread-safe set of secret strings seen by this process (most recent kept)."""

    def __init__(self, capacity: int = _MAX_REMEMBERED) -> None:
        self._capacity = capacity
        self._secrets: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, value: str) -> None:
        if len(value) < _MIN_SCRUB_LENGTH:
            return
        with self._lock:
            self._secrets[value] = None
            self._secrets.move_to_end(value)
            while len(self._secrets) > self._capacity:
                self._secrets.popitem(last=False)

    def scrub(self, text: str) -> str:
        with self._lock:
            # Longest first so a token containing a shorter secret is masked whole.
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


_registry = _SecretRegistry()


def remember_secret(value: str | None) -> None:
    """Register a secret so `scrub` masks it wherever it shows up later."""
    if value:
        _registry.remember(value)


def scrub(text: str) -> str:
    """`text` with every remembered secret masked and every URL query redacted."""
    return _QUERY_RE.sub(lambda m: "?" + redact_query(m.group(1)), _registry.scrub(text))


def redact_url(url: str | None) -> str:
    """The URL without userinfo, with query values masked except SAFE_QUERY_KEYS, and no fragment."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable url>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, redact_query(parts.query), ""))


def redact_query(query: str) -> str:
    """A query string with every value masked except those of SAFE_QUERY_KEYS."""
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, v if k.lower() in SAFE_QUERY_KEYS else MASK) for k, v in pairs], safe=":/*")


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of `headers` safe to log: credentials and cookies masked."""
    return {k: (MASK if k.lower() in SENSITIVE_HEADERS else v) for k, v in headers.items()}


class Secret:
    """A string that never shows itself in repr/str/format; call `reveal()` where it is really needed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"secret must be a string, got {type(value).__name__}")
        self._value = value
        remember_secret(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        # Keeps secrets out of pickles (multiprocessing queues, caches on disk).
        raise TypeError("Secret values are not picklable")

    def __copy__(self) -> Secret:
        return self  # immutable

    def __deepcopy__(self, _memo: dict[int, object]) -> Secret:
        return self


class ScrubFilter(logging.Filter):
    """Logging filter that renders the record and scrubs secrets and URL queries from it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is the logger's problem, not a reason to drop the record
            return True
        cleaned = scrub(message)
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        return True


_filter = ScrubFilter()
_installed_lock = threading.Lock()
# urllib3 logs every request line at DEBUG, query string included: signed storage URLs would leak.
_THIRD_PARTY_LOGGERS = ("urllib3.connectionpool",)


def get_logger(name: str) -> logging.Logger:
    """A logger whose records are scrubbed (filters on a parent logger do not apply to children)."""
    logger = logging.getLogger(name)
    with _installed_lock:
        if _filter not in logger.filters:
            logger.addFilter(_filter)
    return logger


def install_log_scrubbing() -> None:
    """Attach the scrub filter to third-party loggers that may print request URLs. Idempotent."""
    for name in _THIRD_PARTY_LOGGERS:
        get_logger(name)
