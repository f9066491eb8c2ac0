"""Assertion helpers shared by checks.

Each hides itself from tracebacks, and its failure message says what was probed, what was
found, what was expected and what to do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opsready.probes.prometheus import Rule

__all__ = ["rules_loaded_and_healthy"]


def rules_loaded_and_healthy(where: str, kind: str, loaded: Mapping[str, Rule], wanted: Sequence[str],
                             fix: str) -> None:
    """Every ``wanted`` rule is among ``loaded`` with health ``ok``.

    ``kind`` names the rules in messages ("alert", "recording"); ``fix`` is what to do when
    some are missing.
    """
    __tracebackhide__ = True
    missing = [n for n in wanted if n not in loaded]
    assert not missing, (
        f"{where}: {kind} rules {', '.join(missing)} are not loaded ({len(loaded)} {kind} rules "
        f"loaded); expected all {len(wanted)} configured rules; {fix}"
    )
    unhealthy = [f"{n} ({loaded[n].health}: {loaded[n].last_error or 'no error text'})"
                 for n in wanted if loaded[n].health != "ok"]
    assert not unhealthy, (
        f"{where}: {kind} rules {'; '.join(unhealthy)} are not healthy, expected health ok; "
        f"fix the rule expressions shown in lastError"
    )
