"""A worker takes whole check modules (``--dist loadfile``), so ``opsready verify -n N``
starts no more workers than the modules it selects: a worker without a module would only
cost an interpreter and its imports."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import ROOT, child_env, default_plan, opsready_command, write_plan
from opsready.cli import _selected_modules

COUNT = '''
import os, pytest

pytestmark = [pytest.mark.ticket("{ticket}")]


def test_workers(evidence):
    """The run says how many workers it started"""
    evidence.record("workers", os.environ.get("PYTEST_XDIST_WORKER_COUNT"))
'''


def _modules(base: Path) -> Path:
    checks = base / "checks"
    checks.mkdir()
    for name, ticket in (("test_p2_004_a.py", "P2-004"), ("test_p2_004_b.py", "P2-004"),
                         ("test_p3_003_c.py", "P3-003")):
        source = COUNT.format(ticket=ticket)
        (checks / name).write_text(source)
        write_plan(checks / name, default_plan(source))
    return checks


def test_the_modules_a_selection_can_collect_are_counted(tmp_path: Path) -> None:
    checks = _modules(tmp_path)
    assert _selected_modules(checks, None) == 3
    assert _selected_modules(checks, ("P2-004",)) == 2
    assert _selected_modules(checks, ("P3-003",)) == 1
    assert _selected_modules(checks / "test_p3_003_c.py", None) == 1
    # Nothing to collect: still one, so -n keeps meaning workers.
    assert _selected_modules(checks, ("P1-002",)) == 1


def test_a_run_of_one_module_starts_one_worker(tmp_path: Path) -> None:
    checks = _modules(tmp_path)
    env = tmp_path / "env.yaml"
    env.write_text("name: workers\n")
    out = tmp_path / "report"
    proc = subprocess.run(
        [*opsready_command(), "verify", "--checks", str(checks), "--env", str(env), "--root", str(ROOT),
         "--reports-root", str(tmp_path / "reports"), "--out", str(out), "--gate", "none", "-n", "4",
         "--ticket", "P3-003"],
        capture_output=True, text=True, cwd=ROOT, env=child_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((out / "readiness.json").read_text())
    [criterion] = [c for t in data["tickets"] for c in t["criteria"]]
    assert criterion["outcome"] == "pass"
    assert {e["name"]: e["value"] for e in criterion["evidence"]}["workers"] == "1"
