"""Exceptions raised by opsready.

The hierarchy::

    OpsreadyError
    ├── ConfigError            a config, catalogue or waiver file is wrong (exit code 4)
    └── ProbeError             a criterion could not be judged (outcome ``error``)
        ├── TargetUnreachable  DNS failure, connection refused, TLS failure
        ├── ProbeTimeout       the target did not answer within the configured time
        ├── AccessRefused      the target refused our credentials (401, 403, "Not Authorized")
        ├── UnexpectedResponse the target answered, but not in a shape we can judge
        └── MissingInput       something the check needs is absent (a tool, a file, a value)

A check only asserts: an ``AssertionError`` is a *fail* (we looked and it is not there).
Everything a probe raises is a ``ProbeError`` and becomes an *error* (we could not look).
"""

from __future__ import annotations

__all__ = [
    "AccessRefused",
    "ConfigError",
    "MissingInput",
    "OpsreadyError",
    "ProbeError",
    "ProbeTimeout",
    "TargetUnreachable",
    "UnexpectedResponse",
]


class OpsreadyError(Exception):
    """Base of every error opsready raises on purpose."""


class ConfigError(OpsreadyError):
    """A configuration file is invalid.

    ``str()`` is one line naming the file, the field, the value and the fix.
    """

    def __init__(self, file: str, field: str, problem: str, fix: str) -> None:
        self.file = file
        self.field = field
        self.problem = problem
        self.fix = fix
        where = f"{file}: {field}" if field else file
        super().__init__(f"{where}: {problem}; {fix}")


class ProbeError(OpsreadyError):
    """A probe could not judge its target. The criterion becomes ``error``, never ``fail``."""


class TargetUnreachable(ProbeError):
    """The target could not be reached at all."""


class ProbeTimeout(ProbeError):
    """The target did not answer in time."""


class AccessRefused(ProbeError):
    """The target refused the configured credentials."""


class UnexpectedResponse(ProbeError):
    """The target answered with something the probe cannot interpret."""


class MissingInput(ProbeError):
    """Something the probe needs (a binary, a file, a value) is not available."""
