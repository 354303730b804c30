"""`tlogsync metrics`: a Prometheus endpoint with the business metrics per retailer, and whether PostgreSQL and
RabbitMQ answer.

Computed from PostgreSQL and RabbitMQ, so one small process gives the right numbers however many workers run (no
per-process counters to aggregate, nothing lost when a worker restarts). The expensive parts (the ledger's
queries, the queue depths, the worker ping, which waits its whole timeout for replies) are refreshed in the
background, each on its own thread every `TLOGSYNC_METRICS_REFRESH` seconds; a scrape only copies the latest
results, so it answers in milliseconds whatever PostgreSQL or RabbitMQ are doing. A part whose last refresh
failed, or whose refresh has been running longer than its bound, is down: `tlogsync_database_up` or
`tlogsync_broker_up` is 0 and its series are left out (stale values would hide the outage).

Per-task metrics (task counts, runtimes, by task name and worker) are Flower's `/metrics`, scraped behind
Flower's basic auth (docs/operations.md): this exporter has the ledger's view, Flower the events' view.
"""

from __future__ import annotations

import calendar
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import astuple, dataclass
from typing import Any

from amqp.exceptions import NotFound
from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.adapters import queues
from worker.adapters.postgres.pool import open_pool
from worker.adapters.postgres.readmodel import PgReadModel
from worker.services.ports import CLAIMED, FINAL_STATUSES

log = logging.getLogger("tlogsync.metrics")

# The label values every retailer has a series for, 0 when there is nothing to count (a dashboard shows 0,
# not "No data"). Statuses another version adds still show when the ledger holds them.
FILE_STATUSES = (CLAIMED, *FINAL_STATUSES)
ORDER_TYPES = ("IN_STORE", "SEND_SALE", "MIXED")
FOLLOWUP_KINDS = ("brokering", "inventory")


@dataclass(frozen=True)
class Snapshot:
    families: list[Metric]
    ok: bool
    finished: float  # time.monotonic() when the refresh ended
    took: float  # seconds
    error: str | None = None


class Source:
    """One expensive part of the scrape, refreshed by `run` on a thread of its own; `latest` never waits for a
    refresh in flight (only, once, for the very first one, so a scrape right after start-up has data)."""

    def __init__(self, name: str, compute: Callable[[], Iterable[Metric]], interval: float, bound: float):
        self.name, self.compute, self.interval, self.bound = name, compute, interval, bound
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._running_since: float | None = None
        self._first = threading.Event()

    def refresh(self) -> Snapshot:
        started = time.monotonic()
        with self._lock:
            self._running_since = started
        try:
            families, ok, error = list(self.compute()), True, None
        except Exception as exc:  # noqa: BLE001 - whatever the service did, the endpoint reports it down
            families, ok, error = [], False, f"{type(exc).__name__}: {exc}"
        snapshot = Snapshot(families, ok, time.monotonic(), time.monotonic() - started, error)
        with self._lock:
            previous, self._snapshot, self._running_since = self._snapshot, snapshot, None
        if not ok and (previous is None or previous.ok):
            log.warning("metrics: %s unavailable: %s", self.name, error, extra={"outcome": f"{self.name} down"})
        elif ok and previous is not None and not previous.ok:
            log.info("metrics: %s available again", self.name, extra={"outcome": f"{self.name} up"})
        self._first.set()
        return snapshot

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.refresh()
            stop.wait(self.interval)

    def latest(self, first_wait: float = 0.0) -> tuple[Snapshot | None, bool]:
        """The last refresh's result and whether the part is up: that refresh succeeded and none has been
        running longer than the bound since."""
        if first_wait:
            self._first.wait(first_wait)
        with self._lock:
            snapshot, running_since = self._snapshot, self._running_since
        if snapshot is None:
            return None, False
        stuck = running_since is not None and time.monotonic() - running_since > self.bound
        return snapshot, snapshot.ok and not stuck


class TlogsyncCollector(Collector):
    """What a scrape returns: the latest background results of the database, the broker and the worker ping."""

    def __init__(
        self,
        reads: PgReadModel,
        app: Any,
        retailers: Callable[[], Any],
        ping_timeout: float = 1.0,
        refresh_seconds: float = 5.0,
        first_wait: float = 15.0,
    ):
        self.reads, self.app, self.retailers, self.ping_timeout = reads, app, retailers, ping_timeout
        self.first_wait = first_wait
        bound = max(10.0, 2 * refresh_seconds)
        self.sources = {
            "database": Source("database", lambda: list(self._database()), refresh_seconds, bound),
            "broker": Source("broker", lambda: list(self._broker()), refresh_seconds, bound),
            "workers": Source("workers", lambda: list(self._workers()), refresh_seconds, bound + ping_timeout),
        }
        self._stop = threading.Event()

    def start(self) -> None:
        """One daemon thread per source, refreshing until `stop`."""
        for source in self.sources.values():
            threading.Thread(target=source.run, args=(self._stop,), name=f"metrics-{source.name}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def refresh_all(self) -> None:
        """Refresh every source now, in this thread (tests, and a one-shot scrape)."""
        for source in self.sources.values():
            source.refresh()

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        up = {}
        refresh = GaugeMetricFamily(
            "tlogsync_metrics_refresh_seconds", "How long the latest background refresh took", labels=["source"]
        )
        refresh_age = GaugeMetricFamily(
            "tlogsync_metrics_refresh_age_seconds",
            "Seconds since the latest background refresh ended",
            labels=["source"],
        )
        deadline = started + self.first_wait
        for name, source in self.sources.items():
            snapshot, up[name] = source.latest(max(0.0, deadline - time.monotonic()))
            if snapshot is None:
                continue
            refresh.add_metric([name], snapshot.took)
            refresh_age.add_metric([name], time.monotonic() - snapshot.finished)
            if up[name]:
                yield from snapshot.families
        for name, doc in (
            ("database", "1 when PostgreSQL answered the latest refresh of the ledger's figures, else 0"),
            ("broker", "1 when RabbitMQ answered the latest refresh of the queue depths, else 0"),
        ):
            family = GaugeMetricFamily(f"tlogsync_{name}_up", doc)
            family.add_metric([], 1.0 if up[name] else 0.0)
            yield family
        yield refresh
        yield refresh_age
        took = GaugeMetricFamily("tlogsync_metrics_scrape_seconds", "Time this scrape took (the copy of the results)")
        took.add_metric([], time.monotonic() - started)
        yield took

    # ---------------------------------------------------------------- the database

    def _known(self) -> dict[str, Any]:
        try:
            return dict(self.retailers())
        except Exception:  # noqa: BLE001 - a bad retailers file must not break the metrics endpoint
            return {}

    def _database(self) -> Iterator[Metric]:
        reads = self.reads
        known = self._known()
        retailer_ids = sorted(known)
        feeds = {(rid, "orders") for rid in known} | {
            (rid, "variance") for rid, r in known.items() if getattr(r.sftp, "variance_dir", None)
        }
        with reads.session():
            files = GaugeMetricFamily(
                "tlogsync_files", "Files in the ledger by status", labels=["retailer", "feed", "status"]
            )
            counts = {(f.retailer_id, f.feed, f.status): f.count for f in reads.files_by_status()}
            for retailer, feed in feeds:
                for status in FILE_STATUSES:
                    counts.setdefault((retailer, feed, status), 0)
            for key, count in sorted(counts.items()):
                files.add_metric(list(key), count)
            yield files
            discovered = CounterMetricFamily(
                "tlogsync_files_discovered",
                "Files ever claimed by a scan (ledger rows; a replay is a new claim)",
                labels=["retailer", "feed"],
            )
            claimed = {(d.retailer_id, d.feed): d.count for d in reads.files_discovered()}
            for pair in feeds:
                claimed.setdefault(pair, 0)
            for pair, count in sorted(claimed.items()):
                discovered.add_metric(list(pair), count)
            yield discovered
            yield self._family(
                "tlogsync_orders",
                "Stored orders by type",
                ["retailer", "order_type"],
                reads.orders_by_type(),
                [(rid, t) for rid in retailer_ids for t in ORDER_TYPES],
            )
            yield self._family(
                "tlogsync_allocations", "Lines brokered to each facility", ["retailer", "facility"], reads.allocations()
            )
            yield self._family(
                "tlogsync_unfillable_lines",
                "Lines parked in UNFILLABLE_PARKING",
                ["retailer"],
                reads.unfillable_lines(),
                [(rid,) for rid in retailer_ids],
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
            for retailer in sorted(set(retailer_ids) | set(oldest)):
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
            for retailer in sorted(set(retailer_ids) | set(unmoved)):
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
            listings = {listing.retailer_id: listing for listing in reads.listing_leftovers()}
            for retailer in sorted(set(retailer_ids) | set(listings)):
                listing = listings.get(retailer)
                young.add_metric([retailer], float(listing.too_young) if listing else 0.0)
                ignored.add_metric([retailer], float(listing.ignored) if listing else 0.0)
                young_age.add_metric([retailer], float(listing.oldest_too_young_s or 0) if listing else 0.0)
            yield young
            yield ignored
            yield young_age
            last_age = GaugeMetricFamily(
                "tlogsync_last_scan_age_seconds", "Seconds since the last scan finished", labels=["retailer"]
            )
            errors = GaugeMetricFamily("tlogsync_scan_errors", "1 when the last scan failed", labels=["retailer"])
            scanned = set()
            for scan in reads.last_scans():
                scanned.add(scan.retailer_id)
                last_age.add_metric([scan.retailer_id], float(scan.age_seconds))
                errors.add_metric([scan.retailer_id], 1.0 if scan.error is not None else 0.0)
            for retailer in retailer_ids:  # never scanned: no age (ScansStopped cannot tell), no error
                if retailer not in scanned:
                    errors.add_metric([retailer], 0.0)
            yield last_age
            yield errors
            pending = [(u.retailer_id, u.kind, u.count) for u in reads.followups() if u.status == "pending"]
            yield self._family(
                "tlogsync_pending_followups",
                "Brokering/inventory follow-ups not done",
                ["retailer", "kind"],
                pending,
                [(rid, kind) for rid in retailer_ids for kind in FOLLOWUP_KINDS],
            )
            # (_known above read the file in this process too: a change is recorded before it is shown)
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
                [(rid,) for rid in retailer_ids],
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

    @staticmethod
    def _family(
        name: str, doc: str, labels: list[str], rows: Sequence[Any], zeros: Iterable[tuple[str, ...]] = ()
    ) -> GaugeMetricFamily:
        """One gauge from rows whose last value is the count and the others its labels (tuples or dataclasses);
        zeros: label sets that get a 0 when the rows have nothing for them."""
        family = GaugeMetricFamily(name, doc, labels=labels)
        values: dict[tuple[str, ...], float] = dict.fromkeys(zeros, 0.0)
        for row in rows:
            fields = row if isinstance(row, tuple) else astuple(row)
            values[tuple(str(v) for v in fields[:-1])] = float(fields[-1])
        for key, value in sorted(values.items()):
            family.add_metric(list(key), value)
        return family

    # ---------------------------------------------------------------- the broker

    def _broker(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("tlogsync_queue_messages", "Messages ready in each work queue", labels=["queue"])
        dead = GaugeMetricFamily("tlogsync_dead_letters", "Messages in each dead-letter queue", labels=["queue"])
        # a short connect and no retry loop: a broker that does not answer is down now, not in a minute
        with self.app.connection_for_read(connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
            channel = conn.channel()
            try:
                for name in queues.WORK_QUEUES:
                    for queue, family in ((queues.work_queue(name), depth), (queues.dead_queue(name), dead)):
                        try:
                            _, messages, _ = queue(channel).queue_declare(passive=True)
                        except NotFound:  # not declared yet (no worker started on this vhost): empty
                            messages = 0
                            channel = conn.channel()  # the broker closed the channel that asked
                        family.add_metric([name], messages)
            finally:
                channel.close()
        yield depth
        yield dead

    def _workers(self) -> Iterator[Metric]:
        workers = GaugeMetricFamily("tlogsync_workers", "Workers that answered a ping")
        workers.add_metric([], len(self.app.control.ping(timeout=self.ping_timeout) or []))
        yield workers


def serve(port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - a scrape target listens on the pod IP
    """Register the collector, start its refresh threads and serve /metrics until interrupted. Starts whether
    or not PostgreSQL and RabbitMQ answer: that they do not is what it reports."""
    from worker.app.runtime import runtime
    from worker.celery import app

    settings = runtime.settings
    # a short wait for a connection: a refresh must fail soon when the database is down
    db = open_pool(settings.database_url, max_size=2, name="tlogsync-metrics", timeout=3, check=True)
    collector = TlogsyncCollector(
        PgReadModel(db), app, runtime.retailers, refresh_seconds=settings.metrics_refresh_seconds
    )
    REGISTRY.register(collector)
    start_http_server(port, addr=address)  # first: a port that is taken stops it before anything else runs
    collector.start()
    log.info("metrics on http://%s:%d/metrics", address, port)
    while True:
        time.sleep(3600)
