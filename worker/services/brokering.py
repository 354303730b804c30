"""Brokering dry runs: a period's orders replayed against the current or a candidate rule set, in memory.

Nothing is reserved, moved or recorded: the adapter reads in a read-only transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from worker.core.routing import BatchSnapshot, locate
from worker.core.routings import (
    DryRunStats,
    OrderOutcome,
    Routing,
    changed_orders,
    dry_run_stats,
    placements,
    plan_batch,
)


@dataclass(frozen=True)
class DryRunReport:
    orders: int
    current: DryRunStats
    candidate: DryRunStats | None  # with a candidate rule set
    # (order, before, after): against what happened (no candidate) or the current rules (candidate)
    changed: list[tuple[str, dict[int, str], dict[int, str]]]


def _simulate(snapshot: BatchSnapshot, routings: Sequence[Routing]) -> tuple[list[OrderOutcome], DryRunStats]:
    orders, facilities = locate(snapshot)
    outcomes = plan_batch(orders, facilities, snapshot.stock, routings, snapshot.now)
    return outcomes, dry_run_stats(outcomes, facilities)


def dry_run(
    history: Callable[[dt.datetime | None], list[int]],
    replay: Callable[[list[int]], tuple[BatchSnapshot, dict[int, dict[int, str]]]],
    current: Sequence[Routing],
    candidate: Sequence[Routing] | None,
    since: dt.datetime | None,
) -> DryRunReport:
    """Replay the send-sale orders stored since `since` as if they were all waiting now, on today's network and
    stock (the units they hold reserved given back): by the current routings and, if given, the candidate's."""
    order_ids = history(since)
    snapshot, where_now = replay(order_ids)
    now_outcomes, now_stats = _simulate(snapshot, current)
    if candidate is None:
        return DryRunReport(len(snapshot.orders), now_stats, None, changed_orders(where_now, now_outcomes))
    new_outcomes, new_stats = _simulate(snapshot, candidate)
    before = {o.order.group.order_id: placements(o) for o in now_outcomes}
    return DryRunReport(len(snapshot.orders), now_stats, new_stats, changed_orders(before, new_outcomes))
