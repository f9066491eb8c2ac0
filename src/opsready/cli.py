"""``opsready verify | tickets | stack | verify-bundle``."""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import NoReturn

import opsready
from opsready._errors import ConfigError

__all__ = ["DEFAULT_WORKERS", "build_parser", "main"]

# Probes mostly wait on the network, so more workers than cores still overlap usefully;
# each worker costs an interpreter and its imports, so keep it modest.
DEFAULT_WORKERS = 4

EXIT_USAGE = 4


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors exit 4, like every other opsready usage error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


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
                   help="report directory (default: reports/<UTC timestamp>-<env>)")
    v.add_argument("-n", dest="workers", type=int, default=DEFAULT_WORKERS, metavar="N",
                   help=f"parallel workers, 0 runs in this process (default: {DEFAULT_WORKERS})")
    v.add_argument("--allow-intrusive", action="append", default=None, metavar="NAME",
                   help="allow this intrusive probe, replacing the environment's list (repeatable; 'none' for none)")
    v.add_argument("--fail-on-regression", action="store_true",
                   help="exit 1 when a ticket done in the previous run of this environment is not done now")
    v.add_argument("--pushgateway", default=None, metavar="URL", help="also push readiness metrics to this Pushgateway")
    v.add_argument("--root", default=None, metavar="DIR",
                   help="project root holding config/ (default: found from the current directory)")

    t = sub.add_parser("tickets", help="print the ticket catalogue")
    t.add_argument("--root", default=None, metavar="DIR", help="project root holding config/tickets.yaml")

    sub.add_parser("stack", help="the reference stack: up, down, status, fault, faults", add_help=False)

    b = sub.add_parser("verify-bundle", help="check a report directory against its MANIFEST.sha256")
    b.add_argument("dir", metavar="DIR")
    return parser


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
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
            from opsready.report.manifest import verify_bundle_main

            return verify_bundle_main([args.dir])
    except ConfigError as exc:
        sys.stderr.write(f"opsready: config error: {exc}\n")
        return EXIT_USAGE
    parser.print_help()
    return EXIT_USAGE


def _root(value: str | None) -> Path:
    from opsready._run import find_root

    return Path(value).resolve() if value else find_root(Path.cwd())


def _tickets(args: argparse.Namespace) -> int:
    from opsready.catalogue import load_catalogue

    cat = load_catalogue(_root(args.root) / "config" / "tickets.yaml")
    rows = [("id", "priority", "category", "size", "sprint", "title")]
    rows += [(t.id, t.priority, t.category, t.size, str(t.sprint), t.title) for t in cat.tickets]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(r[i].ljust(widths[i]) for i in range(5)) + "  " + r[5])
    print(f"{len(cat.tickets)} tickets")
    return 0


def _verify(args: argparse.Namespace) -> int:
    import pytest

    from opsready._run import parse_gate
    from opsready.catalogue import load_catalogue
    from opsready.config import INTRUSIVE_PROBES, load_environment
    from opsready.waivers import load_waivers

    root = _root(args.root)
    # Validate everything before any probe runs: a config error is one line and exit 4.
    load_environment(args.env, root)
    cat = load_catalogue(root / "config" / "tickets.yaml")
    load_waivers(root / "config" / "waivers.yaml", cat.ids, _today())
    if args.gate is not None:
        parse_gate(args.gate, "--gate")
    for t in args.ticket:
        if t.upper() not in cat.ids:
            raise ConfigError("--ticket", t, "is not a catalogued ticket", f"use one of {', '.join(cat.ids)}")
    for name in args.allow_intrusive or []:
        if name != "none" and name not in INTRUSIVE_PROBES:
            raise ConfigError("--allow-intrusive", name, "is not an intrusive probe",
                              f"use one of {', '.join(sorted(INTRUSIVE_PROBES))}, or none")
    checks = Path(args.checks) if args.checks else root / "checks"
    if not checks.exists():
        raise ConfigError(str(checks), "", "the checks directory does not exist", "pass --checks DIR")

    pytest_args = [
        str(checks), "-p", "no:cacheprovider", "-q", "--tb=short", "-rfE",
        "--rootdir", str(checks if checks.is_dir() else checks.parent),
        "--opsready-env", args.env, "--opsready-root", str(root),
    ]
    if args.gate is not None:
        pytest_args += ["--opsready-gate", args.gate]
    for t in args.ticket:
        pytest_args += ["--opsready-ticket", t.upper()]
    if args.out:
        pytest_args += ["--opsready-out", args.out]
    if args.allow_intrusive is not None:
        for name in args.allow_intrusive:
            pytest_args += ["--opsready-allow-intrusive", name]
    if args.fail_on_regression:
        pytest_args.append("--opsready-fail-on-regression")
    if args.pushgateway:
        pytest_args += ["--opsready-pushgateway", args.pushgateway]
    if args.workers > 0:
        pytest_args += ["-n", str(args.workers), "--dist", "loadfile"]
    else:
        pytest_args += ["-p", "no:xdist"]
    return int(pytest.main(pytest_args))


def _today() -> datetime.date:
    return datetime.datetime.now(datetime.UTC).date()


if __name__ == "__main__":
    raise SystemExit(main())
