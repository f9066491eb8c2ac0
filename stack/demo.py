"""``make demo``: start the reference stack, verify it, always stop it, print the report path.

``python -m opsready_stack.demo [VERIFY ARGS ...]`` runs ``opsready verify --env DIR/env.yaml``
against a stack in a fresh temporary directory; extra arguments go to ``opsready verify``.
The exit code is verify's (0 gate passed, 1 gate failed, 2 interrupted, 4 usage error).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from opsready_stack import orchestrator

__all__ = ["main"]


def _opsready() -> list[str]:
    script = Path(sys.executable).parent / "opsready"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from opsready.cli import main; sys.exit(main())"]


def _report_dirs() -> set[Path]:
    reports = Path.cwd() / "reports"
    if not reports.is_dir():
        return set()
    return {p for p in reports.iterdir() if p.is_dir() and not p.is_symlink()}


def _new_report(before: set[Path]) -> Path | None:
    """The report directory this run wrote (the newest one that was not there before)."""
    new = _report_dirs() - before
    return max(new, key=lambda p: p.stat().st_mtime) if new else None


def main(argv: list[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    # A terminated demo (a job's time limit) stops the stack like Ctrl-C does.
    with orchestrator.sigterm_interrupts():
        return _demo(extra)


def _demo(extra: list[str]) -> int:
    parent = Path(tempfile.mkdtemp(prefix="opsready-demo-"))
    # PostgreSQL runs as its own user when we are root: it must be able to pass through.
    parent.chmod(0o755)
    dir = parent / "stack"
    code = 1
    try:
        try:
            summary = orchestrator.up(dir)
        except orchestrator.StackError as exc:
            print(f"opsready demo: the stack did not start: {exc}", file=sys.stderr)
            if exc.log_tail:
                print(exc.log_tail, file=sys.stderr)
            return exc.exit_code
        orchestrator.print_summary(summary)
        before = _report_dirs()
        command = [*_opsready(), "verify", "--env", str(summary.env_path), *extra]
        print(f"[demo] {' '.join(command)}", file=sys.stderr, flush=True)
        # Same process group: Ctrl-C reaches verify too, which then exits 2 on its own.
        code = subprocess.run(command, check=False).returncode
        report = _new_report(before)
        if report is not None:
            print(f"[demo] report: {report / 'index.html'}")
        else:
            print("[demo] opsready verify wrote no report", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("[demo] interrupted; stopping the stack", file=sys.stderr)
        return 2
    finally:
        # `down` ignores Ctrl-C while it stops the processes, so nothing leaks.
        orchestrator.down(dir)
        shutil.rmtree(parent, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
