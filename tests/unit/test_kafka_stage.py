"""The stage both consumers are made of (layerfill.kafka.stage): decode and triage in the loop's thread,
handling on the pool, the in-process retry, and a failure's one outcome (retry topic or dead letter) with its
after-commit step. A small stage over real encoded ManifestPulled records; Kafka is not involved."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Message
from prometheus_client import CollectorRegistry, Counter

from layerfill.config.settings import KafkaSettings, Settings, StageSettings
from layerfill.kafka import stage as stage_module
from layerfill.kafka.classify import PermanentError
from layerfill.kafka.deadletter import parse_dlq_headers
from layerfill.kafka.retry import ATTEMPT, ERROR, in_process_pause, read_retry_headers
from layerfill.kafka.stage import Batch, Failed, GaveUp, Stage, StageMetrics, StageTopics, Triaged
from layerfill.kafka.txloop import Outcome
from layerfill.remote.errors import RateLimited, UpstreamError
from layerfill.serde import events
from layerfill.serde.codec import EventCodec
from layerfill.serde.records import ManifestPulled
from tests.support.stages import processed

pytestmark = pytest.mark.unit

codec = EventCodec()
TOPICS = StageTopics(input="pulled", retry="pulled.retry", dlq="dlq")


class Echo(Stage[ManifestPulled]):
    """Emits nothing; `plan` says what handling an event does."""

    stage = "echo"
    event_type = ManifestPulled

    def __init__(self, **cfg: Any) -> None:
        registry = CollectorRegistry()
        self.metrics = StageMetrics(
            events=Counter("events", "", ["outcome"], registry=registry),
            dead_letters=Counter("dead", "", ["error_class"], registry=registry),
            retries=Counter("retries", "", ["where"], registry=registry),
        )
        self.registry = registry
        settings = Settings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1", extra={"log_level": "0"}))
        stage = StageSettings(group_id="echo", instance_id="i1", retry_delays_s=[10.0, 20.0], **cfg)
        super().__init__(settings, stage, TOPICS, metrics=self.metrics, log=stage_module.logging.getLogger("test.echo"),
                         pool_prefix="echo", codec=codec)  # fmt: skip
        self.handled: list[str] = []
        self.recorded: list[str] = []

    def triage(self, m: Message, ev: ManifestPulled, batch: Batch) -> Triaged:
        if ev.repository == "bad/repo":
            raise PermanentError("invalid repository")
        if not batch.first(ev.digest):
            batch.repeats["duplicate_in_batch"] += 1
            return Outcome(label="duplicate_in_batch")
        return None

    def handle(self, m: Message, ev: ManifestPulled) -> Outcome:
        self.handled.append(ev.digest)
        return Outcome(label="handled", after_commit=lambda: self.recorded.append(ev.digest))

    def count(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(f"{name}_total", labels) or 0.0


@pytest.fixture
def echo() -> Any:
    made: list[Echo] = []

    def make(**cfg: Any) -> Echo:
        made.append(Echo(**cfg))
        return made[-1]

    yield make
    for s in made:
        s.pool.shutdown()


def pulled(digest_char: str = "1", repository: str = "team/app") -> dict[str, Any]:
    return events.manifest_pulled(event_id=f"e{digest_char}", source="distribution", registry="cache:5000",
                                  repository=repository, digest="sha256:" + digest_char * 64)  # fmt: skip


def message(value: bytes, *, offset: int = 0, headers: list[Any] | None = None) -> Message:
    return Message(topic=TOPICS.input, partition=0, offset=offset, key=b"k", value=value, headers=headers or [])


def encoded(ev: dict[str, Any], **kw: Any) -> Message:
    return message(codec.encode("ManifestPulled", ev, TOPICS.input), **kw)


def dlq(out: Outcome) -> dict[str, str]:
    [rec] = [r for r in out.records if r.topic == TOPICS.dlq]
    return parse_dlq_headers(rec.headers)


def test_decode_triage_and_handle(echo) -> None:
    s = echo()
    wrong = codec.encode("LayerCached", events.layer_cached(caused_by="e", registry="r", repository="a",
                         manifest_digest="sha256:" + "a" * 64, digest="sha256:" + "b" * 64, size=1,
                         media_type="x", kind="layer", outcome="fetched"), "t")  # fmt: skip
    outs = processed(s, [
        message(b"\x00garbage", offset=1),
        message(wrong, offset=2),
        encoded(pulled(repository="bad/repo"), offset=3),
        encoded(pulled("1"), offset=4),
        encoded(pulled("1"), offset=5),
        encoded(pulled("2"), offset=6),
    ])  # fmt: skip
    assert [o.label for o in outs] == ["dead_lettered"] * 3 + ["handled", "duplicate_in_batch", "handled"]
    assert dlq(outs[1])["error.message"] == "ValueError: expected a ManifestPulled record, got LayerCached"
    third = dlq(outs[2])
    assert (third["error.class"], third["error.message"], third["attempts"]) == (
        "PermanentError", "PermanentError: invalid repository", "1")  # fmt: skip
    assert third["stage"] == "echo" and third["consumer.group"] == "echo" and third["original.offset"] == "3"
    assert s.handled == ["sha256:" + "1" * 64, "sha256:" + "2" * 64]
    assert s.count("events", outcome="duplicate_in_batch") == 1 and s.count("events", outcome="dead_lettered") == 3


def test_an_image_in_flight_is_claimed_until_its_outcome_is_committed(echo) -> None:
    s = echo()
    [first] = processed(s, [encoded(pulled("1"), offset=1)])
    # A later batch, the first outcome not committed yet: a duplicate (its offset commits after the first's).
    [second] = processed(s, [encoded(pulled("1"), offset=2)])
    assert second.label == "duplicate_in_batch" and second.quiet
    assert first.after_commit is not None
    first.after_commit()  # committed: the stage's own step runs, then the claim is released
    assert s.recorded == ["sha256:" + "1" * 64]
    [third] = processed(s, [encoded(pulled("1"), offset=3)])
    assert third.label == "handled" and len(s.inflight) == 1
    s.inflight.clear()  # what the loop does when it discards uncommitted work
    [fourth] = processed(s, [encoded(pulled("1"), offset=4)])
    assert fourth.label == "handled"


def test_pretriage_answers_without_decoding(echo, monkeypatch: pytest.MonkeyPatch) -> None:
    s = echo()
    monkeypatch.setattr(s, "pretriage", lambda m, batch: Outcome(label="early") if m.offset() == 1 else None)
    outs = processed(s, [message(b"not avro at all", offset=1), encoded(pulled("2"), offset=2)])
    assert [o.label for o in outs] == ["early", "handled"]


def test_in_process_pause() -> None:
    assert [in_process_pause(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 4.0, 5.0]
    assert in_process_pause(1, retry_after_s=3.0) == 3.0  # the other side's Retry-After is a floor
    assert in_process_pause(1, retry_after_s=30.0) is None  # too long to hold a worker: the retry topic waits


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(stage_module.time, "sleep", slept.append)
    return slept


def test_retry_in_process_until_an_attempt_succeeds(echo, sleeps: list[float]) -> None:
    s = echo(attempts_in_process=3)
    seen: list[tuple[int, bool]] = []

    def attempt(n: int, last: bool) -> str:
        seen.append((n, last))
        if n < 3:
            raise UpstreamError("HTTP 503", status=503, transient=True)
        return "done"

    assert s.retry_in_process(attempt, extra={}) == "done"
    assert seen == [(1, False), (2, False), (3, True)] and sleeps == [0.5, 1.0]
    assert s.count("retries", where="in_process") == 2


@pytest.mark.parametrize(
    ("error", "attempts", "slept"),
    [
        (UpstreamError("HTTP 503", status=503, transient=True), 3, [0.5, 1.0]),  # the last attempt failed
        (PermanentError("no"), 1, []),  # retrying cannot help
        (RateLimited("slow down", retry_after=60.0), 1, []),  # the retry topic waits, not a worker
    ],
)
def test_retry_in_process_gives_up(echo, sleeps: list[float], error: Exception, attempts: int, slept: list) -> None:
    s = echo(attempts_in_process=3)

    def attempt(n: int, last: bool) -> str:
        raise error

    with pytest.raises(GaveUp) as info:
        s.retry_in_process(attempt, extra={})
    assert info.value.cause is error and info.value.attempts == attempts and sleeps == slept


def test_a_stopping_stage_hands_a_transient_failure_on_at_once(echo, sleeps: list[float]) -> None:
    s = echo(attempts_in_process=3)
    s.stop()

    def attempt(n: int, last: bool) -> str:
        raise TimeoutError("slow")

    with pytest.raises(GaveUp) as info:
        s.retry_in_process(attempt, extra={})
    assert info.value.attempts == 1 and sleeps == []


def test_fail_reschedules_a_transient_error_and_tells_the_after_commit_step(echo) -> None:
    s = echo()
    told: list[Failed] = []
    m = encoded(pulled(), headers=[("trace", b"t1")])
    kept = s.dead_letter(m, ValueError("unused"), attempts=1).records[0]  # any record: the part that succeeded
    out = s.fail(m, TimeoutError("slow"), attempts=3, records=[kept], after_commit=told.append)
    assert out.label == "retried" and out.records[0] is kept
    rec = out.records[1]
    assert (rec.topic, rec.value, rec.key) == (TOPICS.retry, m.value(), m.key())
    headers = dict(rec.headers)
    assert headers[ATTEMPT] == b"1" and headers[ERROR] == b"TimeoutError: slow" and headers["trace"] == b"t1"
    assert told == []  # nothing before the commit
    out.after_commit()
    assert told == [Failed("TimeoutError: slow", read_retry_headers(rec.headers))]


def test_fail_dead_letters_once_the_retries_are_used_up_or_the_error_is_permanent(echo) -> None:
    s = echo()
    told: list[Failed] = []
    last_round = encoded(pulled(), headers=[(ATTEMPT, b"2")])  # both retry delays used
    out = s.fail(last_round, TimeoutError("slow"), attempts=3, after_commit=told.append)
    assert out.label == "dead_lettered" and dlq(out)["attempts"] == "5"
    assert out.records[0].value == last_round.value()
    out.after_commit()
    assert told == [Failed("TimeoutError: slow", None)]
    permanent = s.fail(encoded(pulled()), PermanentError("never"), attempts=1)
    assert permanent.label == "dead_lettered" and dlq(permanent)["error.message"] == "PermanentError: never"
    assert permanent.after_commit is None
    assert s.count("dead", error_class="PermanentError") == 1 and s.count("retries", where="retry_topic") == 0


def test_a_failure_that_asks_for_a_pause_is_not_due_before_it(echo) -> None:
    s = echo()
    out = s.fail(encoded(pulled()), RateLimited("slow down", retry_after=60.0), attempts=1)
    due = read_retry_headers(out.records[0].headers).due_ms
    import time

    assert due >= int(time.time() * 1000) + 59_000  # the delay would be 10 s; the upstream asked for 60
