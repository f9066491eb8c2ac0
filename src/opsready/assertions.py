"""Assertion helpers shared by checks.

Each hides itself from tracebacks, and its failure message says what was probed, what was
found, what was expected and what to do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from opsready._coverage import not_covered

if TYPE_CHECKING:
    from opsready.probes.prometheus import Rule, SelectorStatus, Target

__all__ = ["all_targets_up", "rules_loaded_and_healthy", "selectors_match_series"]

# Worst last: a broken rule outranks one not evaluated yet, which outranks a healthy one.
_HEALTH_ORDER = {"ok": 0, "unknown": 1}


def rules_loaded_and_healthy(where: str, kind: str, rules: Sequence[Rule], wanted: Sequence[str],
                             fix: str) -> None:
    """Every ``wanted`` rule is among ``rules`` with health ``ok``. Names need not be unique
    (a warning and a critical tier of one alert): every rule of a wanted name must be
    healthy, so a healthy namesake never hides a broken one.

    ``kind`` names the rules in messages ("alert", "recording"); ``fix`` is what to do when
    some are missing.
    """
    __tracebackhide__ = True
    loaded: dict[str, Rule] = {}
    for rule in rules:
        held = loaded.get(rule.name)
        if held is None or _HEALTH_ORDER.get(rule.health, 2) > _HEALTH_ORDER.get(held.health, 2):
            loaded[rule.name] = rule
    missing = [n for n in wanted if n not in loaded]
    assert not missing, (
        f"{where}: {kind} rules {', '.join(missing)} are not loaded ({len(loaded)} {kind} rules "
        f"loaded); expected all {len(wanted)} configured rules; {fix}"
    )
    unhealthy = [f"{n} ({loaded[n].health}: {loaded[n].last_error or 'no error text'})"
                 for n in wanted if loaded[n].health not in ("ok", "unknown")]
    assert not unhealthy, (
        f"{where}: {kind} rules {'; '.join(unhealthy)} are not healthy, expected health ok; "
        f"fix the rule expressions shown in lastError"
    )
    not_evaluated = [n for n in wanted if loaded[n].health == "unknown"]
    if not_evaluated:
        # Health unknown: loaded, not evaluated yet (Prometheus was just reloaded).
        not_covered(
            f"{where}: {kind} rules {', '.join(not_evaluated)} have not been evaluated yet "
            f"(health unknown), so their health cannot be judged; run again after one "
            f"evaluation interval"
        )


def selectors_match_series(where: str, kind: str, statuses: Sequence[SelectorStatus]) -> None:
    """Every selector of the judged rules that must match a series does: a rule with a
    selector that matches nothing can never fire (or record anything)."""
    __tracebackhide__ = True
    empty = [f"{s.rule}: {s.selector}" for s in statuses if s.matches is False]
    never = "can never fire" if kind == "alert" else "records nothing"
    assert not empty, (
        f"{where}: {len(empty)} selector(s) of the {kind} rules match no series now: "
        f"{'; '.join(empty)}; a rule whose selector matches nothing {never}, however healthy "
        f"it reads; fix the metric or label names in the expression (or the scrape), or list "
        f"a selector that is legitimately empty under prometheus.series_may_be_empty"
    )


def all_targets_up(where: str, targets: Mapping[str, Target]) -> None:
    """Not covered when a scrape target (instance -> target) is down: what it exports
    cannot be read."""
    down = [f"{i} ({t.health}{': ' + t.last_error if t.last_error else ''})"
            for i, t in sorted(targets.items()) if t.health != "up"]
    if down:
        not_covered(
            f"{where}: target(s) {', '.join(down)} are not up, so what they export cannot be "
            f"read; run again once Prometheus scrapes them")
