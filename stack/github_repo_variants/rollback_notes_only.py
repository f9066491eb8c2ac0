#!/usr/bin/env python3
"""Prepare rollback notes for the Relay API.

Usage:
    scripts/rollback --to <deployment id> [--reason TEXT]

Writes a markdown checklist for the on-call engineer, who then performs the rollback by hand:
in the Railway dashboard (Deployments -> ... -> Rollback), or by pasting the deploymentRollback
mutation below into the GraphQL playground at https://backboard.railway.com/graphql/v2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path

# The API the on-call engineer talks to; this script itself never does.
PLAYGROUND = "https://backboard.railway.com/graphql/v2"

CHECKLIST = """\
## Steps

1. Open the Railway dashboard, project "relay", environment "production".
2. Open the relay-api service, Deployments tab.
3. Find the deployment `{target}` and choose "Rollback", or run in the playground at
   {playground}:

       mutation {{ deploymentRollback(id: "{target}") }}

4. Watch /health until it reports the old version.
5. Post in #incidents with the link to this note.
"""

# For the playground: the mutation as a one-liner to copy.
MUTATION = 'mutation { deploymentRollback(id: "%s") }'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--to", required=True, help="deployment id to return to")
    parser.add_argument("--reason", default="")
    parser.add_argument("--out", type=Path, default=Path("rollback-notes.md"))
    args = parser.parse_args()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    author = os.environ.get("GITHUB_ACTOR", os.environ.get("USER", "unknown"))
    args.out.write_text(
        f"# Rollback {now}\n\n"
        f"- target: `{args.to}`\n"
        f"- reason: {args.reason or 'not given'}\n"
        f"- requested by: {author}\n\n"
        + CHECKLIST.format(target=args.to, playground=PLAYGROUND)
    )
    # deploymentRollback is run by a human from the checklist above, never from here.
    print(MUTATION % args.to)
    print(f"wrote {args.out}; perform the rollback in the Railway dashboard")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
