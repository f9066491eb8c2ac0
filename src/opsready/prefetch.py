"""Read-only facts that several criteria share, read ahead at session start.

Over a real network a run spends most of its time waiting for answers. The bucket settings,
the backup listing, the rules Prometheus loaded, the Grafana dashboards, the workflow
listings and files of the repository do not change during a run and do not depend on each
other, so the run reads them concurrently, one lane (thread) per target, while the first
criteria run. Each criterion names the facts it reads in its plan entry (``facts:``, see
``opsready.plan``); only the facts of the selected criteria are read, each once (see
``opsready.probes._shared``).

What stays as it was:

- A fact's error is raised by the criterion that reads it, with the same message, as if the
  criterion had called the probe itself.
- Within one lane the facts are read one after the other: a target sees one read-ahead
  request at a time, besides what the running criterion sends. GitHub gets one request at a
  time in all, the criterion's first (see ``probes.github``).
- Intrusive probes are never overlapped, except the restore drill (it writes only to its own
  scratch database): before any other intrusive criterion the lanes pause and the facts being
  read are finished; they resume after its teardown. So the rate-limit burst and the rollback
  drill run alone, as before. The restore drill itself runs in the background from the start
  (``fixtures.opsready_background_drill``), alongside the lanes and the criteria.
- Only one process reads ahead: an xdist worker does not know which criteria it will get, so
  there each criterion reads for itself.
- The lanes end with the session: facts not started are dropped, a read in flight is bounded
  by its probe's timeout, and after an interrupt the session waits for none longer than
  ``INTERRUPTED_GRACE_S`` (the threads are daemons).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opsready.probes._shared import SharedFacts

if TYPE_CHECKING:
    from opsready.config import Environment

__all__ = ["FACTS", "INTERRUPTED_GRACE_S", "OVERLAPPABLE_INTRUSIVE", "Fact", "Prefetch", "planned"]

# After Ctrl-C, SIGTERM or the deadline, how long the session waits for reads in flight.
INTERRUPTED_GRACE_S = 1.0
# Intrusive probes that read-only prefetch may overlap: they change nothing another probe reads.
OVERLAPPABLE_INTRUSIVE = frozenset({"restore_drill"})


@dataclass(frozen=True)
class Fact:
    """A shared fact: the target whose probe (its fixture) reads it, and the reads, made
    through the probe's ``shared_fact`` methods with the arguments the checks pass (from the
    probe's and the environment's configuration)."""

    name: str
    target: str
    reads: Callable[[Any, Environment], object]


def _dashboards(grafana: Any, env: Environment) -> None:
    for uid in dict.fromkeys(grafana.cfg.dashboards):
        grafana.dashboard(uid)


def _workflow(key: str, *, jobs: bool = False, **runs: Any) -> Callable[[Any, Environment], None]:
    """The workflow named by ``github.<key>``, its file, the runs the check lists and, with
    ``jobs``, the jobs of the newest concluded run."""

    def reads(github: Any, env: Environment) -> None:
        from opsready.probes.github import newest_concluded

        file = getattr(github.cfg, key)
        workflow = github.workflow(file) if file else None
        if workflow is None:
            return
        github.get_file(workflow.path)
        for kwargs in runs.values():
            listed = github.runs(workflow, **kwargs)
            newest = newest_concluded(listed) if jobs else None
            if newest is not None:
                github.run_jobs(newest.id)

    return reads


def _newest_backup(backups: Any, env: Environment) -> None:
    """The newest backup's sidecar and one full read of it (the dump's inspection)."""
    newest = backups.latest().newest if backups.pattern is not None and backups.bucket_exists() else None
    if newest is not None:
        backups.sidecar(newest)
        drill = env.restore_drill
        backups.inspect(newest, drill.pg_restore if drill else "pg_restore")


def _runbooks(github: Any, env: Environment) -> None:
    """The runbooks in the repository (their ``github:`` links read the same files)."""
    if env.runbooks is not None and env.runbooks.source == "github":
        for path in env.runbooks.paths.values():
            github.get_file(path)


FACTS: dict[str, Fact] = {f.name: f for f in (
    Fact("backups.bucket_exists", "backups", lambda b, env: b.bucket_exists()),
    Fact("backups.latest", "backups", lambda b, env: b.latest()),
    Fact("backups.history", "backups", lambda b, env: b.history()),
    Fact("backups.versioning_status", "backups", lambda b, env: b.versioning_status()),
    Fact("backups.lifecycle_rules", "backups", lambda b, env: b.lifecycle_rules()),
    Fact("backups.object_lock", "backups", lambda b, env: b.object_lock()),
    Fact("backups.default_encryption", "backups", lambda b, env: b.default_encryption()),
    Fact("backups.public_access_block", "backups", lambda b, env: b.public_access_block()),
    Fact("backups.newest_backup", "backups", _newest_backup),
    Fact("backups.drill_record", "backups", lambda b, env: b.drill_record()),
    # The listing of the window's days, which the store keeps for the run.
    Fact("backups.daily_coverage", "backups", lambda b, env: b.daily_coverage(b.cfg.daily_window_days)),
    Fact("prometheus.buildinfo", "prometheus", lambda p, env: p.buildinfo()),
    Fact("prometheus.alert_rules", "prometheus", lambda p, env: p.rules("alert")),
    Fact("prometheus.recording_rules", "prometheus", lambda p, env: p.rules("record")),
    Fact("grafana.datasources", "grafana", lambda g, env: g.datasources()),
    Fact("grafana.dashboards", "grafana", _dashboards),
    Fact("github.drill_workflow", "github",
         _workflow("drill_workflow", completed={"status": "completed", "limit": 50})),
    Fact("github.slo_report_workflow", "github",
         _workflow("slo_report_workflow",
                   scheduled={"event": "schedule", "status": "completed", "limit": 30},
                   manual={"event": "workflow_dispatch", "status": "success", "limit": 1})),
    Fact("github.rollback_workflow", "github",
         _workflow("rollback_workflow", jobs=True, completed={"status": "completed", "limit": 30})),
    Fact("github.runbooks", "github", _runbooks),
    # Not a fact that stands still but a request whose answer takes time to show: the trace
    # the service exports after its span processor's delay. Sent ahead, it is exported while
    # other criteria run; the criterion then reads the trace back.
    Fact("service.traced_request", "service",
         lambda s, env: s.traced_get(env.otel.traced_path) if env.otel is not None else None),
    Fact("github.rollback_script", "github",
         lambda g, env: g.get_file(g.cfg.rollback_script) if g.cfg.rollback_script else None),
)}


class Prefetch:
    """The lanes of one session: ``add`` facts with their probes, ``start``, then ``close``."""

    def __init__(self) -> None:
        self._lanes: dict[str, list[Callable[[], None]]] = {}
        self._threads: list[threading.Thread] = []
        self._cond = threading.Condition()
        self._paused = False
        self._closed = False
        self._running = 0

    def add(self, fact: Fact, probe: Any, env: Environment) -> None:
        """Queue ``fact`` in its target's lane; from now on ``probe`` shares its facts."""
        shared = getattr(probe, "shared", None)
        if shared is None:
            shared = probe.shared = SharedFacts()
        self._lanes.setdefault(fact.target, []).append(
            functools.partial(shared.ahead, functools.partial(fact.reads, probe, env)))

    @property
    def targets(self) -> list[str]:
        return list(self._lanes)

    def start(self, *, paused: bool = False) -> None:
        """Start one daemon thread per target with reads queued."""
        self._paused = paused
        for target, reads in self._lanes.items():
            thread = threading.Thread(target=self._lane, args=(reads,), daemon=True,
                                      name=f"opsready-prefetch-{target}")
            self._threads.append(thread)
            thread.start()

    def _lane(self, reads: list[Callable[[], None]]) -> None:
        for read in reads:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or not self._paused)
                if self._closed:
                    return
                self._running += 1
            try:
                read()
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()

    def pause(self) -> None:
        """Let no read start, and wait for those in flight (each bounded by its timeout)."""
        with self._cond:
            self._paused = True
            self._cond.wait_for(lambda: self._running == 0)

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def close(self, *, interrupted: bool = False) -> None:
        """Start nothing more, and wait for the reads in flight: each is bounded by its
        probe's timeout; after an interrupt, at most ``INTERRUPTED_GRACE_S`` in all."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        until = time.monotonic() + INTERRUPTED_GRACE_S
        for thread in self._threads:
            thread.join(max(0.0, until - time.monotonic()) if interrupted else None)

    def alive(self) -> list[str]:
        """The lanes still running."""
        return [t.name for t in self._threads if t.is_alive()]


def planned(entries: Iterable[Any]) -> list[Fact]:
    """The facts the plan entries name, in the order first named, once."""
    names: dict[str, None] = {}
    for entry in entries:
        for name in getattr(entry, "facts", ()):
            names.setdefault(name, None)
    return [FACTS[n] for n in names if n in FACTS]
