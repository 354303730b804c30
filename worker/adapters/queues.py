"""Queues, routes and dead-lettering: the broker topology, declared the same by every process.

Every work queue is durable and names a dead-letter exchange, so a message a task rejects
(`Reject(requeue=False)`) lands in `<queue>.dead` for operators to inspect and replay.
Changing a queue's arguments later makes RabbitMQ refuse the redeclaration, so they are
fixed here from the start.
"""

from __future__ import annotations

from kombu import Exchange, Queue

SCAN, INGEST = "tlog.scan", "tlog.ingest"
BROKERING, INVENTORY = "brokering", "inventory"
OPS = "tlog.ops"
WORK_QUEUES = (SCAN, INGEST, BROKERING, INVENTORY, OPS)

WORK_EXCHANGE = Exchange("tlogsync", type="direct", durable=True)
DEAD_EXCHANGE = Exchange("tlogsync.dead", type="direct", durable=True)


def dead_letter_queue(name: str) -> str:
    return f"{name}.dead"


def work_queue(name: str) -> Queue:
    return Queue(
        name,
        WORK_EXCHANGE,
        routing_key=name,
        durable=True,
        queue_arguments={
            "x-dead-letter-exchange": DEAD_EXCHANGE.name,
            "x-dead-letter-routing-key": dead_letter_queue(name),
        },
    )


def dead_queue(name: str) -> Queue:
    return Queue(dead_letter_queue(name), DEAD_EXCHANGE, routing_key=dead_letter_queue(name), durable=True)


def task_queues() -> list[Queue]:
    """The queues workers consume from (dead-letter queues are declared, never consumed)."""
    return [work_queue(q) for q in WORK_QUEUES]


def declare_topology(connection: object) -> None:
    """Declare work and dead-letter queues, so a dead letter never finds its queue missing."""
    channel = connection.default_channel  # type: ignore[attr-defined]
    for name in WORK_QUEUES:
        work_queue(name)(channel).declare()
        dead_queue(name)(channel).declare()


TASK_ROUTES = {
    "tlogsync.scan_retailer": {"queue": SCAN, "routing_key": SCAN},
    "tlogsync.ingest_tlog": {"queue": INGEST, "routing_key": INGEST},
    "tlogsync.broker_order": {"queue": BROKERING, "routing_key": BROKERING},
    "tlogsync.run_brokering": {"queue": BROKERING, "routing_key": BROKERING},
    "tlogsync.run_inventory": {"queue": INVENTORY, "routing_key": INVENTORY},
    "tlogsync.apply_sale_to_inventory": {"queue": INVENTORY, "routing_key": INVENTORY},
    "tlogsync.apply_variance_file": {"queue": INVENTORY, "routing_key": INVENTORY},
    "tlogsync.apply_fulfillment_file": {"queue": INVENTORY, "routing_key": INVENTORY},
    "tlogsync.ops.*": {"queue": OPS, "routing_key": OPS},
}
