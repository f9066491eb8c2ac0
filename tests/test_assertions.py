"""The shared assertion helpers: a missing or unhealthy rule fails with what was found."""

from __future__ import annotations

import pytest

from opsready.assertions import rules_loaded_and_healthy
from opsready.probes.prometheus import Rule


def rule(name: str, health: str = "ok", last_error: str = "") -> Rule:
    return Rule(name=name, kind="alerting", group="g", file="f.yml", query="up == 0",
                health=health, last_error=last_error)


def test_all_loaded_and_healthy_passes() -> None:
    rules_loaded_and_healthy("Prometheus at http://p", "alert", [rule("A")], ["A"], "reload")


def test_a_missing_rule_fails_naming_it_and_the_fix() -> None:
    with pytest.raises(AssertionError) as info:
        rules_loaded_and_healthy("Prometheus at http://p", "alert", [rule("A")], ["A", "B"], "reload it")
    assert str(info.value) == ("Prometheus at http://p: alert rules B are not loaded (1 alert rules loaded); "
                               "expected all 2 configured rules; reload it")


def test_an_unhealthy_rule_fails_with_its_error() -> None:
    loaded = [rule("A", "err", "parse error at char 3")]
    with pytest.raises(AssertionError, match=r"A \(err: parse error at char 3\) are not healthy"):
        rules_loaded_and_healthy("Prometheus at http://p", "recording", loaded, ["A"], "reload")


@pytest.mark.parametrize("order", [1, -1])
def test_a_broken_namesake_is_not_hidden_by_a_healthy_one(order: int) -> None:
    """Rule names need not be unique: every rule of a wanted name must be healthy, whatever
    order Prometheus lists them in."""
    rules = [rule("A"), rule("A", "err", "many-to-many matching not allowed")][::order]
    with pytest.raises(AssertionError, match=r"A \(err: many-to-many"):
        rules_loaded_and_healthy("Prometheus at http://p", "alert", rules, ["A"], "reload")
    rules_loaded_and_healthy("Prometheus at http://p", "alert", [rule("A"), rule("A")], ["A"], "reload")
