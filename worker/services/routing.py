"""Routing runs: a retailer's in-store sales applied to inventory, and its send-sale orders brokered, in batches
taken from the outbox. One run per retailer and kind at a time; runs of different retailers overlap."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from worker.core.brokering import BROKERING_QUEUE, Rule
from worker.core.errors import TransientError
from worker.core.routing import BROKERING, INVENTORY, BrokeringBatch, as_routings, broker_batch
from worker.core.routings import DEFAULT_QUEUES, Routing
from worker.services.ports import TakenFollowups

INVENTORY_BATCH = 500  # sales per transaction: one statement applies them all
BROKERING_BATCH = 100  # orders per pass, brokered together in one transaction on one read of network and stock
RUN_SECONDS = 60.0  # a run stops taking new batches after this long and asks for the next run (short tasks)


class RoutingStore(Protocol):
    def run_lock(self, retailer_id: str, kind: str) -> AbstractContextManager[bool]: ...

    def start_pass(self, retailer_id: str, kind: str) -> None: ...

    def trigger_pending(self, retailer_id: str, kind: str) -> bool: ...

    def take(self, retailer_id: str, kind: str, limit: int, max_attempts: int) -> TakenFollowups: ...

    def forgive(self, kind: str, order_ids: Sequence[int]) -> None: ...

    def finish_run(self, retailer_id: str, kind: str, result: str) -> None: ...

    def apply_sales(self, retailer_id: str, order_ids: Sequence[int]) -> tuple[int, list[str]]: ...

    def requeue(self, retailer_id: str, queues: Sequence[str]) -> int: ...

    def cancel_due(self, retailer_id: str, run_id: str, queues: Sequence[str]) -> list[str]: ...


@dataclass
class RunResult:
    kind: str
    busy: bool = False  # another run of this retailer and kind held the lock: it takes what is pending, and asks
    # for a run after it if an order asked for one meanwhile (so a busy run ends there: no message loops)
    more: bool = False  # stopped at its time budget with work left: the caller starts the next run
    orders: int = 0
    passes: int = 0
    variances: int = 0
    allocated: int = 0
    unfillable: int = 0
    unrouted: int = 0
    requeued: int = 0
    cancelled: list[str] = field(default_factory=list)
    given_up: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.kind == INVENTORY:
            done = f"{self.orders} sales, {self.variances} variances"
        else:
            done = f"{self.orders} orders, {self.allocated} lines allocated, {self.unfillable} unfillable"
            if self.unrouted:
                done += f", {self.unrouted} matched no routing"
            if self.requeued:
                done += f", {self.requeued} parked or queued taken again"
            if self.cancelled:
                done += f", {len(self.cancelled)} auto-cancelled"
        gave_up = f", gave up on orders {self.given_up}" if self.given_up else ""
        return f"{done} in {self.passes} passes{gave_up}"


def _passes(
    store: RoutingStore,
    retailer_id: str,
    kind: str,
    batch: int,
    max_attempts: int,
    result: RunResult,
    work: Callable[[tuple[int, ...]], None],
    budget_seconds: float = RUN_SECONDS,
    first: Callable[[], None] | None = None,
) -> RunResult:
    """Take batches from the outbox until none is left (or the time budget is spent), under the retailer's run
    lock of this kind."""
    deadline = time.monotonic() + budget_seconds
    with store.run_lock(retailer_id, kind) as got:
        if not got:
            result.busy = True
            return result
        if first is not None:
            first()  # under the lock: what a run does once before its batches
        while True:
            if time.monotonic() > deadline:
                result.more = True
                break
            # From here on, an order that commits asks for a run of its own; this pass may or may not see it,
            # and the next pass (or that run) will.
            store.start_pass(retailer_id, kind)
            taken = store.take(retailer_id, kind, batch, max_attempts)
            result.given_up.extend(taken.given_up)
            if not taken.order_ids and not taken.given_up:
                break
            result.passes += 1
            try:
                work(taken.order_ids)
            except TransientError:
                store.forgive(kind, taken.order_ids)
                raise
            result.orders += len(taken.order_ids)
        store.finish_run(retailer_id, kind, result.summary())
    # After the lock is released: an order that committed after the last pass began asked for a run that may have
    # found this one holding the lock (a busy run ends without asking again); this run asks for the next one.
    if not result.more and store.trigger_pending(retailer_id, kind):
        result.more = True
    return result


def run_inventory(store: RoutingStore, retailer_id: str, max_attempts: int, batch: int = INVENTORY_BATCH) -> RunResult:
    """Apply every pending in-store sale of the retailer to its stores' inventory, once each."""
    result = RunResult(INVENTORY)

    def apply(order_ids: tuple[int, ...]) -> None:
        applied, notes = store.apply_sales(retailer_id, order_ids)
        result.variances += applied
        result.notes.extend(notes)

    return _passes(store, retailer_id, INVENTORY, batch, max_attempts, result, apply)


def run_brokering(
    store: RoutingStore,
    batch_for: Callable[[tuple[int, ...], Sequence[str]], AbstractContextManager[BrokeringBatch]],
    routings: Sequence[Routing] | Sequence[Rule],
    retailer_id: str,
    run_id: str,
    max_attempts: int,
    batch: int = BROKERING_BATCH,
    scheduled: bool = False,
    parked: bool = True,
) -> RunResult:
    """A brokering run of the retailer: orders past their auto-cancel date cancelled; with scheduled (beat, or
    `tlogsync broker`), every order waiting in a routing's queues taken again, parked ones first; then every
    pending order brokered, batch by batch, each batch by the routings in one transaction."""
    chosen = as_routings(routings)
    queues: list[str] = []
    for routing in chosen:
        queues += [q for q in routing.queues if q not in queues]
    queues = queues or list(DEFAULT_QUEUES)
    result = RunResult(BROKERING)

    def first() -> None:
        result.cancelled = store.cancel_due(retailer_id, run_id, queues)
        if scheduled:
            result.requeued = store.requeue(retailer_id, queues if parked else [BROKERING_QUEUE])

    def broker(order_ids: tuple[int, ...]) -> None:
        with batch_for(order_ids, queues) as unit:
            outcomes = broker_batch(unit, chosen, run_id)
        for outcome in outcomes:
            if outcome.plan is None:
                result.unrouted += 1
                continue
            result.allocated += len(outcome.plan.allocations)
            result.unfillable += len(outcome.plan.unfillable)

    return _passes(store, retailer_id, BROKERING, batch, max_attempts, result, broker, first=first)
