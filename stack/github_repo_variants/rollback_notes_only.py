#!/usr/bin/env python3
"""Prepare rollback notes for the Relay API.

Usage:
    python scripts/rollback.py --to <deployment id or git sha> [--reason TEXT]

Writes a markdown checklist for the on-call engineer, who then performs the rollback by hand
in the Railway dashboard (Deployments -> ... -> Rollback).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path

CHECKLIST = """\
## Steps

1. Open the Railway dashboard, project "relay", environment "production".
2. Open the relay-api service, Deployments tab.
3. Find the deployment `{target}` and choose "Rollback".
4. Watch /health until it reports the old version.
5. Post in #incidents with the link to this note.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--to", required=True, help="deployment id or git sha to return to")
    parser.add_argument("--reason", default="")
    parser.add_argument("--out", type=Path, default=Path("rollback-notes.md"))
    args = parser.parse_args()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    author = os.environ.get("GITHUB_ACTOR", os.environ.get("USER", "unknown"))
    args.out.write_text(
        f"# Rollback {now}\n\n"
        f"- target: `{args.to}`\n"
        f"- reason: {args.reason or 'not given'}\n"
        f"- requested by: {author}\n\n" + CHECKLIST.format(target=args.to)
    )
    print(f"wrote {args.out}; perform the rollback in the Railway dashboard")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
