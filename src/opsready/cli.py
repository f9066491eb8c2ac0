"""``opsready verify | tickets | stack | verify-bundle | keygen | summary | sync``."""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path
from typing import NoReturn

import opsready
from opsready._errors import ConfigError
from opsready._options import MAX_WORKERS, ExitCode

__all__ = ["DEFAULT_WORKERS", "build_parser", "main"]

# One process, chosen by `make bench`: on two cores, xdist workers made a whole verify slower
# at loopback latency (each worker costs an interpreter and its imports), and a default must
# never be slower than -n 0. The probes overlap a criterion's independent requests instead;
# over a slow network, -n 2 or more still shortens the run for those who ask for it.
DEFAULT_WORKERS = 0

# What a run needs, loaded by module name (xdist replays these arguments on its workers).
# Autoloading every installed pytest11 plugin costs each process, and each worker, the
# imports of plugins no check uses; pytest also rewrites the asserts of every module of an
# autoloaded plugin's distribution. pytest-html's fixtures come before the plugin that
# imports them, for the same reason.
_REPORT_PLUGINS = ("opsready.plugin", "pytest_metadata.plugin", "pytest_html.fixtures", "pytest_html.plugin")
_WORKER_PLUGINS = ("xdist.plugin",)


def _needed_plugins(workers: int) -> list[str]:
    """``pytest`` arguments that load only the plugins a verify run uses."""
    names = _REPORT_PLUGINS + (_WORKER_PLUGINS if workers > 0 else ())
    loaded = ["--disable-plugin-autoload"]
    for name in names:
        loaded += ["-p", name]
    return loaded


def _selected_modules(checks: Path, selected: tuple[str, ...] | None) -> int:
    """How many check modules the run may collect, at least one. Workers take whole modules
    (``--dist loadfile``), so a worker beyond this number never gets a criterion: it would
    only cost an interpreter and its imports."""
    from opsready.catalogue import module_ticket_id

    files = [checks] if checks.is_file() else list(checks.rglob("test_*.py"))
    if selected:
        files = [f for f in files if module_ticket_id(f.name) in selected]
    return max(1, len(files))


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors exit 4, like every other opsready usage error."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="opsready",
        description="Verify ops-readiness: every audit ticket is probed against the running platform.",
    )
    parser.add_argument("--version", action="version", version=f"opsready {opsready.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    v = sub.add_parser("verify", help="run the checks and write the report")
    v.add_argument("--env", default="local",
                   help="environment NAME (config/environments/NAME.yaml) or a YAML path (default: local)")
    v.add_argument("--gate", default=None,
                   help="priorities that must be done or waived, e.g. P0,P1, or 'none' "
                   "(default: the environment's gate)")
    v.add_argument("--ticket", action="append", default=[], metavar="ID",
                   help="run only this ticket's checks (repeatable)")
    v.add_argument("--checks", default=None, metavar="DIR",
                   help="check modules directory (default: checks/ under the root)")
    v.add_argument("--out", default=None, metavar="DIR",
                   help="report directory, new or empty (default: reports/<UTC timestamp>-<env>-<run id>)")
    v.add_argument("--reports-root", default=None, metavar="DIR",
                   help="where history.jsonl and latest live (default: reports/ under the root); a report "
                   "directory (--out) outside it writes neither")
    v.add_argument("-n", dest="workers", type=int, default=DEFAULT_WORKERS, metavar="N",
                   help=f"parallel workers from 0 to {MAX_WORKERS}, 0 runs in this process; never more "
                   f"than the check modules selected (default: {DEFAULT_WORKERS})")
    v.add_argument("--deadline", type=float, default=None, metavar="SECONDS",
                   help="end the run as interrupted, with its report, after this many seconds "
                   "(default: the environment's deadline_s, 900)")
    v.add_argument("--plan", action="store_true",
                   help="print what each selected criterion would contact and read, with its bounds, and "
                   "send nothing")
    v.add_argument("--allow-intrusive", action="append", default=None, metavar="NAME",
                   help="allow this intrusive probe, replacing the environment's list (repeatable; 'none' for none)")
    v.add_argument("--fail-on-regression", action="store_true",
                   help="exit 1 when a ticket done in the previous run of this environment is not done now")
    v.add_argument("--pushgateway", default=None, metavar="URL", help="also push readiness metrics to this Pushgateway")
    v.add_argument("--root", default=None, metavar="DIR",
                   help="project root holding config/ (default: found from the current directory)")
    v.add_argument("--plugin-autoload", action="store_true",
                   help="also load every installed pytest plugin (default: only opsready, pytest-html, "
                   "and pytest-xdist when -n > 0)")

    t = sub.add_parser("tickets", help="print the ticket catalogue")
    t.add_argument("--root", default=None, metavar="DIR", help="project root holding config/tickets.yaml")
    t.add_argument("--coverage", action="store_true",
                   help="list each action with the criteria or attestation that prove it, and exit 1 when an "
                   "action has neither")

    sub.add_parser("stack", help="the reference stack: up, down, status, fault, faults", add_help=False)

    b = sub.add_parser("verify-bundle", help="check a report directory against its MANIFEST.sha256",
                       description="Check a report directory against its MANIFEST.sha256. Exit 0 when every "
                       "file is intact, 1 naming each changed, missing or extra file, 4 on a usage error.")
    b.add_argument("dir", metavar="DIR", type=Path, help="the report directory to check, e.g. reports/latest")
    _add_report_commands(sub, b)
    _add_sync_parser(sub)
    return parser


def _add_report_commands(sub: argparse._SubParsersAction[_Parser], bundle: argparse.ArgumentParser) -> None:
    """Signed bundles, the catalogue's coverage and the fleet view."""
    bundle.add_argument("--public-key", type=Path, default=None, metavar="FILE",
                        help="also check MANIFEST.sha256.sig against this OpenSSH public key (.pub); "
                        "exit 1 when the signature does not verify")
    k = sub.add_parser("keygen", help="write an Ed25519 key pair for signing report bundles",
                       description="Write an Ed25519 private key to PATH (mode 0600) and its public key to "
                       "PATH.pub. A run signs MANIFEST.sha256 with the private key when OPSREADY_SIGNING_KEY "
                       "or OPSREADY_SIGNING_KEY_FILE names it; auditors check with the public key.")
    k.add_argument("path", metavar="PATH", type=Path, help="where to write the private key, e.g. opsready-signing")
    s = sub.add_parser("summary", help="one fleet report over several environments' report directories",
                       description="Verify each report directory, then write summary.html and summary.json: "
                       "environments x tickets, each cell linking into that environment's bundle. Exit 1 "
                       "when a bundle fails verification (it is marked in the summary), 4 on a usage error.")
    s.add_argument("dirs", metavar="REPORT_DIR", type=Path, nargs="+", help="report directories, one per run")
    s.add_argument("--out", type=Path, default=Path("reports/fleet"), metavar="DIR",
                   help="where to write summary.html and summary.json (default: reports/fleet)")
    s.add_argument("--public-key", dest="summary_public_key", type=Path, default=None, metavar="FILE",
                   help="also check each bundle's signature against this OpenSSH public key")


def _add_sync_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    s = sub.add_parser("sync", help="make the tracker's issues show a verified run's ticket statuses",
                       description="Mirror the ticket statuses of a finished run into the tracker: one "
                       "issue per ticket, a status label, a comment per change, closed when done or "
                       "waived. Reads an intact bundle and never probes. Exit 0 when the tracker shows "
                       "the run, 1 when something was not applied or the bundle was refused, 4 on a "
                       "usage or config error.")
    s.add_argument("--env", default="local",
                   help="environment NAME (config/environments/NAME.yaml) or a YAML path (default: local)")
    # Each choice is a section under `tracker:` in the environment (opsready.tracker.sync).
    s.add_argument("--tracker", required=True, choices=("github",),
                   help="the tracker section of the environment to write to")
    s.add_argument("--report", default=None, metavar="DIR", type=Path,
                   help="the run to mirror (default: the newest run of the environment in reports/history.jsonl)")
    s.add_argument("--dry-run", action="store_true",
                   help="read the tracker and print every change, write nothing")
    s.add_argument("--root", default=None, metavar="DIR",
                   help="project root holding config/ and reports/ (default: found from the current directory)")


def main(argv: list[str] | None = None) -> int:
    code = _main(list(sys.argv[1:] if argv is None else argv))
    if argv is None:
        # Called as the program, which ends when this returns. The interpreter's last garbage
        # collections would walk every object of the run for nothing (tens of milliseconds,
        # and an xdist controller waits for each worker's): frozen objects are skipped.
        gc.freeze()
    return code


def _main(args_in: list[str]) -> int:
    if args_in[:1] == ["stack"]:
        from opsready_stack.cli import main as stack_main  # type: ignore[import-not-found,unused-ignore]

        return int(stack_main(args_in[1:]))
    parser = build_parser()
    args = parser.parse_args(args_in)
    try:
        if args.command == "verify":
            return _verify(args)
        if args.command == "tickets":
            return _tickets(args)
        if args.command == "verify-bundle":
            from opsready.report.signing import verify_bundle_command

            return int(verify_bundle_command(args.dir, args.public_key))
        if args.command == "keygen":
            from opsready.report.signing import keygen_command

            return int(keygen_command(args.path))
        if args.command == "summary":
            from opsready.report.summary import summary_command

            return int(summary_command(args.dirs, args.out, args.summary_public_key))
        if args.command == "sync":
            from opsready.tracker.sync import run_sync

            return int(run_sync(env_name=args.env, root=_root(args.root), tracker_kind=args.tracker,
                                report=args.report, dry_run=args.dry_run))
    except ConfigError as exc:
        sys.stderr.write(f"opsready: config error: {exc}\n")
        return int(ExitCode.USAGE)
    except KeyboardInterrupt:
        # Stopped before the run began (while loading the configuration): nothing to clean up.
        sys.stderr.write("opsready: interrupted before the run started; nothing was written\n")
        return int(ExitCode.INTERRUPTED)
    sys.stderr.write("opsready: no command given; use one of verify, tickets, stack, verify-bundle "
                     "(see `opsready --help`)\n")
    return int(ExitCode.USAGE)


def _root(value: str | None) -> Path:
    from opsready._options import find_root

    return Path(value).resolve() if value else find_root(Path.cwd())


def _tickets(args: argparse.Namespace) -> int:
    from opsready.catalogue import load_catalogue

    if args.coverage:
        from opsready.actions import coverage_command

        return int(coverage_command(_root(args.root)))
    cat = load_catalogue(_root(args.root) / "config" / "tickets.yaml")
    rows = [("id", "priority", "category", "size", "sprint", "title")]
    rows += [(t.id, t.priority, t.category, t.size, str(t.sprint), t.title) for t in cat.tickets]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(r[i].ljust(widths[i]) for i in range(5)) + "  " + r[5])
    print(f"{len(cat.tickets)} tickets")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from opsready._interrupt import stop_signals

    # Ctrl-C and SIGTERM from here on end the run with its report (see _interrupt).
    stop_signals().install()
    try:
        return _run_verify(args)
    finally:
        stop_signals().uninstall()


def _run_verify(args: argparse.Namespace) -> int:
    import pytest

    from opsready import plugin as opsready_plugin
    from opsready._options import RunRequest
    from opsready.plugin import ValidatedRun
    from opsready.report.files import claim_report_dir

    if not 0 <= args.workers <= MAX_WORKERS:
        raise ConfigError("-n", str(args.workers), f"is not a number of workers from 0 to {MAX_WORKERS}",
                          "pass -n 0 to run in this process, or -n 4")
    # Validate everything before any probe runs: a config error is one line and exit 4.
    options = RunRequest(
        env=args.env, root=args.root, out=args.out, gate=args.gate, tickets=tuple(args.ticket),
        allow_intrusive=tuple(args.allow_intrusive) if args.allow_intrusive is not None else None,
        checks=(args.checks,) if args.checks else (), fail_on_regression=args.fail_on_regression,
        pushgateway=args.pushgateway, reports_root=args.reports_root, deadline_s=args.deadline,
        plan=args.plan,
    ).resolve()
    checks = options.check_paths[0]
    pytest_args = [
        str(checks), "-p", "no:cacheprovider", "--rootdir", str(checks if checks.is_dir() else checks.parent),
        # pytest's unraisable-exception plugin collects the garbage of the whole heap twice at
        # the end, about 0.2 s of a run, to turn an exception in a finaliser into a warning
        # that a verify run never shows; without it Python prints such an exception itself.
        "-p", "no:unraisableexception",
        # A check module that cannot be used must not blind the audit to every other ticket
        # (xdist workers carry on anyway): the others run, and the run exits 4 naming it.
        "--continue-on-collection-errors",
    ]
    plugins: list[object] = [ValidatedRun(options)]
    if options.plan:
        # Collection only, in this process; the plan is the whole output.
        pytest_args += ["--collect-only", "-p", "no:terminal"]
        if args.plugin_autoload:
            pytest_args += ["-p", "no:xdist", "-p", "no:html"]
        else:
            pytest_args += ["--disable-plugin-autoload"]
            plugins.insert(0, opsready_plugin)
        return int(pytest.main(pytest_args, plugins=plugins))
    pytest_args += ["-q", "--tb=short", "-rfE"]
    claim_report_dir(options.out_dir, options.run_id)
    workers = min(args.workers, _selected_modules(checks, options.selected))
    if not args.plugin_autoload:
        pytest_args += _needed_plugins(workers)
        # Already imported here: registered as the object, so pytest does not import it again
        # (and does not warn that it is too late to rewrite its asserts).
        plugins.insert(0, opsready_plugin)
    if workers > 0:
        # A crashed worker is not replaced: xdist would hand its module, the criterion that
        # crashed it included (an intrusive probe perhaps), to a new worker, again and again.
        pytest_args += ["-n", str(workers), "--dist", "loadfile", "--max-worker-restart", "0"]
    else:
        pytest_args += ["-p", "no:xdist"]
    return int(pytest.main(pytest_args, plugins=plugins))


if __name__ == "__main__":
    raise SystemExit(main())
