"""The routing run's loop on a fake outbox: batches until nothing is pending, one run at a time, bounded."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from worker.core.errors import TransientError
from worker.core.routing import INVENTORY
from worker.services.ports import TakenFollowups
from worker.services.routing import run_inventory


class FakeOutbox:
    def __init__(self, pending, locked=False, fail_on=None, asked_meanwhile=False):
        self.pending, self.locked, self.fail_on = list(pending), locked, fail_on
        self.applied, self.forgiven, self.passes_started, self.finished = [], [], 0, None
        self.asked_meanwhile = asked_meanwhile  # an order asked for a run after the last pass began

    @contextmanager
    def run_lock(self, retailer_id, kind):
        yield not self.locked

    def start_pass(self, retailer_id, kind):
        self.passes_started += 1

    def take(self, retailer_id, kind, limit, max_attempts):
        batch, self.pending = self.pending[:limit], self.pending[limit:]
        return TakenFollowups(tuple(batch))

    def forgive(self, kind, order_ids):
        self.forgiven.extend(order_ids)

    def finish_run(self, retailer_id, kind, result):
        self.finished = result

    def trigger_pending(self, retailer_id, kind):
        return self.asked_meanwhile

    def apply_sales(self, retailer_id, order_ids):
        if self.fail_on in order_ids:
            raise TransientError("database went away")
        self.applied.extend(order_ids)
        return len(order_ids), []


def test_a_run_takes_batches_until_the_outbox_is_empty():
    outbox = FakeOutbox(range(1, 8))
    result = run_inventory(outbox, "acme", 25, batch=3)
    assert outbox.applied == list(range(1, 8))
    assert (result.orders, result.passes, result.busy, result.more) == (7, 3, False, False)
    assert outbox.passes_started == 4 and "7 sales" in outbox.finished


def test_a_run_that_finds_another_running_leaves_the_work_to_it():
    outbox = FakeOutbox([1, 2], locked=True)
    result = run_inventory(outbox, "acme", 25)
    assert result.busy and outbox.applied == [] and outbox.passes_started == 0
    assert not result.more  # it asks for no run: the one holding the lock does, when it is done


def test_a_run_asks_for_the_next_when_an_order_asked_while_it_held_the_lock():
    quiet = run_inventory(FakeOutbox([1]), "acme", 25)
    assert not quiet.more
    asked = run_inventory(FakeOutbox([1], asked_meanwhile=True), "acme", 25)
    assert asked.more and not asked.busy


def test_a_transient_failure_forgives_the_batch_attempt_and_is_raised_for_a_retry():
    outbox = FakeOutbox([1, 2, 3, 4], fail_on=3)
    with pytest.raises(TransientError):
        run_inventory(outbox, "acme", 25, batch=2)
    assert outbox.applied == [1, 2] and outbox.forgiven == [3, 4]


def test_a_run_stops_at_its_time_budget_and_says_there_is_more():
    import worker.services.routing as routing

    outbox = FakeOutbox(range(1, 100))
    result = routing._passes(outbox, "acme", INVENTORY, 10, 25, routing.RunResult(INVENTORY), lambda ids: None, 0.0)
    assert result.more and result.passes == 0
