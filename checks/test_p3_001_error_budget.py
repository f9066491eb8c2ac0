"""P3-001: error-budget tracking is automated: the SLO recording rules run in Prometheus and the
four SLIs compute from it now. (The weekly SLO report job is judged in
test_p3_001_slo_report_job.py.)

The run's SLO table (evidence ``slo_table``) is computed here from the live Prometheus; the
definitions of budget remaining and burn rate are in ``PrometheusProbe.slo_status``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import opsready
from opsready.assertions import rules_loaded_and_healthy

if TYPE_CHECKING:
    from opsready.config import SloConfig
    from opsready.evidence import Evidence
    from opsready.probes.prometheus import PrometheusProbe

pytestmark = [pytest.mark.ticket("P3-001")]


def test_slo_recording_rules_loaded(prometheus: PrometheusProbe, evidence: Evidence) -> None:
    """The SLO recording rules are loaded and healthy"""
    wanted = prometheus.cfg.slo_recording_rules
    if not wanted:
        opsready.not_covered("not configured: prometheus.slo_recording_rules")
    loaded = {r.name: r for r in prometheus.recording_rules()}
    evidence.record("recording_rules", [loaded[n].summary() if n in loaded else
                                        {"name": n, "loaded": False} for n in wanted])
    rules_loaded_and_healthy(
        f"Prometheus at {prometheus.url}", "recording", loaded, wanted,
        "add the SLO rule file to rule_files in prometheus.yml and reload Prometheus",
    )


def test_slis_compute_now(prometheus: PrometheusProbe, slo_config: SloConfig,
                          evidence: Evidence) -> None:
    """The SLIs of the SLOs compute from Prometheus now"""
    if not slo_config.slos:
        opsready.not_covered("not configured: slo.slos")
    statuses = [prometheus.slo_status(spec, slo_config) for spec in slo_config.slos]
    evidence.table("slo_table", [s.row() for s in statuses], note=f"SLO window {slo_config.window_days:g} days; "
                   f"current value and burn rate over the last {slo_config.current_window}")
    evidence.record("slo_queries", {s.name: {"query": s.query, "note": s.note} for s in statuses})
    missing = [f"{s.name} ({s.note}; query {s.query!r})" for s in statuses if s.value is None]
    assert not missing, (
        f"Prometheus at {prometheus.url}: {len(missing)} of {len(statuses)} SLIs did not "
        f"compute: {'; '.join(missing)}; expected a number for each; check that the metrics "
        f"are scraped and that slo.slos[].query matches their names and labels"
    )
