"""Crontabs are Celery's: every expression Celery's `crontab` accepts loads (macros too), what it refuses stops
start-up with its reason naming the retailer and the key, and a retailer's schedules run at its stores' local time.
The beat behaviour is simulated minute by minute through Celery's own `is_due` (no clock, no waiting)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from worker.app.crontabs import check_crontab, retailer_crontab
from worker.core.retailers import ConfigError, parse_retailers


def table(**change: object) -> dict:
    base = {
        "product_store_id": "A",
        "currency": "USD",
        "order_master": True,
        "schedule": "*/5 * * * *",
        "sftp": {
            "host": "h",
            "username": "u",
            "private_key": "/k",
            "known_hosts": "/kh",
            "orders_dir": "/o",
            "archive_dir": "/a",
            "error_dir": "/e",
        },
    }
    base.update(change)
    return base


def load(**change: object):  # type: ignore[no-untyped-def]
    return parse_retailers({"retailers": {"acme": table(**change)}}, check_crontab=check_crontab)["acme"]


@pytest.mark.parametrize(
    "expression",
    [
        "0 2 * * mon-fri",
        "*/15 8-20 * * *",
        "0 9-17/2 * * 1-5",
        "0 3 1 jan,jul *",
        "30 4 * * sun",
        "0 0 28 * *",
        "@hourly",
        "@daily",
        "@midnight",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
        "  0   2  *  *  *  ",
    ],
)
def test_every_crontab_celery_accepts_loads(expression):
    assert load(schedule=expression).schedule == expression


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("0 25 * * *", "schedule: Invalid end range: 25 > 23."),
        ("61 * * * *", "schedule: Invalid end range: 61 > 59."),
        ("0 2 * * funday", "schedule: Invalid weekday literal 'funday'."),
        ("0 0 31 feb *", "schedule: Invalid crontab: day_of_month '31' never occurs in month_of_year 'feb'."),
        ("@reboot", "schedule: must be a crontab of five fields"),
        ("0 0 * * * *", "schedule: must be a crontab of five fields"),
    ],
)
def test_what_celery_refuses_stops_start_up_with_its_reason(expression, reason):
    with pytest.raises(ConfigError) as info:
        load(schedule=expression)
    assert f"retailer 'acme': {reason}" in str(info.value)


def test_a_time_zone_that_does_not_exist_is_refused_naming_the_key():
    with pytest.raises(ConfigError) as info:
        load(time_zone="Mars/Olympus_Mons")
    assert "retailer 'acme': time_zone: 'Mars/Olympus_Mons' is not a time zone" in str(info.value)


def test_the_audit_time_zone_defaults_to_the_retailers_time_zone():
    assert load().time_zone == "UTC" and load().audit_time_zone == "UTC"
    paris = load(time_zone="Europe/Paris")
    assert paris.audit_time_zone == "Europe/Paris"
    assert load(time_zone="Europe/Paris", audit_time_zone="America/New_York").audit_time_zone == "America/New_York"


def runs(expression: str, zone: str, start: datetime, hours: int) -> list[str]:
    """The local times at which beat would run the crontab, stepping a fake clock minute by minute."""
    schedule = retailer_crontab(expression, zone)
    clock = [start]
    schedule.nowfun = lambda: clock[0]
    last, found = start, []
    t = start
    while t < start + timedelta(hours=hours):
        clock[0] = t
        if schedule.is_due(last).is_due:
            found.append(t.astimezone(ZoneInfo(zone)).strftime("%a %Y-%m-%d %H:%M %Z"))
            last = t
        t += timedelta(minutes=1)
    return found


def test_a_crontab_runs_at_the_stores_local_time_on_the_days_it_names():
    # from Friday 2026-12-04 12:00 UTC: the next weekdays' 02:00 in New York are Monday and Tuesday, 07:00 UTC
    assert runs("0 2 * * mon-fri", "America/New_York", datetime(2026, 12, 4, 12, tzinfo=UTC), 96) == [
        "Mon 2026-12-07 02:00 EST",
        "Tue 2026-12-08 02:00 EST",
    ]
    assert runs("0 2 * * *", "Asia/Tokyo", datetime(2026, 12, 4, 12, tzinfo=UTC), 24) == ["Sat 2026-12-05 02:00 JST"]


def test_daylight_saving_changes_skip_or_repeat_nothing():
    # spring forward: 02:30 does not exist on 2026-03-08 in New York; it runs an hour later, once
    assert runs("30 2 * * *", "America/New_York", datetime(2026, 3, 7, 12, tzinfo=UTC), 48) == [
        "Sun 2026-03-08 03:30 EDT",
        "Mon 2026-03-09 02:30 EDT",
    ]
    # fall back: 01:30 happens twice on 2026-11-01; it runs once
    assert runs("30 1 * * *", "America/New_York", datetime(2026, 10, 31, 12, tzinfo=UTC), 48) == [
        "Sun 2026-11-01 01:30 EDT",
        "Mon 2026-11-02 01:30 EST",
    ]


def test_a_zoned_crontab_survives_beats_shelve_and_compares_by_zone():
    schedule = retailer_crontab("0 2 * * mon-fri", "America/New_York")
    again = pickle.loads(pickle.dumps(schedule))  # noqa: S301 - our own object
    assert again == schedule and again.zone == "America/New_York"
    assert schedule != retailer_crontab("0 2 * * mon-fri", "Europe/Paris")
    assert "America/New_York" in repr(schedule)


def test_beat_schedules_the_scan_in_the_retailers_time_zone():
    from worker.app.schedule import build_beat_schedule

    retailer = load(schedule="@hourly", time_zone="Europe/Paris")
    entry = build_beat_schedule({"acme": retailer})["scan:acme"]
    assert entry["schedule"] == retailer_crontab("0 * * * *", "Europe/Paris")
