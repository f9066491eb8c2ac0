"""The README documents every CLI command and option, so the docs cannot drift."""

from __future__ import annotations

import argparse
from pathlib import Path

from opsready.cli import build_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_command_and_option_is_in_the_readme() -> None:
    commands = _subparsers(build_parser())
    assert set(commands) == {"verify", "tickets", "stack", "verify-bundle", "keygen", "summary", "sync"}
    missing = []
    for name, sub in commands.items():
        if f"opsready {name}" not in README:
            missing.append(f"opsready {name}")
        for action in sub._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help") and f"`{flag}" not in README:
                    missing.append(f"opsready {name} {flag}")
    assert not missing, f"undocumented in README.md: {missing}"


def test_the_stack_commands_are_in_the_readme() -> None:
    from opsready_stack.cli import _parser

    for name, sub in _subparsers(_parser()).items():
        assert f"{name}" in README
        for action in sub._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help", "--markdown"):
                    assert flag in README, f"opsready stack {name} {flag} is not in README.md"


def test_the_first_screen_gives_exactly_the_two_commands() -> None:
    first_screen = "\n".join(README.splitlines()[:20])
    assert "make demo" in first_screen
    assert "make test" in first_screen
