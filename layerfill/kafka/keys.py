"""Record keys, and the headers that name a ManifestPulled's image so a stage can triage it without decoding.

Keys: one repository stays on one partition, so its events are processed in order. Headers: producers
(layerfill.producers.publisher) set the image's digest and the event's source next to the repository key; the
fetcher answers a repeat pull of an image it knows complete from those alone (issue 19: Avro decoding was most of
the firehose's time). They are the producer's statement about the body it wrote; a record without them (older
producers, other tools) is decoded as before."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

DIGEST_HEADER = "layerfill.digest"
SOURCE_HEADER = "layerfill.source"


def repository_key(registry: str, repository: str) -> bytes:
    return f"{registry}/{repository}".encode()


def image_key(registry: str, repository: str, digest: str) -> bytes:
    """One image of one registry, as bytes: the record's key and its digest header, joined as
    `image_from_headers` joins them without decoding."""
    return repository_key(registry, repository) + b"@" + digest.encode()


def image_fingerprint(image: bytes) -> bytes:
    """16 bytes standing for an image key in the fetcher's per-image memory (images known complete, artifact-check
    claims): a key is ~120 bytes (host, repository, 71-character digest) and these maps hold up to
    `fetcher.known_images` entries each. BLAKE2b-128: two of 100,000 images collide with odds near 1e-29."""
    return hashlib.blake2b(image, digest_size=16).digest()


def image_from_headers(
    key: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None
) -> tuple[bytes, bytes] | None:
    """(image_key, source) from a record's key and headers, or None when they do not name its image."""
    if not key or not headers:
        return None
    digest = source = None
    for name, value in headers:
        if name == DIGEST_HEADER:
            digest = value
        elif name == SOURCE_HEADER:
            source = value
    if not digest or source is None:
        return None
    return key + b"@" + digest, source
