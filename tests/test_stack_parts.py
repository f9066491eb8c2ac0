"""The shape of the stack's parts: every part is a ``BasePart``, the four contract fakes are
``HttpFakePart``s, and each fault name is written once, where it is declared."""

from __future__ import annotations

import re
from pathlib import Path

from opsready_stack.orchestrator import all_faults, load_parts
from opsready_stack.part import BasePart, HttpFakePart, StackContext
from opsready_stack.service.faults import SERVICE_FAULTS

STACK = Path(__file__).resolve().parents[1] / "stack"


def test_every_part_is_a_base_part_and_the_fakes_share_one_base() -> None:
    parts = {p.name: p for p in load_parts()}
    assert all(isinstance(p, BasePart) for p in parts.values())
    fakes = {name for name, p in parts.items() if isinstance(p, HttpFakePart)}
    assert fakes == {"github", "railway", "grafana", "otel"}
    for name in fakes:
        fake = parts[name]
        assert isinstance(fake, HttpFakePart)
        assert fake.module and fake.health and fake.urls, name
        assert {port for port, _ in fake.health} <= set(fake.ports), name


def test_a_base_part_does_nothing_by_default(tmp_path: Path) -> None:
    ctx = StackContext(dir=tmp_path)
    part = BasePart()
    part.start(ctx)
    part.wait_ready(ctx, 0.0)
    part.after_ready(ctx)
    part.set_fault(ctx, "anything", True)
    part.stop(ctx)
    config = {"service": {"base_url": "http://127.0.0.1:1"}}
    assert part.env_config(ctx) == {}
    assert part.rewrite_env(ctx, config) is config
    assert list(tmp_path.iterdir()) == []


def test_the_service_reads_each_fault_by_its_declared_name() -> None:
    """No fault name is spelt out in the service's code: a renamed fault cannot leave the app
    reading a name no part declares."""
    declared = {f.name for f in SERVICE_FAULTS}
    assert declared <= set(all_faults())
    spelt = []
    for path in (STACK / "service").glob("*.py"):
        if path.name == "faults.py":
            continue
        for name in declared:
            if re.search(rf"[\"']{re.escape(name)}[\"']", path.read_text()):
                spelt.append(f"{path.name}: {name}")
    assert not spelt, spelt
