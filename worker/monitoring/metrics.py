"""`tlogsync metrics`: a Prometheus endpoint with the business metrics per retailer.

Computed from PostgreSQL and RabbitMQ at scrape time, so one small process gives the right numbers
however many workers run (no per-process counters to aggregate, nothing lost when a worker restarts).
"""

from __future__ import annotations

import calendar
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import astuple
from typing import Any

import psycopg
from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.adapters import queues
from worker.adapters.postgres.pool import open_pool
from worker.adapters.postgres.readmodel import PgReadModel

log = logging.getLogger(__name__)


class TlogsyncCollector(Collector):
    """Reads the ledger and the broker on every scrape."""

    def __init__(self, reads: PgReadModel, app: Any, retailers: Any, ping_timeout: float = 1.0):
        self.reads, self.app, self.retailers, self.ping_timeout = reads, app, retailers, ping_timeout

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        try:
            yield from self._database()
        except psycopg.Error as exc:
            log.warning("metrics: database unavailable: %s", exc)
        yield from self._broker()
        up = GaugeMetricFamily("tlogsync_metrics_scrape_seconds", "Time this scrape took")
        up.add_metric([], time.monotonic() - started)
        yield up

    def _database(self) -> Iterator[Metric]:
        reads = self.reads
        with reads.session():
            files = GaugeMetricFamily(
                "tlogsync_files", "Files in the ledger by status", labels=["retailer", "feed", "status"]
            )
            for f in reads.files_by_status():
                files.add_metric([f.retailer_id, f.feed, f.status], f.count)
            yield files
            discovered = GaugeMetricFamily(
                "tlogsync_files_discovered_total", "Files ever claimed by a scan", labels=["retailer", "feed"]
            )
            for d in reads.files_discovered():
                discovered.add_metric([d.retailer_id, d.feed], d.count)
            yield discovered
            yield self._family(
                "tlogsync_orders", "Stored orders by type", ["retailer", "order_type"], reads.orders_by_type()
            )
            yield self._family(
                "tlogsync_allocations", "Lines brokered to each facility", ["retailer", "facility"], reads.allocations()
            )
            yield self._family(
                "tlogsync_unfillable_lines",
                "Lines parked in UNFILLABLE_PARKING",
                ["retailer"],
                reads.unfillable_lines(),
            )
            yield self._family(
                "tlogsync_inventory_variances",
                "Inventory variances applied",
                ["retailer", "reason"],
                reads.variances_by_reason(),
            )
            oldest = {p.retailer_id: p.oldest_age_seconds for p in reads.pending_files()}
            age = GaugeMetricFamily(
                "tlogsync_oldest_unprocessed_file_age_seconds",
                "Age of the oldest file not yet final (0 when none)",
                labels=["retailer"],
            )
            for retailer in sorted(set(self._retailer_ids()) | set(oldest)):
                age.add_metric([retailer], float(oldest.get(retailer) or 0))
            yield age
            unmoved = {u.retailer_id: u for u in reads.unmoved_files()}
            unmoved_files = GaugeMetricFamily(
                "tlogsync_unmoved_files",
                "Final files still in the inbound folder: their move failed (tried again with backoff) or is under way",
                labels=["retailer"],
            )
            unmoved_age = GaugeMetricFamily(
                "tlogsync_oldest_unmoved_file_age_seconds",
                "Seconds since the oldest unmoved final file became final (0 when none)",
                labels=["retailer"],
            )
            for retailer in sorted(set(self._retailer_ids()) | set(unmoved)):
                u = unmoved.get(retailer)
                unmoved_files.add_metric([retailer], float(u.files) if u else 0.0)
                unmoved_age.add_metric([retailer], float(u.oldest_age_seconds) if u else 0.0)
            yield unmoved_files
            yield unmoved_age
            young = GaugeMetricFamily(
                "tlogsync_files_too_young",
                "Matching files the latest listing left as younger than min_age_seconds (or dated in the future)",
                labels=["retailer"],
            )
            ignored = GaugeMetricFamily(
                "tlogsync_files_ignored",
                "Entries the latest listing matched that are not regular files (symlinks, FIFOs, directories)",
                labels=["retailer"],
            )
            young_age = GaugeMetricFamily(
                "tlogsync_oldest_too_young_seconds",
                "Age of the oldest too-young file at the latest listing; negative: its mtime is in the future",
                labels=["retailer"],
            )
            for listing in reads.listing_leftovers():
                young.add_metric([listing.retailer_id], float(listing.too_young))
                ignored.add_metric([listing.retailer_id], float(listing.ignored))
                young_age.add_metric([listing.retailer_id], float(listing.oldest_too_young_s or 0))
            yield young
            yield ignored
            yield young_age
            last_age = GaugeMetricFamily(
                "tlogsync_last_scan_age_seconds", "Seconds since the last scan finished", labels=["retailer"]
            )
            errors = GaugeMetricFamily("tlogsync_scan_errors", "1 when the last scan failed", labels=["retailer"])
            for scan in reads.last_scans():
                last_age.add_metric([scan.retailer_id], float(scan.age_seconds))
                errors.add_metric([scan.retailer_id], 1.0 if scan.error is not None else 0.0)
            yield last_age
            yield errors
            pending = [(u.retailer_id, u.kind, u.count) for u in reads.followups() if u.status == "pending"]
            yield self._family(
                "tlogsync_pending_followups", "Brokering/inventory follow-ups not done", ["retailer", "kind"], pending
            )
            # (_retailer_ids above read the file in this process too: a change is recorded before it is shown)
            valid = GaugeMetricFamily(
                "tlogsync_retailers_file_valid",
                "1 when the retailers file was valid when a process last read it; 0 while the processes use the"
                " last valid configuration instead",
                labels=["file"],
            )
            for check in reads.config_checks():
                valid.add_metric([check.source], 1.0 if check.valid else 0.0)
            yield valid
            yield from self._audits(reads)
            yield self._family(
                "tlogsync_negative_stock_rows",
                "Stock rows below zero (sales of stock the store did not have on record)",
                ["retailer"],
                reads.negative_stock_rows(),
            )

    @staticmethod
    def _audits(reads: PgReadModel) -> Iterator[Metric]:
        """The last daily audit per retailer (its latest business day): consistent or not, how many differences."""
        consistent = GaugeMetricFamily(
            "tlogsync_audit_consistent",
            "1 when the retailer's last audited business day accounts for every file and cent, 0 when not",
            labels=["retailer"],
        )
        differences = GaugeMetricFamily(
            "tlogsync_audit_differences",
            "Unexplained differences in the last audited business day",
            labels=["retailer"],
        )
        day = GaugeMetricFamily(
            "tlogsync_audit_business_date_seconds",
            "The last audited business day (its midnight, UTC, as a Unix time)",
            labels=["retailer"],
        )
        for a in reads.last_audits():
            consistent.add_metric([a.retailer_id], 1.0 if a.consistent else 0.0)
            differences.add_metric([a.retailer_id], float(a.differences))
            day.add_metric([a.retailer_id], float(calendar.timegm(a.business_date.timetuple())))
        yield consistent
        yield differences
        yield day

    def _retailer_ids(self) -> list[str]:
        try:
            return list(self.retailers())
        except Exception:  # noqa: BLE001 - a bad retailers file must not break the metrics endpoint
            return []

    @staticmethod
    def _family(name: str, doc: str, labels: list[str], rows: Sequence[Any]) -> GaugeMetricFamily:
        """One gauge from rows whose last value is the count and the others its labels (tuples or dataclasses)."""
        family = GaugeMetricFamily(name, doc, labels=labels)
        for row in rows:
            values = row if isinstance(row, tuple) else astuple(row)
            family.add_metric([str(v) for v in values[:-1]], float(values[-1]))
        return family

    def _broker(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("tlogsync_queue_messages", "Messages ready in each work queue", labels=["queue"])
        dead = GaugeMetricFamily("tlogsync_dead_letters", "Messages in each dead-letter queue", labels=["queue"])
        workers = GaugeMetricFamily("tlogsync_workers", "Workers that answered a ping")
        try:
            with self.app.connection_for_read() as conn:
                channel = conn.default_channel
                for name in queues.WORK_QUEUES:
                    for queue, family in ((queues.work_queue(name), depth), (queues.dead_queue(name), dead)):
                        _, messages, _ = queue(channel).queue_declare(passive=True)
                        family.add_metric([name], messages)
            workers.add_metric([], len(self.app.control.ping(timeout=self.ping_timeout) or []))
        except Exception as exc:  # noqa: BLE001 - report what we have; the broker may be down
            log.warning("metrics: broker unavailable: %s", exc)
            return
        yield depth
        yield dead
        yield workers


def serve(port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - a scrape target listens on the pod IP
    """Register the collector and serve /metrics until interrupted."""
    from worker.app.runtime import runtime
    from worker.celery import app

    # a short wait for a connection: a scrape must still report the broker when the database is down
    db = open_pool(runtime.settings.database_url, max_size=2, name="tlogsync-metrics", timeout=5, check=True)
    REGISTRY.register(TlogsyncCollector(PgReadModel(db), app, runtime.retailers))
    start_http_server(port, addr=address)
    log.info("metrics on http://%s:%d/metrics", address, port)
    while True:
        time.sleep(3600)
