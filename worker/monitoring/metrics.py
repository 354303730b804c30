"""`tlogsync metrics`: a Prometheus endpoint with the business metrics per retailer.

Computed from PostgreSQL and RabbitMQ at scrape time, so one small process gives the right numbers
however many workers run (no per-process counters to aggregate, nothing lost when a worker restarts).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.app import queues

log = logging.getLogger(__name__)

FILES_BY_STATUS = """
SELECT retailer_id, feed, status, count(*) FROM tlog_files WHERE replayed_by IS NULL GROUP BY 1, 2, 3
"""
DISCOVERED = "SELECT retailer_id, feed, count(*) FROM tlog_files GROUP BY 1, 2"
ORDERS = "SELECT retailer_id, order_type, count(*) FROM orders GROUP BY 1, 2"
ALLOCATIONS = """
SELECT retailer_id, facility_id, count(*) FROM order_facility_changes WHERE reason = 'BROKERED' GROUP BY 1, 2
"""
UNFILLABLE = """
SELECT o.retailer_id, count(*) FROM order_items i JOIN orders o ON o.id = i.order_id
WHERE i.facility_id = 'UNFILLABLE_PARKING' GROUP BY 1
"""
VARIANCES = "SELECT retailer_id, reason_id, count(*) FROM inventory_variances GROUP BY 1, 2"
OLDEST = """
SELECT retailer_id, extract(epoch FROM now() - min(coalesce(mtime, claimed_at)))
FROM tlog_files WHERE status = 'claimed' OR (moved_at IS NULL AND replayed_by IS NULL) GROUP BY 1
"""
LAST_SCAN = """
SELECT DISTINCT ON (retailer_id) retailer_id, extract(epoch FROM now() - finished_at), error IS NOT NULL
FROM scan_runs ORDER BY retailer_id, finished_at DESC
"""
PENDING = "SELECT retailer_id, kind, count(*) FROM order_followups WHERE status = 'pending' GROUP BY 1, 2"
NEGATIVE = "SELECT retailer_id, count(*) FROM inventory WHERE quantity_on_hand < 0 GROUP BY 1"


class TlogsyncCollector(Collector):
    """Reads the ledger and the broker on every scrape."""

    def __init__(self, dsn: str, app: Any, retailers: Any, ping_timeout: float = 1.0):
        self.dsn, self.app, self.retailers, self.ping_timeout = dsn, app, retailers, ping_timeout

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
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            def rows(query: str) -> list[tuple[Any, ...]]:
                return conn.execute(query).fetchall()

            files = GaugeMetricFamily("tlogsync_files", "Files in the ledger by status",
                                      labels=["retailer", "feed", "status"])
            for retailer, feed, status, count in rows(FILES_BY_STATUS):
                files.add_metric([retailer, feed, status], count)
            yield files
            discovered = GaugeMetricFamily("tlogsync_files_discovered_total", "Files ever claimed by a scan",
                                           labels=["retailer", "feed"])
            for retailer, feed, count in rows(DISCOVERED):
                discovered.add_metric([retailer, feed], count)
            yield discovered
            yield self._family("tlogsync_orders", "Stored orders by type", ["retailer", "order_type"], rows(ORDERS))
            yield self._family("tlogsync_allocations", "Lines brokered to each facility", ["retailer", "facility"],
                               rows(ALLOCATIONS))
            yield self._family("tlogsync_unfillable_lines", "Lines parked in UNFILLABLE_PARKING", ["retailer"],
                               rows(UNFILLABLE))
            yield self._family("tlogsync_inventory_variances", "Inventory variances applied",
                               ["retailer", "reason"], rows(VARIANCES))
            oldest = dict(rows(OLDEST))
            age = GaugeMetricFamily("tlogsync_oldest_unprocessed_file_age_seconds",
                                    "Age of the oldest file not yet final (0 when none)", labels=["retailer"])
            for retailer in sorted(set(self._retailer_ids()) | set(oldest)):
                age.add_metric([retailer], float(oldest.get(retailer) or 0))
            yield age
            last_age = GaugeMetricFamily("tlogsync_last_scan_age_seconds", "Seconds since the last scan finished",
                                         labels=["retailer"])
            errors = GaugeMetricFamily("tlogsync_scan_errors", "1 when the last scan failed", labels=["retailer"])
            for retailer, seconds, failed in rows(LAST_SCAN):
                last_age.add_metric([retailer], float(seconds))
                errors.add_metric([retailer], 1.0 if failed else 0.0)
            yield last_age
            yield errors
            yield self._family("tlogsync_pending_followups", "Brokering/inventory follow-ups not done",
                               ["retailer", "kind"], rows(PENDING))
            yield self._family("tlogsync_negative_stock_rows",
                               "Stock rows below zero (sales of stock the store did not have on record)",
                               ["retailer"], rows(NEGATIVE))

    def _retailer_ids(self) -> list[str]:
        try:
            return list(self.retailers())
        except Exception:  # noqa: BLE001 - a bad retailers file must not break the metrics endpoint
            return []

    @staticmethod
    def _family(name: str, doc: str, labels: list[str], rows: list[tuple[Any, ...]]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=labels)
        for row in rows:
            family.add_metric([str(v) for v in row[:-1]], float(row[-1]))
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

    REGISTRY.register(TlogsyncCollector(runtime.settings.database_url, app, runtime.retailers))
    start_http_server(port, addr=address)
    log.info("metrics on http://%s:%d/metrics", address, port)
    while True:
        time.sleep(3600)
