"""Apache Avro's (Java) verdict on schema pairs: devstack/avro/AvroCompat.java runs Avro's
ReaderWriterCompatibilityChecker (SchemaCompatibility.checkReaderWriterCompatibility) over every pair in one JVM.

The Avro jars come from Maven Central through the devstack installer (cached under ~/.cache/layerfill); the
program runs with `java`'s single-file source launcher, so nothing is compiled into the repository.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).resolve().parents[2] / "devstack" / "avro" / "AvroCompat.java"


class AvroEngineUnavailable(RuntimeError):
    """Java or the Avro jars are missing, or the checker failed to run."""


@dataclass(frozen=True)
class AvroIncompatibility:
    type: str  # Avro's SchemaIncompatibilityType, e.g. READER_FIELD_MISSING_DEFAULT_VALUE
    location: str  # JSON pointer into the reader schema, e.g. /fields/2/type
    message: str
    reader: str
    writer: str


@dataclass(frozen=True)
class AvroVerdict:
    compatible: bool
    incompatibilities: tuple[AvroIncompatibility, ...] = ()
    error: str | None = None  # Avro could not parse one of the schemas


def _source() -> Path:
    if SOURCE.is_file():
        return SOURCE
    # Installed (not an editable checkout): the program ships inside layerfill.devstack.
    import layerfill.devstack

    return Path(layerfill.devstack.__file__).parent / "avro" / "AvroCompat.java"


def avro_classpath() -> str:
    """The Avro jars, installed (idempotently, from Maven Central) by the devstack installer."""
    from layerfill.devstack.install import Installer, InstallError
    from layerfill.devstack.paths import default_paths

    try:
        lib = Installer(default_paths(), log=lambda _m: None).avro()
    except (InstallError, OSError) as exc:
        raise AvroEngineUnavailable(f"cannot install Apache Avro's jars: {exc}") from exc
    return str(lib / "*")


def check_pairs(
    pairs: Sequence[tuple[str, Any, Any]], *, classpath: str | None = None, timeout: float = 180.0
) -> dict[str, AvroVerdict]:
    """Avro's verdict on each (id, reader schema JSON, writer schema JSON), by id."""
    if not pairs:
        return {}
    java = shutil.which("java")
    if java is None:
        raise AvroEngineUnavailable("java is not installed (Debian: openjdk-17-jre-headless)")
    doc = json.dumps([{"id": i, "reader": r, "writer": w} for i, r, w in pairs])
    argv = [java, "-cp", classpath or avro_classpath(), str(_source())]
    try:
        res = subprocess.run(argv, input=doc, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AvroEngineUnavailable(f"Avro's checker did not answer within {timeout:.0f}s") from exc
    if res.returncode != 0:
        raise AvroEngineUnavailable(f"Avro's checker failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
    out: dict[str, AvroVerdict] = {}
    for item in json.loads(res.stdout):
        found = tuple(AvroIncompatibility(**i) for i in item.get("incompatibilities", []))
        out[item["id"]] = AvroVerdict(bool(item["compatible"]), found, item.get("error"))
    return out


def readable_location(reader: Any, pointer: str) -> str:
    """A JSON pointer into the reader schema as the field path layerfill's messages use
    (``/fields/1/type/items/fields/0/type`` -> ``ImageCached.manifests[].digest``)."""
    node = reader
    path = reader.get("name", "$").rpartition(".")[2] if isinstance(reader, dict) else "$"
    tokens = [t for t in pointer.split("/") if t]
    i = 0
    while i < len(tokens):
        token = tokens[i]
        try:
            if token == "fields" and i + 1 < len(tokens):
                node = node["fields"][int(tokens[i + 1])]
                path += f".{node['name']}"
                i += 2
                continue
            if token == "items":
                path += "[]"
            elif token == "values":
                path += "{}"
            node = node[int(token)] if isinstance(node, list) else node[token]
        except (KeyError, IndexError, ValueError, TypeError):
            break  # a pointer into a named type's reference: the path so far is the best there is
        i += 1
    return path
