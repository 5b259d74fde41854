"""How options read in `--help`.

typer 0.29's rich help prints a value type for every option, flags included (`--dry-run <bool>`, even
`--help <bool>`), and a repeatable option's Python type (`--repository <list[str]>`), though each use takes one
value. TyperOption.display_type_rich is the one place that text comes from; `install` wraps it once: a flag shows
no value, a repeatable option its item type."""

from __future__ import annotations

import re
from typing import Any

from typer.core import TyperOption

_LIST = re.compile(r"^<list\[(.+)\]>$")


def install() -> None:
    original = TyperOption.display_type_rich
    if getattr(original, "_layerfill", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if self.metavar is None and (self.is_flag or self.count):
            return None
        shown = original(self, ctx)
        if self.metavar is None and self.multiple and shown:
            shown = _LIST.sub(r"<\1>", shown)
        return shown

    display_type_rich._layerfill = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
