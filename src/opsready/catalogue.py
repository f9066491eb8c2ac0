"""The ticket catalogue: ``config/tickets.yaml``, validated on load."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from opsready._errors import ConfigError
from opsready._yaml import safe_load

__all__ = ["PRIORITIES", "Action", "Catalogue", "Ticket", "load_catalogue", "module_ticket_id"]

PRIORITIES = ("P0", "P1", "P2", "P3")
_ID = re.compile(r"^P[0-3]-\d{3}$")
_CRITERION = re.compile(r"^(?:Test\w*::)?test\w*(?:\[[^\]]+\])?$")


class Action(BaseModel):
    """One action of a ticket, and what proves it was done: the criteria (test function names
    of the ticket's check modules) that verify it, or, for an action no probe can verify,
    ``manual: true`` and an attestation in ``config/attestations.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: str = Field(min_length=1)
    criteria: list[str] = Field(default_factory=list)
    manual: bool = False

    @model_validator(mode="before")
    @classmethod
    def _plain_text(cls, value: Any) -> Any:
        # A bare string is an action that names nothing yet (`opsready tickets --coverage`).
        return {"action": value} if isinstance(value, str) else value

    @field_validator("criteria")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not _CRITERION.match(name):
                raise ValueError(f"{name!r} is not a criterion name; use the test function's name, "
                                 f"e.g. test_restore_drill_scheduled")
        return v

    @model_validator(mode="after")
    def _manual_or_criteria(self) -> Action:
        if self.manual and self.criteria:
            raise ValueError("a manual action is proven by an attestation, not by criteria; "
                             "drop `manual: true` or the criteria")
        return self

    @property
    def proven_by(self) -> str:
        """``criteria``, ``attestation`` or ``nothing``."""
        return "criteria" if self.criteria else ("attestation" if self.manual else "nothing")


class Ticket(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    title: str
    priority: Literal["P0", "P1", "P2", "P3"]
    category: str
    size: Literal["XS", "S", "M", "L", "XL"]
    hours: str
    sprint: int
    week: int | None = None
    summary: str
    impact: str
    actions: list[Action]

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("ids look like P0-001: a priority P0..P3, a dash and three digits")
        return v

    @model_validator(mode="after")
    def _priority_matches_id(self) -> Ticket:
        if self.id[:2] != self.priority:
            raise ValueError(f"priority {self.priority} does not match id {self.id}; use {self.id[:2]}")
        return self


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = ""
    tickets: list[Ticket]

    @model_validator(mode="after")
    def _unique(self) -> Catalogue:
        seen: set[str] = set()
        for t in self.tickets:
            if t.id in seen:
                raise ValueError(f"ticket id {t.id} appears twice; ids must be unique")
            seen.add(t.id)
        return self

    def get(self, ticket_id: str) -> Ticket | None:
        return next((t for t in self.tickets if t.id == ticket_id), None)

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.tickets]


def load_catalogue(path: Path) -> Catalogue:
    file = str(path)
    try:
        raw = safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(file, "", "the ticket catalogue is missing",
                          "run from the project root, or pass --root DIR (the project that holds "
                          "config/tickets.yaml)") from None
    except yaml.YAMLError:
        raise ConfigError(file, "", "is not valid YAML", "fix the syntax") from None
    try:
        return Catalogue.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err["loc"]
        field = ".".join(str(p) for p in loc)
        if len(loc) >= 2 and loc[0] == "tickets" and isinstance(loc[1], int):
            tickets = (raw or {}).get("tickets") or []
            if loc[1] < len(tickets) and isinstance(tickets[loc[1]], dict):
                field = f"tickets[{tickets[loc[1]].get('id', loc[1])}]" + "".join(f".{p}" for p in loc[2:])
        msg = err["msg"].removeprefix("Value error, ")
        shown = repr(err.get("input")) if err["type"] != "missing" else "missing"
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return_error = ConfigError(file, field, f"value {shown} is invalid", msg)
        raise return_error from None


def module_ticket_id(filename: str) -> str | None:
    """``test_p2_002_cors.py`` -> ``P2-002``; None when the name carries no ticket id."""
    m = re.match(r"^test_p([0-3])_(\d{3})(?:_|\.py$)", filename)
    return f"P{m.group(1)}-{m.group(2)}" if m else None
