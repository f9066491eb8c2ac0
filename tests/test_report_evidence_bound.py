"""Evidence items are bounded in readiness.json and index.html (evidence_item_max_bytes,
64 KiB by default); the whole item is a file of the bundle, linked from the report and
covered by the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import Project, criteria
from opsready.report.manifest import verify_bundle

pytest_plugins = ["pytester"]

BIG = 5 * 1024 * 1024
CHECK = f"""
import pytest
pytestmark = [pytest.mark.ticket("P2-002")]

def test_big(evidence):
    '''A server answered with a huge body'''
    evidence.record("body", "A" * {BIG} + "<script>alert(1)</script>")
    evidence.attach("report.md", "# drill\\n" + "row\\n" * {BIG // 4}, "text/markdown")
    evidence.attach("dump.bin", bytes(range(256)) * {BIG // 256})
    evidence.table("rows", [{{"n": i, "text": "x" * 100}} for i in range(60000)], note="many rows")
    evidence.record("headers", {{"vary": "Origin"}})
    evidence.measure("latency_s", 0.2, "s")
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    project = Project(pytester)
    project.check("test_p2_002_big.py", CHECK)
    return project


def test_a_5_mb_item_is_cut_to_the_bound_and_saved_whole(project: Project) -> None:
    _, data = project.run("--opsready-gate", "none", out="big")
    out = project.root / "reports" / "big"
    assert (out / "readiness.json").stat().st_size < 600 * 1024
    assert (out / "index.html").stat().st_size < 2 * 1024 * 1024
    items = {i["name"]: i for i in criteria(data, "P2-002")["test_big"]["evidence"]}
    assert set(items) == {"body", "report.md", "dump.bin", "rows", "headers", "latency_s"}
    for name in ("body", "report.md", "dump.bin", "rows"):
        cut = items[name]["cut"]
        assert cut["original_bytes"] > BIG
        assert cut["kept_bytes"] <= 64 * 1024
        assert len(json.dumps(items[name], separators=(",", ":")).encode()) <= 64 * 1024
    assert "cut" not in items["headers"] and "cut" not in items["latency_s"]

    body = out / items["body"]["cut"]["file"]
    assert body.read_text().endswith("<script>alert(1)</script>")
    assert len(body.read_text()) == BIG + len("<script>alert(1)</script>")
    assert (out / items["dump.bin"]["cut"]["file"]).read_bytes() == bytes(range(256)) * (BIG // 256)
    rows = json.loads((out / items["rows"]["cut"]["file"]).read_text())["rows"]
    assert len(rows) == 60000 and 0 < len(items["rows"]["rows"]) < 60000
    assert items["report.md"]["cut"]["file"].endswith("report.md")

    page = (out / "index.html").read_text()
    for name in ("body", "report.md", "dump.bin", "rows"):
        assert f'<a href="{items[name]["cut"]["file"]}">' in page
    assert "cut from 5.0 MiB to fit the bound" in page
    assert "<script>alert(1)</script>" not in page
    check = verify_bundle(out)
    assert check.ok, check.describe()
    listed = (out / "MANIFEST.sha256").read_text()
    assert items["body"]["cut"]["file"] in listed


def test_the_bound_is_configurable(project: Project) -> None:
    project.env.write_text("evidence_item_max_bytes: 4096\n")
    project.check("test_p2_002_big.py", """
import pytest
pytestmark = [pytest.mark.ticket("P2-002")]

def test_mid(evidence):
    '''A mid-sized body'''
    evidence.record("body", "B" * 20000)
""")
    _, data = project.run("--opsready-gate", "none", out="small")
    item = criteria(data, "P2-002")["test_mid"]["evidence"][0]
    assert item["cut"]["kept_bytes"] <= 4096
    assert item["value"].startswith("B" * 1000)
    assert (project.root / "reports" / "small" / item["cut"]["file"]).read_text() == "B" * 20000


def test_an_item_under_the_bound_is_left_alone(project: Project) -> None:
    project.check("test_p2_002_big.py", """
import pytest
pytestmark = [pytest.mark.ticket("P2-002")]

def test_small(evidence):
    '''A small body'''
    evidence.record("body", "C" * 60000)
""")
    _, data = project.run("--opsready-gate", "none", out="fits")
    item = criteria(data, "P2-002")["test_small"]["evidence"][0]
    assert item == {"name": "body", "kind": "value", "value": "C" * 60000}
    assert not (project.root / "reports" / "fits" / "evidence").exists()


@pytest.mark.parametrize("value", ["0", "512", "-1", "1e100"])
def test_a_bound_below_1_kib_or_absurd_is_a_config_error(project: Project, value: str, tmp_path: Path) -> None:
    project.env.write_text(f"evidence_item_max_bytes: {value}\n")
    result, data = project.run("--opsready-gate", "none", out="bad")
    assert result.ret == 4 and data == {}
    assert "evidence_item_max_bytes" in result.stderr.str() + result.stdout.str()
