import pytest
import urllib3
from minio.error import S3Error

from layerfill.oci.reference import InvalidReference
from layerfill.remote.errors import DigestMismatch, NotFound, UpstreamError
from layerfill.sinks.base import BlobSpec, SinkError, SinkIntegrityError, SinkUnavailable
from layerfill.sinks.distribution import MAX_PARTS, MiB, part_size_for
from layerfill.sinks.registry import sink_error
from layerfill.sinks.s3client import endpoint_parts, s3_errors

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "a" * 64


def test_blob_spec_accepts_a_valid_blob() -> None:
    assert BlobSpec(DIGEST, 0).media_type is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"digest": "sha256:xyz", "size": 1}, "blob.digest"),
        ({"digest": DIGEST, "size": -1}, "blob.size"),
        ({"digest": DIGEST, "size": True}, "blob.size"),
        ({"digest": DIGEST, "size": "10"}, "blob.size"),
        ({"digest": DIGEST, "size": 1, "media_type": 5}, "blob.media_type"),
    ],
)
def test_blob_spec_names_the_bad_field(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidReference, match=field):
        BlobSpec(**kwargs)


def test_sink_errors_share_a_base() -> None:
    assert issubclass(SinkIntegrityError, SinkError)
    assert issubclass(SinkUnavailable, SinkError)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, 16 * MiB),
        (16 * MiB * MAX_PARTS, 16 * MiB),
        (16 * MiB * MAX_PARTS + 1, 17 * MiB),
        (5 * 1024**4, 525 * MiB),  # 5 TiB, S3's largest object
    ],
)
def test_part_size_grows_to_stay_within_10000_parts(size: int, expected: int) -> None:
    part = part_size_for(size, 16 * MiB)
    assert part == expected
    assert -(-size // part) <= MAX_PARTS


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("http://127.0.0.1:19000", ("127.0.0.1:19000", False)),
        ("https://s3.example.com", ("s3.example.com", True)),
        ("https://s3.example.com/", ("s3.example.com", True)),
    ],
)
def test_endpoint_parts(endpoint: str, expected: tuple[str, bool]) -> None:
    assert endpoint_parts(endpoint) == expected


@pytest.mark.parametrize("endpoint", ["127.0.0.1:9000", "ftp://x", "http://x/bucket", "http://u:p@x"])
def test_endpoint_parts_refuses_bad_endpoints(endpoint: str) -> None:
    with pytest.raises(ValueError, match=r"s3\.endpoint"):
        endpoint_parts(endpoint)


def test_s3_errors_become_sink_unavailable() -> None:
    with pytest.raises(SinkUnavailable, match="S3 stat k failed: AccessDenied"), s3_errors("stat", "k"):
        raise S3Error(None, "AccessDenied", "denied", "k", "r", "h")  # type: ignore[arg-type]
    with pytest.raises(SinkUnavailable, match="NewConnectionError"), s3_errors("put"):
        raise urllib3.exceptions.NewConnectionError(None, "refused")  # type: ignore[arg-type]


def test_s3_errors_leave_other_errors_alone() -> None:
    with pytest.raises(SinkIntegrityError), s3_errors("put"):
        raise SinkIntegrityError("bad")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (DigestMismatch(expected=DIGEST, actual="sha256:" + "b" * 64), SinkIntegrityError),
        (UpstreamError("down", status=503, transient=True), SinkUnavailable),
        (NotFound("gone"), SinkError),
    ],
)
def test_registry_errors_map_to_sink_errors(error: UpstreamError, kind: type[SinkError]) -> None:
    mapped = sink_error(error, "blob x")
    assert type(mapped) is kind
    assert "blob x" in str(mapped)
