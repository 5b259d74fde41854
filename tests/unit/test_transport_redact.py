import logging

import pytest

from layerfill.remote.credentials import Credentials
from layerfill.remote.errors import UpstreamError
from layerfill.remote.transport.redact import (
    Secret,
    get_logger,
    install_log_scrubbing,
    redact_headers,
    redact_url,
    remember_secret,
    scrub,
)
from layerfill.remote.transport.tokens import Token

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:pw@reg.example:5000/v2/", "https://reg.example:5000/v2/"),
        (
            "https://s3.example/b/data?X-Amz-Signature=abc&X-Amz-Credential=AKIA&scope=x",
            "https://s3.example/b/data?X-Amz-Signature=***&X-Amz-Credential=***&scope=x",
        ),
        (
            "https://auth/token?service=reg&scope=repository:a/b:pull",
            "https://auth/token?service=reg&scope=repository:a/b:pull",
        ),
        ("http://[::1]:8080/v2/#frag", "http://[::1]:8080/v2/"),
        ("", ""),
        (None, ""),
        ("http://host:notaport/", "<unparseable url>"),
    ],
)
def test_redact_url(url: str | None, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_headers_masks_credentials_only() -> None:
    headers = {"Authorization": "Bearer t", "cookie": "c", "Accept": "x", "Proxy-Authorization": "Basic y"}
    assert redact_headers(headers) == {
        "Authorization": "***",
        "cookie": "***",
        "Accept": "x",
        "Proxy-Authorization": "***",
    }


def test_secret_never_shows_itself() -> None:
    secret = Secret("hunter2-password")
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}", format(secret, "")):
        assert "hunter2" not in text
    assert secret.reveal() == "hunter2-password"


def test_credentials_repr_and_header() -> None:
    credentials = Credentials("bob", "correct-horse-battery")
    assert "correct-horse" not in repr(credentials)
    assert "correct-horse" not in str(credentials)
    assert credentials.authorization() == "Basic Ym9iOmNvcnJlY3QtaG9yc2UtYmF0dGVyeQ=="
    assert credentials.basic_value() not in scrub(f"header {credentials.authorization()}")


@pytest.mark.parametrize(("username", "password"), [("", "pw-not-echoed"), ("a:b", "pw-not-echoed"), ("a", 5)])
def test_bad_credentials_are_refused_without_echoing_the_password(username: str, password: object) -> None:
    with pytest.raises(ValueError, match="credentials") as info:
        Credentials(username, password)  # type: ignore[arg-type]
    assert "pw-not-echoed" not in str(info.value)


def test_scrub_masks_remembered_secrets_longest_first() -> None:
    remember_secret("abcd1234")
    remember_secret("abcd1234-extended")
    assert scrub("x abcd1234-extended y abcd1234 z") == "x *** y *** z"


def test_upstream_error_text_is_scrubbed() -> None:
    Token("tok-very-secret-value", 60)
    error = UpstreamError(
        "realm said tok-very-secret-value", url="https://u:p@h/v2/?X-Amz-Signature=sig123", status=502
    )
    for text in (str(error), repr(error), error.message):
        assert "tok-very-secret" not in text
        assert "sig123" not in text
        assert "u:p" not in text
    assert error.url == "https://h/v2/?X-Amz-Signature=***"


def test_log_records_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    remember_secret("log-secret-999")
    logger = get_logger("layerfill.remote.test_logger")
    with caplog.at_level(logging.INFO, logger="layerfill.remote.test_logger"):
        logger.info("token %s at %s", "log-secret-999", "https://s3/x?X-Amz-Signature=zzz999")
    assert "log-secret-999" not in caplog.text
    assert "zzz999" not in caplog.text
    assert "X-Amz-Signature=***" in caplog.text


def test_urllib3_request_lines_lose_their_query(caplog: pytest.LogCaptureFixture) -> None:
    install_log_scrubbing()
    with caplog.at_level(logging.DEBUG, logger="urllib3.connectionpool"):
        logging.getLogger("urllib3.connectionpool").debug(
            '%s://%s:%s "%s %s %s" %s %s', "http", "s3", 80, "GET", "/b/o?X-Amz-Signature=leak42", "HTTP/1.1", 200, 5
        )
    assert "leak42" not in caplog.text
    assert '"GET /b/o?X-Amz-Signature=*** HTTP/1.1"' in caplog.text


def test_errors_survive_pickling_with_their_fields() -> None:
    import pickle

    from layerfill.remote.errors import DigestMismatch, ManifestTooLarge, RateLimited

    for error in (
        DigestMismatch(expected="sha256:a", actual="sha256:b", url="https://h/x"),
        ManifestTooLarge("too big", url="https://h/m", limit=10, size=11),
        RateLimited("slow down", url="https://h/m", retry_after=3.0),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and copy.__dict__ == error.__dict__ and str(copy) == str(error)


def test_credentials_copy_but_do_not_pickle() -> None:
    import copy
    import pickle

    credentials = Credentials("bob", "pickle-me-not")
    assert copy.deepcopy(credentials) == credentials
    with pytest.raises(TypeError):
        pickle.dumps(credentials)
