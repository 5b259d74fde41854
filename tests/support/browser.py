"""Headless Chromium from Debian (devstack/install.py installs it): the DOM a page renders, and a screenshot.

Each call gets a fresh profile and no network but 127.0.0.1 (no background fetches, updates or sync)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars",
]  # fmt: skip


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise AssertionError("chromium is not installed (devstack/install.py installs it: `make up`)")
    return found


def _run(args: list[str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="lf-chromium-") as profile:
        return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip


def dump_dom(url: str) -> str:
    res = _run(["--dump-dom", url])
    assert res.returncode == 0 and "<html" in res.stdout, (
        f"chromium --dump-dom {url}: {res.returncode}\n{res.stderr[-2000:]}"
    )
    return res.stdout


def screenshot(url: str, path: Path, width: int = 1400, height: int = 1000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    res = _run([f"--screenshot={path}", f"--window-size={width},{height}", url])
    assert res.returncode == 0 and path.is_file(), (
        f"chromium --screenshot {url}: {res.returncode}\n{res.stderr[-2000:]}"
    )
    return path


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: str = ""
    children: list[Element] = field(default_factory=list)

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Element]:
        """Descendants with this tag and these attribute values (`class_` matches one of the classes)."""
        out = []
        for child in self.children:
            if _matches(child, tag, attrs):
                out.append(child)
            out += child.find_all(tag, **attrs)
        return out

    def find(self, tag: str | None = None, **attrs: str) -> Element:
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag or '*'} {attrs}> in <{self.tag} {self.attrs}>"
        return found[0]

    @property
    def all_text(self) -> str:
        return " ".join((self.text + " " + " ".join(c.all_text for c in self.children)).split())


def _matches(el: Element, tag: str | None, attrs: dict[str, str]) -> bool:
    if tag is not None and el.tag != tag:
        return False
    for key, want in attrs.items():
        if key == "class_":
            if want not in el.attrs.get("class", "").split():
                return False
        elif el.attrs.get(key.replace("_", "-")) != want:
            return False
    return True


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(el)
        if tag not in _VOID:
            self.stack.append(el)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].text += data


def parse(html: str) -> Element:
    builder = _TreeBuilder()
    builder.feed(html)
    return builder.root
