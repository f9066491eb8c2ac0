"""opsready: every audit ticket becomes a pytest module that probes the running platform."""

from opsready._coverage import not_applicable, not_covered
from opsready._errors import (
    AccessRefused,
    ConfigError,
    MissingInput,
    OpsreadyError,
    ProbeError,
    ProbeTimeout,
    TargetUnreachable,
    UnexpectedResponse,
)

__version__ = "0.1.0"

__all__ = [
    "AccessRefused",
    "ConfigError",
    "MissingInput",
    "OpsreadyError",
    "ProbeError",
    "ProbeTimeout",
    "TargetUnreachable",
    "UnexpectedResponse",
    "__version__",
    "not_applicable",
    "not_covered",
]
