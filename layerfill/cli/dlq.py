"""`layerfill dlq list | show | replay`: dead letters with their cause, and sending chosen ones home."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from layerfill.config.settings import Settings
    from layerfill.ops.deadletters import DeadLetter, DlqFilter

app = typer.Typer(help="Dead letters: list, show, replay to their original topic once the cause is fixed.")

Partition = Annotated[int | None, typer.Option("--partition", "-p", help="DLQ partition")]
FromOffset = Annotated[int | None, typer.Option("--from-offset", help="First DLQ offset (inclusive)")]
ToOffset = Annotated[int | None, typer.Option("--to-offset", help="Last DLQ offset (inclusive)")]
ErrorClass = Annotated[str | None, typer.Option("--error-class", help="e.g. NoRoute")]
OriginalTopic = Annotated[str | None, typer.Option("--original-topic")]
RepoPrefix = Annotated[str | None, typer.Option("--repository", help="Repository prefix of the decoded event")]
Contains = Annotated[str | None, typer.Option("--contains", help="Substring of the error message")]
Topic = Annotated[str | None, typer.Option("--topic", help="DLQ topic (default: topics.dlq)")]
AsJson = Annotated[bool, typer.Option("--json", help="JSON on stdout")]


def _load(topic: str | None, filt: DlqFilter, limit: int | None = None) -> tuple[Settings, list[DeadLetter]]:
    from confluent_kafka import KafkaException

    from layerfill.config import load_settings
    from layerfill.ops.deadletters import read_dead_letters, tail_dead_letters
    from layerfill.wiring import make_codec

    settings = load_settings()
    name = topic or settings.topics.dlq.name
    err = Console(stderr=True)
    try:
        if filt.from_offset is not None and filt.to_offset is not None and filt.from_offset > filt.to_offset:
            raise ValueError(f"invalid --from-offset {filt.from_offset}: after --to-offset {filt.to_offset}")
        with err.status(f"reading {name}", spinner="dots"):
            if limit is not None:
                tail, _ = tail_dead_letters(
                    settings.kafka, name, make_codec(settings), limit, partition=filt.partition, matches=filt.matches
                )
                return settings, tail
            found = read_dead_letters(settings.kafka, name, make_codec(settings), partition=filt.partition)
            return settings, [d for d in found if filt.matches(d)]
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    except (KafkaException, TimeoutError) as exc:
        err.print(f"[red]Kafka at {settings.kafka.bootstrap_servers} failed:[/red] {exc}")
        raise typer.Exit(1) from None


def _filter(partition: int | None, from_offset: int | None, to_offset: int | None, error_class: str | None,
            original_topic: str | None, repository: str | None, contains: str | None) -> DlqFilter:  # fmt: skip
    from layerfill.ops.deadletters import DlqFilter

    return DlqFilter(partition, from_offset, to_offset, error_class, original_topic, repository, contains)


@app.command("list")
def list_(partition: Partition = None, from_offset: FromOffset = None, to_offset: ToOffset = None,
          error_class: ErrorClass = None, original_topic: OriginalTopic = None, repository: RepoPrefix = None,
          contains: Contains = None, topic: Topic = None, as_json: AsJson = False,
          limit: Annotated[int | None, typer.Option("--limit", "-n", min=1,
                           help="Only the N newest (matching) dead letters; reads each partition's tail only")] = None,
          ) -> None:  # fmt: skip
    """Dead letters with cause, original topic/partition/offset and attempts.

    Examples:

      layerfill dlq list --limit 20

      layerfill dlq list --error-class NoRoute --repository library/
    """
    _, found = _load(
        topic, _filter(partition, from_offset, to_offset, error_class, original_topic, repository, contains), limit
    )
    if as_json:
        print(json.dumps([d.summary() for d in found], indent=2))
        return
    table = Table("p:offset", "error", "original", "attempts", "event", "failed at")
    for d in found:
        s = d.summary()
        origin = (
            f"{s['original_topic']}[{s['original_partition']}]@{s['original_offset']}" if s["original_topic"] else "-"
        )
        what = (
            f"{s['repository']}@{str(s['digest'])[:19]}"
            if s["repository"]
            else (s["decode_error"] or s["record"] or "-")
        )
        cause = f"{s['error_class']}: {(s['error_message'] or '')[:100]}"
        table.add_row(f"{d.partition}:{d.offset}", cause, origin, str(s["attempts"]), what, str(s["failed_at"]))
    Console().print(table)
    Console().print(f"{len(found)} dead letter(s)")


@app.command()
def show(
    position: Annotated[str, typer.Argument(help="PARTITION:OFFSET in the DLQ topic")],
    topic: Topic = None,
    as_json: AsJson = False,
) -> None:
    """One dead letter in full: cause, every header, the decoded event."""
    try:
        part_text, _, off_text = position.partition(":")
        partition, offset = int(part_text), int(off_text)
    except ValueError:
        Console(stderr=True).print(f"[red]invalid position {position!r}: expected PARTITION:OFFSET, e.g. 0:42[/red]")
        raise typer.Exit(2) from None
    _, found = _load(topic, _filter(partition, offset, offset, None, None, None, None))
    if not found:
        Console(stderr=True).print(f"[red]no dead letter at {partition}:{offset}[/red]")
        raise typer.Exit(1)
    detail = found[0].detail()
    if as_json:
        print(json.dumps(detail, indent=2, default=str))
        return
    table = Table("field", "value", show_header=False)
    for k, v in detail.items():
        table.add_row(k, json.dumps(v, default=str, indent=1) if isinstance(v, dict) else str(v))
    Console().print(table)


@app.command()
def replay(partition: Partition = None, from_offset: FromOffset = None, to_offset: ToOffset = None,
           error_class: ErrorClass = None, original_topic: OriginalTopic = None, repository: RepoPrefix = None,
           contains: Contains = None, topic: Topic = None,
           all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter (no filter needed)")] = False,
           dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be replayed")] = False,
           as_json: AsJson = False) -> None:  # fmt: skip
    """Produce chosen dead letters back to their original topic with their original key and value.

    Exit codes: 0 replayed, 1 some could not be (no original topic) or Kafka failed, 2 bad input.

    Examples:

      layerfill dlq replay --error-class NoRoute --dry-run

      layerfill dlq replay --from-offset 10 --to-offset 20 -p 0
    """
    from layerfill.kafka.producer import EventProducer, KafkaUnavailable
    from layerfill.ops.deadletters import replay_record

    filt = _filter(partition, from_offset, to_offset, error_class, original_topic, repository, contains)
    if filt.is_empty and not all_:
        Console(stderr=True).print(
            "[red]invalid filter: give --from-offset/--to-offset/--error-class/... or --all[/red]"
        )
        raise typer.Exit(2)
    settings, found = _load(topic, filt)
    records, results = [], []
    for d in found:
        try:
            records.append(replay_record(d))
            results.append(
                {"partition": d.partition, "offset": d.offset, "to": d.original_topic, "replayed": not dry_run}
            )
        except ValueError as exc:
            results.append(
                {"partition": d.partition, "offset": d.offset, "to": None, "replayed": False, "error": str(exc)}
            )
    if records and not dry_run:
        producer = EventProducer(settings.kafka)
        try:
            producer.send_and_wait(records)
        except KafkaUnavailable as exc:
            Console(stderr=True).print(f"[red]not replayed: {exc}[/red]")
            raise typer.Exit(1) from None
        finally:
            producer.close()
    _print_results(results, dry_run, as_json)
    if any("error" in r for r in results):
        raise typer.Exit(1)


def _print_results(results: list[dict[str, Any]], dry_run: bool, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"dry_run": dry_run, "records": results}, indent=2))
        return
    table = Table("p:offset", "to", "result")
    for r in results:
        outcome = r.get("error") or ("would replay" if dry_run else "replayed")
        table.add_row(f"{r['partition']}:{r['offset']}", str(r["to"] or "-"), outcome)
    Console().print(table)
    Console().print(
        f"{sum(1 for r in results if 'error' not in r)} of {len(results)} dead letter(s) {'would be ' if dry_run else ''}replayed"
    )
