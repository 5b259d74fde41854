"""`layerfill schemas check`'s engine: Apache Avro's (Java) ReaderWriterCompatibilityChecker decides, layerfill's
messages explain. Runs the real checker (java + the Avro jars the devstack installer caches); no services."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from layerfill import schemas
from layerfill.cli.main import app
from layerfill.serde.avro_java import AvroIncompatibility, AvroVerdict, check_pairs, readable_location
from layerfill.serde.compat import check_all, explain_avro, main

pytestmark = pytest.mark.unit


def _store(tmp_path: Path) -> Path:
    root = tmp_path / "schemas"
    shutil.copytree(schemas.SCHEMA_DIR, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return root


def _edit(root: Path, name: str, change: Any) -> None:
    path = root / f"{name}.avsc"
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw, indent=2))


def test_avro_finds_the_shipped_schemas_compatible() -> None:
    assert check_all(engine="avro") == {name: [] for name in schemas.schema_names()}


def test_avro_refuses_an_incompatible_change_and_layerfill_explains_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _store(tmp_path)
    _edit(root, "LayerCached", lambda raw: next(f for f in raw["fields"] if f["name"] == "size").update(type="string"))
    _edit(root, "ManifestPulled", lambda raw: raw["fields"].append({"name": "region", "type": "string", "doc": "x"}))
    store = schemas.SchemaStore(root)
    results = check_all(store, engine="avro")
    assert results["LayerCached"] == ["v1: LayerCached.size: type changed from long to string (not a promotion)"]
    assert results["ManifestPulled"] == [
        "v1: ManifestPulled.region: field added without a default (data written with the old schema has no "
        "value for it)"
    ]
    assert results["ImageCached"] == [] and results["ImageScanned"] == []
    assert main(["--schemas-dir", str(root)]) == 1  # the module's default engine is Avro's
    assert "INCOMPATIBLE LayerCached: v1: LayerCached.size" in capsys.readouterr().out


def test_avros_own_verdict_on_pairs() -> None:
    writer = {"type": "record", "name": "E", "fields": [{"name": "a", "type": "int"}]}
    added = {"type": "record", "name": "E", "fields": [*writer["fields"], {"name": "b", "type": "string"}]}
    widened = {"type": "record", "name": "E", "fields": [{"name": "a", "type": "long"}]}
    verdicts = check_pairs([("added", added, writer), ("widened", widened, writer), ("bad", {"type": "nope"}, writer)])
    assert not verdicts["added"].compatible
    [found] = verdicts["added"].incompatibilities
    assert (found.type, found.location) == ("READER_FIELD_MISSING_DEFAULT_VALUE", "/fields/1")
    assert verdicts["widened"].compatible and verdicts["widened"].incompatibilities == ()
    assert verdicts["bad"].error and not verdicts["bad"].compatible


def test_where_layerfill_has_no_words_avros_are_used_with_a_field_path() -> None:
    reader = {
        "type": "record",
        "name": "io.layerfill.events.ImageCached",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "manifests", "type": {"type": "array", "items": {"type": "record", "name": "M",
                                                                        "fields": [{"name": "digest", "type": "string"}]}}},
        ],
    }  # fmt: skip
    assert readable_location(reader, "/fields/1/type/items/fields/0/type") == "ImageCached.manifests[].digest"
    verdict = AvroVerdict(
        False, (AvroIncompatibility("TYPE_MISMATCH", "/fields/0/type", "reader type: STRING not compatible", "s", "w"),)
    )
    # The Python checker finds this pair compatible, Avro (as told here) does not: Avro decides, in its words.
    assert explain_avro(reader, reader, verdict) == [
        "ImageCached.id: reader type: STRING not compatible (Avro TYPE_MISMATCH; reader s, writer w)"
    ]
    # Compatible for Avro: nothing, except layerfill's one extra rule (a logical type that changes meaning).
    logical_w = {"type": "record", "name": "T", "fields": [{"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}  # fmt: skip
    logical_r = {"type": "record", "name": "T", "fields": [{"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}}]}  # fmt: skip
    assert explain_avro(logical_r, logical_w, AvroVerdict(True)) == [
        "T.at: logical type changed from timestamp-millis to timestamp-micros (same bytes, new meaning)"
    ]
    assert explain_avro(logical_r, logical_r, AvroVerdict(True)) == []


def test_schemas_check_cli_uses_avro() -> None:
    res = CliRunner().invoke(app, ["schemas", "check"])
    assert res.exit_code == 0, res.output
    assert "ManifestPulled: backward compatible" in res.output
    bad = CliRunner().invoke(app, ["schemas", "check", "--engine", "jvm"])
    assert bad.exit_code == 2 and "avro or python" in bad.output
