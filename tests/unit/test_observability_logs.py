"""Both log formats keep one record on one line, whatever an event field carries."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from layerfill.observability.logs import JsonFormatter, TextFormatter

pytestmark = pytest.mark.unit


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("layerfill.test", logging.WARNING, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


FORGED = 'library/app\nerror   layerfill.fetcher: forged line repository="x"'


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()])
def test_a_newline_in_a_field_cannot_start_a_new_line(formatter: logging.Formatter) -> None:
    out = formatter.format(_record("fetch failed for %s", FORGED, repository=FORGED))
    assert "\n" not in out
    assert "\r" not in formatter.format(_record("x", repository="a\rb"))


def test_text_values_with_spaces_or_equals_are_quoted_and_plain_ones_are_not() -> None:
    out = TextFormatter().format(_record("done", repository="library/app", cause="a=b c", attempts=3))
    assert out == 'warning layerfill.test: done repository=library/app cause="a=b c" attempts=3'


def test_text_quoted_value_round_trips_through_json() -> None:
    out = TextFormatter().format(_record("done", repository=FORGED))
    quoted = out.split("repository=", 1)[1]
    assert json.loads(quoted) == FORGED


def test_text_message_control_characters_are_escaped_not_dropped() -> None:
    out = TextFormatter().format(_record("bad digest %s", "sha256:\x00\x1b[31m"))
    assert out == "warning layerfill.test: bad digest sha256:\\u0000\\u001b[31m"


def test_text_traceback_still_follows_on_its_own_lines() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    out = TextFormatter().format(record)
    assert out.splitlines()[0] == "error   t: failed"
    assert "ValueError: boom" in out
