"""Beat: one scan entry per enabled retailer (and its scheduled brokering run, its audit), built from the
retailers file."""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery.beat import PersistentScheduler
from celery.schedules import schedule

from worker.app.crontabs import retailer_crontab
from worker.app.runtime import runtime
from worker.core.errors import TransientError
from worker.core.retailers import ConfigError, Retailer

log = logging.getLogger(__name__)


def scan_entry_name(retailer_id: str) -> str:
    return f"scan:{retailer_id}"


def retailer_schedule(retailer: Retailer) -> Any:
    if retailer.poll_seconds is not None:
        return schedule(retailer.poll_seconds)
    assert retailer.schedule is not None
    try:
        return retailer_crontab(retailer.schedule, retailer.time_zone)  # in the stores' local time
    except ValueError as exc:
        raise ConfigError(f"retailer {retailer.retailer_id!r}: schedule: {exc}") from None


def brokering_entry_name(retailer_id: str) -> str:
    return f"broker:{retailer_id}"


def brokering_schedule(retailer: Retailer) -> Any:
    """The retailer's scheduled brokering run (crontab or interval), or None when it has none."""
    config = retailer.brokering
    if config.every_seconds is not None:
        return schedule(config.every_seconds)
    if config.schedule is None:
        return None
    try:
        return retailer_crontab(config.schedule, retailer.time_zone)  # in the stores' local time, like the scan
    except ValueError as exc:
        raise ConfigError(f"retailer {retailer.retailer_id!r}: brokering: schedule: {exc}") from None


def build_beat_schedule(retailers: dict[str, Retailer]) -> dict[str, dict[str, Any]]:
    """The beat schedule: each enabled retailer's scan on its own crontab or interval."""
    entries = {}
    for retailer in retailers.values():
        if not retailer.enabled:
            continue
        entries[scan_entry_name(retailer.retailer_id)] = {
            "task": "tlogsync.scan_retailer",
            "schedule": retailer_schedule(retailer),
            "args": (retailer.retailer_id,),
            "kwargs": {"requested_by": "beat"},
            # a scan that waited longer than its retailer's interval is stale: the next one replaces it
            "options": {"expires": retailer.poll_seconds or 300},
        }
        broker_when = brokering_schedule(retailer)
        if broker_when is not None:
            # A scheduled run takes the parked and queued orders again (parked first) and cancels what is due.
            entries[brokering_entry_name(retailer.retailer_id)] = {
                "task": "tlogsync.run_brokering",
                "schedule": broker_when,
                "args": (retailer.retailer_id,),
                "kwargs": {"scheduled": True},
                "options": {"expires": retailer.brokering.every_seconds or 300},
            }
        if retailer.audit_time:
            # Checked every 15 minutes: the task runs the audit once the retailer's local audit_time has
            # passed (daylight saving included) and the day has no report yet.
            entries[f"audit:{retailer.retailer_id}"] = {
                "task": "tlogsync.ops.audit_retailer",
                "schedule": schedule(900),
                "args": (retailer.retailer_id,),
                "kwargs": {"due_only": True},
                "options": {"expires": 900},
            }
    return entries


class RetailerScheduler(PersistentScheduler):
    """PersistentScheduler whose entries come from the retailers file, re-read when it changes."""

    def setup_schedule(self) -> None:
        try:
            self.app.conf.beat_schedule = build_beat_schedule(runtime.retailers())
        except ConfigError as exc:
            print(f"tlogsync: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        self._file_mtime = self._mtime()
        super().setup_schedule()

    def _mtime(self) -> float | None:
        try:
            return runtime.settings.retailers_path.stat().st_mtime
        except OSError:
            return None

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if self._mtime() != self._file_mtime:
            self._file_mtime = self._mtime()
            try:
                entries = build_beat_schedule(runtime.retailers())
            except (ConfigError, TransientError) as exc:
                # invalid, and the last valid configuration cannot be read now (the service logged why)
                log.warning("retailers file changed; keeping the current schedule: %s", exc)
                self._file_mtime = None  # look again at the next tick
            else:
                log.info("retailers file changed: %d scan entries", len(entries))
                self.merge_inplace(entries)
        return super().tick(*args, **kwargs)  # type: ignore[no-any-return]
