"""``make bench``: every figure of the performance table, measured in one run, printed as a
ratio with its goal beside it, and the raw numbers written to JSON. Nothing is asserted:
a benchmark on a shared two-core machine informs, it does not gate.

Settings that are compared are interleaved (A B A B ...) and the median of the pairwise
ratios is printed, so a machine whose speed drifts during the run still compares fairly.
Measured commands run as an installed program does, with Python's bytecode cache, after one
run that is not measured.

Run from the repository root: ``python -m bench [--rows N] [--rounds R] [--json PATH]``
(``make bench BENCH_ROWS=N``; about 3,600,000 rows make a dump of about 1 GiB).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OPSREADY = str(BIN / "opsready")
INTRUSIVE = ("rate_limit_burst", "webhook_e2e", "otel_probe_span", "restore_drill", "rollback_drill")
TABLES = ("workspaces", "api_keys", "audit_logs", "sessions")


# ---- measuring a process ------------------------------------------------------------------


def _tree_rss_kib(root: int) -> int:
    """Resident memory of ``root`` and every descendant, in KiB."""
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except (OSError, ValueError):
            continue
    return total


def as_installed(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a measured command: Python's bytecode cache on, as an installed
    program runs. With PYTHONDONTWRITEBYTECODE set, every process would compile opsready's
    modules (and pytest rewrite the check modules) again, about 0.1 s each."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, **(extra or {})}


def run(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 1800) -> dict[str, Any]:
    """Run a command; its exit code, wall seconds and the peak RSS of its process tree."""
    started = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=as_installed(env), cwd=ROOT)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.05):
            peak = max(peak, _tree_rss_kib(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate(timeout=timeout)
    done.set()
    sampler.join()
    return {"exit": proc.returncode, "wall_s": time.monotonic() - started,
            "peak_rss_mib": peak / 1024, "tail": output.decode(errors="replace")[-2000:]}


def verify(env_path: Path, out: Path, *extra: str) -> dict[str, Any]:
    allow = [a for p in INTRUSIVE for a in ("--allow-intrusive", p)]
    result = run([OPSREADY, "verify", "--env", str(env_path), "--out", str(out), "--gate", "none",
                  *allow, *extra])
    data = json.loads((out / "readiness.json").read_text()) if (out / "readiness.json").is_file() else {}
    criteria = [c for t in data.get("tickets", []) for c in t["criteria"]]
    result["statuses"] = {t["id"]: t["status"] for t in data.get("tickets", [])}
    result["evidence"] = {e.get("name"): e.get("value") for c in criteria for e in c["evidence"]}
    # A restore drill run in the background is only partly inside its criterion's time: the
    # slowest is then the drill itself, from its guardrail to its drop.
    drill = result["evidence"].get("drill")
    drilled = drill.get("duration_s") if isinstance(drill, dict) else None
    # Intrusive criteria run one at a time, with nothing else alongside (the restore drill
    # aside, which runs in the background): time no overlap can hide.
    result["alone_s"] = sum(c.get("duration_s") or 0.0 for c in criteria
                            if c.get("intrusive") and c.get("intrusive") != "restore_drill")
    result["slowest_s"] = max([c.get("duration_s") or 0.0 for c in criteria] + [drilled or 0.0])
    return result


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ---- the stack --------------------------------------------------------------------------


@contextlib.contextmanager
def stack(base: Path, name: str, rows: int) -> Iterator[tuple[Path, float]]:
    directory = base / name
    started = time.monotonic()
    try:
        subprocess.run([OPSREADY, "stack", "up", "--dir", str(directory), "--rows", str(rows)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=3600)
        yield directory, time.monotonic() - started
    finally:
        subprocess.run([OPSREADY, "stack", "down", "--dir", str(directory)], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)


@contextlib.contextmanager
def slowed(directory: Path, latency_ms: float, into: Path) -> Iterator[Path]:
    """The stack seen through the delay proxy: the env.yaml that points at it."""
    import yaml

    from opsready_stack.latency_proxy import LatencyPart
    from opsready_stack.orchestrator import _load_ctx
    from opsready_stack.processes import kill_pidfile

    ctx = _load_ctx(directory)
    part = LatencyPart(latency_ms)
    part.start(ctx)
    try:
        part.wait_ready(ctx, time.monotonic() + 30)
        config = part.rewrite_env(ctx, yaml.safe_load((directory / "env.yaml").read_text()))
        into.mkdir(parents=True, exist_ok=True)
        path = into / "env.yaml"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        yield path
    finally:
        kill_pidfile(ctx.pids / "latency.pid")


# ---- figures ------------------------------------------------------------------------------


def verify_figures(env0: Path, env50: Path, out: Path, rounds: int) -> dict[str, Any]:
    from opsready.cli import DEFAULT_WORKERS

    raw: dict[str, list[dict[str, Any]]] = {}
    settings = [("n0_0ms", env0, ("-n", "0")), ("default_0ms", env0, ()),
                ("n4_0ms", env0, ("-n", "4")),
                ("n0_50ms", env50, ("-n", "0")), ("default_50ms", env50, ()),
                ("n2_50ms", env50, ("-n", "2"))]
    trivial = str(ROOT / "checks" / "test_p2_004_db_pool_metrics.py")
    settings += [("trivial_n0", env0, ("-n", "0", "--checks", trivial)),
                 ("trivial_n4", env0, ("-n", "4", "--checks", trivial))]
    # Not measured: fills the bytecode cache, as the first run after an install does.
    verify(env0, out / "warm-up")
    for r in range(rounds):
        for name, env, extra in settings:
            raw.setdefault(name, []).append(verify(env, out / f"{name}-{r}", *extra))

    def per_slowest(name: str) -> float:
        return median([x["wall_s"] / x["slowest_s"] for x in raw[name] if x["slowest_s"]])

    def pairwise(a: str, b: str) -> float:
        return median([x["wall_s"] / y["wall_s"] for x, y in zip(raw[a], raw[b], strict=True)])

    return {
        "default_workers": DEFAULT_WORKERS,
        "wall_per_slowest_n0_0ms": per_slowest("n0_0ms"),
        "wall_per_slowest_default_0ms": per_slowest("default_0ms"),
        "wall_per_slowest_n0_50ms": per_slowest("n0_50ms"),
        "wall_per_slowest_default_50ms": per_slowest("default_50ms"),
        "default_vs_n0_0ms": pairwise("default_0ms", "n0_0ms"),
        "default_vs_n0_50ms": pairwise("default_50ms", "n0_50ms"),
        "n4_vs_n0_0ms": pairwise("n4_0ms", "n0_0ms"),
        "n2_vs_n0_50ms": pairwise("n2_50ms", "n0_50ms"),
        "wall_per_slowest_n2_50ms": per_slowest("n2_50ms"),
        # The best wall / slowest one process can reach at 0 ms: its fixed cost (a run of one
        # trivial check) plus the intrusive criteria, which run alone.
        "floor_per_slowest_n0_0ms": ((median([x["wall_s"] for x in raw["trivial_n0"]])
                                      + median([x["alone_s"] for x in raw["n0_0ms"]]))
                                     / median([x["slowest_s"] for x in raw["n0_0ms"]])),
        "trivial_n4_minus_n0_s": median([x["wall_s"] - y["wall_s"] for x, y in
                                         zip(raw["trivial_n4"], raw["trivial_n0"], strict=True)]),
        "same_verdicts_0_and_50ms": all(x["statuses"] == raw["n0_0ms"][0]["statuses"]
                                        for x in raw["n0_50ms"]),
        "raw": {k: [{f: v for f, v in x.items() if f not in ("tail", "evidence")} for x in xs]
                for k, xs in raw.items()},
    }


def by_hand_restore(env_path: Path, work: Path) -> float:
    """What an operator does by hand: download the newest dump, create a database, restore
    it (``pg_restore -j`` for a custom-format dump), count the rows, drop the database."""
    import boto3
    import psycopg
    import yaml

    from opsready.config import load_environment
    from opsready.probes.s3 import BackupStore

    cfg = yaml.safe_load(env_path.read_text())
    env = load_environment(str(env_path), ROOT, env={})
    assert env.backups is not None and env.restore_drill is not None
    started = time.monotonic()
    store = BackupStore(env.backups, timeout=60)
    newest = store.latest().newest
    assert newest is not None
    s3 = cfg["backups"]["s3"]
    client = boto3.client("s3", endpoint_url=s3["endpoint_url"], region_name=s3.get("region", "us-east-1"),
                          aws_access_key_id=s3["access_key_id"], aws_secret_access_key=s3["secret_access_key"])
    dump = work / "by-hand.dump"
    client.download_file(s3["bucket"], newest.key, str(dump))
    scratch = cfg["restore_drill"]["scratch_dsn"]
    name = f"byhand_{os.getpid()}_{int(time.time())}"
    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        target = scratch.rsplit("/", 1)[0] + f"/{name}"
        jobs = ["-j", str(max(2, os.cpu_count() or 2))]
        subprocess.run(["pg_restore", "--no-owner", "--no-privileges", *jobs, "-d", target, str(dump)],
                       check=True, capture_output=True)
        with psycopg.connect(target) as conn:
            for table in TABLES:
                conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    finally:
        with psycopg.connect(scratch, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        dump.unlink(missing_ok=True)
    return time.monotonic() - started


def drill_figures(env_path: Path, out: Path, rounds: int) -> dict[str, Any]:
    drills, by_hand = [], []
    for r in range(rounds):
        d = verify(env_path, out / f"drill-{r}", "-n", "0", "--ticket", "P1-002")
        d["rto_s"] = d["evidence"].get("rto_seconds")
        d["dump_bytes"] = d["evidence"].get("size_bytes")
        drills.append({k: v for k, v in d.items() if k not in ("tail", "evidence")})
        by_hand.append(by_hand_restore(env_path, out))
    ratios = [d["rto_s"] / h for d, h in zip(drills, by_hand, strict=True) if d["rto_s"]]
    return {"rto_vs_by_hand": median(ratios), "peak_rss_mib": median([d["peak_rss_mib"] for d in drills]),
            "peak_rss_mib_max": max(d["peak_rss_mib"] for d in drills),
            "dump_bytes": drills[0]["dump_bytes"], "drills": drills, "by_hand_s": by_hand}


def report_writing(work: Path, criteria: int = 2000) -> float:
    """Seconds the controller spends writing the report of a run with ``criteria`` criteria."""
    from opsready import _run, cli

    checks = work / "checks"
    checks.mkdir(parents=True, exist_ok=True)
    (checks / "test_p2_004_many.py").write_text(textwrap.dedent(f'''
        import pytest

        pytestmark = [pytest.mark.ticket("P2-004")]

        @pytest.mark.parametrize("i", range({criteria}))
        def test_criterion(i, evidence):
            """A criterion among many"""
            evidence.record("i", {{"i": i, "text": "x" * 200}})
    '''))
    # Every criterion needs its plan entry, or the module does not collect (see opsready.plan).
    (checks / "test_p2_004_many.plan.yaml").write_text("test_criterion: {contacts: []}\n")
    (work / "env.yaml").write_text("name: bench\n")
    spent: list[float] = []
    originals = (_run.RunState.finish, _run.RunState.publish)

    def timed(method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            begun = time.monotonic()
            try:
                return method(*args, **kwargs)
            finally:
                spent.append(time.monotonic() - begun)
        return wrapper

    _run.RunState.finish, _run.RunState.publish = timed(originals[0]), timed(originals[1])  # type: ignore[method-assign]
    try:
        with contextlib.redirect_stdout(open(os.devnull, "w")):
            cli.main(["verify", "--env", str(work / "env.yaml"), "--checks", str(checks), "--root", str(ROOT),
                      "--out", str(work / "report"), "--gate", "none", "-n", "0"])
    finally:
        _run.RunState.finish, _run.RunState.publish = originals  # type: ignore[method-assign]
    return sum(spent)


def listing_figures() -> dict[str, Any]:
    """Finding the newest backup, its predecessor and the 30-day accumulation in a bucket
    holding 1,000 and then 50,000 objects under the prefix (moto's S3 server on loopback)."""
    import boto3
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from moto.s3.models import s3_backends
    from werkzeug.serving import make_server

    from opsready.config import BackupsConfig
    from opsready.probes.s3 import BackupStore
    from opsready_stack import s3_index

    # The reference stack's S3 pages from a key-name index, as S3 does: what grows here is ours.
    s3_index.install()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app), threaded=True,
                         request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    creds = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench", "region_name": "us-east-1"}
    client = boto3.client("s3", endpoint_url=endpoint, **creds)
    results: dict[str, Any] = {}
    today = dt.datetime.now(dt.UTC)
    try:
        for count in (1_000, 50_000):
            bucket = f"bench-{count}"
            client.create_bucket(Bucket=bucket)
            backend = s3_backends["123456789012"]["global"]
            # One backup (and its sidecar) a day, newest today: years of history.
            for i in range(count // 2):
                day = (today - dt.timedelta(days=i)).date().isoformat()
                for key in (f"backups/{day}/relay.dump", f"backups/{day}/relay.dump.sha256"):
                    backend.put_object(bucket, key, b"x")
            cfg = BackupsConfig.model_validate({
                "s3": {"bucket": bucket, "prefix": "backups/", "endpoint_url": endpoint,
                       "access_key_id": "bench", "secret_access_key": "bench"},
                "key_pattern": "%Y-%m-%d/relay.dump", "rpo_hours": 26})
            timings, client_cpu, requests = [], [], []
            for _ in range(3):
                store = BackupStore(cfg, timeout=60)
                begun, cpu = time.monotonic(), time.thread_time()
                store.latest()
                store.daily_coverage(30)
                store.history()
                timings.append(time.monotonic() - begun)
                # This thread is the client; moto answers from threads of its own.
                client_cpu.append(time.thread_time() - cpu)
                requests.append(store.requests)
            results[str(count)] = {"seconds": median(timings), "client_cpu_s": median(client_cpu),
                                   "requests": max(requests)}
    finally:
        server.shutdown()
    small, big = results["1000"], results["50000"]
    return {"time_ratio": big["seconds"] / small["seconds"],
            "client_cpu_ratio": big["client_cpu_s"] / small["client_cpu_s"],
            "requests_ratio": big["requests"] / small["requests"], "raw": results}


def install_figures(work: Path) -> dict[str, Any]:
    """The size of a runtime-only install and the time of ``make setup`` from scratch."""
    light = work / "runtime-venv"
    subprocess.run([sys.executable, "-m", "venv", str(light)], check=True)
    base = _du(light)
    subprocess.run([str(light / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(ROOT)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runtime_mib = (_du(light) - base) / (1 << 20)
    shutil.rmtree(light, ignore_errors=True)
    full = work / "setup-venv"
    begun = time.monotonic()
    setup = subprocess.run(["make", "-C", str(ROOT), "setup", f"VENV={full}"], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.monotonic() - begun
    dev_mib = _du(full) / (1 << 20)
    shutil.rmtree(full, ignore_errors=True)
    return {"runtime_install_mib": runtime_mib, "make_setup_s": seconds, "make_setup_exit": setup.returncode,
            "dev_venv_mib": dev_mib}


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


# ---- the table -----------------------------------------------------------------------------


def table(res: dict[str, Any]) -> list[tuple[str, str, str]]:
    v, small, big = res["verify"], res["drill_small"], res.get("drill_big")
    # When the default is -n 0, both sides run the same command: any difference is noise.
    same = " (the same setting)" if v["default_workers"] == 0 else ""
    rows = [
        ("full verify on the stack, wall / slowest criterion, -n 0, 0 ms",
         f"{v['wall_per_slowest_n0_0ms']:.2f}×", "≤ 2.0×"),
        ("  its floor: fixed cost + intrusive criteria, which run alone", f"{v['floor_per_slowest_n0_0ms']:.2f}×",
         "(bounds the figure above)"),
        ("the same at 50 ms round trip, -n 0", f"{v['wall_per_slowest_n0_50ms']:.2f}×", "≤ 1.3×"),
        (f"the same at 50 ms, default -n {v['default_workers']}", f"{v['wall_per_slowest_default_50ms']:.2f}×",
         "≤ 1.3×"),
        (f"default -n {v['default_workers']} / -n 0, wall, 0 ms", f"{v['default_vs_n0_0ms']:.2f}×{same}", "≤ 1.0×"),
        (f"default -n {v['default_workers']} / -n 0, wall, 50 ms", f"{v['default_vs_n0_50ms']:.2f}×{same}", "≤ 1.0×"),
        ("-n 4 / -n 0, wall, 0 ms", f"{v['n4_vs_n0_0ms']:.2f}×", "(informs the default)"),
        ("-n 2 / -n 0, wall, 50 ms", f"{v['n2_vs_n0_50ms']:.2f}×", "(informs the default)"),
        ("-n 2 at 50 ms, wall / slowest criterion", f"{v['wall_per_slowest_n2_50ms']:.2f}×", "(informs the default)"),
        ("fixed cost of -n 4 over -n 0, one trivial check", f"{v['trivial_n4_minus_n0_s']:+.2f} s", "≤ +0.5 s"),
        ("verdicts at 50 ms equal those at 0 ms", str(v["same_verdicts_0_and_50ms"]).lower(), "true"),
        (f"drill RTO / by hand, {small['dump_bytes'] / (1 << 20):.2f} MiB dump", f"{small['rto_vs_by_hand']:.2f}",
         "≤ 1.1"),
    ]
    if big:
        rows += [(f"drill RTO / by hand, {big['dump_bytes'] / (1 << 20):.0f} MiB dump",
                  f"{big['rto_vs_by_hand']:.2f}", "≤ 1.1"),
                 (f"drill peak RSS (process tree), {small['dump_bytes'] / (1 << 20):.2f} → "
                  f"{big['dump_bytes'] / (1 << 20):.0f} MiB dump",
                  f"{small['peak_rss_mib']:.0f} → {big['peak_rss_mib']:.0f} MiB "
                  f"({big['peak_rss_mib'] / small['peak_rss_mib']:.2f}×; max of any round "
                  f"{max(small['peak_rss_mib_max'], big['peak_rss_mib_max']):.0f})", "≤ 150 MiB, flat")]
    rows += [
        ("report writing, 2,000 criteria", f"{res['report_writing_s']:.2f} s", "≤ 2 s"),
        ("S3 listing time, 50,000 / 1,000 objects", f"{res['listing']['time_ratio']:.2f}×", "flat (≈ 1×)"),
        ("  of it the client's CPU (moto answers in threads of its own)",
         f"{res['listing']['client_cpu_ratio']:.2f}×", "flat (≈ 1×)"),
        ("S3 requests, 50,000 / 1,000 objects", f"{res['listing']['requests_ratio']:.2f}× "
         f"({res['listing']['raw']['50000']['requests']} requests)", "flat (1×)"),
    ]
    if "install" in res:
        i = res["install"]
        rows += [("runtime-only install (pip install opsready)", f"{i['runtime_install_mib']:.0f} MiB",
                  "no test or stack dependencies"),
                 ("make setup from scratch", f"{i['make_setup_s']:.0f} s (venv {i['dev_venv_mib']:.0f} MiB)",
                  "(reported)")]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--rows", type=int, default=200_000,
                        help="rows per table of the large drill's stack (default: %(default)s, about 57 MiB)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per figure")
    parser.add_argument("--json", type=Path, default=ROOT / "reports" / "bench.json")
    parser.add_argument("--skip-install", action="store_true", help="skip the install figures (they download)")
    args = parser.parse_args()
    res: dict[str, Any] = {"started": dt.datetime.now(dt.UTC).isoformat(), "rows": args.rows,
                           "cpus": os.cpu_count(), "load": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="opsready-bench-") as tmp:
        base = Path(tmp)
        print("[bench] report writing, S3 listing ...", flush=True)
        res["report_writing_s"] = report_writing(base / "report")
        res["listing"] = listing_figures()
        with stack(base, "small", 200) as (small, up_s):
            res["stack_up_s"] = up_s
            print(f"[bench] stack up in {up_s:.1f}s; verify at 0 and 50 ms ...", flush=True)
            with slowed(small, 50.0, base / "slow") as env50:
                res["verify"] = verify_figures(small / "env.yaml", env50, base / "runs", args.rounds)
            res["drill_small"] = drill_figures(small / "env.yaml", base / "drill-small", args.rounds)
        if args.rows:
            print(f"[bench] stack with --rows {args.rows} ...", flush=True)
            with stack(base, "big", args.rows) as (big, up_s):
                res["big_stack_up_s"] = up_s
                res["drill_big"] = drill_figures(big / "env.yaml", base / "drill-big", max(1, args.rounds - 1))
        if not args.skip_install:
            print("[bench] install size and make setup from scratch ...", flush=True)
            res["install"] = install_figures(base)
    rows = table(res)
    width = max(len(r[0]) for r in rows)
    mwidth = max(len(r[1]) for r in rows)
    print(f"\n{'figure':<{width}}  {'measured':<{mwidth}}  goal")
    for figure, measured, goal in rows:
        print(f"{figure:<{width}}  {measured:<{mwidth}}  {goal}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(f"\nraw numbers: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
