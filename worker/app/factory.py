"""The Celery application: `celery -A worker worker` and `celery -A worker beat` find it here."""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import Celery, signals

from worker.adapters import queues
from worker.app import processes
from worker.app.runtime import runtime
from worker.app.settings import Settings, SettingsError, exit_on_bad_settings
from worker.core.geo import zip_location
from worker.core.retailers import ConfigError
from worker.monitoring import logs

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> Celery:
    app = Celery(
        "tlogsync",
        broker=settings.broker_url,
        include=["tasks.scan", "tasks.ingest", "tasks.routing", "tasks.ops", "tasks.audit", "tasks.lifecycle"],
    )
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        # Outcomes live in the PostgreSQL ledger; a result backend would be a second source of truth.
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_queues=queues.task_queues(),
        task_default_queue=queues.INGEST,
        task_default_exchange=queues.WORK_EXCHANGE.name,
        task_default_routing_key=queues.INGEST,
        task_routes=queues.TASK_ROUTES,
        # Acknowledge after the task ran, so a crash mid-task redelivers instead of losing the file;
        # our tasks are idempotent (ledger row lock, unique keys), which makes redelivery safe.
        task_acks_late=True,
        # A child killed mid-task (OOM killer, kill -9, hard time limit) puts its message back rather than
        # losing it; a message that keeps killing children is bounded by the attempts counter in the
        # ledger (TLOGSYNC_MAX_ATTEMPTS), which fails the file and dead-letters the message.
        task_reject_on_worker_lost=True,
        # Messages and queues survive a broker restart.
        task_default_delivery_mode="persistent",
        # Publisher confirms: apply_async returns only once RabbitMQ has the message.
        broker_transport_options={"confirm_publish": True},
        broker_connection_retry_on_startup=True,
        # Messages reserved per pool process (TLOGSYNC_PREFETCH, default 1): a slow file then never holds
        # back messages another process could take, and a killed worker has at most one message per
        # process in flight. `make bench` measures the alternative.
        worker_prefetch_multiplier=settings.prefetch,
        # The default pool: threads (worker/app/pool.py, with the time limits Celery's threads pool lacks), in
        # one process per core (worker/app/processes.py, `--processes N`). Measured by `make bench` against
        # prefork: no pipe and no pickling per task between a parent and its children, and a task's waits
        # overlap the others' work (docs/benchmarks.md). `--pool prefork` is ignored by Celery once a pool is
        # configured: `--pool processes` is its other name and still selects it.
        worker_pool="worker.app.pool:ThreadsPool",
        worker_concurrency=settings.worker_threads,
        # Long-lived workers grow: recycle a child now and then (celery issue 4843).
        worker_max_tasks_per_child=settings.max_tasks_per_child or None,
        worker_max_memory_per_child=400_000,  # KiB
        # Task events feed Flower. Workers send them when started with -E (the compose stack and the
        # Kubernetes manifests do); each event is one more publish per task state, measured at about 15%
        # of throughput by `make bench`, so it is the operator's choice, not a hidden default.
        worker_send_task_events=False,
        task_send_sent_event=settings.sent_events,
        # No result backend: a STARTED state would go nowhere (the ledger's attempts say a file was started).
        task_track_started=False,
        # A stuck SFTP read or database lock must not hold a worker slot forever.
        task_soft_time_limit=120,
        task_time_limit=180,
        beat_scheduler="worker.app.schedule:RetailerScheduler",
        worker_hijack_root_logger=True,
        timezone="UTC",
        enable_utc=True,
    )
    return app


def _settings() -> Settings:
    # The first read of the environment in a worker, beat or Flower process (`celery -A worker` imports this
    # module before any signal): a bad value ends the process here with one line naming the variable.
    try:
        return runtime.settings
    except SettingsError as exc:
        exit_on_bad_settings(exc)


app = create_app(_settings())
processes.install(app)


@signals.worker_init.connect
def _check_config_at_start(**_: Any) -> None:
    """A bad retailers file, with no valid one ever stored to fall back on, stops the worker at start-up."""
    try:
        runtime.retailers()
    except ConfigError as exc:
        print(f"tlogsync: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    with app.connection_for_write() as conn:
        queues.declare_topology(conn)
    # Load the ZIP-code table once in the parent, so pool children share it instead of each paying ~0.2 s.
    zip_location("10001")


@signals.beat_init.connect
def _check_config_for_beat(**_: Any) -> None:
    try:
        runtime.retailers()
    except ConfigError as exc:
        print(f"tlogsync: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


@signals.worker_process_init.connect
def _fresh_resources_after_fork(**_: Any) -> None:
    runtime.close()  # nothing inherited from the parent is used in the child


@signals.worker_process_shutdown.connect
def _close_resources(**_: Any) -> None:
    runtime.shutdown()


@signals.worker_shutdown.connect
def _close_main_process_resources(sender: Any = None, **_: Any) -> None:
    # A threads (or solo) pool runs the tasks in the main process, which no worker_process_shutdown reaches.
    pool = getattr(sender, "pool", None)
    if pool is not None and not getattr(pool, "uses_semaphore", False):  # not prefork: its children closed theirs
        runtime.shutdown()


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _configure_logging(logger: logging.Logger, **_: Any) -> None:
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    logging.getLogger("tlogsync").setLevel(runtime.settings.log_level)
    logs.install(logger, runtime.settings.log_format)
