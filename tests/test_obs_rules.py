"""The platform's Prometheus rule files, dashboards and runbooks, as files: promtool accepts them,
their unit tests pass, every alert links a runbook that exists with the agreed sections."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from opsready.config import Environment, RunbooksConfig
from opsready.probes.grafana import count_panels
from opsready.probes.prometheus import rule_selectors
from opsready.probes.runbooks import section_words
from opsready_stack import prometheus_part
from opsready_stack.grafana_fake import DASHBOARDS_DIR
from opsready_stack.part import StackContext

STACK = Path(prometheus_part.__file__).resolve().parent
RULES = STACK / "prometheus"
REPO = STACK / "github_repo"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed "
                                    "(`make system-deps` installs it)")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=RULES, capture_output=True, text=True,
                          timeout=60, check=False)


def _alerts() -> list[dict[str, object]]:
    data = yaml.safe_load((RULES / "alerts.yml").read_text())
    return [r for g in data["groups"] for r in g["rules"]]


@needs_promtool
def test_promtool_check_rules() -> None:
    proc = _promtool("check", "rules", "alerts.yml", "slo-rules.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 8 rules found" in proc.stdout
    assert "SUCCESS: 5 rules found" in proc.stdout


@needs_promtool
def test_promtool_rule_unit_tests() -> None:
    proc = _promtool("test", "rules", "tests.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@needs_promtool
def test_promtool_test_catches_a_broken_pool_alert(tmp_path: Path) -> None:
    """The unit tests are not vacuous: a pool alert that ignores waiting requests fails them."""
    for name in ("alerts.yml", "slo-rules.yml", "tests.yml"):
        shutil.copy(RULES / name, tmp_path / name)
    text = (tmp_path / "alerts.yml").read_text()
    broken = text.replace('db_connection_pool_waiting{job="relay"} > 0',
                          'db_connection_pool_waiting{job="relay"} >= 0')
    assert broken != text
    (tmp_path / "alerts.yml").write_text(broken)
    proc = subprocess.run([str(PROMTOOL), "test", "rules", "tests.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "DBPoolExhausted" in proc.stdout + proc.stderr


def test_eight_alert_rules_each_with_a_runbook_in_the_repo() -> None:
    alerts = _alerts()
    assert len(alerts) == 8
    assert [a["alert"] for a in alerts] == prometheus_part.alert_rule_names()
    for rule in alerts:
        url = rule["annotations"]["runbook_url"]  # type: ignore[index]
        assert isinstance(url, str) and url.startswith("github:"), rule["alert"]
        assert (REPO / url.removeprefix("github:")).is_file(), url


def test_pool_alert_uses_the_pool_gauges() -> None:
    rule = next(r for r in _alerts() if r["alert"] == prometheus_part.POOL_ALERT)
    used = {s.selector.metric for s in rule_selectors(str(rule["expr"]))}
    assert {"db_connection_pool_available", "db_connection_pool_waiting"} <= used


def test_runbooks_have_every_section_with_a_body() -> None:
    cfg = RunbooksConfig()
    books = sorted((REPO / "docs" / "runbooks").glob("*.md"))
    assert {b.stem for b in books} >= {"outage", "db-connections", "rate-limit-breaches"}
    for book in books:
        words = section_words(book.read_text(), cfg.sections)
        assert all((n or 0) >= cfg.min_section_words for n in words.values()), (book.name, words)


def test_the_headings_only_runbook_fails_the_word_minimum() -> None:
    cfg = RunbooksConfig()
    text = (REPO.parent / "github_repo_variants" / "outage_headings_only.md").read_text()
    words = section_words(text, cfg.sections)
    assert None not in words.values()
    assert all(n is not None and n < cfg.min_section_words for n in words.values()), words


def test_env_config_validates_and_names_the_loaded_rules(tmp_path: Path) -> None:
    ctx = StackContext(dir=tmp_path, urls={"prometheus": "http://127.0.0.1:9090"},
                       secrets={"metrics_token": "token-for-the-test"})
    sections = prometheus_part.PrometheusPart().env_config(ctx)
    sections["service"]["base_url"] = "http://127.0.0.1:8000"
    env = Environment.model_validate(sections)
    assert env.prometheus is not None and env.slo is not None and env.runbooks is not None
    assert len(env.prometheus.alert_rules) == 8
    assert env.prometheus.pool_alert_rule in env.prometheus.alert_rules
    recorded = yaml.safe_load((RULES / "slo-rules.yml").read_text())["groups"][0]["rules"]
    assert env.prometheus.slo_recording_rules == [r["record"] for r in recorded]
    assert [s.name for s in env.slo.slos] == [
        "light endpoint p99 latency", "webhook p95 latency", "error rate", "availability"]
    for path in env.runbooks.paths.values():
        assert (REPO / path).is_file(), path


def test_dashboards_have_panels_on_the_service_metrics() -> None:
    boards = {json.loads(f.read_text())["uid"]: json.loads(f.read_text())
              for f in DASHBOARDS_DIR.glob("*.json")}
    assert "relay-golden-signals" in boards
    for uid, board in boards.items():
        assert count_panels(board) >= 1, uid
    exprs = " ".join(t["expr"] for p in boards["relay-golden-signals"]["panels"]
                     for t in p.get("targets", []))
    for metric in ("http_request_duration_seconds_bucket", "http_requests_total",
                   "db_connection_pool_waiting", "rate_limit_breaches_total"):
        assert metric in exprs, metric
