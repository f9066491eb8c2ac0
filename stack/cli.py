"""``opsready stack up|down|status|fault|faults``: the reference stack from the command line.

Exit codes: 0 done, 1 the stack failed (a part did not start, a part is down), 2 interrupted,
4 usage error (unknown fault, bad option) with a one-line message.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from opsready_stack import orchestrator
from opsready_stack.orchestrator import StackError, UsageError

__all__ = ["faults_markdown", "faults_table", "main"]

DIR_HELP = "the stack directory (default: .stack/ under the current directory)"


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 4 like every other opsready usage error."""

    def error(self, message: str) -> NoReturn:
        self.exit(4, f"opsready stack: {message} (see `opsready stack --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="opsready stack",
        description="Run the reference stack: a local copy of the audited platform, "
        "with fault switches.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    up = sub.add_parser("up", help="start every part, wait until ready, write DIR/env.yaml")
    up.add_argument("--dir", type=Path, default=None, help=DIR_HELP)
    up.add_argument("--fault", action="append", default=[], metavar="NAME",
                    help="start with this fault on (repeatable; list: opsready stack faults)")
    up.add_argument("--rows", type=int, default=orchestrator.DEFAULT_ROWS, metavar="N",
                    help="seed N rows per table (default: %(default)s)")
    up.add_argument("--webhook-scheme", choices=orchestrator.WEBHOOK_SCHEMES, default="hex",
                    help="how the service signs webhooks (default: %(default)s)")
    up.add_argument("--latency-ms", type=float, default=0.0, metavar="N",
                    help="add N ms to every round trip between opsready and the stack, through a "
                    "loopback delay proxy (default: 0, no proxy)")
    up.add_argument("--jitter-ms", type=float, default=0.0, metavar="J",
                    help="with --latency-ms: up to J ms more per round trip (default: 0)")

    down = sub.add_parser("down", help="stop everything and remove the stack directory")
    down.add_argument("--dir", type=Path, default=None, help=DIR_HELP)

    status = sub.add_parser("status", help="exit 0 when every part is up")
    status.add_argument("--dir", type=Path, default=None, help=DIR_HELP)

    fault = sub.add_parser("fault", help="turn a fault on or off in a running stack")
    fault.add_argument("state", choices=("on", "off"))
    fault.add_argument("name", metavar="NAME")
    fault.add_argument("--dir", type=Path, default=None, help=DIR_HELP)

    faults = sub.add_parser("faults", help="list the faults and the tickets each one turns open")
    faults.add_argument("--markdown", action="store_true",
                        help="print the table as Markdown (the one in stack/README.md)")
    return parser


def faults_table() -> str:
    """The fault table: fault, the tickets it turns open, what it does."""
    faults = orchestrator.all_faults()
    rows = [("fault", "tickets it turns open", "description")]
    rows += [(f.name, ", ".join(sorted(f.tickets)) or "none (variant)", f.description)
             for f in faults.values()]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows]
    lines.insert(1, f"{'-' * w0}  {'-' * w1}  {'-' * 11}")
    return "\n".join(lines)


def faults_markdown() -> str:
    """The fault table of stack/README.md."""
    lines = ["| fault | tickets it turns open | what it breaks |", "| --- | --- | --- |"]
    for f in orchestrator.all_faults().values():
        tickets = ", ".join(sorted(f.tickets)) or "none (a legitimate variant)"
        lines.append(f"| `{f.name}` | {tickets} | {f.description.replace('|', '/')} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        with orchestrator.sigterm_interrupts():
            return _run(args)
    except KeyboardInterrupt:
        print("opsready stack: interrupted", file=sys.stderr)
        return 2
    except StackError as exc:
        where = f" (part {exc.part})" if exc.part and exc.part not in str(exc) else ""
        print(f"opsready stack: {exc}{where}", file=sys.stderr)
        if exc.log_tail:
            print(exc.log_tail, file=sys.stderr)
        if args.command == "up" and not isinstance(exc, UsageError):
            opt = "" if args.dir is None else f" --dir {args.dir}"
            print(f"opsready stack: everything started was stopped; logs are kept until "
                  f"`opsready stack down{opt}`", file=sys.stderr)
        return exc.exit_code


def _run(args: argparse.Namespace) -> int:
    if args.command == "up":
        summary = orchestrator.up(args.dir, faults=args.fault, rows=args.rows,
                                  webhook_scheme=args.webhook_scheme, latency_ms=args.latency_ms,
                                  jitter_ms=args.jitter_ms)
        orchestrator.print_summary(summary)
        return 0
    if args.command == "down":
        stopped = orchestrator.down(args.dir)
        where = orchestrator.resolve_dir(args.dir)
        print(f"[stack] stopped and removed {where}" if stopped else f"[stack] no stack in {where}",
              file=sys.stderr)
        return 0
    if args.command == "status":
        rows = orchestrator.status(args.dir)
        width = max(len(r.name) for r in rows)
        for row in rows:
            print(f"{row.name:<{width}}  {'up  ' if row.up else 'DOWN'}  {row.detail}")
        return 0 if all(r.up for r in rows) else 1
    if args.command == "fault":
        active = orchestrator.set_fault(args.dir, args.name, args.state == "on")
        print(f"[stack] fault {args.name} {args.state}; active: {', '.join(active) or 'none'}",
              file=sys.stderr)
        return 0
    if args.command == "faults":
        print(faults_markdown() if args.markdown else faults_table())
        return 0
    raise AssertionError(args.command)  # argparse only accepts the commands above


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
