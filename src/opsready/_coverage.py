"""The two kinds of skip a check can declare.

- ``not_applicable(reason)``: the platform does not use the feature (credentials are off, the
  hex scheme carries no timestamp). Neutral in the roll-up.
- ``not_covered(reason)``: we did not look: an intrusive probe this environment does not
  allow, a config key left empty, a precondition we could not establish, or history too young
  to judge (``judgeable_from`` says when it will be). A ticket with a not-covered criterion is
  never *done*; it is *unverified*, and the report names what was not checked and why.

Both end the criterion as a pytest skip. The plugin reads the kind from the exception, never
from the reason's wording. A plain ``pytest.skip`` counts as not covered: when a check does
not say that a feature is absent, the report must not read as if it had been looked at.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, NoReturn

import pytest

__all__ = [
    "NOT_APPLICABLE",
    "NOT_COVERED",
    "NotApplicable",
    "NotCovered",
    "SkipKind",
    "not_applicable",
    "not_covered",
    "skip_kind",
]

SkipKind = Literal["not_applicable", "not_covered"]
NOT_APPLICABLE: SkipKind = "not_applicable"
NOT_COVERED: SkipKind = "not_covered"

# pytest's own skip exception: subclasses are reported as skipped by pytest and every plugin.
_Skipped: type[BaseException] = pytest.skip.Exception


class NotApplicable(_Skipped):  # type: ignore[misc,valid-type]
    """The platform does not use the feature this criterion judges."""

    kind: SkipKind = NOT_APPLICABLE
    judgeable_from: dt.date | None = None


class NotCovered(_Skipped):  # type: ignore[misc,valid-type]
    """The criterion was not looked at; ``judgeable_from`` is the first day it can be."""

    kind: SkipKind = NOT_COVERED

    def __init__(self, msg: str, judgeable_from: dt.date | None = None) -> None:
        super().__init__(msg=msg)
        self.judgeable_from = judgeable_from


def not_applicable(reason: str) -> NoReturn:
    """End the criterion as *not applicable*: the platform does not use the feature."""
    __tracebackhide__ = True
    raise NotApplicable(msg=reason)


def not_covered(reason: str, *, judgeable_from: dt.date | None = None) -> NoReturn:
    """End the criterion as *not covered*: it was not checked, for ``reason``.

    ``judgeable_from``: for history too young to judge, the first day it can be judged; the
    reason then ends with "judgeable from <date>"."""
    __tracebackhide__ = True
    if judgeable_from is not None and "judgeable from" not in reason:
        reason = f"{reason}; judgeable from {judgeable_from.isoformat()}"
    raise NotCovered(reason, judgeable_from=judgeable_from)


def skip_kind(exc: BaseException | None) -> tuple[SkipKind, dt.date | None]:
    """The kind of a skip exception, and its ``judgeable_from``. A plain ``pytest.skip`` (and
    a skip marker) is not covered."""
    kind: SkipKind = getattr(exc, "kind", NOT_COVERED)
    if kind not in (NOT_APPLICABLE, NOT_COVERED):
        kind = NOT_COVERED
    when = getattr(exc, "judgeable_from", None)
    return kind, when if isinstance(when, dt.date) else None
