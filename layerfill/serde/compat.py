"""BACKWARD compatibility of Avro schemas: can the new reader read data written by an old writer?

Implements the Avro specification's schema resolution rules (the same verdicts as Apache Avro's
``SchemaCompatibility``, which the tests cross-check), with messages that name the field path, e.g.
``ImageCached.manifests[].platform.os: type changed from int to string (not a promotion)``.
One deliberate extra: a changed logical type (same encoding, different meaning) is reported too.
As in the specification, bytes may become string: old values that are not UTF-8 will then fail to
decode, so make that change only when every writer wrote text.

``python -m layerfill.serde.compat`` checks every current schema against every released version.
Every released version, not just the newest, because the decoder accepts writers of all of them
(and BACKWARD is not transitive: v1 -> v2 -> v3 can each pass while v3 cannot read v1).

Engines (``check_all(engine=...)``): ``"avro"``, what ``layerfill schemas check`` uses, takes the verdict from
Apache Avro's Java ReaderWriterCompatibilityChecker (layerfill/serde/avro_java.py) and explains it with this
module's messages, falling back to Avro's own (type, field path, message) where this module has none;
``"python"`` is this module alone (no Java needed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Literal

import fastavro
from fastavro.schema import SchemaParseException

from layerfill import schemas

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "enum", "fixed"})
# writer type -> reader types that can read it
_PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


def _parse(schema: Any, role: str) -> tuple[Any, dict[str, Any]]:
    """The schema with full names everywhere, and its named types by full name."""
    named: dict[str, Any] = {}
    try:
        # fastavro validates the schema (including defaults) and rewrites names as full names.
        parsed = fastavro.parse_schema(schema, named)
    except (SchemaParseException, ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"{role} schema is not valid Avro: {e}") from e
    # An already-parsed schema comes back as is, carrying its own table of named types.
    if isinstance(parsed, dict) and "__named_schemas" in parsed:
        named = parsed["__named_schemas"]
    return parsed, named


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return schema["type"]
    return schema


def _namespace(fullname: str) -> str:
    return fullname.rpartition(".")[0]


def _short(fullname: str) -> str:
    return fullname.rpartition(".")[2]


class _Checker:
    def __init__(self, reader_named: dict[str, Any], writer_named: dict[str, Any]) -> None:
        self._reader_named = reader_named
        self._writer_named = writer_named
        # Named pairs being compared; meeting one again means recursion, assumed compatible.
        self._in_progress: set[tuple[str, str]] = set()

    def _deref(self, schema: Any, named: dict[str, Any]) -> Any:
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            return named[schema]
        return schema

    def check(self, reader: Any, writer: Any, path: str) -> list[str]:
        reader = self._deref(reader, self._reader_named)
        writer = self._deref(writer, self._writer_named)
        rk, wk = _kind(reader), _kind(writer)
        if wk == "union":
            # Every branch the writer may have used must be readable.
            problems: list[str] = []
            for branch in writer:
                problems += self.check(reader, branch, path)
            return problems
        if rk == "union":
            return self._check_reader_union(reader, writer, path)
        if wk in _PRIMITIVES or rk in _PRIMITIVES:
            if rk == wk:
                return self._check_logical(reader, writer, path)
            if rk in _PROMOTIONS.get(wk, ()):
                return []
            return [f"{path}: type changed from {_describe(writer)} to {_describe(reader)} (not a promotion)"]
        if rk != wk:
            return [f"{path}: type changed from {_describe(writer)} to {_describe(reader)}"]
        if rk == "array":
            return self.check(reader["items"], writer["items"], f"{path}[]")
        if rk == "map":
            return self.check(reader["values"], writer["values"], f"{path}{{}}")
        problems = self._check_name(reader, writer, path)
        if problems:
            return problems
        if rk == "fixed":
            if reader["size"] != writer["size"]:
                return [f"{path}: fixed {reader['name']} size changed from {writer['size']} to {reader['size']}"]
            return self._check_logical(reader, writer, path)
        if rk == "enum":
            return self._check_enum(reader, writer, path)
        return self._check_record(reader, writer, path)

    def _check_reader_union(self, reader: list[Any], writer: Any, path: str) -> list[str]:
        candidates = []
        for branch in reader:
            problems = self.check(branch, writer, path)
            if not problems:
                return []
            resolved = self._deref(branch, self._reader_named)
            if _kind(resolved) == _kind(writer) and (
                _kind(writer) not in _NAMED or _short(resolved["name"]) == _short(writer["name"])
            ):
                candidates.append(problems)
        if candidates:
            # The branch of the writer's own kind explains the failure best.
            return candidates[0]
        return [f"{path}: no branch of reader {_describe(reader)} can read writer type {_describe(writer)}"]

    def _check_name(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
        rname, wname = reader["name"], writer["name"]
        if _short(rname) == _short(wname):
            return []
        namespace = _namespace(rname)
        aliases = {a if "." in a or not namespace else f"{namespace}.{a}" for a in reader.get("aliases", [])}
        if wname in aliases:
            return []
        return [f"{path}: {reader['type']} renamed from {wname} to {rname} without an alias for the old name"]

    def _check_logical(self, reader: Any, writer: Any, path: str) -> list[str]:
        r_logical = reader.get("logicalType") if isinstance(reader, dict) else None
        w_logical = writer.get("logicalType") if isinstance(writer, dict) else None
        if r_logical and w_logical and r_logical != w_logical:
            return [f"{path}: logical type changed from {w_logical} to {r_logical} (same bytes, new meaning)"]
        if r_logical == w_logical == "decimal" and (
            reader.get("precision"),
            reader.get("scale", 0),
        ) != (writer.get("precision"), writer.get("scale", 0)):
            return [f"{path}: decimal precision/scale changed (same bytes, new meaning)"]
        return []

    def _check_enum(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
        missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if not missing or reader.get("default") in reader["symbols"]:
            return []
        return [
            f"{path}: enum {_short(reader['name'])} lost symbol(s) {', '.join(missing)} and has no default "
            "symbol to read them as"
        ]

    def _check_record(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
        pair = (reader["name"], writer["name"])
        if pair in self._in_progress:
            return []
        self._in_progress.add(pair)
        try:
            writer_fields = {f["name"]: f for f in writer["fields"]}
            problems: list[str] = []
            for field in reader["fields"]:
                name = field["name"]
                found = writer_fields.get(name)
                if found is None:
                    found = next((writer_fields[a] for a in field.get("aliases", []) if a in writer_fields), None)
                if found is not None:
                    problems += self.check(field["type"], found["type"], f"{path}.{name}")
                elif "default" not in field:
                    problems.append(
                        f"{path}.{name}: field added without a default (data written with the old schema "
                        "has no value for it)"
                    )
            return problems
        finally:
            self._in_progress.discard(pair)


def _describe(schema: Any) -> str:
    kind = _kind(schema)
    if kind == "union":
        return "union[" + ", ".join(_describe(b) for b in schema) + "]"
    if isinstance(schema, str):
        return schema if schema in _PRIMITIVES else _short(schema)
    if kind in _NAMED:
        return f"{kind} {_short(schema['name'])}"
    if kind == "array":
        return f"array<{_describe(schema['items'])}>"
    if kind == "map":
        return f"map<{_describe(schema['values'])}>"
    logical = schema.get("logicalType")
    return f"{kind} ({logical})" if logical else kind


def check_backward(reader_new: dict[str, Any], writer_old: dict[str, Any]) -> list[str]:
    """Why ``reader_new`` cannot read data written with ``writer_old``; empty when it can.

    Both are schema JSON (dicts as loaded from .avsc); ``ValueError`` if either is not valid Avro.
    """
    reader, reader_named = _parse(reader_new, "reader")
    writer, writer_named = _parse(writer_old, "writer")
    root = _short(reader["name"]) if isinstance(reader, dict) and "name" in reader else "$"
    return _Checker(reader_named, writer_named).check(reader, writer, root)


Engine = Literal["avro", "python"]
# This module's one rule beyond the specification's (same bytes, new meaning): kept whatever Avro says.
_OWN_RULES = ("logical type changed", "decimal precision/scale changed")


def explain_avro(reader_new: Any, writer_old: Any, verdict: Any) -> list[str]:
    """The problems of one pair given Apache Avro's verdict (an ``avro_java.AvroVerdict``): this module's messages
    when it found the same incompatibility, else Avro's own, with the field path spelled like ours."""
    from layerfill.serde.avro_java import readable_location

    if verdict.error:
        return [f"Apache Avro cannot parse the schemas: {verdict.error}"]
    try:
        ours = check_backward(reader_new, writer_old)
    except ValueError as e:
        ours = [str(e)]
    if verdict.compatible:
        return [p for p in ours if any(rule in p for rule in _OWN_RULES)]
    if ours:
        return ours
    return [
        f"{readable_location(reader_new, i.location)}: {i.message} (Avro {i.type}"
        + (f"; reader {i.reader}, writer {i.writer})" if len(i.reader) + len(i.writer) <= 80 else ")")
        for i in verdict.incompatibilities
    ]


def check_all(store: schemas.SchemaStore = schemas.DEFAULT_STORE, engine: Engine = "python") -> dict[str, list[str]]:
    """Problems per record name: every current schema against every released version of it.

    A record that was released but no longer exists is a problem too (its old data has no reader).
    Each problem is prefixed with the released version it concerns. ``engine="avro"`` asks Apache Avro (Java)
    for the verdicts, all pairs in one run; it raises ``AvroEngineUnavailable`` without Java or Avro's jars.
    """
    current = store.schema_names()
    results: dict[str, list[str]] = {name: [] for name in current}
    pairs: list[tuple[str, str, Any, Any]] = []  # (version, name, reader, writer)
    for version in store.released_versions():
        for name in store.released_names(version):
            if name not in results:
                results[name] = []
            if name not in current:
                results[name].append(f"{version}: released record {name} has no current schema")
                continue
            pairs.append((version, name, store.load_schema_json(name), store.load_released_json(version, name)))
    verdicts: dict[str, Any] = {}
    if engine == "avro":
        from layerfill.serde.avro_java import check_pairs

        verdicts = check_pairs([(f"{v}/{n}", r, w) for v, n, r, w in pairs])
    for version, name, reader, writer in pairs:
        if engine == "avro":
            problems = explain_avro(reader, writer, verdicts[f"{version}/{name}"])
        else:
            try:
                problems = check_backward(reader, writer)
            except ValueError as e:
                problems = [str(e)]
        results[name] += [f"{version}: {p}" for p in problems]
    return results


def main(argv: list[str] | None = None) -> int:
    """Print the problems; exit status 1 if there are any."""
    parser = argparse.ArgumentParser(
        prog="python -m layerfill.serde.compat",
        description="Check that the current event schemas can read data written with every released version.",
    )
    parser.add_argument(
        "--schemas-dir", type=Path, default=None, help="schema directory (default: the installed schemas)"
    )
    parser.add_argument(
        "--engine",
        choices=["avro", "python"],
        default="avro",
        help="avro: Apache Avro's (Java) checker decides, explained in layerfill's words (default); python: no Java",
    )
    args = parser.parse_args(argv)
    store = schemas.SchemaStore(args.schemas_dir) if args.schemas_dir else schemas.DEFAULT_STORE
    results = check_all(store, engine=args.engine)
    problems = [(name, p) for name, found in sorted(results.items()) for p in found]
    for name, problem in problems:
        print(f"INCOMPATIBLE {name}: {problem}")
    versions = ", ".join(store.released_versions()) or "none"
    if problems:
        print(f"{len(problems)} backward-compatibility problem(s) against released versions {versions}")
        return 1
    print(f"{len(results)} schema(s) backward compatible with released versions {versions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
