"""`layerfill publish`: one ManifestPulled by hand (backfills, drills, registries without notifications)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console


def publish(
    image: Annotated[str, typer.Argument(help="REGISTRY/REPOSITORY@DIGEST (or :TAG with --digest)")],
    digest: Annotated[str | None, typer.Option(help="Manifest digest, when IMAGE names a tag")] = None,
    media_type: Annotated[str | None, typer.Option(help="Manifest media type, if known")] = None,
    source: Annotated[str, typer.Option(help="Event source")] = "cli",
) -> None:
    """Publish one ManifestPulled event and wait until Kafka acknowledged it.

    The event is validated before any Kafka client is built: a bad name or digest costs no connection.

    Examples:

      layerfill publish cache.example.com/library/debian@sha256:<64 hex>

      layerfill publish cache.example.com/library/debian:12 --digest sha256:<64 hex>
    """
    from layerfill.kafka.producer import KafkaUnavailable
    from layerfill.oci.reference import InvalidReference
    from layerfill.producers.publisher import Publisher, build_event
    from layerfill.serde import events

    # markup off: messages quote the OCI grammar ("[a-zA-Z0-9_]..."), which rich would eat as style tags;
    # soft_wrap: one message, one line, whatever the terminal width.
    err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)
    try:
        registry, repository, reference = _split(image)
        if reference.startswith("sha256:") or reference.startswith("sha512:"):
            digest = digest or reference
            tag = None
        else:
            tag = reference
        if not digest:
            raise ValueError("invalid digest: IMAGE names a tag, so --digest is required")
        event = build_event(
            registry=registry, repository=repository, digest=digest, reference=tag, media_type=media_type, source=source
        )
        if source not in events.SOURCES:  # the schema's enum: checked here too, before any Kafka client exists
            raise ValueError(f"source must be one of {', '.join(events.SOURCES)}; got {source!r}")
    except (ValueError, InvalidReference) as exc:
        err.print(str(exc), style="red")
        raise typer.Exit(2) from None
    pub = Publisher()
    try:
        d = pub.publish([event])[0]
    except ValueError as exc:  # refused while encoding: still the input's fault
        err.print(str(exc), style="red")
        raise typer.Exit(2) from None
    except KafkaUnavailable as exc:
        err.print(f"not published: {exc}", style="red")
        raise typer.Exit(1) from None
    finally:
        pub.close()
    Console().print(f"published to {d.topic} partition {d.partition} offset {d.offset}")


def _split(image: str) -> tuple[str, str, str]:
    if "/" not in image:
        raise ValueError(f"invalid image {image!r}: expected REGISTRY/REPOSITORY@DIGEST")
    registry, rest = image.split("/", 1)
    if "@" in rest:
        repository, ref = rest.split("@", 1)
    elif ":" in rest.rsplit("/", 1)[-1]:
        repository, ref = rest.rsplit(":", 1)
    else:
        raise ValueError(f"invalid image {image!r}: no @DIGEST or :TAG")
    return registry, repository, ref
