"""What the files ledger keeps of each sale for the daily audit: its business day, store, register and
register transaction, and its totals as the TLog states them (tenders with their status, tax by jurisdiction).

Read leniently from the decoded document: these facts never fail a file. A file that does not parse still gets
what can be read of it (a creationDate and a storeId that look right); the audit places the rest by name or time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from worker.core.returns import Return
from worker.core.tlog import Sale

# Tender statuses as the OMS stores them (order_payments.status_id): the first two count toward the total.
PAYMENT_SETTLED, PAYMENT_AUTHORIZED = "PAYMENT_SETTLED", "PAYMENT_AUTHORIZED"
PAYMENT_DECLINED, PAYMENT_VOIDED = "PAYMENT_DECLINED", "PAYMENT_VOIDED"
COUNTED_TENDERS = frozenset({PAYMENT_SETTLED, PAYMENT_AUTHORIZED})
KEPT_NOT_COUNTED = frozenset({PAYMENT_DECLINED, PAYMENT_VOIDED})

_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[ T]\d{2}:\d{2}:\d{2}")
_TXN = re.compile(r"^[A-Za-z0-9_.:-]{1,60}$")


@dataclass(frozen=True)
class LedgerFacts:
    """The audit's columns of one ledger row (tlog_files), set with its final status."""

    business_day: date | None = None
    store_id: str | None = None
    register_id: str | None = None
    register_txn: str | None = None
    totals: dict[str, Any] | None = None  # jsonb sale_totals; amounts as strings


def tender_status(payment_status: str | None, capture_status: str | None) -> str:
    """A POS tender's status as the OMS names it: declined and voided are kept but not counted; an approved
    tender is settled once captured, authorized before."""
    paid = (payment_status or "").upper()
    if paid in ("DECLINED", "FAILED"):
        return PAYMENT_DECLINED
    if paid in ("VOIDED", "CANCELLED", "VOID"):
        return PAYMENT_VOIDED
    captured = (capture_status or "").upper()
    if captured in ("", "CAPTURED", "SETTLED") or paid in ("CAPTURED", "SETTLED"):
        return PAYMENT_SETTLED
    return PAYMENT_AUTHORIZED


def _text(value: Any, pattern: re.Pattern[str] = _TXN) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        return None
    text = str(value).strip()
    return text if pattern.fullmatch(text) else None


def business_day_of(creation_date: Any) -> date | None:
    """The store-local day of a creationDate ('YYYY-MM-DD HH:MM:SS'), or None when it does not look like one."""
    if not isinstance(creation_date, str):
        return None
    match = _DATE.match(creation_date)
    if not match:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def register_of(document: dict[str, Any]) -> tuple[str | None, str | None]:
    """(register, transaction number) of a TLog: orderAttribution.storeRegisterId and .registerTransactionId;
    else the storeAttribution of its first activity-log entry (storeRegisterId, transactionId)."""
    attribution = document.get("orderAttribution")
    if isinstance(attribution, dict):
        txn = _text(attribution.get("registerTransactionId"))
        if txn is not None:
            return _text(attribution.get("storeRegisterId")) or "-", txn
    log = document.get("orderActivityLog")
    if isinstance(log, list):
        for entry in log:
            data = entry.get("transactionData") if isinstance(entry, dict) else None
            store = data.get("storeAttribution") if isinstance(data, dict) else None
            if isinstance(store, dict):
                txn = _text(store.get("transactionId"))
                if txn is not None:
                    return _text(store.get("storeRegisterId")) or "-", txn
    return None, None


def partial_facts(document: Any) -> LedgerFacts:
    """What can be read of a document that is not a valid sale: its day, store and register, if they look right."""
    if not isinstance(document, dict):
        return LedgerFacts()
    register, txn = register_of(document)
    return LedgerFacts(business_day_of(document.get("creationDate")), _text(document.get("storeId")), register, txn)


def _printable(value: Any, limit: int) -> str:
    # a name for a report: no control characters, NULs or lone surrogates (jsonb refuses the last two)
    return "".join(ch for ch in str(value)[:limit] if ch.isprintable()) or "?"


_SALVAGE = {
    key: re.compile(rf'"{key}"\s*:\s*"?(\d{{4}}-\d{{2}}-\d{{2}} \d{{2}}:\d{{2}}:\d{{2}}|[A-Za-z0-9_.:-]{{1,60}})"?')
    for key in ("creationDate", "storeId", "storeRegisterId", "registerTransactionId")
}


def salvage_facts(data: bytes) -> LedgerFacts:
    """What can be read of bytes that are not JSON at all (a truncated upload): the first creationDate, storeId,
    storeRegisterId and registerTransactionId found in the text, so that the transaction it held is known to have
    arrived (and failed) rather than to be missing."""
    text = data[:2_000_000].decode("utf-8", "replace")
    found = {key: (m[1] if (m := pattern.search(text)) else None) for key, pattern in _SALVAGE.items()}
    txn = found["registerTransactionId"]
    return LedgerFacts(
        business_day_of(found["creationDate"]),
        found["storeId"],
        (found["storeRegisterId"] or "-") if txn else None,
        txn,
    )


def _money(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        return None
    try:
        amount = Decimal(value)
    except (InvalidOperation, ValueError):
        return None
    return amount if amount.is_finite() and abs(amount) < Decimal("1000000000") else None


def tax_jurisdictions(document: dict[str, Any]) -> list[dict[str, str]]:
    """The sale's tax by jurisdiction: the header taxRates[] (taxName, taxType, taxRate, taxAmount); when the
    header has none, the lines' productTax.taxRates[] summed per jurisdiction. Empty when the TLog has neither."""
    found: dict[tuple[str, str, str], Decimal] = {}

    def add(rates: Any) -> None:
        if not isinstance(rates, list):
            return
        for rate in rates:
            if not isinstance(rate, dict) or (rate.get("chargeType") or "TAX") != "TAX":
                continue
            amount = _money(rate.get("taxAmount"))
            if amount is None:
                continue
            name = _printable(rate.get("taxName") or rate.get("taxCode") or rate.get("taxType") or "TAX", 100)
            kind = _printable(rate.get("taxType") or "", 40)
            pct = _money(rate.get("taxRate"))
            key = (name, kind, str(pct) if pct is not None else "")
            found[key] = found.get(key, Decimal(0)) + amount

    add(document.get("taxRates"))
    if not found:
        for line in document.get("orderProductList") or document.get("returnProductList") or []:
            if isinstance(line, dict) and isinstance(line.get("productTax"), dict):
                add(line["productTax"].get("taxRates"))
    return [
        {"name": name, "type": kind, "rate": pct, "amount": str(amount)}
        for (name, kind, pct), amount in sorted(found.items())
    ]


def _hour(creation_date: str) -> int | None:
    try:
        return int(creation_date[11:13])
    except ValueError:
        return None


def sale_facts(document: dict[str, Any], sale: Sale) -> LedgerFacts:
    """The audit's facts of a valid sale: what the TLog says was sold, tenders with their status."""
    register, txn = register_of(document)
    totals = {
        "kind": "sale",
        "order_id": sale.order_id,
        "type": sale.order_type,
        "hour": _hour(sale.creation_date),
        "units": sum(line.quantity for line in sale.lines),
        "merchandise": str(sum((line.price * line.quantity for line in sale.lines), Decimal(0))),
        "discounts": str(sale.discount),
        "tax": str(sale.tax_sub_total + sale.shipping_tax),
        "sales_tax": str(sale.tax_sub_total),
        "shipping_tax": str(sale.shipping_tax),
        "shipping": str(sale.shipping_sub_total),
        "total": str(sale.total_amount),
        "tenders": [
            {
                "method": t.payment_method,
                "amount": str(t.amount),
                "status": tender_status(t.payment_status, t.capture_status),
            }
            for t in sale.tenders
        ],
        "jurisdictions": tax_jurisdictions(document),
    }
    return LedgerFacts(business_day_of(sale.creation_date), sale.store_id, register, txn, totals)


def return_facts(document: dict[str, Any], ret: Return) -> LedgerFacts:
    """The audit's facts of a valid return: amounts negative (money going back), as the audit reports them."""
    register, txn = register_of(document)
    merchandise = sum((line.unit_price * line.quantity for line in ret.lines), Decimal(0))
    totals = {
        "kind": "return",
        "order_id": ret.external_id,
        "type": "RETURN",
        "hour": _hour(ret.return_date),
        "units": sum(line.quantity for line in ret.lines),
        "merchandise": str(-merchandise),
        "discounts": str(-ret.discount),
        "tax": str(-ret.tax),
        "sales_tax": str(-ret.tax),
        "shipping_tax": "0",
        "shipping": "0",
        "total": str(-ret.refund_total),
        "tenders": [
            {"method": r.pos_payment_method, "amount": str(-r.amount), "status": PAYMENT_SETTLED} for r in ret.refunds
        ],
        "jurisdictions": [dict(j, amount=str(-Decimal(j["amount"]))) for j in tax_jurisdictions(document)],
    }
    return LedgerFacts(business_day_of(ret.return_date), ret.store_id, register, txn, totals)
