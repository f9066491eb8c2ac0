"""One run configuration: the options of ``opsready verify`` (or of ``pytest --opsready-env``)
validated once, into a frozen ``RunOptions``, before any probe runs.

``RunRequest`` is what the user typed; ``RunRequest.resolve()`` loads and checks the
environment, the catalogue and the waivers, and every option, and raises ``ConfigError`` (one
line, exit 4) on the first problem. The CLI resolves and hands the result to pytest; the
plugin resolves only when pytest was started directly. xdist workers rebuild the same options
from the controller's request (``wire``/``from_wire``), with the controller's clock.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import secrets
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from opsready import _clock
from opsready._errors import ConfigError
from opsready.catalogue import PRIORITIES, Catalogue, load_catalogue
from opsready.config import INTRUSIVE_PROBES, Environment, load_environment, mask_url, secret_values, url_problem
from opsready.evidence import redactor
from opsready.waivers import WaiverSet, load_waivers

if TYPE_CHECKING:
    from opsready.attestations import AttestationSet
    from opsready.report.signing import SigningKey

__all__ = ["MAX_WORKERS", "ExitCode", "RunOptions", "RunRequest", "find_root", "parse_gate"]

# More workers than this only adds interpreters: the probes wait on the network, and the
# targets should not see a stampede from one audit run.
MAX_WORKERS = 32

Priority = Literal["P0", "P1", "P2", "P3"]


class ExitCode(IntEnum):
    """The exit codes of every opsready command (DESIGN §3)."""

    OK = 0  # the gate passed; verify-bundle: the bundle is intact
    FAILED = 1  # the gate failed (or a regression with --fail-on-regression); verify-bundle: not intact
    INTERRUPTED = 2
    USAGE = 4  # usage or config error: one line naming the file, the field and the fix


def find_root(start: Path) -> Path:
    """The nearest directory at or above ``start`` holding ``config/tickets.yaml``; else the
    project this package was installed from (an editable install), else ``start``."""
    for candidate in (start.resolve(), *start.resolve().parents):
        if (candidate / "config" / "tickets.yaml").is_file():
            return candidate
    source_root = Path(__file__).resolve().parents[2]
    if (source_root / "config" / "tickets.yaml").is_file():
        return source_root
    return start.resolve()


def parse_gate(value: str, source: str) -> list[Priority]:
    """``P0,P1`` or ``none``. Anything else is an error: ``,,`` or an empty value must not turn
    the gate off by accident."""
    if value.strip().lower() == "none":
        return []
    items = [p.strip().upper() for p in value.split(",")]
    if not items or any(p not in PRIORITIES for p in items):
        raise ConfigError(source, "gate", f"value {value!r} is invalid",
                          "use priorities such as P0,P1, or 'none' to turn the gate off")
    return [cast(Priority, p) for p in dict.fromkeys(items)]


def new_run_id() -> str:
    """A short random id that tells apart runs started in the same second."""
    return secrets.token_hex(3)


@dataclass(frozen=True)
class RunRequest:
    """The options as given, before validation. Paths are as typed (relative to the
    current directory)."""

    env: str
    root: str | None = None
    out: str | None = None
    gate: str | None = None
    tickets: tuple[str, ...] = ()
    allow_intrusive: tuple[str, ...] | None = None
    waivers: str | None = None
    catalogue: str | None = None
    checks: tuple[str, ...] = ()
    fail_on_regression: bool = False
    pushgateway: str | None = None
    heartbeat_s: float = 15.0
    # Where history.jsonl and ``latest`` live (default: reports/ under the root).
    reports_root: str | None = None
    # Overrides the environment's deadline_s for this run.
    deadline_s: float | None = None
    # ``opsready verify --plan``: collect and print what would be contacted; send nothing.
    plan: bool = False
    run_id: str | None = None

    def resolve(self, *, started_at: dt.datetime | None = None) -> RunOptions:
        """Validate every option and load every input. Raises ``ConfigError``."""
        started = started_at if started_at is not None else _clock.now()
        root = Path(self.root).resolve() if self.root else find_root(Path.cwd())
        env = load_environment(self.env, root)
        redactor.add(secret_values(env))
        cat_path = Path(self.catalogue) if self.catalogue else root / "config" / "tickets.yaml"
        catalogue = load_catalogue(cat_path)
        w_path = Path(self.waivers) if self.waivers else root / "config" / "waivers.yaml"
        waivers = load_waivers(w_path, catalogue.ids, started.date())
        gate = parse_gate(self.gate, "--gate") if self.gate is not None else list(env.gate)
        selected = tuple(t.upper() for t in self.tickets) or None
        for t in selected or ():
            if t not in catalogue.ids:
                raise ConfigError("--ticket", t, "is not a catalogued ticket",
                                  f"use one of {', '.join(catalogue.ids)}")
        if self.allow_intrusive is None:
            allowed = tuple(env.allow_intrusive)
        else:
            allowed = tuple(n for n in self.allow_intrusive if n.lower() != "none")
            for name in allowed:
                if name not in INTRUSIVE_PROBES:
                    raise ConfigError("--allow-intrusive", name, "is not an intrusive probe",
                                      f"use one of {', '.join(sorted(INTRUSIVE_PROBES))}, or none")
        checks = tuple(Path(c) for c in self.checks) or (root / "checks",)
        for path in checks:
            if not path.exists():
                raise ConfigError(str(path), "", "the checks directory does not exist", "pass --checks DIR")
        if self.pushgateway is not None:
            problem = (None if re.match(r"^https?://", self.pushgateway) else "is not an http(s) URL") \
                or url_problem(self.pushgateway)
            if problem is not None:
                raise ConfigError("--pushgateway", redactor.text(mask_url(self.pushgateway)), problem,
                                  "pass --pushgateway http://HOST:9091")
        if not self.heartbeat_s > 0:
            raise ConfigError("--heartbeat", str(self.heartbeat_s), "is not a positive number of seconds",
                              "pass a number such as 15")
        deadline = env.deadline_s if self.deadline_s is None else self.deadline_s
        if not (0 < deadline <= 86400):
            raise ConfigError("--deadline", str(self.deadline_s), "is not a number of seconds from 1 to 86400",
                              "pass --deadline 900 (15 minutes)")
        run_id = self.run_id or new_run_id()
        reports_root = (Path(self.reports_root) if self.reports_root else root / "reports").resolve()
        if self.out:
            out = Path(self.out).resolve()
        else:
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", env.name) or "env"
            out = reports_root / f"{started.strftime('%Y%m%dT%H%M%SZ')}-{safe}-{run_id}"
        from opsready.actions import check_action_criteria
        from opsready.attestations import load_attestations
        from opsready.report.signing import signing_key_from_environment

        # An action naming a criterion that no check module of the project defines fails the
        # run before it starts. The catalogue names the criteria of the project's own checks/.
        if (root / "checks").is_dir():
            check_action_criteria(catalogue, cat_path, [root / "checks"])
        a_path = root / "config" / "attestations.yaml"
        return RunOptions(
            signing_key=signing_key_from_environment(),
            attestations=load_attestations(a_path, catalogue, started.date()),
            attestations_path=a_path if a_path.is_file() else None,
            request=dataclasses.replace(self, run_id=run_id), env=env, root=root, catalogue=catalogue,
            catalogue_path=cat_path, waivers=waivers, waivers_path=w_path if w_path.is_file() else None,
            out_dir=out, gate=tuple(gate), selected=selected, allow_intrusive=allowed,
            check_paths=checks, started_at=started, clock_moved_to=_clock.moved_to(),
            reports_root=reports_root, deadline_s=float(deadline),
        )


@dataclass(frozen=True)
class RunOptions:
    """A validated run: every input loaded, every option checked."""

    request: RunRequest
    env: Environment
    root: Path
    catalogue: Catalogue
    catalogue_path: Path
    waivers: WaiverSet
    waivers_path: Path | None
    out_dir: Path
    gate: tuple[Priority, ...]
    selected: tuple[str, ...] | None
    allow_intrusive: tuple[str, ...]
    check_paths: tuple[Path, ...]
    # The run's moment from the one clock (``_clock``); ``today`` is its UTC day.
    started_at: dt.datetime
    clock_moved_to: dt.date | None = None
    # history.jsonl and ``latest`` live here; a report directory elsewhere (``--out`` outside
    # it) writes neither, so a run never writes into a directory it was not given.
    reports_root: Path = Path("reports")
    deadline_s: float = 900.0

    @property
    def run_id(self) -> str:
        return self.request.run_id or ""

    @property
    def writes_history(self) -> bool:
        """True when the report directory sits directly in the reports root."""
        return self.out_dir.parent == self.reports_root

    @property
    def plan(self) -> bool:
        return self.request.plan
    # Signs MANIFEST.sha256 when OPSREADY_SIGNING_KEY(_FILE) names a key; never from the YAML.
    signing_key: SigningKey | None = None
    # Manual actions of the catalogue attested in config/attestations.yaml.
    attestations: AttestationSet | None = None
    attestations_path: Path | None = None

    @property
    def today(self) -> dt.date:
        return self.started_at.date()

    @property
    def fail_on_regression(self) -> bool:
        return self.request.fail_on_regression

    @property
    def pushgateway(self) -> str | None:
        return self.request.pushgateway

    @property
    def heartbeat_s(self) -> float:
        return self.request.heartbeat_s

    def wire(self) -> dict[str, Any]:
        """What an xdist worker needs to rebuild these options (plain JSON values)."""
        request = dataclasses.asdict(self.request)
        request.update(root=str(self.root), out=str(self.out_dir), reports_root=str(self.reports_root),
                       deadline_s=self.deadline_s)
        return {"request": request, "started_at": self.started_at.isoformat()}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> RunOptions:
        raw = dict(data["request"])
        for key in ("tickets", "checks"):
            raw[key] = tuple(raw[key])
        if raw["allow_intrusive"] is not None:
            raw["allow_intrusive"] = tuple(raw["allow_intrusive"])
        return RunRequest(**raw).resolve(started_at=dt.datetime.fromisoformat(data["started_at"]))
