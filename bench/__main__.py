"""``make bench``: speed and memory of the suite, printed, not asserted.

- stack start-up time (the stack issue's target: ready in ≤ 20 s on 2 cores)
- ``opsready verify`` wall time on the healthy stack, in one process and with workers
- the restore drill's peak RSS and RTO as the dump grows (the drill streams, so peak RSS of
  the suite process should stay flat while the dump grows)
- redaction throughput

Run from the repository root: ``python -m bench [--big-rows N] [--skip-drill]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
OPSREADY = str(BIN / "opsready")


def _run(args: list[str], timeout: float = 900) -> tuple[int, float, float]:
    """Run a command in a fresh child; return its exit code, wall seconds and peak RSS (MiB).

    The peak RSS is read by a small wrapper process, so each measurement is of one child only.
    """
    wrapper = (
        "import resource, subprocess, sys, json;"
        "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode;"
        "print(json.dumps([rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))"
    )
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True,
                         timeout=timeout, check=False)
    wall = time.monotonic() - start
    rc, maxrss_kib = json.loads(out.stdout.strip().splitlines()[-1])
    return int(rc), wall, maxrss_kib / 1024


def _stack_up(directory: Path, rows: int) -> float:
    start = time.monotonic()
    subprocess.run([OPSREADY, "stack", "up", "--dir", str(directory), "--rows", str(rows)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    return time.monotonic() - start


def _stack_down(directory: Path) -> None:
    subprocess.run([OPSREADY, "stack", "down", "--dir", str(directory)], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def _evidence(readiness: dict[str, Any], ticket: str, name: str) -> Any:
    for t in readiness["tickets"]:
        if t["id"] != ticket:
            continue
        for c in t["criteria"]:
            for item in c["evidence"]:
                if item.get("name") == name:
                    return item.get("value")
    return None


def _drill(directory: Path, out: Path) -> dict[str, Any]:
    rc, wall, rss = _run([OPSREADY, "verify", "--env", str(directory / "env.yaml"), "--ticket", "P1-002",
                          "--allow-intrusive", "restore_drill", "--gate", "none", "-n", "0", "--out", str(out)])
    readiness = json.loads((out / "readiness.json").read_text())
    return {"exit": rc, "wall_s": wall, "peak_rss_mib": rss,
            "rto_s": _evidence(readiness, "P1-002", "rto_seconds"),
            "dump_bytes": _evidence(readiness, "P1-002", "size_bytes")}


def _redaction() -> float:
    from opsready.evidence import Redactor

    r = Redactor()
    r.add([f"secret-value-{i:04d}-abcdefgh" for i in range(20)])
    text = ("GET /api/v1/actions 200 X-Request-Id=abc123 latency=12ms user=alice " * 16000)[:1_000_000]
    start = time.monotonic()
    for _ in range(5):
        r.text(text)
    return 5.0 / (time.monotonic() - start)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--big-rows", type=int, default=200_000, help="rows per table for the large drill")
    parser.add_argument("--skip-drill", action="store_true", help="skip the drill memory benchmark")
    args = parser.parse_args()
    print(f"redaction: {_redaction():.1f} MB/s of log text with 20 registered secrets")
    with tempfile.TemporaryDirectory(prefix="opsready-bench-") as tmp:
        base = Path(tmp)
        small = base / "small"
        try:
            print(f"stack up (default rows): {_stack_up(small, 200):.1f} s (target ≤ 20 s)")
            for workers in (0, 4):
                rc, wall, rss = _run([OPSREADY, "verify", "--env", str(small / "env.yaml"), "-n", str(workers),
                                      "--out", str(base / f"verify-n{workers}")])
                print(f"verify, all tickets, -n {workers}: {wall:.1f} s wall, exit {rc}, "
                      f"peak RSS of the main process {rss:.0f} MiB")
            if not args.skip_drill:
                d = _drill(small, base / "drill-small")
                print(f"restore drill, small dump ({d['dump_bytes']} bytes): RTO {d['rto_s']} s, "
                      f"peak RSS {d['peak_rss_mib']:.0f} MiB")
        finally:
            _stack_down(small)
        if args.skip_drill:
            return 0
        big = base / "big"
        try:
            print(f"stack up (--rows {args.big_rows}): {_stack_up(big, args.big_rows):.1f} s")
            d = _drill(big, base / "drill-big")
            print(f"restore drill, large dump ({d['dump_bytes']} bytes): RTO {d['rto_s']} s, "
                  f"peak RSS {d['peak_rss_mib']:.0f} MiB")
        finally:
            _stack_down(big)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
