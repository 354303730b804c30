"""The dead-letter and give-up series of `tlogsync metrics`, read from PostgreSQL with the ledger's series (in
the exporter's background refresh of the database, worker/monitoring/metrics.py).

- `tlogsync_dead_letters_unresolved{queue}`: dead letters still dead (not replayed, not resolved by their work
  succeeding later, not purged): what the `DeadLettersUnresolved` alert counts. A dead letter that is still in its
  RabbitMQ queue but whose work was done since is resolved, and no longer counted.
- `tlogsync_scans_given_up_total{retailer}`: scans that ran out of retries and were left to the next scheduled
  scan instead of being dead-lettered (one per scan task, ever).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.adapters import queues
from worker.adapters.postgres.deadletters import PgDeadLetters
from worker.adapters.postgres.operations import PgOperations
from worker.adapters.postgres.pool import Database

log = logging.getLogger(__name__)

SCAN_TASK = "tlogsync.scan_retailer"


class DeadLetterCollector(Collector):
    def __init__(self, db: Database, retailers: Callable[[], Iterable[str]]):
        self.dead, self.ops, self.retailers = PgDeadLetters(db), PgOperations(db), retailers

    def collect(self) -> Iterator[Metric]:
        try:
            open_ = dict(self.dead.open_by_queue())
            given_up = {g.retailer_id: g.count for g in self.ops.given_up() if g.task_name == SCAN_TASK}
        except psycopg.Error:
            raise  # the database refresh fails as a whole: tlogsync_database_up 0, said once by the exporter
        unresolved = GaugeMetricFamily(
            "tlogsync_dead_letters_unresolved",
            "Dead letters not replayed, not resolved (their work succeeded later) and not purged",
            labels=["queue"],
        )
        for name in sorted(set(queues.WORK_QUEUES) | set(open_)):
            unresolved.add_metric([name], float(open_.get(name, 0)))
        yield unresolved
        scans = CounterMetricFamily(
            "tlogsync_scans_given_up",
            "Scans that ran out of retries and were left to the next scheduled scan (not dead-lettered)",
            labels=["retailer"],
        )
        try:
            known = set(self.retailers())
        except Exception:  # noqa: BLE001 - a bad retailers file must not break the endpoint
            known = set()
        for retailer in sorted(known | set(given_up)):
            scans.add_metric([retailer], float(given_up.get(retailer, 0)))
        yield scans
