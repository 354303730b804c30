"""Crontabs as beat runs them: Celery's own `crontab`, read in the retailer's time zone.

Every process checks the retailers file's crontabs with `check_crontab` (passed to the retailers file's parser),
so a crontab is refused at start-up exactly when beat could not run it, and everything Celery accepts works:
ranges, steps, lists, day and month names (`0 2 * * mon-fri`, `*/15 8-20 * * *`, `0 3 1 jan,jul *`) and the
macros `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`. Beat's schedules (scan, brokering, audit) call
`retailer_crontab` with the retailer's `time_zone`: `0 2 * * *` is 02:00 in the stores' local time, daylight
saving time included, whatever the time zone of the machine or of Celery (UTC).
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from celery.schedules import crontab

from worker.core.retailers import crontab_fields


class zoned_crontab(crontab):  # noqa: N801 - named like Celery's schedules
    """A Celery crontab whose fields are matched against the wall clock of `zone`, not Celery's time zone."""

    def __init__(self, *args: Any, zone: str = "UTC", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.zone = zone
        celery_kwargs: dict[str, Any] = dict(getattr(self, "_orig_kwargs", {}))  # Celery's own (nowfun, app)
        self._orig_kwargs = {**celery_kwargs, "zone": zone}  # kept by __reduce__: beat's shelve pickles it

    def __setstate__(self, state: dict[str, Any]) -> None:  # unpickling: Celery's keeps only its own kwargs
        state = dict(state)
        zone = state.pop("zone", "UTC")
        super().__setstate__(state)
        self.zone = zone
        self._orig_kwargs = {**state, "zone": zone}

    @property
    def tz(self) -> ZoneInfo:  # what Celery's crontab normalises both datetimes into before matching
        return ZoneInfo(self.zone)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]} {self.zone}>"

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, zoned_crontab):
            return self.zone == other.zone and super().__eq__(other)
        return NotImplemented if not isinstance(other, crontab) else False

    __hash__ = None  # type: ignore[assignment]


def retailer_crontab(expression: str, time_zone: str = "UTC") -> zoned_crontab:
    """The schedule of a crontab expression in a time zone; ValueError (Celery's reason) if Celery refuses it."""
    minute, hour, day_of_month, month_of_year, day_of_week = crontab_fields(expression)
    ZoneInfo(time_zone)  # an unknown zone fails here, not at the first tick
    return zoned_crontab(
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month_of_year=month_of_year,
        day_of_week=day_of_week,
        zone=time_zone,
    )


def check_crontab(expression: str, time_zone: str) -> None:
    """A worker.core.retailers.CrontabCheck: Celery's parser decides; ValueError with its reason."""
    try:
        retailer_crontab(expression, time_zone)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - Celery raises other types for some malformed fields
        raise ValueError(str(exc)) from None
