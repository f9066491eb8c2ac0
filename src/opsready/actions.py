"""The catalogue's actions and the criteria that prove them.

Every action of a ticket names the criteria (test functions of the ticket's check modules)
that verify it, or is ``manual`` and covered by an attestation. Two rules follow:

- a run refuses to start (exit 4) when an action names a criterion that no check module of its
  ticket defines: a renamed test would otherwise leave the action silently unproven;
- ``opsready tickets --coverage`` lists every action with what proves it, and exits 1 when an
  action has neither a criterion nor a valid attestation.

The criteria are read from the check modules' source (top-level ``test*`` functions and the
``test*`` methods of ``Test*`` classes), without importing them, so the rule holds before any
probe or fixture runs.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from opsready import _clock
from opsready._errors import ConfigError
from opsready._options import ExitCode
from opsready.attestations import load_attestations
from opsready.catalogue import Catalogue, load_catalogue, module_ticket_id

__all__ = ["check_action_criteria", "coverage_command", "defined_criteria", "names_criterion"]


def names_criterion(entry: str, test_name: str) -> bool:
    """``test_a`` names ``test_a`` and every ``test_a[...]``; ``test_a[x]`` only itself."""
    return test_name == entry or (test_name.startswith(entry + "[") and "[" not in entry)


def _module_criteria(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            names.update(f"{node.name}::{m.name}" for m in node.body
                         if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef) and m.name.startswith("test"))
    return names


def defined_criteria(check_paths: Iterable[Path]) -> dict[str, set[str]]:
    """Ticket id -> the criterion names its check modules define. A module that cannot be
    read or parsed contributes nothing here; pytest reports it when it collects."""
    found: dict[str, set[str]] = {}
    for path in check_paths:
        modules = sorted(path.glob("test_*.py")) if path.is_dir() else [path]
        for module in modules:
            ticket = module_ticket_id(module.name)
            if ticket is None:
                continue
            names = found.setdefault(ticket, set())
            try:
                names.update(_module_criteria(module.read_text(encoding="utf-8")))
            except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
                continue
    return found


def check_action_criteria(catalogue: Catalogue, catalogue_path: Path, check_paths: Iterable[Path]) -> None:
    """Raise ``ConfigError`` for the first action naming a criterion its ticket's check
    modules do not define. Tickets without a check module are left alone: the report already
    says they have no automated check."""
    defined = defined_criteria(check_paths)
    for ticket in catalogue.tickets:
        names = defined.get(ticket.id)
        if not names:
            continue
        for i, action in enumerate(ticket.actions):
            for entry in action.criteria:
                if entry.split("[", 1)[0] not in names:
                    raise ConfigError(
                        str(catalogue_path), f"tickets[{ticket.id}].actions[{i}].criteria",
                        f"'{entry}' (for the action '{action.action}') is not a criterion of any check module "
                        f"of {ticket.id}",
                        f"use one of {', '.join(sorted(names))}, or mark the action manual",
                    )


def coverage_command(root: Path, *, stdout: TextIO | None = None) -> ExitCode:
    """``opsready tickets --coverage``: each action and what proves it; exit 1 when an action
    has no criterion and no valid attestation."""
    out = stdout if stdout is not None else sys.stdout
    cat_path = root / "config" / "tickets.yaml"
    catalogue = load_catalogue(cat_path)
    attestations = load_attestations(root / "config" / "attestations.yaml", catalogue, _clock.now().date())
    defined = defined_criteria([root / "checks"])
    uncovered: list[str] = []
    for ticket in catalogue.tickets:
        print(f"{ticket.id}  {ticket.title}", file=out)
        for action in ticket.actions:
            if action.criteria:
                unknown = [c for c in action.criteria if c.split("[", 1)[0] not in defined.get(ticket.id, set())]
                proof = "criteria: " + ", ".join(action.criteria)
                if unknown:
                    proof += f" (not defined in checks/: {', '.join(unknown)})"
                    uncovered.append(f"{ticket.id}: {action.action}")
            elif action.manual:
                found = attestations.find(ticket.id, action.action)
                if found is not None:
                    proof = (f"manual, attested by {found.attested_by} on {found.date.isoformat()}, approved by "
                             f"{found.approved_by}, expires {found.expires.isoformat()}")
                else:
                    proof = "manual, NO valid attestation in config/attestations.yaml"
                    uncovered.append(f"{ticket.id}: {action.action}")
            else:
                proof = "NO criterion and not manual"
                uncovered.append(f"{ticket.id}: {action.action}")
            print(f"    {action.action}  ->  {proof}", file=out)
    for warning in attestations.warnings:
        print(f"attestation not applied: {warning}", file=out)
    if uncovered:
        print(f"{len(uncovered)} action(s) with no criterion and no attestation:", file=out)
        for line in uncovered:
            print(f"    {line}", file=out)
        return ExitCode.FAILED
    total = sum(len(t.actions) for t in catalogue.tickets)
    print(f"every action is covered: {total} actions", file=out)
    return ExitCode.OK
