"""P3-002: incident runbooks exist for an outage, DB connection trouble and rate-limit breaches,
have the agreed sections with something in them, and every alert rule links a runbook that
resolves.

What each criterion can and cannot tell:

- *Runbooks exist* reads each configured path (``runbooks.paths``) from the repository or disk.
- *Sections* requires every heading of ``runbooks.sections`` with a body of at least
  ``runbooks.min_section_words`` words (subsections count): a heading over nothing, or over
  "TBD", fails. It cannot tell that the steps are right.
- *Links resolve* follows the ``runbook_url`` of every alert rule of the platform (those of
  ``prometheus.rule_groups``/``rule_files`` when set: a shared Prometheus holds other teams'
  rules too), each rule on its own, since names need not be unique. A ``{{ $labels.x }}``
  template cannot be followed before the alert fires: Prometheus fills ``$labels`` from the
  firing series alone, not from the rule's own labels, so the criterion is not covered for
  it. GitHub blob links are read through the API, including branches whose name contains
  ``/``.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import pytest

import opsready
from opsready.probes.runbooks import RunbookLibrary, section_words

if TYPE_CHECKING:
    from opsready.evidence import Evidence
    from opsready.probes.prometheus import PrometheusProbe

pytestmark = [pytest.mark.ticket("P3-002")]


@pytest.fixture(scope="module")
def runbook_texts(runbooks: RunbookLibrary) -> dict[str, str | None]:
    return {topic: runbooks.read(path) for topic, path in runbooks.cfg.paths.items()}


def _where(runbooks: RunbookLibrary) -> str:
    return "the repository" if runbooks.cfg.source == "github" else str(runbooks.base_dir)


def test_runbooks_exist(runbooks: RunbookLibrary, runbook_texts: dict[str, str | None],
                        evidence: Evidence) -> None:
    """Runbooks exist for an outage, DB connection trouble and rate-limit breaches"""
    paths = runbooks.cfg.paths
    if not paths:
        opsready.not_covered("not configured: runbooks.paths")
    evidence.record("runbooks", {topic: {"path": paths[topic], "exists": text is not None,
                                         "chars": None if text is None else len(text)}
                                 for topic, text in runbook_texts.items()})
    missing = [f"{topic} ({paths[topic]})" for topic, text in runbook_texts.items()
               if text is None]
    assert not missing, (
        f"runbooks ({runbooks.cfg.source}): {', '.join(missing)} not found in "
        f"{_where(runbooks)}; expected a runbook for each configured topic; write them (or fix "
        f"runbooks.paths)"
    )


def test_runbook_sections(runbooks: RunbookLibrary, runbook_texts: dict[str, str | None],
                          evidence: Evidence) -> None:
    """Each runbook has the sections Symptoms, Impact, Diagnosis, Mitigation and Escalation"""
    sections = runbooks.cfg.sections
    if not runbooks.cfg.paths:
        opsready.not_covered("not configured: runbooks.paths")
    if not sections:
        opsready.not_covered("not configured: runbooks.sections")
    least = runbooks.cfg.min_section_words
    present = {t: text for t, text in runbook_texts.items() if text is not None}
    assert present, (
        f"runbooks ({runbooks.cfg.source}): none of {', '.join(runbooks.cfg.paths.values())} "
        f"exists, so no sections can be checked; write the runbooks first"
    )
    words = {topic: section_words(text, sections) for topic, text in present.items()}
    evidence.record("runbook_sections", {t: {"words": w, "min_words": least}
                                         for t, w in words.items()})
    path = runbooks.cfg.paths
    missing = [f"{path[t]} lacks {', '.join(s for s, n in w.items() if n is None)}"
               for t, w in words.items() if any(n is None for n in w.values())]
    assert not missing, (
        f"runbooks ({runbooks.cfg.source}): {'; '.join(missing)}; expected headings "
        f"{', '.join(sections)} in each; add them as markdown headings"
    )
    thin = [f"{path[t]}: {', '.join(f'{s} ({n} words)' for s, n in w.items() if (n or 0) < least)}"
            for t, w in words.items() if any((n or 0) < least for n in w.values())]
    assert not thin, (
        f"runbooks ({runbooks.cfg.source}): sections with less than {least} words: "
        f"{'; '.join(thin)}; expected each section to say what to look at and do, not only "
        f"its heading; write them (runbooks.min_section_words sets the minimum)"
    )


def test_alert_runbook_links_resolve(prometheus: PrometheusProbe, runbooks: RunbookLibrary,
                                     evidence: Evidence) -> None:
    """Every alert rule has a runbook_url that resolves"""
    rules = prometheus.scoped_rules("alert")
    configured = prometheus.cfg.alert_rules
    loaded = {r.name for r in rules}
    absent = [n for n in configured if n not in loaded]
    found = ("no alert rules are loaded" if not rules
             else f"alert rules {', '.join(absent)} are not loaded")
    assert rules and not absent, (
        f"Prometheus at {prometheus.url}: {found}, so their runbook links cannot be followed; "
        f"expected every alert rule loaded with a runbook_url; import the alert rules"
    )
    links = {}
    named = Counter(r.name for r in rules)
    for i, rule in enumerate(rules):
        url = rule.annotations.get("runbook_url", "").strip()
        # Names need not be unique: each rule's link is judged, not the last namesake's.
        key = rule.name if named[rule.name] == 1 else f"{rule.name} ({rule.group}, rule {i + 1})"
        # Prometheus fills $labels from the firing series alone, never from the rule's own
        # labels: before the alert fires, no label of it is known.
        links[key] = runbooks.resolve_rule_link(url, {}) if url else None
    evidence.record("runbook_links", {
        name: {"runbook_url": None} if check is None else
        {"runbook_url": check.url, "resolves": check.resolves, "detail": check.detail}
        for name, check in links.items()
    })
    no_link = [name for name, check in links.items() if check is None]
    assert not no_link, (
        f"Prometheus at {prometheus.url}: alert rules {', '.join(no_link)} have no runbook_url "
        f"annotation; expected every alert to link its runbook; add annotations.runbook_url"
    )
    broken = [f"{name} -> {check.url} ({check.detail})" for name, check in links.items()
              if check is not None and check.judged and not check.resolves]
    assert not broken, (
        f"runbook links do not resolve: {'; '.join(broken)}; expected HTTP 200 or an existing "
        f"file in the repository; fix the link or restore the runbook"
    )
    unjudged = [f"{name} ({check.detail})" for name, check in links.items()
                if check is not None and not check.judged]
    if unjudged:
        opsready.not_covered(f"runbook links that cannot be followed before the alert fires: "
                             f"{'; '.join(unjudged)}")
