import tarfile
from pathlib import Path

import pytest

from layerfill.testimages import debian
from layerfill.testimages.layer import BlobDir, Directory, write_layer

pytestmark = pytest.mark.unit


def parse_os_release(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {k: v.strip('"') for k, v in pairs}


def parse_dpkg_status(text: str) -> list[dict[str, str]]:
    records = []
    for block in text.strip().split("\n\n"):
        records.append(dict(line.split(": ", 1) for line in block.splitlines()))
    return records


def test_os_release_is_debian_12() -> None:
    files = debian.rootfs_files()
    fields = parse_os_release(files["etc/os-release"].decode())  # type: ignore[union-attr]
    assert fields["ID"] == "debian"
    assert fields["VERSION_ID"] == "12" and fields["VERSION_ID"].isdigit()
    assert fields["VERSION_CODENAME"] == "bookworm"
    assert fields["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"


def test_dpkg_status_records() -> None:
    records = parse_dpkg_status(debian.dpkg_status().decode())
    assert [(r["Package"], r["Version"]) for r in records] == [
        ("base-files", "12.4+deb12u5"),
        ("libc6", "2.36-9+deb12u4"),
        ("zlib1g", "1:1.2.13.dfsg-1"),
        ("openssl", "3.0.11-1~deb12u2"),
    ]
    required = {
        "Package",
        "Status",
        "Priority",
        "Section",
        "Installed-Size",
        "Maintainer",
        "Architecture",
        "Version",
        "Description",
    }
    for record in records:
        assert required <= record.keys()
        assert record["Status"] == "install ok installed"
        assert record["Architecture"] == "amd64"
        assert record["Installed-Size"].isdigit()
    assert records[1]["Source"] == "glibc"


def test_dpkg_status_ends_every_record_with_a_blank_line() -> None:
    # Clair's dpkg parser drops a last record that is not followed by a blank line (openssl, here).
    text = debian.dpkg_status().decode()
    assert text.endswith("Description: Secure Sockets Layer toolkit - cryptographic utility\n\n")
    assert text.count("\n\n") == len(debian.PACKAGES)
    assert "\n\n\n" not in text


def test_rootfs_has_dpkg_info_lists_and_listed_files() -> None:
    files = debian.rootfs_files()
    assert isinstance(files["var/lib/dpkg/info"], Directory)
    for pkg in debian.PACKAGES:
        listed = files[f"var/lib/dpkg/info/{pkg.name}.list"].decode().split()  # type: ignore[union-attr]
        assert listed == list(pkg.files)
        for path in listed:
            assert path.lstrip("/") in files


def test_rootfs_layer_holds_scanner_inputs(tmp_path: Path) -> None:
    blobs = BlobDir(tmp_path)
    layer = write_layer(blobs, debian.rootfs_files())
    with tarfile.open(blobs.path(layer.digest)) as tar:
        names = set(tar.getnames())
        status = tar.extractfile("var/lib/dpkg/status")
        assert status is not None and status.read() == debian.dpkg_status()
        assert tar.getmember("tmp").mode == 0o1777
    assert {"etc/os-release", "var/lib/dpkg/status", "var/lib/dpkg/info", "var/lib/dpkg/info/libc6.list"} <= names
