"""Celery wiring that needs no broker: beat entries, routes, queue arguments, backoff."""

from __future__ import annotations

import random

import psycopg
from celery.exceptions import SoftTimeLimitExceeded
from celery.schedules import crontab, schedule
from kombu.exceptions import OperationalError as KombuOperationalError

from tests.unit.helpers import retailer
from worker.adapters.queues import TASK_ROUTES, WORK_QUEUES, task_queues
from worker.app.schedule import build_beat_schedule
from worker.app.settings import RetryPolicy
from worker.app.taskbase import as_transient, backoff_seconds, logged_args, unexpected_reason
from worker.core.errors import TransientError, bounded


def test_each_retailer_scans_on_its_own_schedule():
    a = retailer(poll_seconds=30)
    b = retailer(poll_seconds=None, schedule="*/5 * * * *")
    b = type(b)(**{**b.__dict__, "retailer_id": "beta"})
    paused = type(a)(**{**a.__dict__, "retailer_id": "gamma", "enabled": False})
    entries = build_beat_schedule({"acme": a, "beta": b, "gamma": paused})
    assert set(entries) == {"scan:acme", "scan:beta", "broker:acme", "broker:beta"}  # brokering: every 15 min
    assert isinstance(entries["scan:acme"]["schedule"], schedule)
    assert entries["scan:acme"]["schedule"].run_every.total_seconds() == 30
    assert isinstance(entries["scan:beta"]["schedule"], crontab)
    assert entries["scan:beta"]["args"] == ("beta",)
    assert entries["scan:beta"]["task"] == "tlogsync.scan_retailer"


def test_every_work_queue_dead_letters_into_its_own_queue():
    queues = {q.name: q for q in task_queues()}
    assert set(queues) == set(WORK_QUEUES)
    for name, q in queues.items():
        assert q.durable
        assert q.queue_arguments == {
            "x-dead-letter-exchange": "tlogsync.dead",
            "x-dead-letter-routing-key": f"{name}.dead",
        }


def test_tasks_are_routed_to_their_queues():
    assert TASK_ROUTES["tlogsync.scan_retailer"]["queue"] == "tlog.scan"
    assert TASK_ROUTES["tlogsync.ingest_tlog"]["queue"] == "tlog.ingest"


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    policy = RetryPolicy(max_retries=10, base_seconds=2, cap_seconds=60)
    rng = random.Random(1)
    for retries in range(10):
        ceiling = min(60, 2 * 2**retries)
        delays = [backoff_seconds(policy, retries, rng) for _ in range(200)]
        assert all(1 <= d <= max(1, ceiling) for d in delays)
    assert max(backoff_seconds(policy, 9, rng) for _ in range(200)) > 30


def test_a_retailer_with_an_audit_time_gets_an_audit_entry_checked_every_15_minutes():
    r = retailer(poll_seconds=60, audit_time="03:00", audit_time_zone="America/New_York")
    entries = build_beat_schedule({"acme": r})
    audit = entries["audit:acme"]
    assert audit["task"] == "tlogsync.ops.audit_retailer" and audit["kwargs"] == {"due_only": True}
    assert audit["schedule"].run_every.total_seconds() == 900
    assert "audit:acme" not in build_beat_schedule({"acme": retailer(poll_seconds=60)})


def test_a_soft_time_limit_is_retried_as_transient_not_dead_lettered_as_unexpected():
    soft = as_transient(SoftTimeLimitExceeded())
    assert isinstance(soft, TransientError) and str(soft).startswith("soft time limit exceeded")
    broker = as_transient(KombuOperationalError("connection refused"))
    assert isinstance(broker, TransientError) and str(broker).startswith("broker: ")
    assert as_transient(ValueError("a bug")) is None
    assert as_transient(TransientError("already")) is None  # handled as itself


def test_an_unexpected_database_error_is_named_by_its_condition_never_by_its_message():
    exc = psycopg.errors.NumericValueOutOfRange('value "jane@example.com" is out of range for type bigint')
    assert unexpected_reason(exc) == "unexpected database error: numeric_value_out_of_range (SQLSTATE 22003)"
    client_side = psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
    assert unexpected_reason(client_side) == "unexpected database error: data_error (refused by the driver)"
    assert unexpected_reason(KeyError("k")) == "unexpected KeyError: 'k'"


def test_reasons_and_logged_arguments_are_bounded_with_a_marker_of_what_was_cut():
    assert bounded("short") == "short"
    cut = bounded("x" * 2_000_000)
    assert len(cut) < 2100 and cut.endswith("... [1998000 characters cut]")
    assert len(unexpected_reason(RuntimeError("y" * 2_000_000))) < 2100
    shown = logged_args(("r1", "9" * 2_000_000, 3))
    assert len(shown) < 2100 and shown.startswith("('r1', '999") and "characters cut" in shown
    assert logged_args(("r1", 5)) == "('r1', 5)"
