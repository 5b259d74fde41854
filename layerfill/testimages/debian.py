"""Files of a minimal Debian 12 rootfs that Clair's os-release and dpkg scanners recognise."""

from __future__ import annotations

from dataclasses import dataclass

from layerfill.testimages.layer import Directory, Entry


@dataclass(frozen=True, slots=True)
class DebPackage:
    name: str
    version: str
    architecture: str
    section: str
    priority: str
    installed_size: int  # KiB, as dpkg records it
    description: str
    source: str | None = None
    files: tuple[str, ...] = ()


PACKAGES: tuple[DebPackage, ...] = (
    DebPackage(
        "base-files",
        "12.4+deb12u5",
        "amd64",
        "admin",
        "required",
        341,
        "Debian base system miscellaneous files",
        files=("/etc/debian_version", "/usr/share/doc/base-files/README"),
    ),
    DebPackage(
        "libc6",
        "2.36-9+deb12u4",
        "amd64",
        "libs",
        "optional",
        12987,
        "GNU C Library: Shared libraries",
        source="glibc",
        files=("/usr/lib/x86_64-linux-gnu/libc.so.6",),
    ),
    DebPackage(
        "zlib1g",
        "1:1.2.13.dfsg-1",
        "amd64",
        "libs",
        "optional",
        164,
        "compression library - runtime",
        source="zlib",
        files=("/usr/lib/x86_64-linux-gnu/libz.so.1",),
    ),
    DebPackage(
        "openssl",
        "3.0.11-1~deb12u2",
        "amd64",
        "utils",
        "optional",
        2303,
        "Secure Sockets Layer toolkit - cryptographic utility",
        files=("/usr/bin/openssl",),
    ),
)

MAINTAINER = "Debian Maintainers <debian-devel@lists.debian.org>"

OS_RELEASE = (
    'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'
    'NAME="Debian GNU/Linux"\n'
    'VERSION_ID="12"\n'
    'VERSION="12 (bookworm)"\n'
    "VERSION_CODENAME=bookworm\n"
    "ID=debian\n"
    'HOME_URL="https://www.debian.org/"\n'
    'SUPPORT_URL="https://www.debian.org/support"\n'
    'BUG_REPORT_URL="https://bugs.debian.org/"\n'
)


def status_record(pkg: DebPackage) -> str:
    lines = [
        f"Package: {pkg.name}",
        "Status: install ok installed",
        f"Priority: {pkg.priority}",
        f"Section: {pkg.section}",
        f"Installed-Size: {pkg.installed_size}",
        f"Maintainer: {MAINTAINER}",
        f"Architecture: {pkg.architecture}",
    ]
    if pkg.source:
        lines.append(f"Source: {pkg.source}")
    lines += [f"Version: {pkg.version}", f"Description: {pkg.description}"]
    return "\n".join(lines) + "\n"


def dpkg_status(packages: tuple[DebPackage, ...] = PACKAGES) -> bytes:
    """`var/lib/dpkg/status`: every record ends with a blank line, the last one too, as dpkg writes it (Clair's
    parser drops a last record that lacks it)."""
    return "".join(status_record(p) + "\n" for p in packages).encode()


def rootfs_files(packages: tuple[DebPackage, ...] = PACKAGES) -> dict[str, Entry]:
    files: dict[str, Entry] = {
        "etc/os-release": OS_RELEASE.encode(),
        "etc/debian_version": b"12.5\n",
        "var/lib/dpkg/status": dpkg_status(packages),
        "var/lib/dpkg/info": Directory(),
        "tmp": Directory(mode=0o1777),
    }
    for pkg in packages:
        listed = "".join(f"{path}\n" for path in pkg.files)
        files[f"var/lib/dpkg/info/{pkg.name}.list"] = listed.encode()
        for path in pkg.files:
            files.setdefault(path.lstrip("/"), f"{pkg.name} {pkg.version}\n".encode())
    return files
