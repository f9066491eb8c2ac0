"""Fixtures that hand checks ready probes.

A check never builds a client itself: it names a fixture. A fixture whose environment section
is missing ends the criterion *not covered* with ``not configured: <section>``, so an empty
environment file is valid and every criterion says why it did not run.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from opsready._coverage import not_covered
from opsready.config import Environment
from opsready.evidence import Evidence

if TYPE_CHECKING:
    from opsready.config import CorsConfig, RunbooksConfig, SloConfig, WebhooksConfig
    from opsready.prefetch import Prefetch
    from opsready.probes.github import GithubProbe
    from opsready.probes.grafana import GrafanaProbe
    from opsready.probes.http import ServiceProbe
    from opsready.probes.otel import OtelProbe
    from opsready.probes.postgres import BackgroundDrill, DumpSource, ScratchServer
    from opsready.probes.prometheus import PrometheusProbe
    from opsready.probes.railway import RailwayProbe
    from opsready.probes.runbooks import RunbookLibrary
    from opsready.probes.s3 import BackupStore

__all__ = [
    "backups",
    "cors_config",
    "evidence",
    "github",
    "grafana",
    "intrusive_allowed",
    "opsready_background_drill",
    "opsready_env",
    "opsready_prefetch",
    "otel",
    "per_instance_prometheus",
    "prometheus",
    "railway",
    "runbooks",
    "runbooks_config",
    "scratch_server",
    "service",
    "slo_config",
    "webhooks_config",
]

T = TypeVar("T")

ENV_KEY = pytest.StashKey[Environment]()
EVIDENCE_KEY = pytest.StashKey[Evidence]()
# The intrusive probes this run allows: the environment's list, or --allow-intrusive.
INTRUSIVE_KEY = pytest.StashKey[tuple[str, ...]]()
# On a criterion: the intrusive probes it asked ``intrusive_allowed`` for and was refused.
DENIED_INTRUSIVE_KEY = pytest.StashKey[list[str]]()
# The session's read-ahead of shared facts (``opsready.prefetch``), while it runs.
PREFETCH_KEY: pytest.StashKey[Prefetch] = pytest.StashKey()
# Set while an intrusive criterion that nothing may overlap runs: the read-ahead is paused.
PREFETCH_PAUSED_KEY = pytest.StashKey[bool]()
# Set while a restore drill started with the session runs in the background.
BACKGROUND_DRILL_KEY = pytest.StashKey[bool]()


def section(env: Environment, name: str) -> Any:
    """The environment section ``name``, or *not covered* saying it is not configured."""
    value = getattr(env, name)
    if value is None:
        not_covered(f"not configured: {name} (add a `{name}:` section to {env.source or 'the environment file'})")
    return value


def _closing(probe: T) -> Iterator[T]:
    try:
        yield probe
    finally:
        close = getattr(probe, "close", None)
        if close is not None:
            close()


@pytest.fixture(scope="session")
def opsready_env(request: pytest.FixtureRequest) -> Environment:
    """The validated environment of this run."""
    env = request.config.stash.get(ENV_KEY, None)
    if env is None:
        pytest.skip("no environment: run through `opsready verify` or pass --opsready-env NAME")
    return env


@pytest.fixture(scope="session", autouse=True)
def opsready_prefetch(request: pytest.FixtureRequest) -> Iterator[None]:
    """Read the shared facts of the selected criteria ahead, concurrently, one lane per
    target (see ``opsready.prefetch``). Only in one process: an xdist worker does not know
    which criteria it will run, so there each criterion reads for itself."""
    config = request.config
    env = config.stash.get(ENV_KEY, None)
    if env is None or hasattr(config, "workerinput") or config.getoption("numprocesses", None):
        yield
        return
    from opsready._interrupt import stop_signals
    from opsready.plugin import PLAN_KEY
    from opsready.prefetch import Prefetch, planned

    prefetch = Prefetch()
    for fact in planned(item.stash.get(PLAN_KEY, None) for item in request.session.items):
        if getattr(env, fact.target, None) is None:
            continue
        try:
            probe = request.getfixturevalue(fact.target)
        except (Exception, pytest.skip.Exception):
            # The criteria that need this probe meet the same error when they ask for it.
            continue
        prefetch.add(fact, probe, env)
    config.stash[PREFETCH_KEY] = prefetch
    prefetch.start(paused=config.stash.get(PREFETCH_PAUSED_KEY, False))
    try:
        yield
    finally:
        del config.stash[PREFETCH_KEY]
        prefetch.close(interrupted=stop_signals().stopped)


@pytest.fixture(scope="session", autouse=True)
def opsready_background_drill(request: pytest.FixtureRequest, opsready_prefetch: None) -> Iterator[None]:
    """Start the restore drill at session start, on a thread of its own, when a drill
    criterion is selected and ``restore_drill`` is allowed: it writes only to its own scratch
    database, so the read-only criteria run alongside it. The drill criteria then take its
    result (``ScratchServer.restore_drill``). Only in one process, like the read-ahead, which
    starts first so that both read the newest backup's listing once.

    When the session ends, a drill still running (Ctrl-C, SIGTERM, the deadline, or a run
    that ended before its criteria) is cancelled, and the session waits, bounded by the
    drill's statement timeout, until it has dropped its scratch database."""
    config = request.config
    env = config.stash.get(ENV_KEY, None)
    if env is None or hasattr(config, "workerinput") or config.getoption("numprocesses", None):
        yield
        return
    background = _start_background_drill(request, env)
    if background is None:
        yield
        return
    from opsready._interrupt import stop_signals

    signals = stop_signals()
    config.stash[BACKGROUND_DRILL_KEY] = True
    try:
        yield
    finally:
        del config.stash[BACKGROUND_DRILL_KEY]
        drill_cfg = env.restore_drill
        assert drill_cfg is not None
        reason = (f"the run was stopped ({signals.reason})" if signals.stopped
                  else "the run ended before the drill criteria took its result")
        background.stop(reason, drill_cfg.statement_timeout_s + 10.0, signals.say)


def _start_background_drill(request: pytest.FixtureRequest, env: Environment) -> BackgroundDrill | None:
    """The drill started in the background, or ``None`` where the drill criteria would not
    drill (not selected, not allowed, not configured): they then run as they would alone."""
    from opsready.plugin import PLAN_KEY, ticket_of

    if "restore_drill" not in request.config.stash.get(INTRUSIVE_KEY, ()):
        return None
    drills = [item for item in request.session.items
              if getattr(item.stash.get(PLAN_KEY, None), "intrusive", None) == "restore_drill"]
    if not drills:
        return None
    drill_cfg, backups_cfg = env.restore_drill, env.backups
    # The drill fixture's own preconditions; where one fails the criteria say so themselves.
    if drill_cfg is None or backups_cfg is None or drill_cfg.source_dsn is None \
            or not drill_cfg.expected_tables:
        return None
    try:
        backups: BackupStore = request.getfixturevalue("backups")
        server: ScratchServer = request.getfixturevalue("scratch_server")
    except (Exception, pytest.skip.Exception):
        return None
    if backups.pattern is None:
        return None
    from opsready._interrupt import stop_signals

    say = stop_signals().say
    say(f"[opsready] {ticket_of(drills[0])}: the intrusive probe 'restore_drill' starts in the "
        f"background, alongside the read-only criteria")
    return server.drill_in_background(functools.partial(_newest_backup, backups), say)


def _newest_backup(backups: BackupStore) -> tuple[DumpSource, float] | None:
    """The newest backup and its age in hours, or ``None`` when there is none; read as the
    read-ahead reads, so an error stays for the criterion that reads the same fact."""
    found: list[tuple[DumpSource, float]] = []

    def read() -> None:
        if backups.bucket_exists():
            newest = backups.latest().newest
            if newest is not None:
                found.append((backups.source(newest), newest.age_hours()))

    shared = getattr(backups, "shared", None)
    if shared is not None:
        shared.ahead(read)
    else:
        with contextlib.suppress(Exception):
            read()
    return found[0] if found else None


@pytest.fixture
def intrusive_allowed(request: pytest.FixtureRequest) -> Callable[[str], bool]:
    """For a criterion that may probe intrusively or judge from what it finds already:
    ``intrusive_allowed("rate_limit_burst")``. Criteria that can only probe intrusively use
    the ``intrusive`` marker instead.

    A probe asked for and refused is remembered on the criterion: when it then ends not
    covered, an earlier pass may be carried forward for it (see ``report.carry_forward``)."""
    allowed = request.config.stash.get(INTRUSIVE_KEY, ())

    def ask(name: str) -> bool:
        if name in allowed:
            return True
        request.node.stash.setdefault(DENIED_INTRUSIVE_KEY, []).append(name)
        return False

    return ask


@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> Evidence:
    """Where a criterion records what it saw. Redacted on the way in."""
    ev = Evidence()
    request.node.stash[EVIDENCE_KEY] = ev
    return ev


@pytest.fixture(scope="session")
def service(opsready_env: Environment) -> Iterator[ServiceProbe]:
    from opsready.probes.http import ServiceProbe

    yield from _closing(ServiceProbe(section(opsready_env, "service"), timeout=opsready_env.timeout_s))


@pytest.fixture(scope="session")
def cors_config(opsready_env: Environment) -> CorsConfig:
    cfg: CorsConfig = section(opsready_env, "cors")
    return cfg


@pytest.fixture(scope="session")
def webhooks_config(opsready_env: Environment) -> WebhooksConfig:
    cfg: WebhooksConfig = section(opsready_env, "webhooks")
    return cfg


@pytest.fixture(scope="session")
def slo_config(opsready_env: Environment) -> SloConfig:
    cfg: SloConfig = section(opsready_env, "slo")
    return cfg


@pytest.fixture(scope="session")
def runbooks_config(opsready_env: Environment) -> RunbooksConfig:
    cfg: RunbooksConfig = section(opsready_env, "runbooks")
    return cfg


@pytest.fixture(scope="session")
def prometheus(opsready_env: Environment) -> Iterator[PrometheusProbe]:
    from opsready.probes.prometheus import PrometheusProbe

    yield from _closing(PrometheusProbe(section(opsready_env, "prometheus"), timeout=opsready_env.timeout_s))


def per_instance_prometheus(service: ServiceProbe, env: Environment,
                            request: pytest.FixtureRequest) -> PrometheusProbe | None:
    """Prometheus, when ``service.metrics_per_instance`` says several instances stand behind one
    URL and each must be judged from its own scrape; None when one read of the URL is enough.
    Not covered when per-instance reading is asked for but Prometheus or its job is not set."""
    if not service.cfg.metrics_per_instance:
        return None
    if env.prometheus is None or not env.prometheus.service_job:
        not_covered("service.metrics_per_instance needs prometheus.url and prometheus.service_job "
                    "to read each instance; not configured")
    prometheus: PrometheusProbe = request.getfixturevalue("prometheus")
    return prometheus


@pytest.fixture(scope="session")
def grafana(opsready_env: Environment) -> Iterator[GrafanaProbe]:
    from opsready.probes.grafana import GrafanaProbe

    yield from _closing(GrafanaProbe(section(opsready_env, "grafana"), timeout=opsready_env.timeout_s))


@pytest.fixture(scope="session")
def otel(opsready_env: Environment) -> Iterator[OtelProbe]:
    from opsready.probes.otel import OtelProbe

    yield from _closing(OtelProbe(section(opsready_env, "otel"), timeout=opsready_env.timeout_s))


@pytest.fixture(scope="session")
def github(opsready_env: Environment) -> Iterator[GithubProbe]:
    from opsready.probes.github import GithubProbe

    yield from _closing(GithubProbe(section(opsready_env, "github"), timeout=opsready_env.timeout_s))


@pytest.fixture(scope="session")
def railway(opsready_env: Environment) -> Iterator[RailwayProbe]:
    from opsready.probes.railway import RailwayProbe

    yield from _closing(RailwayProbe(section(opsready_env, "railway"), timeout=opsready_env.timeout_s))


@pytest.fixture(scope="session")
def backups(opsready_env: Environment) -> Iterator[BackupStore]:
    from opsready.probes.s3 import BackupStore

    yield from _closing(BackupStore(section(opsready_env, "backups"), timeout=opsready_env.timeout_s))


@pytest.fixture(scope="session")
def scratch_server(opsready_env: Environment, pytestconfig: pytest.Config) -> Iterator[ScratchServer]:
    from opsready.probes.postgres import ScratchServer

    server = ScratchServer(section(opsready_env, "restore_drill"), timeout=opsready_env.timeout_s)
    server.progress = _console_line(pytestconfig)
    yield from _closing(server)


def _console_line(config: pytest.Config) -> Callable[[str], None]:
    """Write one line to the terminal from inside a criterion, past pytest's capture. An
    xdist worker's standard error is the controller's, so this reaches the terminal too."""

    def write(line: str) -> None:
        capture = config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    return write


@pytest.fixture(scope="session")
def runbooks(opsready_env: Environment, request: pytest.FixtureRequest) -> Iterator[RunbookLibrary]:
    """The runbook library: GitHub when configured (needed for ``github:`` links too)."""
    from opsready.probes.runbooks import RunbookLibrary

    cfg: RunbooksConfig = section(opsready_env, "runbooks")
    github = request.getfixturevalue("github") if opsready_env.github is not None else None
    if cfg.source == "github" and github is None:
        not_covered("not configured: github (runbooks.source is github)")
    base = Path(opsready_env.source).parent if opsready_env.source else Path.cwd()
    yield from _closing(RunbookLibrary(cfg, timeout=opsready_env.timeout_s, github=github, base_dir=base))
