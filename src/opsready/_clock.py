"""The one clock of a run: every date the suite judges by (a waiver's expiry, the age of a
carried-forward pass, the run's own timestamps) comes from here, in UTC.

``OPSREADY_TODAY=YYYY-MM-DD`` moves the clock to that day, keeping the time of day, so a test
can show what a later run would conclude (a carried-forward pass going stale, a waiver
expiring). It is read in this module only, and a run that used it says so in its report
(``run.clock_moved_to``). Probes do not use this clock: they measure the platform (a backup's
age, a job's last run) against the real time.
"""

from __future__ import annotations

import datetime as dt
import os

from opsready._errors import ConfigError

__all__ = ["TODAY_VARIABLE", "moved_to", "now"]

TODAY_VARIABLE = "OPSREADY_TODAY"


def moved_to() -> dt.date | None:
    """The day ``OPSREADY_TODAY`` moves the clock to, or None when it is not set."""
    raw = os.environ.get(TODAY_VARIABLE, "").strip()
    if not raw:
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise ConfigError(TODAY_VARIABLE, "", f"value {raw!r} is not a YYYY-MM-DD date",
                          f"set {TODAY_VARIABLE}=2026-12-24, or unset it to use the real date") from None


def now() -> dt.datetime:
    """The current time in UTC, on the day ``OPSREADY_TODAY`` names when it is set."""
    real = dt.datetime.now(dt.UTC)
    day = moved_to()
    if day is None:
        return real
    return real + dt.timedelta(days=(day - real.date()).days)
