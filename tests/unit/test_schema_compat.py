from __future__ import annotations

import copy
import io
import json
import shutil
from pathlib import Path
from typing import Any

import avro.schema
import fastavro
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerfill import schemas
from layerfill.serde import EventCodec, ResolutionError
from layerfill.serde.catalog import SchemaCatalog
from layerfill.serde.compat import check_all, check_backward, main
from layerfill.serde.single_object import schema_fingerprint
from tests.unit.serde_support import values_for

pytestmark = pytest.mark.unit


# --- the real schemas --------------------------------------------------------------------------


def test_current_schemas_are_backward_compatible_with_every_release() -> None:
    assert schemas.released_versions(), "at least one released version must exist"
    results = check_all()
    assert sorted(results) == schemas.schema_names()
    assert results == {name: [] for name in schemas.schema_names()}


def test_compat_cli_passes_on_the_shipped_schemas(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--engine", "python"]) == 0
    assert "backward compatible with released versions v1" in capsys.readouterr().out


def test_every_schema_documents_every_field_and_gives_nullables_a_null_default() -> None:
    def walk(schema: Any, where: str) -> None:
        if isinstance(schema, list):
            for branch in schema:
                walk(branch, where)
        elif isinstance(schema, dict):
            if schema["type"] in ("record", "enum"):
                assert schema.get("doc"), f"{where}: {schema['name']} has no doc"
                assert schema["name"][0].isupper()
            if schema["type"] == "enum":
                assert schema.get("default") in schema["symbols"], f"{where}: enum without default"
            for field in schema.get("fields", []):
                assert field.get("doc"), f"{where}.{field['name']} has no doc"
                if isinstance(field["type"], list) and "null" in field["type"]:
                    assert field["type"][0] == "null" and field.get("default", ...) is None, field["name"]
                walk(field["type"], f"{where}.{field['name']}")
            for key in ("items", "values"):
                if key in schema:
                    walk(schema[key], where)

    for name in schemas.schema_names():
        raw = schemas.load_schema_json(name)
        assert raw["namespace"] == "io.layerfill.events" and raw["name"] == name
        walk(raw, name)


@pytest.mark.parametrize("version", schemas.released_versions())
@pytest.mark.parametrize("name", schemas.schema_names())
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_data_written_with_a_released_schema_decodes_with_the_current_one(
    version: str, name: str, data: st.DataObject
) -> None:
    writer = schemas.load_released(version, name)
    value = data.draw(values_for(writer))
    message = _single_object(writer, value)
    record, decoded = EventCodec().decode(message)
    assert record == name
    assert set(decoded) == {f["name"] for f in schemas.load_schema(name)["fields"]}
    for field in writer["fields"]:
        if field["name"] in decoded:
            assert decoded[field["name"]] == value[field["name"]]


def _single_object(writer: dict[str, Any], value: Any) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, writer, value)
    return b"\xc3\x01" + schema_fingerprint(writer) + body.getvalue()


# --- an evolved copy of the schemas, as the next release would make them --------------------------


def _copy_store(tmp_path: Path) -> Path:
    root = tmp_path / "schemas"
    shutil.copytree(schemas.SCHEMA_DIR, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return root


def _edit(root: Path, name: str, change: Any) -> None:
    path = root / f"{name}.avsc"
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw, indent=2))


def _field(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in raw["fields"] if f["name"] == name)


def _compatible_evolution(raw: dict[str, Any]) -> None:
    raw["fields"].append({"name": "client", "type": ["null", "string"], "default": None, "doc": "user agent"})
    _field(raw, "source")["type"]["symbols"].insert(-1, "zot")
    reference = _field(raw, "reference")
    reference["name"], reference["aliases"] = "tag", ["reference"]
    raw["fields"] = [f for f in raw["fields"] if f["name"] != "media_type"]


def test_compatible_evolution_decodes_old_data_through_the_codec(tmp_path: Path) -> None:
    root = _copy_store(tmp_path)
    _edit(root, "ManifestPulled", _compatible_evolution)
    store = schemas.SchemaStore(root)
    assert check_all(store) == {name: [] for name in schemas.schema_names()}

    old = schemas.load_released("v1", "ManifestPulled")
    value = {
        "event_id": "e",
        "occurred_at": 0,
        "source": "harbor",
        "registry": "cache:5000",
        "repository": "library/debian",
        "reference": "12",
        "digest": "sha256:" + "ab" * 32,
        "media_type": "application/vnd.oci.image.manifest.v1+json",
        "manifest": None,
    }
    record, decoded = EventCodec(catalog=SchemaCatalog(store)).decode(_single_object(old, value))

    assert record == "ManifestPulled"
    assert decoded["tag"] == "12"
    assert decoded["client"] is None
    assert "reference" not in decoded and "media_type" not in decoded
    assert decoded["source"] == "harbor"


def _breaking_evolution(raw: dict[str, Any]) -> None:
    raw["fields"].append({"name": "region", "type": "string", "doc": "new and required"})
    source = _field(raw, "source")["type"]
    source["symbols"].remove("harbor")
    del source["default"]
    source["symbols"].remove("unknown")


def test_breaking_evolution_is_reported_and_fails_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy_store(tmp_path)
    _edit(root, "ManifestPulled", _breaking_evolution)
    _edit(root, "LayerCached", lambda raw: _field(raw, "size").update(type="string"))
    store = schemas.SchemaStore(root)

    results = check_all(store)

    assert results["ImageCached"] == [] and results["ImageScanned"] == []
    assert results["LayerCached"] == ["v1: LayerCached.size: type changed from long to string (not a promotion)"]
    assert sorted(results["ManifestPulled"]) == [
        "v1: ManifestPulled.region: field added without a default (data written with the old schema has no "
        "value for it)",
        "v1: ManifestPulled.source: enum Source lost symbol(s) harbor, unknown and has no default symbol to "
        "read them as",
    ]
    assert main(["--schemas-dir", str(root), "--engine", "python"]) == 1
    out = capsys.readouterr().out
    assert "INCOMPATIBLE LayerCached: v1: LayerCached.size" in out
    assert "3 backward-compatibility problem(s)" in out

    # And the decoder agrees: old data cannot be read with the broken schema.
    old = schemas.load_released("v1", "ManifestPulled")
    value = {f["name"]: None for f in old["fields"]} | {
        "event_id": "e",
        "occurred_at": 0,
        "source": "cli",
        "registry": "r",
        "repository": "p",
        "digest": "d",
    }
    with pytest.raises(ResolutionError, match="region"):
        EventCodec(catalog=SchemaCatalog(store)).decode(_single_object(old, value))


def test_a_released_record_without_a_current_schema_is_a_problem(tmp_path: Path) -> None:
    root = _copy_store(tmp_path)
    (root / "ImageScanned.avsc").unlink()
    results = check_all(schemas.SchemaStore(root))
    assert results["ImageScanned"] == ["v1: released record ImageScanned has no current schema"]


def test_every_released_version_is_checked_not_only_the_newest(tmp_path: Path) -> None:
    # v1 has size:long; v2 dropped it; the current schema re-adds it as a string with a default.
    # Against v2 alone that passes, but v1 data still exists and would not decode.
    root = _copy_store(tmp_path)
    (root / "released" / "v2").mkdir()
    for path in (root / "released" / "v1").glob("*.avsc"):
        shutil.copy(path, root / "released" / "v2" / path.name)
    drop = lambda raw: raw.update(fields=[f for f in raw["fields"] if f["name"] != "size"])  # noqa: E731
    (root / "released" / "v2" / "LayerCached.avsc").write_text(
        json.dumps(_changed(schemas.load_released_json("v1", "LayerCached"), drop))
    )
    _edit(root, "LayerCached", lambda raw: _field(raw, "size").update(type="string", default=""))
    store = schemas.SchemaStore(root)
    assert store.released_versions() == ["v1", "v2"]
    assert check_all(store)["LayerCached"] == [
        "v1: LayerCached.size: type changed from long to string (not a promotion)"
    ]


def _changed(raw: dict[str, Any], change: Any) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    change(raw)
    return raw


# --- the rules, one at a time ---------------------------------------------------------------------


def _rec(*fields: dict[str, Any], name: str = "R", **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "t", "fields": list(fields), **extra}


def _f(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def _enum(symbols: list[str], **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": "E", "symbols": symbols, **extra}


INCOMPATIBLE = [
    pytest.param(
        _rec(_f("a", "int"), _f("b", "string")),
        _rec(_f("a", "int")),
        "R.b: field added without a default",
        id="new-field-without-default",
    ),
    pytest.param(
        _rec(_f("a", _enum(["X"]))),
        _rec(_f("a", _enum(["X", "Y"]))),
        "R.a: enum E lost symbol(s) Y",
        id="enum-symbol-removed",
    ),
    pytest.param(
        _rec(_f("a", "string")),
        _rec(_f("a", "int")),
        "R.a: type changed from int to string (not a promotion)",
        id="int-to-string",
    ),
    pytest.param(
        _rec(_f("a", "int")),
        _rec(_f("a", "long")),
        "R.a: type changed from long to int (not a promotion)",
        id="long-to-int-narrowing",
    ),
    pytest.param(
        _rec(_f("a", "float")), _rec(_f("a", "double")), "type changed from double to float", id="double-to-float"
    ),
    pytest.param(
        _rec(_f("a", {"type": "fixed", "name": "F", "size": 16})),
        _rec(_f("a", {"type": "fixed", "name": "F", "size": 8})),
        "R.a: fixed t.F size changed from 8 to 16",
        id="fixed-size",
    ),
    pytest.param(
        _rec(_f("a", "int"), name="New"),
        _rec(_f("a", "int"), name="Old"),
        "New: record renamed from t.Old to t.New without an alias",
        id="rename-without-alias",
    ),
    pytest.param(
        _rec(_f("a", "string")),
        _rec(_f("a", ["null", "string"])),
        "R.a: type changed from null to string",
        id="union-branch-null-dropped",
    ),
    pytest.param(
        _rec(_f("a", ["null", "int"])),
        _rec(_f("a", ["null", "int", "string"])),
        "R.a: no branch of reader union[null, int] can read writer type string",
        id="union-branch-removed",
    ),
    pytest.param(
        _rec(_f("a", _rec(_f("x", "int"), _f("y", "int"), name="In"))),
        _rec(_f("a", _rec(_f("x", "int"), name="In"))),
        "R.a.y: field added without a default",
        id="nested-record",
    ),
    pytest.param(
        _rec(_f("a", {"type": "array", "items": "int"})),
        _rec(_f("a", {"type": "array", "items": "long"})),
        "R.a[]: type changed from long to int",
        id="array-items",
    ),
    pytest.param(
        _rec(_f("a", {"type": "map", "values": "string"})),
        _rec(_f("a", {"type": "map", "values": "boolean"})),
        "R.a{}: type changed from boolean to string",
        id="map-values",
    ),
    pytest.param(
        _rec(_f("a", {"type": "array", "items": "int"})),
        _rec(_f("a", {"type": "map", "values": "int"})),
        "R.a: type changed from map<int> to array<int>",
        id="map-to-array",
    ),
    pytest.param(
        _rec(_f("a", ["null", _rec(_f("x", "int"), _f("y", "int"), name="In")], default=None)),
        _rec(_f("a", ["null", _rec(_f("x", "int"), name="In")], default=None)),
        "R.a.y: field added without a default",
        id="record-inside-union-explains-branch",
    ),
    pytest.param(
        _rec(_f("t", {"type": "long", "logicalType": "timestamp-micros"})),
        _rec(_f("t", {"type": "long", "logicalType": "timestamp-millis"})),
        "R.t: logical type changed from timestamp-millis to timestamp-micros",
        id="logical-type-changed",
    ),
]


@pytest.mark.parametrize(("reader", "writer", "expected"), INCOMPATIBLE)
def test_incompatible_changes_are_reported_with_the_field_path(
    reader: dict[str, Any], writer: dict[str, Any], expected: str
) -> None:
    problems = check_backward(reader, writer)
    assert any(expected in p for p in problems), problems


COMPATIBLE = [
    pytest.param(_rec(_f("a", "int"), _f("b", "string", default="x")), _rec(_f("a", "int")), id="new-field-default"),
    pytest.param(_rec(_f("a", "int")), _rec(_f("a", "int"), _f("gone", "string")), id="field-removed"),
    *[
        pytest.param(_rec(_f("a", r)), _rec(_f("a", w)), id=f"promote-{w}-to-{r}")
        for w, r in [
            ("int", "long"),
            ("int", "float"),
            ("int", "double"),
            ("long", "float"),
            ("long", "double"),
            ("float", "double"),
            ("string", "bytes"),
            ("bytes", "string"),
        ]
    ],
    pytest.param(_rec(_f("a", _enum(["X", "Y"]))), _rec(_f("a", _enum(["X"]))), id="enum-symbol-added"),
    pytest.param(
        _rec(_f("a", _enum(["X", "U"], default="U"))),
        _rec(_f("a", _enum(["X", "Y"]))),
        id="enum-symbol-removed-with-default",
    ),
    pytest.param(
        _rec(_f("a", "int"), name="New", aliases=["Old"]),
        _rec(_f("a", "int"), name="Old"),
        id="record-renamed-with-short-alias",
    ),
    pytest.param(
        _rec(_f("a", "int"), name="New", aliases=["t.Old"]),
        _rec(_f("a", "int"), name="Old"),
        id="record-renamed-with-full-alias",
    ),
    pytest.param(_rec(_f("b", "int", aliases=["a"])), _rec(_f("a", "int")), id="field-renamed-with-alias"),
    pytest.param(_rec(_f("a", ["null", "string"], default=None)), _rec(_f("a", "string")), id="made-nullable"),
    pytest.param(
        _rec(_f("a", ["null", "long", "string"])), _rec(_f("a", ["null", "int"])), id="union-widened-with-promotion"
    ),
    pytest.param(
        _rec(_f("a", {"type": "array", "items": "long"})),
        _rec(_f("a", {"type": "array", "items": "int"})),
        id="array-item-promotion",
    ),
    pytest.param(
        _rec(_f("t", {"type": "long", "logicalType": "timestamp-millis"})),
        _rec(_f("t", "long")),
        id="logical-type-annotates-plain-long",
    ),
    pytest.param(
        _rec(_f("a", "int"), name="R", namespace="new.ns"),
        _rec(_f("a", "int")),
        id="namespace-changed-same-unqualified-name",
    ),
]


@pytest.mark.parametrize(("reader", "writer"), COMPATIBLE)
def test_compatible_changes_pass(reader: dict[str, Any], writer: dict[str, Any]) -> None:
    assert check_backward(reader, writer) == []


def test_recursive_schemas_terminate() -> None:
    def linked(value_type: str) -> dict[str, Any]:
        return _rec(_f("value", value_type), _f("next", ["null", "R"], default=None))

    assert check_backward(linked("long"), linked("int")) == []
    assert check_backward(linked("int"), linked("long")) == ["R.value: type changed from long to int (not a promotion)"]


def test_already_parsed_schemas_are_accepted() -> None:
    assert check_backward(schemas.load_schema("ImageCached"), schemas.load_released("v1", "ImageCached")) == []
    linked = _rec(_f("value", "int"), _f("next", ["null", "R"], default=None))
    assert check_backward(fastavro.parse_schema(linked), linked) == []


def test_invalid_schemas_raise_value_error() -> None:
    with pytest.raises(ValueError, match="reader schema is not valid Avro"):
        check_backward({"type": "nosuch"}, _rec())
    with pytest.raises(ValueError, match="writer schema is not valid Avro"):
        check_backward(_rec(), {"type": "record", "name": "R", "fields": [{"name": "a", "type": "zzz"}]})


# --- cross-check the verdicts against Apache Avro's SchemaCompatibility ------------------------------

_PRIMS = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]


def _is_named(schema: Any) -> bool:
    return isinstance(schema, dict) and schema["type"] in ("record", "enum", "fixed")


@st.composite
def _schemas(draw: st.DrawFn, path: str = "N", depth: int = 2) -> Any:
    # Named types are named by position, so reader and writer types at the same spot share a name.
    kinds = ["prim"] if depth == 0 else ["prim", "prim", "enum", "fixed", "array", "map", "union", "record"]
    kind = draw(st.sampled_from(kinds))
    if kind == "prim":
        return draw(st.sampled_from(_PRIMS))
    if kind == "enum":
        symbols = draw(st.lists(st.sampled_from(["A", "B", "C"]), min_size=1, max_size=3, unique=True))
        enum: dict[str, Any] = {"type": "enum", "name": path, "symbols": symbols}
        if draw(st.booleans()):
            enum["default"] = draw(st.sampled_from(symbols))
        return enum
    if kind == "fixed":
        return {"type": "fixed", "name": path, "size": draw(st.sampled_from([1, 2]))}
    if kind == "array":
        return {"type": "array", "items": draw(_schemas(f"{path}_i", depth - 1))}
    if kind == "map":
        return {"type": "map", "values": draw(_schemas(f"{path}_v", depth - 1))}
    if kind == "union":
        branches = draw(st.lists(st.sampled_from(_PRIMS), min_size=1, max_size=3, unique=True))
        if draw(st.booleans()):
            branches.append(draw(_schemas(f"{path}_u", depth - 1).filter(_is_named)))
        return branches
    names = draw(st.lists(st.sampled_from(["a", "b", "c"]), max_size=3, unique=True))
    fields = []
    for name in names:
        field: dict[str, Any] = {"name": name, "type": draw(_schemas(f"{path}_{name}", depth - 1))}
        if draw(st.booleans()):
            field["default"] = _default_for(field["type"])
        fields.append(field)
    return {"type": "record", "name": path, "fields": fields}


_PRIMITIVE_DEFAULTS: dict[str, Any] = {
    "null": None,
    "boolean": False,
    "int": 0,
    "long": 0,
    "float": 0.0,
    "double": 0.0,
    "bytes": "",
    "string": "",
}


def _default_for(schema: Any) -> Any:
    if isinstance(schema, str):
        return _PRIMITIVE_DEFAULTS[schema]
    if isinstance(schema, list):
        return _default_for(schema[0])  # a union's default belongs to its first branch
    kind = schema["type"]
    if kind == "enum":
        return schema["symbols"][0]
    if kind == "fixed":
        return "\u0000" * schema["size"]
    if kind == "array":
        return []
    if kind == "map":
        return {}
    return {f["name"]: _default_for(f["type"]) for f in schema["fields"]}


def _apache_compatible(reader: Any, writer: Any) -> bool:
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        reader=avro.schema.parse(json.dumps(reader)), writer=avro.schema.parse(json.dumps(writer))
    )
    return result.compatibility is SchemaCompatibilityType.compatible


_PROMOTED = {
    "int": ["long", "float", "double"],
    "long": ["float", "double"],
    "float": ["double"],
    "string": ["bytes"],
    "bytes": ["string"],
}


@st.composite
def _evolved(draw: st.DrawFn, schema: Any, path: str = "N") -> Any:
    """A reader made from ``schema`` by the kind of edits schema authors make (some break it)."""
    if draw(st.integers(0, 4)) == 0:
        return draw(_schemas(path, 1))  # replaced outright
    if isinstance(schema, str):
        return draw(st.sampled_from([schema, *_PROMOTED.get(schema, [])]))
    if isinstance(schema, list):
        # A named branch stays named: replaced by a primitive it could repeat one of the others, which is no
        # valid union (Apache Avro refuses to parse ["null", "null"]).
        branches = [draw(_evolved(b, f"{path}_u").filter(_is_named)) if isinstance(b, dict) else b for b in schema]
        extra = [p for p in _PRIMS if p not in branches]
        if extra and draw(st.booleans()):
            branches.append(draw(st.sampled_from(extra)))
        if len(branches) > 1 and draw(st.booleans()):
            branches.pop(draw(st.integers(0, len(branches) - 1)))
        return branches
    schema = dict(schema)
    kind = schema["type"]
    if kind == "array":
        schema["items"] = draw(_evolved(schema["items"], f"{path}_i"))
    elif kind == "map":
        schema["values"] = draw(_evolved(schema["values"], f"{path}_v"))
    elif kind == "fixed" and draw(st.booleans()):
        schema["size"] = draw(st.sampled_from([1, 2]))
    elif kind == "enum":
        schema["symbols"] = draw(st.lists(st.sampled_from(["A", "B", "C"]), min_size=1, max_size=3, unique=True))
        schema.pop("default", None)
        if draw(st.booleans()):
            schema["default"] = draw(st.sampled_from(schema["symbols"]))
    elif kind == "record":
        fields = []
        for field in schema["fields"]:
            if draw(st.integers(0, 5)) == 0:
                continue  # dropped
            new_type = draw(_evolved(field["type"], f"{path}_{field['name']}"))
            fields.append({"name": field["name"], "type": new_type})
            if draw(st.booleans()):
                fields[-1]["default"] = _default_for(new_type)
        unused = [n for n in ["a", "b", "c"] if n not in {f["name"] for f in fields}]
        if unused and draw(st.booleans()):
            name = draw(st.sampled_from(unused))
            new_type = draw(_schemas(f"{path}_{name}", 1))
            fields.append({"name": name, "type": new_type})
            if draw(st.booleans()):
                fields[-1]["default"] = _default_for(new_type)
        schema["fields"] = fields
    return schema


@st.composite
def _pairs(draw: st.DrawFn) -> tuple[Any, Any]:
    """(reader, writer): half independent, half a reader evolved from the writer."""
    writer = draw(_schemas())
    reader = draw(st.one_of(_schemas(), _evolved(writer)))
    return reader, writer


@settings(max_examples=600, deadline=None)
@given(pair=_pairs())
def test_verdicts_agree_with_apache_avro(pair: tuple[Any, Any]) -> None:
    reader, writer = pair
    assert (check_backward(reader, writer) == []) == _apache_compatible(reader, writer)


@settings(max_examples=400, deadline=None)
@given(pair=_pairs(), data=st.data())
def test_compatible_verdicts_mean_fastavro_decodes_old_data(pair: tuple[Any, Any], data: st.DataObject) -> None:
    reader, writer = pair
    if check_backward(reader, writer):
        return
    parsed_writer = fastavro.parse_schema(writer)
    parsed_reader = fastavro.parse_schema(reader)
    # The spec lets a string reader read bytes; only UTF-8 bytes can succeed, so write those.
    value = data.draw(values_for(parsed_writer, utf8_bytes=True))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, parsed_writer, value)
    body.seek(0)
    fastavro.schemaless_reader(body, parsed_writer, parsed_reader)
