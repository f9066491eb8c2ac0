"""docs/configuration.md stays in step with the environment models of opsready.config."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from opsready.config import Environment, load_environment

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "configuration.md"
EXAMPLE = ROOT / "config" / "environments" / "production.example.yaml"

# Environment.source is the file the environment came from, not a YAML key.
INTERNAL = {"source"}


def _model_in(annotation: Any) -> tuple[type[BaseModel], bool] | None:
    """The BaseModel inside an annotation (``X``, ``X | None``, ``list[X]``), and whether
    it is a list item."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    is_list = typing.get_origin(annotation) is list
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found[0], is_list or found[1]
    return None


def model_fields(model: type[BaseModel] = Environment, prefix: str = "") -> dict[str, FieldInfo]:
    """Every field, recursively, by dotted key; list items are written ``key[].field``."""
    found: dict[str, FieldInfo] = {}
    for name, info in model.model_fields.items():
        if model is Environment and name in INTERNAL:
            continue
        key = prefix + name
        found[key] = info
        nested = _model_in(info.annotation)
        if nested is not None:
            sub, is_list = nested
            found.update(model_fields(sub, key + ("[]." if is_list else ".")))
    return found


def documented_rows() -> dict[str, dict[str, str]]:
    """Rows of every markdown table whose first column is ``key``, by key."""
    rows: dict[str, dict[str, str]] = {}
    header: list[str] | None = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells if cells and cells[0] == "key" else None
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        key = cells[0].strip("`")
        assert key not in rows, f"docs/configuration.md documents `{key}` twice"
        rows[key] = dict(zip(header, cells, strict=True))
    return rows


def test_the_doc_has_key_tables() -> None:
    rows = documented_rows()
    assert "service.base_url" in rows
    assert all({"key", "default", "example", "description"} <= set(r) for r in rows.values())


def test_every_config_field_is_documented() -> None:
    missing = sorted(set(model_fields()) - set(documented_rows()))
    assert not missing, (
        f"docs/configuration.md does not document {', '.join(missing)}; add a row for each "
        f"to the table of its section"
    )


def test_every_documented_key_exists() -> None:
    unknown = sorted(set(documented_rows()) - set(model_fields()))
    assert not unknown, (
        f"docs/configuration.md documents {', '.join(unknown)}, which the config models do "
        f"not have; remove or rename the rows"
    )


def _default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return info.default


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return value.model_dump()
    return value


@pytest.mark.parametrize("key", sorted(model_fields()))
def test_documented_default_matches_the_model(key: str) -> None:
    info = model_fields()[key]
    row = documented_rows().get(key)
    if row is None:
        pytest.fail(f"`{key}` is not documented")
    cell = row["default"]
    if info.is_required():
        assert cell == "required", f"`{key}` is required, but its default reads {cell!r}"
        return
    assert cell != "required", f"`{key}` has a default, but the doc says it is required"
    literal = re.fullmatch(r"`([^`]*)`", cell)
    default = _plain(_default(info))
    if literal is None:
        # Prose stands for defaults that are sections or long lists; a plain value must be
        # written as a literal so that this test can hold it to the model.
        is_section = _model_in(info.annotation) is not None
        assert isinstance(default, dict | list) or is_section or key == "name", (
            f"`{key}`: write its default {default!r} as a `literal`, not {cell!r}"
        )
        return
    assert yaml.safe_load(literal.group(1)) == default, (
        f"`{key}`: docs/configuration.md says the default is {literal.group(1)}, "
        f"the model says {default!r}"
    )


def _example_env() -> dict[str, str]:
    text = EXAMPLE.read_text(encoding="utf-8")
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))
    return {name: f"example-{name.lower()}" for name in names}


def test_production_example_validates_with_every_section() -> None:
    env = load_environment(str(EXAMPLE), ROOT, _example_env())
    assert env.name == "production"
    assert env.gate == ["P0", "P1"]
    assert env.allow_intrusive == []
    sections = [k for k, v in Environment.model_fields.items()
                if _model_in(v.annotation) is not None]
    absent = [s for s in sections if getattr(env, s) is None]
    assert not absent, f"production.example.yaml leaves out {', '.join(absent)}"


def test_production_example_keeps_every_secret_in_the_environment() -> None:
    """Every secret key of the example is a ${VAR} reference, never a literal."""
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    secret_keys = [k for k, info in model_fields().items() if SecretStr in
                   (info.annotation, *typing.get_args(info.annotation))]

    def lookup(tree: Any, key: str) -> Any:
        for part in key.split("."):
            if not isinstance(tree, dict) or part not in tree:
                return None
            tree = tree[part]
        return tree

    for key in secret_keys:
        value = lookup(raw, key)
        # A list of secrets (protected_dsns): every entry a reference.
        for one in value if isinstance(value, list) else [value]:
            # ``${VAR:-}``: a secret only one command needs (the tracker token) may stay unset.
            assert one is None or re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-)?\}", one), (
                f"production.example.yaml: {key} must be a ${{VAR}} reference"
            )
    assert lookup(raw, "service.api_key") is not None


def test_production_example_names_every_intrusive_probe() -> None:
    from opsready.config import INTRUSIVE_PROBES

    text = EXAMPLE.read_text(encoding="utf-8")
    for name in INTRUSIVE_PROBES:
        assert re.search(rf"^#\s+{name}\s", text, re.M), (
            f"production.example.yaml does not explain the intrusive probe {name}"
        )
