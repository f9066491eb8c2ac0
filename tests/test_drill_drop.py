"""Dropping the drill database when ``DROP ... WITH (FORCE)`` may not end a session (an
autovacuum worker on the restored tables is one the drill role may not signal)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from opsready.config import RestoreDrillConfig
from opsready.probes import postgres
from opsready.probes.postgres import ScratchServer


class _Conn:
    """Answers each statement with the next outcome: None runs it, an exception raises."""

    def __init__(self, outcomes: list[Exception | None]) -> None:
        self.outcomes, self.sent = outcomes, []

    def execute(self, statement: str, *args: Any) -> None:
        self.sent.append(statement)
        outcome = self.outcomes.pop(0)
        if outcome is not None:
            raise outcome


def _server(monkeypatch: pytest.MonkeyPatch, conn: _Conn) -> ScratchServer:
    server = ScratchServer(RestoreDrillConfig.model_validate(
        {"scratch_dsn": "postgresql://drill:pw@127.0.0.1:1/postgres"}), timeout=2)

    @contextlib.contextmanager
    def connect(dsn: str, **kwargs: Any) -> Iterator[_Conn]:
        yield conn

    monkeypatch.setattr(server, "_connect", connect)
    monkeypatch.setattr(postgres.time, "sleep", lambda s: None)
    return server


def test_a_session_force_may_not_end_falls_back_to_a_plain_drop(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = psycopg.errors.InsufficientPrivilege("must be a member of the role whose process "
                                                   "is being terminated")
    in_use = psycopg.errors.ObjectInUse("database is being accessed by other users")
    conn = _Conn([refused, in_use, None])
    _server(monkeypatch, conn)._drop("postgresql://x", "opsready_drill_1_ab")
    assert conn.sent == ['DROP DATABASE IF EXISTS "opsready_drill_1_ab" WITH (FORCE)',
                         'DROP DATABASE IF EXISTS "opsready_drill_1_ab"',
                         'DROP DATABASE IF EXISTS "opsready_drill_1_ab"']


def test_a_session_that_never_leaves_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = psycopg.errors.InsufficientPrivilege("must be a member of the role")
    conn = _Conn([refused] + [psycopg.errors.ObjectInUse("in use")] * postgres._DROP_ATTEMPTS)
    with pytest.raises(psycopg.errors.ObjectInUse):
        _server(monkeypatch, conn)._drop("postgresql://x", "opsready_drill_1_ab")
    assert len(conn.sent) == 1 + postgres._DROP_ATTEMPTS
