"""The shape of a crontab in the retailers file: five fields or a macro. What each field accepts is for Celery's
own crontab to say, in every process that reads the file (worker/app/crontabs.py)."""

from __future__ import annotations

CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def crontab_fields(value: str) -> tuple[str, str, str, str, str]:
    """A crontab as its five fields (minute, hour, day of month, month, day of week), a macro (@hourly, @daily,
    @weekly, @monthly, @yearly) expanded. Only the shape: what each field accepts is for Celery's crontab to
    say (CrontabCheck)."""
    text = CRON_MACROS.get(value.strip().lower(), value)
    parts = text.split()
    if len(parts) != 5:
        raise ValueError(
            "must be a crontab of five fields (minute hour day-of-month month day-of-week, e.g. '*/5 * * * *',"
            " '0 2 * * mon-fri') or one of " + ", ".join(CRON_MACROS)
        )
    minute, hour, day_of_month, month, day_of_week = parts
    return minute, hour, day_of_month, month, day_of_week
