"""The YAML loader every opsready file goes through.

PyYAML's wheels carry libyaml, whose parser is about ten times faster than the pure-Python one;
every run parses the environment, the ticket catalogue and each check module's plan, and so
does every xdist worker. libyaml refuses nesting deeper than 1,000 levels itself, so a hostile
document (a workflow file read from a repository) cannot exhaust the stack. Where PyYAML was
built without it, the pure-Python loader reads the same documents.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["SafeLoader", "safe_load"]

SafeLoader: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with the fastest safe loader available."""
    return yaml.load(text, Loader=SafeLoader)
