"""The demo's view of what tlogsync's pages in Flower show: the failed files waiting for a fix (each one's ingest
ended FAILURE in Flower, with its task id for the Retry button), and the dead letters still unresolved."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from worker.adapters.postgres.deadletters import PgDeadLetters
from worker.adapters.postgres.operations import FILE_FAILED, PgOperations
from worker.adapters.postgres.pool import Database


def show_operator_view(db: Database, console: Console) -> None:
    ops, dead = PgOperations(db), PgDeadLetters(db)
    files = [f for f in ops.problem_files(None, 600.0) if f.problem == "failed"]
    table = Table(title=f"Flower › Failed files ({len(files)}): each ingest ended FAILURE, Replay file once fixed")
    for col in ("retailer", "file", "ledger row", "reason"):
        table.add_column(col, overflow="fold")
    for f in files:
        table.add_row(f.retailer_id, f.file_name, str(f.id), (f.reason or "")[:120])
    console.print(table)
    failed_tasks = sum(1 for f in files if (failure := ops.failure_of_file(f.id)) and failure.kind == FILE_FAILED)
    unresolved = sum(count for _, count in dead.open_by_queue())
    console.print(
        f"{failed_tasks} of them with their task kept for Retry (task_failures); {unresolved} unresolved dead"
        " letters (Flower › Dead letters)"
    )
