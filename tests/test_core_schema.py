"""docs/readiness-schema.md and docs/readiness.schema.json stay equal to the readiness model,
and a real readiness.json validates against the documented schema."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from conftest import Project, statuses
from opsready.report.model import Readiness

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "readiness-schema.md"
SCHEMA_FILE = ROOT / "docs" / "readiness.schema.json"


def model_schema() -> dict[str, Any]:
    return Readiness.model_json_schema(by_alias=True, mode="serialization")


def documented() -> dict[str, dict[str, str]]:
    """Model name -> documented key -> its type cell, from the `### `Name`` sections."""
    found: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        heading = re.fullmatch(r"### `(\w+)`", line.strip())
        if heading:
            current = found.setdefault(heading.group(1), {})
            continue
        if line.startswith("## "):
            current = None
        if current is None or not line.startswith("| `"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        for key in re.findall(r"`([^`]+)`", cells[0]):
            current[key] = cells[1]
    return found


def _enum_values(prop: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    """The literal values a property can take (through anyOf and list items)."""
    values: set[str] = set()
    for part in [prop, *prop.get("anyOf", []), prop.get("items", {})]:
        values.update(str(v) for v in part.get("enum", []))
        if "const" in part:
            values.add(str(part["const"]))
    return values


def test_every_model_and_field_is_documented_and_nothing_else() -> None:
    schema = model_schema()
    defs = schema["$defs"]
    models = {name: d["properties"] for name, d in defs.items() if "properties" in d}
    models["Readiness"] = schema["properties"]
    doc = documented()
    assert set(doc) == set(models), (
        f"docs/readiness-schema.md sections {sorted(doc)} differ from the models {sorted(models)}")
    for name, props in models.items():
        assert set(doc[name]) == set(props), (
            f"{name}: documented keys {sorted(doc[name])}, model fields {sorted(props)}")
        for key, prop in props.items():
            for value in _enum_values(prop, defs):
                assert f"`{value}`" in doc[name][key], (
                    f"{name}.{key}: the type column does not name the value `{value}`")


def test_the_schema_file_is_the_model_schema() -> None:
    on_disk = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert on_disk == model_schema(), (
        "docs/readiness.schema.json is stale; regenerate it with Readiness.model_json_schema("
        "by_alias=True, mode='serialization')")


def test_a_written_readiness_json_validates_against_the_documented_schema(pytester: pytest.Pytester) -> None:
    project = Project(pytester)
    project.check("test_p2_002_x.py", """
        import pytest
        import opsready
        pytestmark = pytest.mark.ticket("P2-002")

        def test_a(evidence):
            '''It holds'''
            evidence.record("headers", {"vary": "Origin"})
            evidence.measure("latency_s", 0.012, "s")
            evidence.table("origins", [{"origin": "https://a", "allowed": True}], note="two origins")
            evidence.attach("raw.bin", bytes([0, 255]), "application/octet-stream")

        def test_b():
            '''Not applicable'''
            opsready.not_applicable("credentials are off")
    """)
    _, data = project.run("--opsready-gate", "none")
    assert statuses(data)["P2-002"] == "done"
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.validate(data, schema, format_checker=jsonschema.FormatChecker())
    assert Readiness.model_validate(data).dump_json() == json.dumps(data, indent=2) + "\n"
