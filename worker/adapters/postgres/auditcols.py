"""The audit's columns of a ledger row (migration 012), set by the statement that records the file's final
status: the ledger's and the orders' final UPDATE both add FACTS_SET and facts_params to theirs."""

from __future__ import annotations

import json
from typing import Any

from psycopg.types.json import Jsonb

from worker.core.salefacts import LedgerFacts

FACTS_SET = (
    "business_day = %(a_day)s, store_id = %(a_store)s, register_id = %(a_reg)s, register_txn = %(a_txn)s,"
    " sale_totals = %(a_totals)s"
)


def facts_params(facts: LedgerFacts | None) -> dict[str, Any]:
    f = facts or LedgerFacts()
    return {
        "a_day": f.business_day,
        "a_store": f.store_id,
        "a_reg": f.register_id,
        "a_txn": f.register_txn,
        "a_totals": Jsonb(f.totals, dumps=_dumps) if f.totals is not None else None,
    }


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
