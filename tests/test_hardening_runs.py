"""Runs under stress: signals (SIGTERM, Ctrl-C twice), the run deadline, interrupted criteria,
concurrent runs in one reports root, report files that cannot be written, and ``--plan``,
which must not open a socket.

Each test runs the real ``opsready verify`` on small check modules of its own."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, child_env, default_plan, finish_process, opsready_command, write_plan
from opsready.report.manifest import verify_bundle

# A drill-like criterion: it says when it started, blocks, and cleans up (slowly) on the way out.
DRILL = """
import os, time, pytest
from pathlib import Path

pytestmark = [pytest.mark.ticket("P1-002")]
MARKS = Path(os.environ["OPSREADY_TEST_MARKS"])

def test_quick():
    '''A quick criterion that holds.'''

@pytest.mark.intrusive("restore_drill")
def test_drill():
    '''A long drill that cleans up after itself.'''
    (MARKS / "started").write_text("x")
    try:
        time.sleep(120)
    finally:
        (MARKS / "cleanup-started").write_text("x")
        time.sleep(float(os.environ.get("OPSREADY_TEST_CLEANUP_S", "0")))
        (MARKS / "cleaned").write_text("x")
"""


class Run:
    """One ``opsready verify`` in the background."""

    def __init__(self, tmp: Path, *args: str, module: str = DRILL, name: str = "test_p1_002_drill.py",
                 environ: dict[str, str] | None = None, out: Path | None = None) -> None:
        self.tmp = tmp
        self.checks = tmp / "checks"
        self.checks.mkdir(parents=True, exist_ok=True)
        (self.checks / name).write_text(module)
        write_plan(self.checks / name, default_plan(module))
        self.marks = tmp / "marks"
        self.marks.mkdir(exist_ok=True)
        env = tmp / "env.yaml"
        env.write_text("allow_intrusive: [restore_drill]\n")
        self.out = out or tmp / "reports" / "run"
        self.command = [*opsready_command(), "verify", "--checks", str(self.checks), "--env", str(env),
                        "--root", str(ROOT), "--reports-root", str(tmp / "reports"), "--out", str(self.out),
                        "--gate", "none", *args]
        self.proc = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            env={**child_env(), "OPSREADY_TEST_MARKS": str(self.marks), **(environ or {})},
        )

    def wait_for(self, mark: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not (self.marks / mark).exists():
            if self.proc.poll() is not None:
                pytest.fail(f"the run ended before {mark!r}:\n{self.proc.communicate()[0]}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"no {mark!r} within {timeout}s:\n{self.proc.communicate()[0]}")
            time.sleep(0.1)

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        return finish_process(self.proc, timeout)

    def readiness(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.out / "readiness.json").read_text())
        return data


def _criteria(data: dict[str, Any], ticket: str) -> dict[str, dict[str, Any]]:
    found = next(t for t in data["tickets"] if t["id"] == ticket)
    return {c["id"].split("::", 1)[1]: c for c in found["criteria"]}


def _status(data: dict[str, Any], ticket: str) -> str:
    return str(next(t for t in data["tickets"] if t["id"] == ticket)["status"])


def _history(tmp: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp / "reports" / "history.jsonl").read_text().splitlines()]


def _assert_interrupted_report(run: Run, code: int, output: str, why: str) -> None:
    _assert_partial_run(run, code, output, why, ("test_drill",))
    assert "Traceback" not in output, output
    assert (run.marks / "cleaned").exists(), "the criterion's clean-up did not run"


def _assert_partial_run(run: Run, code: int, output: str, why: str, not_run: tuple[str, ...]) -> dict[str, Any]:
    """Exit 2; P1-002's test_quick passed and each of ``not_run`` is a not-covered "not run"
    whose reason matches ``why`` (a regular expression); the ticket is unverified in the report
    and the history, the bundle intact, and the page says the run is partial."""
    assert code == 2, output
    data = run.readiness()
    assert data["run"]["interrupted"] is True
    crit = _criteria(data, "P1-002")
    assert crit["test_quick"]["outcome"] == "pass"
    for name in not_run:
        skipped = crit[name]
        assert skipped["outcome"] == "skip" and skipped["skip_kind"] == "not_covered", skipped
        assert re.match(rf"not run: .*{why}", skipped["message"]), skipped["message"]
    # A ticket missing a criterion is never done, in the report and in the history.
    assert _status(data, "P1-002") == "unverified"
    assert _history(run.tmp)[-1]["statuses"]["P1-002"] == "unverified"
    assert verify_bundle(run.out).ok, verify_bundle(run.out).describe()
    what = "1 criterion" if len(not_run) == 1 else f"{len(not_run)} criteria"
    _assert_the_page_says_it_is_partial(run, f"This run did not finish: {what} did not run")
    return data


def _assert_the_page_says_it_is_partial(run: Run, notice: str) -> None:
    """The HTML report says, before its table, that the run is partial."""
    page = (run.out / "index.html").read_text(encoding="utf-8")
    verdict = re.search(r'<p class="verdict" id="verdict">([^<]*)</p>', page)
    assert verdict is not None and ("the run did not finish" in verdict.group(1)
                                    or "not used" in verdict.group(1)), page[:2000]
    assert notice in page and page.index(notice) < page.index("<h2>Readiness</h2>")


@pytest.mark.parametrize("workers", ["0", "2"])
def test_sigterm_cleans_up_writes_a_partial_report_and_exits_2(tmp_path: Path, workers: str) -> None:
    run = Run(tmp_path, "-n", workers)
    run.wait_for("started")
    # To the controller only, as a scheduler's stop would: workers hear it from the controller.
    run.proc.send_signal(signal.SIGTERM)
    code, output = run.finish()
    _assert_interrupted_report(run, code, output, "SIGTERM")


def test_a_second_ctrl_c_lets_the_clean_up_finish_without_a_traceback(tmp_path: Path) -> None:
    run = Run(tmp_path, "-n", "0", environ={"OPSREADY_TEST_CLEANUP_S": "3"})
    run.wait_for("started")
    run.proc.send_signal(signal.SIGINT)
    run.wait_for("cleanup-started")
    run.proc.send_signal(signal.SIGINT)
    code, output = run.finish()
    assert "already stopping" in output
    _assert_interrupted_report(run, code, output, "Ctrl-C")


def test_the_run_deadline_ends_the_run_as_interrupted_with_a_report(tmp_path: Path) -> None:
    begun = time.monotonic()
    run = Run(tmp_path, "-n", "0", "--deadline", "8")
    code, output = run.finish()
    assert time.monotonic() - begun < 90
    assert "interrupted: the run deadline of 8s passed" in output
    _assert_interrupted_report(run, code, output, "deadline")


def test_an_interrupted_criterion_never_reads_as_passed(tmp_path: Path) -> None:
    """The drill's setup passed, then the run stopped inside it: it is not run, not pass."""
    module = DRILL.replace("time.sleep(120)", "raise KeyboardInterrupt")
    run = Run(tmp_path, "-n", "0", module=module)
    code, output = run.finish()
    _assert_interrupted_report(run, code, output, "interrupted")


THREE = """
import pytest
pytestmark = [pytest.mark.ticket("P1-002")]

def test_quick():
    '''Holds.'''

def test_breaks_a_plugin():
    '''Holds, but a plugin fails on its report.'''

def test_after():
    '''Never runs.'''
"""

# A plugin whose hook fails mid-run: pytest reports INTERNALERROR and stops.
BROKEN_PLUGIN = """
def pytest_runtest_logreport(report):
    if report.when == "call" and report.nodeid.endswith("test_breaks_a_plugin"):
        raise RuntimeError("a plugin broke")
"""


@pytest.mark.parametrize("workers", ["0", "2"])
def test_an_internal_error_ends_the_run_as_interrupted_never_as_passed(tmp_path: Path, workers: str) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "broken_hook.py").write_text(BROKEN_PLUGIN)
    path = os.pathsep.join(p for p in (str(plugins), os.environ.get("PYTHONPATH", "")) if p)
    run = Run(tmp_path, "-n", workers, module=THREE,
              environ={"PYTHONPATH": path, "PYTEST_ADDOPTS": "-p broken_hook"})
    code, output = run.finish()
    assert "INTERNALERROR" in output and "a plugin broke" in output, output
    # pytest prints no summary after an internal error; the table and the report path still show.
    assert "interrupted: an internal error" in output and "report: " in output, output
    # The gate is off, yet the run did not finish: exit 2, never 0.
    _assert_partial_run(run, code, output, "an internal error", ("test_after",))


CRASHES_ITS_WORKER = """
import os, pytest
from pathlib import Path

pytestmark = [pytest.mark.ticket("P1-002")]

def test_quick():
    '''Holds.'''

@pytest.mark.intrusive("restore_drill")
def test_drill():
    '''Kills the process it runs in.'''
    with (Path(os.environ["OPSREADY_TEST_MARKS"]) / "drill-runs").open("a") as fh:
        fh.write("x")
    os._exit(3)

def test_after():
    '''Never runs.'''
"""


def test_a_crashed_worker_is_not_replaced_and_the_run_ends_as_interrupted(tmp_path: Path) -> None:
    other = tmp_path / "checks" / "test_p3_002_other.py"
    other.parent.mkdir(parents=True)
    other.write_text(QUICK.replace("P2-002", "P3-002"))
    write_plan(other, default_plan(QUICK))
    run = Run(tmp_path, "-n", "2", module=CRASHES_ITS_WORKER)
    code, output = run.finish()
    # Once: xdist would otherwise hand the module, the drill included, to a new worker.
    assert (run.marks / "drill-runs").read_text() == "x", output
    assert re.search(r"interrupted: worker gw\d crashed", output), output
    data = _assert_partial_run(run, code, output, r"worker gw\d crashed", ("test_drill", "test_after"))
    # The other worker's module is judged as usual.
    assert _criteria(data, "P3-002")["test_a"]["outcome"] == "pass"


DOES_NOT_IMPORT = """
import pytest
pytestmark = [pytest.mark.ticket("P3-002")]

def test_a(:
    '''Never collected.'''
"""


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_module_that_does_not_import_is_named_and_the_others_still_run(tmp_path: Path, workers: str) -> None:
    broken = tmp_path / "checks" / "test_p3_002_broken.py"
    broken.parent.mkdir(parents=True)
    broken.write_text(DOES_NOT_IMPORT)
    write_plan(broken, {"test_a": {"contacts": []}})
    run = Run(tmp_path, "-n", workers, module=QUICK, name="test_p2_002_quick.py")
    code, output = run.finish()
    assert code == 4, output
    assert ("check module not used: test_p3_002_broken.py: could not be collected (SyntaxError: "
            "invalid syntax); none of its criteria ran") in output, output
    data = run.readiness()
    assert data["run"]["interrupted"] is False
    assert any("test_p3_002_broken.py" in e for e in data["scope"]["module_errors"])
    assert _criteria(data, "P2-002")["test_a"]["outcome"] == "pass"
    assert _status(data, "P3-002") == "unverified"
    _assert_the_page_says_it_is_partial(run, "Check module not used: test_p3_002_broken.py: could not be collected")
    # --plan says the same, and exits 4 too.
    plan = subprocess.run([*run.command[:-2], "--plan", "--out", str(tmp_path / "plan")], capture_output=True,
                          text=True, cwd=ROOT, env=child_env(), timeout=120)
    assert plan.returncode == 4, plan.stdout + plan.stderr
    assert "check module not used: test_p3_002_broken.py: could not be collected" in plan.stdout


def test_with_ticket_a_module_of_another_ticket_is_not_imported(tmp_path: Path) -> None:
    """``--ticket P2-002`` does not import P3-002's module, so its breakage stops nothing."""
    broken = tmp_path / "checks" / "test_p3_002_broken.py"
    broken.parent.mkdir(parents=True)
    broken.write_text(DOES_NOT_IMPORT)
    write_plan(broken, {"test_a": {"contacts": []}})
    run = Run(tmp_path, "-n", "0", "--ticket", "P2-002", module=QUICK, name="test_p2_002_quick.py")
    code, output = run.finish()
    assert code == 0, output
    assert "not used" not in output and "SyntaxError" not in output, output
    data = run.readiness()
    assert data["scope"]["module_errors"] == [] and data["scope"]["selected"] == ["P2-002"]
    assert _criteria(data, "P2-002")["test_a"]["outcome"] == "pass"


HOSTILE_TEXT = """
import os, pytest
from pathlib import Path

pytestmark = [pytest.mark.ticket("P2-002")]

def test_surrogates(evidence):
    '''A reply with lone surrogates and invalid UTF-8.'''
    raw = b"\\xff\\xfe\\xc3(".decode("utf-8", "surrogateescape")
    evidence.record("reply", {"body": "ok \\ud800 \\udfff", "raw": raw})
    evidence.attach("page.html", "<p>\\udc80</p>", "text/html")
    print("captured \\ud83d")
    assert False, "the reply was \\ud800\\udcff"

def test_blocks_a_writer():
    '''Turns readiness.prom into a directory, so that writer fails.'''
    (Path(os.environ["OPSREADY_TEST_OUT"]) / "readiness.prom").mkdir()
"""


def test_any_text_is_written_and_a_failing_writer_is_named(tmp_path: Path) -> None:
    out = tmp_path / "reports" / "run"
    run = Run(tmp_path, "-n", "0", module=HOSTILE_TEXT, name="test_p2_002_text.py",
              environ={"OPSREADY_TEST_OUT": str(out)}, out=out)
    code, output = run.finish()
    assert "Traceback" not in output and "INTERNALERROR" not in output, output
    # The gate is off and passes, but the bundle is incomplete: exit 4, never 0.
    assert code == 4, output
    assert "report file not written: readiness.prom: IsADirectoryError" in output
    for name in ("readiness.json", "junit.xml", "index.html", "MANIFEST.sha256", "incomplete.txt"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert "readiness.prom" in (out / "incomplete.txt").read_text()
    data = run.readiness()
    failed = _criteria(data, "P2-002")["test_surrogates"]
    assert failed["outcome"] == "fail" and "\ufffd" in failed["message"]
    assert "\ufffd" in (out / "index.html").read_text(encoding="utf-8")
    assert verify_bundle(out).ok


QUICK = """
import pytest
pytestmark = [pytest.mark.ticket("P2-002")]

def test_a():
    '''A criterion that holds.'''
"""


def test_concurrent_runs_lose_nothing(tmp_path: Path) -> None:
    """Four runs started at once in one reports root (the default report directory)."""
    checks = tmp_path / "checks"
    checks.mkdir()
    (checks / "test_p2_002_quick.py").write_text(QUICK)
    write_plan(checks / "test_p2_002_quick.py", default_plan(QUICK))
    env = tmp_path / "env.yaml"
    env.write_text("name: same\n")
    reports = tmp_path / "reports"
    command = [*opsready_command(), "verify", "--checks", str(checks), "--env", str(env), "--root", str(ROOT),
               "--reports-root", str(reports), "--gate", "none", "-n", "0"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                              env=child_env()) for _ in range(4)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    dirs = sorted(p for p in reports.iterdir() if p.is_dir() and not p.is_symlink())
    assert len(dirs) == 4, dirs
    for d in dirs:
        assert d.name.startswith(tuple("0123456789")) and d.name.split("-")[1] == "same", d.name
        page = (d / "index.html").read_text()
        assert page.count('<section id="opsready">') == 1, d
        assert verify_bundle(d).ok, (d, verify_bundle(d).describe())
    lines = (reports / "history.jsonl").read_text().splitlines()
    assert len(lines) == 4
    assert {json.loads(line)["run_id"] for line in lines} == {d.name for d in dirs}
    assert (reports / "latest").resolve() in dirs
    assert not [p for p in reports.iterdir() if p.name.endswith(".tmp")]


def test_history_lines_stay_whole_under_concurrent_appends(tmp_path: Path) -> None:
    script = (
        "import sys, datetime as dt\n"
        "from pathlib import Path\n"
        "from opsready.report import files\n"
        "from opsready.report.model import Readiness\n"
        "r = Readiness.model_validate_json(Path(sys.argv[1]).read_text())\n"
        "big = r.model_copy(update={'run': r.run.model_copy(update={'id': 'x' * 20000})})\n"
        "for _ in range(25):\n"
        "    files.append_history(Path(sys.argv[2]), big, Path('/tmp/x'))\n"
    )
    sample = _sample_readiness(tmp_path)
    history = tmp_path / "history.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(sample), str(history)]) for _ in range(6)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 6
    lines = history.read_text().splitlines()
    assert len(lines) == 150
    assert all(json.loads(line)["run_id"] == "x" * 20000 for line in lines)


def _sample_readiness(tmp_path: Path) -> Path:
    run = Run(tmp_path / "sample", "-n", "0", module=QUICK, name="test_p2_002_quick.py")
    code, output = run.finish()
    assert code == 0, output
    return run.out / "readiness.json"


def test_out_outside_the_reports_root_writes_no_history_there(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "one"
    run = Run(tmp_path, "-n", "0", module=QUICK, name="test_p2_002_quick.py", out=elsewhere)
    code, output = run.finish()
    assert code == 0, output
    assert (elsewhere / "readiness.json").is_file()
    assert sorted(p.name for p in elsewhere.parent.iterdir()) == ["one"]
    assert not (tmp_path / "reports" / "history.jsonl").exists()
    assert not (tmp_path / "reports" / "latest").exists()


GUARD = """
import socket, sys
used = []
def refuse(*args, **kwargs):
    used.append(args)
    sys.stderr.write("SOCKET USED %r\\n" % (args,))
    raise OSError("opsready --plan must not open a socket")
for name in ("connect", "connect_ex", "bind", "sendto"):
    setattr(socket.socket, name, refuse)
socket.create_connection = refuse
socket.getaddrinfo = refuse
real_socket = socket.socket.__init__
def no_new_socket(self, *args, **kwargs):
    refuse("socket.socket", *args)
socket.socket.__init__ = no_new_socket
from opsready.cli import main
sys.exit(main(sys.argv[1:]))
"""

SECRETS = {
    "OPSREADY_ADMIN_KEY": "adm_CANARYplan0123456789", "OPSREADY_DEV_KEY": "dev_CANARYplan0123456789",
    "OPSREADY_GITHUB_TOKEN": "ghp_CANARYplan0123456789abcdefghijkl", "OPSREADY_GRAFANA_TOKEN": "glsa_CANARYplan01",
    "OPSREADY_PROMETHEUS_TOKEN": "prom_CANARYplan01", "OPSREADY_RAILWAY_TOKEN": "rw_CANARYplan0123",
    "OPSREADY_S3_ACCESS_KEY_ID": "AKIACANARYPLAN012345", "OPSREADY_S3_SECRET_ACCESS_KEY": "s3_CANARYplan0123",
    "OPSREADY_SCRATCH_DSN": "postgresql://drill:CANARYpw1@scratch.db.example:5432/postgres",
    "OPSREADY_SOURCE_DSN": "postgresql://ro:CANARYpw2@source.db.example:5432/relay",
    "OPSREADY_WEBHOOK_SECRET": "whsec_CANARYplan0123456789",
}


def test_plan_sends_nothing_and_shows_every_criterion_without_secrets(tmp_path: Path) -> None:
    example = ROOT / "config" / "environments" / "production.example.yaml"
    # Every variable the example names gets a canary; the known secrets get realistic shapes.
    named = set(re.findall(r"\$\{([A-Z0-9_]+)\}", example.read_text()))
    env = {**child_env(), **{n: f"tok_CANARYplan_{n.lower()}" for n in named}, **SECRETS}
    proc = subprocess.run(
        [sys.executable, "-c", GUARD, "verify", "--plan", "--env", str(example), "--root", str(ROOT),
         "--allow-intrusive", "restore_drill"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path, check=False,
    )
    assert "SOCKET USED" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    assert "nothing is sent" in text
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", str(ROOT / "checks")],
        capture_output=True, text=True, timeout=300, env=child_env(), cwd=ROOT, check=False,
    ).stdout
    nodeids = [line.split("checks/", 1)[-1] for line in collected.splitlines() if "::test_" in line]
    assert nodeids and all(n in text for n in nodeids), [n for n in nodeids if n not in text]
    assert "GET https://api.relay.example.com/health" in text
    assert "postgresql://scratch.db.example:5432/postgres" in text
    assert "intrusive (restore_drill), allowed here" in text
    assert "intrusive (rollback_drill), not allowed here" in text
    assert "service.rate_limit.max_requests=300" in text
    assert "body limit 16 MiB" in text and "deadline 900s" in text
    assert f"totals: {len(nodeids)} criteria" in text
    for secret in SECRETS.values():
        assert secret not in text and secret[4:14] not in text
    assert "CANARY" not in text
    assert not list(tmp_path.iterdir()), "the plan wrote files"


def test_plan_collection_fails_when_a_criterion_has_no_plan(tmp_path: Path) -> None:
    checks = tmp_path / "checks"
    checks.mkdir()
    (checks / "test_p2_002_quick.py").write_text(QUICK + "\ndef test_b():\n    '''Another.'''\n")
    write_plan(checks / "test_p2_002_quick.py", {"test_a": {"contacts": []}})
    env = tmp_path / "env.yaml"
    env.write_text("")
    proc = subprocess.run(
        [*opsready_command(), "verify", "--plan", "--checks", str(checks), "--env", str(env), "--root", str(ROOT)],
        capture_output=True, text=True, timeout=300, env=child_env(), cwd=ROOT, check=False,
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "test_b has no entry in test_p2_002_quick.plan.yaml" in proc.stdout
    os.remove(checks / "test_p2_002_quick.plan.yaml")
    proc = subprocess.run(
        [*opsready_command(), "verify", "--checks", str(checks), "--env", str(env), "--root", str(ROOT),
         "--out", str(tmp_path / "out"), "--gate", "none", "-n", "0"],
        capture_output=True, text=True, timeout=300, env=child_env(), cwd=ROOT, check=False,
    )
    assert proc.returncode == 4, proc.stdout
    assert "test_p2_002_quick.plan.yaml: is missing" in proc.stdout
