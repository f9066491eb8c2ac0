"""`opsready stack up --dir D` where D is private (mode 0700, as ``mktemp -d`` makes it): the
stack works, says what it changed, and a failing PostgreSQL set-up points at a log that
exists. These tests start their own stack: the directory is what they are about."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, child_env, stack_command, stop_stack

pytestmark = [pytest.mark.stack]


def _up(dir: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(stack_command("up", "--dir", str(dir)), capture_output=True,
                          text=True, timeout=240, env=env or child_env(), cwd=ROOT, check=False)


def test_stack_up_in_a_private_directory() -> None:
    private = Path(tempfile.mkdtemp(prefix="opsready-private-"))
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    try:
        proc = _up(private)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output
        if os.geteuid() == 0:
            # PostgreSQL runs as its own user, which must pass through the directory.
            assert f"{private} was mode 0700; added the search bit for others" in output
            assert stat.S_IMODE(private.stat().st_mode) == 0o701
        status = subprocess.run(stack_command("status", "--dir", str(private)),
                                capture_output=True, text=True, timeout=60,
                                env=child_env(), cwd=ROOT, check=False)
        assert status.returncode == 0, status.stdout + status.stderr
    finally:
        stop_stack(private)
        shutil.rmtree(private, ignore_errors=True)


_FAILING_INITDB = """#!/bin/sh
echo "initdb: error: the disk is full (a stand-in failure)" >&2
exit 1
"""


@pytest.mark.parametrize("runnable", [True, False])
def test_a_postgres_failure_points_at_a_log_that_exists(runnable: bool) -> None:
    """initdb fails (``runnable``), or cannot even be started by the cluster owner."""
    tools = Path(tempfile.mkdtemp(prefix="opsready-fake-pg-"))
    tools.chmod(0o755 if runnable else 0o700)
    bindir = tools / "bin"
    bindir.mkdir(mode=0o755)
    (bindir / "initdb").write_text(_FAILING_INITDB)
    (bindir / "pg_config").write_text(f"#!/bin/sh\necho {bindir}\n")
    for tool in ("initdb", "pg_config"):
        (bindir / tool).chmod(0o755)
    private = Path(tempfile.mkdtemp(prefix="opsready-private-"))
    try:
        env = {**child_env(), "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
        proc = _up(private, env)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 1, output
        named = re.findall(r"see (\S+\.log)", output)
        assert named, output
        for log in named:
            assert Path(log).is_file(), f"{log} is named but does not exist:\n{output}"
        said = "the disk is full" if runnable or os.geteuid() != 0 else "could not run"
        assert said in Path(named[0]).read_text()
        # The failure message shows the log's end as well.
        assert said in output
    finally:
        stop_stack(private)
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(tools, ignore_errors=True)
