"""The day's audit: every file of the business day accounted for, every cent of every sale checked, and the
register transaction sequence checked for sales that never arrived.

Pure: the adapter reads the ledger rows, the orders (or, for a sale that is not stored, the totals the ledger
kept), the neighbouring register transactions and the operators' notes; this module turns them into the report.
Every amount is summed exactly and rounded once, by `worker.core.money.cents` (half up, to the cent).

A difference is anything an operator must look at: a failed file, one still in flight, a status the audit does
not know, a conflict, an order whose parts or counted tenders do not make its total, tax by jurisdiction that
does not make the tax, a gap in a register's sequence. A difference with a note (audit_notes) is explained: it is
still listed, with the note, and no longer makes the day inconsistent. Rounding below one cent is named, never a
difference.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from worker.core.money import cents
from worker.core.salefacts import COUNTED_TENDERS, KEPT_NOT_COUNTED

CENT = Decimal("0.01")
ORDER_CANCELLED = "ORDER_CANCELLED"
PROCESSED, FAILED, SKIPPED, DUPLICATE, CLAIMED, CONFLICT = (
    "processed",
    "failed",
    "skipped",
    "duplicate",
    "claimed",
    "conflict",
)
FILE_COLUMNS = ("processed", "failed", "skipped", "duplicate", "conflict", "in_flight", "replayed", "unknown")
_NAME_DAY = re.compile(r"(20\d{2})-?([01]\d)-?([0-3]\d)")
_NUMBER = re.compile(r"^\d{1,18}$")


@dataclass(frozen=True)
class TenderLine:
    method: str
    amount: Decimal
    status: str  # order_payments.status_id (PAYMENT_SETTLED, ...); returns' refunds count as settled


@dataclass(frozen=True)
class Jurisdiction:
    name: str
    kind: str
    rate: str
    amount: Decimal


@dataclass(frozen=True)
class SaleOfDay:
    """One sale or return of the day as the audit checks it: from the stored order, or from the ledger's
    totals when the order is not stored (an in-store sale of a retailer that is not the order master)."""

    external_id: str
    store_id: str
    order_type: str  # IN_STORE, SEND_SALE, MIXED, RETURN
    status_id: str  # ORDER_COMPLETED, ORDER_APPROVED, ORDER_CANCELLED, ... ('' for a return)
    source: str  # "oms" (stored) or "ledger" (not stored: the TLog's totals)
    units: int
    merchandise: Decimal
    discounts: Decimal  # positive: what was taken off (negative for a return)
    tax: Decimal
    shipping: Decimal
    total: Decimal
    parts: Decimal  # what the stored lines and adjustments add up to (the header's sum for a ledger sale)
    tenders: tuple[TenderLine, ...] = ()
    jurisdictions: tuple[Jurisdiction, ...] | None = None  # None: the ledger has no tax rates for it
    sales_tax: Decimal | None = None  # the tax the jurisdictions should add up to (taxSubTotal)
    register_id: str | None = None
    register_txn: str | None = None
    hour: int | None = None
    file_id: int | None = None

    @property
    def cancelled(self) -> bool:
        return self.status_id == ORDER_CANCELLED

    @property
    def counted(self) -> Decimal:
        return sum((t.amount for t in self.tenders if t.status in COUNTED_TENDERS), Decimal(0))


@dataclass(frozen=True)
class FileOfDay:
    """One ledger row (orders feed) that may belong to the day."""

    id: int
    file_name: str
    status: str
    error: str | None
    replayed_by: int | None
    moved: bool
    business_day: date | None
    store_id: str | None
    register_id: str | None
    register_txn: str | None
    claimed_at: datetime
    mtime: datetime | None
    order_id: str | None = None  # the sale's id, when the ledger kept its totals


@dataclass(frozen=True)
class TxnRef:
    """A neighbouring register transaction on another day."""

    store_id: str
    register_id: str
    txn: int
    business_day: date
    file_name: str
    order_id: str | None


@dataclass
class DayData:
    sales: list[SaleOfDay] = field(default_factory=list)
    files: list[FileOfDay] = field(default_factory=list)
    before: dict[tuple[str, str], TxnRef] = field(default_factory=dict)  # the last transaction of an earlier day
    after: dict[tuple[str, str], TxnRef] = field(default_factory=dict)  # the first transaction of a later day
    notes: dict[str, str] = field(default_factory=dict)  # subject -> the operator's explanation


def file_day(row: FileOfDay, time_zone: str) -> tuple[date, str]:
    """The business day of a ledger row and where it came from: the sale inside it; else a date in the file's
    name (2024-01-12, 20240112); else the file's modification time, else its claim time, in the audit time zone."""
    if row.business_day is not None:
        return row.business_day, "sale"
    match = _NAME_DAY.search(row.file_name)
    if match:
        try:
            return date(int(match[1]), int(match[2]), int(match[3])), "file name"
        except ValueError:
            pass
    zone = ZoneInfo(time_zone)
    if row.mtime is not None:
        return row.mtime.astimezone(zone).date(), "file time"
    return row.claimed_at.astimezone(zone).date(), "claim time"


def _s(amount: Decimal) -> str:
    return str(cents(amount))


def _exact(amount: Decimal) -> str:
    return format(amount.normalize(), "f") if amount else "0"


class _Differences:
    def __init__(self, notes: dict[str, str]):
        self.notes = notes
        self.items: list[dict[str, Any]] = []
        self.rounding: list[dict[str, Any]] = []

    def add(self, subject: str, kind: str, text: str, **extra: Any) -> None:
        note = self.notes.get(subject)
        self.items.append({"subject": subject, "kind": kind, "text": text, "explained": note, **extra})

    def amount(self, subject: str, kind: str, what: str, expected: Decimal, found: Decimal, **extra: Any) -> None:
        """Compare two exact amounts: equal is fine; under a cent apart is named rounding; else a difference."""
        diff = found - expected
        if diff == 0:
            return
        if abs(diff) < CENT:
            self.rounding.append({"subject": subject, "text": f"{what}: rounding {_exact(diff)}", **extra})
            return
        self.add(subject, kind, f"{what}: difference {_s(diff)}", difference=_s(diff), **extra)

    @property
    def unexplained(self) -> list[dict[str, Any]]:
        return [d for d in self.items if not d["explained"]]


def check_sale(sale: SaleOfDay, diffs: _Differences) -> None:
    """Per order: merchandise - discounts + tax + shipping = total = the counted tenders; tax by jurisdiction
    = the tax; every tender status known."""
    what = f"{sale.order_type.lower()} {sale.external_id} (store {sale.store_id})"
    key = f"order:{sale.external_id}"
    for tender in sale.tenders:
        if tender.status not in COUNTED_TENDERS and tender.status not in KEPT_NOT_COUNTED:
            diffs.add(
                f"{key}:tender-status",
                "tender status",
                f"{what}: tender {tender.method} {_s(tender.amount)} has status {tender.status!r}, which the audit"
                " does not know (counted: PAYMENT_SETTLED, PAYMENT_AUTHORIZED; kept: PAYMENT_DECLINED, PAYMENT_VOIDED)",
                order=sale.external_id,
            )
    if sale.cancelled:
        if sale.counted:
            diffs.add(
                f"{key}:cancelled",
                "cancelled with tenders",
                f"{what}: cancelled, yet {_s(sale.counted)} of its tenders still count (settled or authorized)",
                order=sale.external_id,
            )
        return
    header = sale.merchandise - sale.discounts + sale.tax + sale.shipping
    diffs.amount(
        f"{key}:parts",
        "parts",
        f"{what}: merchandise {_s(sale.merchandise)} - discounts {_s(sale.discounts)} + tax {_s(sale.tax)}"
        f" + shipping {_s(sale.shipping)} = {_s(sale.parts)}, total {_s(sale.total)}",
        sale.parts,
        sale.total,
        order=sale.external_id,
    )
    if header != sale.parts:
        diffs.amount(
            f"{key}:components",
            "parts",
            f"{what}: its components add up to {_s(header)}, its lines to {_s(sale.parts)}",
            sale.parts,
            header,
            order=sale.external_id,
        )
    diffs.amount(
        f"{key}:tenders",
        "tenders",
        f"{what}: counted tenders {_s(sale.counted)}, total {_s(sale.total)}",
        sale.total,
        sale.counted,
        order=sale.external_id,
    )
    if sale.jurisdictions:
        by_rate = sum((j.amount for j in sale.jurisdictions), Decimal(0))
        whole_tax = sale.tax
        expected = sale.sales_tax if sale.sales_tax is not None else whole_tax
        if by_rate != whole_tax:  # the rates may cover the shipping tax too, or only the sales tax
            diffs.amount(
                f"{key}:tax",
                "tax",
                f"{what}: tax by jurisdiction adds up to {_s(by_rate)}, tax {_s(expected)}",
                expected,
                by_rate,
                order=sale.external_id,
            )


def _files_section(files: Sequence[FileOfDay], time_zone: str, diffs: _Differences) -> dict[str, Any]:
    by_store: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(FILE_COLUMNS, 0))
    listed: dict[str, list[dict[str, Any]]] = {k: [] for k in FILE_COLUMNS}
    not_moved = []
    first_skip: dict[str, int] = {}  # a skipped sale's order id -> its first file (nothing stored deduplicates it)
    for row in sorted(files, key=lambda f: f.id):
        day, placed_by = file_day(row, time_zone)
        store = row.store_id or "?"
        item = {
            "ledger_id": row.id,
            "file": row.file_name,
            "store": store,
            "reason": row.error,
            "day_from": placed_by,
        }
        if row.replayed_by is not None:
            column = "replayed"
            item["reason"] = f"replaced by ledger row {row.replayed_by} (replayed)"
        elif row.status == PROCESSED:
            column = "processed"
        elif row.status == FAILED:
            column = "failed"
            diffs.add(
                f"file:{row.id}",
                "failed file",
                f"{row.file_name} (store {store}) failed: {row.error}",
                file=row.file_name,
            )
        elif (
            row.status == SKIPPED and row.order_id is not None and first_skip.setdefault(row.order_id, row.id) != row.id
        ):
            column = "duplicate"
            item["reason"] = (
                f"order {row.order_id} again (skipped, not stored): counted once, from ledger row"
                f" {first_skip[row.order_id]}"
            )
        elif row.status == SKIPPED:
            column = "skipped"
            if not row.error:
                diffs.add(
                    f"file:{row.id}", "unexplained skip", f"{row.file_name} (store {store}) skipped without a reason"
                )
        elif row.status == DUPLICATE:
            column = "duplicate"
        elif row.status == CONFLICT:
            column = "conflict"
            diffs.add(
                f"file:{row.id}",
                "conflict",
                f"{row.file_name} (store {store}) conflicts: {row.error}",
                file=row.file_name,
            )
        elif row.status == CLAIMED:
            column = "in_flight"
            diffs.add(
                f"file:{row.id}", "in flight", f"{row.file_name} (store {store}) is not final yet", file=row.file_name
            )
        else:
            column = "unknown"
            diffs.add(
                f"file:{row.id}",
                "unknown status",
                f"{row.file_name} (store {store}) has status {row.status!r}, which the audit does not know",
                file=row.file_name,
            )
        by_store[store][column] += 1
        if column != "processed":
            listed[column].append(item)
        if row.status != CLAIMED and not row.moved and row.replayed_by is None:
            not_moved.append(item)
    return {
        "by_store": [{"store": s, **by_store[s]} for s in sorted(by_store)],
        "totals": {k: sum(v[k] for v in by_store.values()) for k in FILE_COLUMNS},
        **{k: v for k, v in listed.items() if k != "processed"},
        "not_moved": not_moved,
    }


def _txn_ref(ref: TxnRef | None) -> dict[str, Any] | None:
    if ref is None:
        return None
    return {"txn": ref.txn, "day": ref.business_day.isoformat(), "file": ref.file_name, "order": ref.order_id}


def _gaps(
    files: Sequence[FileOfDay], data: DayData, business_date: date, diffs: _Differences
) -> tuple[list[dict[str, Any]], list[str]]:
    """Per store register, the transaction numbers seen on the day (files of every status: a failed file still
    arrived), checked for gaps within the day and across its boundaries with the neighbouring days."""
    seen: dict[tuple[str, str], dict[int, FileOfDay]] = defaultdict(dict)
    notes: list[str] = []
    not_numbers: set[tuple[str, str]] = set()
    for row in files:
        if row.register_txn is None or row.store_id is None:
            continue
        key = (row.store_id, row.register_id or "-")
        if not _NUMBER.match(row.register_txn):
            not_numbers.add(key)
            continue
        seen[key].setdefault(int(row.register_txn), row)
    for store, register in sorted(not_numbers):
        notes.append(f"store {store} register {register}: transaction ids that are not numbers are not gap-checked")
    gaps: list[dict[str, Any]] = []

    def ref(row: FileOfDay, txn: int) -> dict[str, Any]:
        return {"txn": txn, "day": business_date.isoformat(), "file": row.file_name, "order": row.order_id}

    def gap(store: str, register: str, first: int, last: int, where: str, after: Any, before: Any) -> None:
        count = last - first + 1
        missing = str(first) if count == 1 else f"{first}-{last}"
        subject = f"gap:{store}/{register}:{missing}"
        after_txt = f"{after['txn']} ({after['file']}, {after['day']})" if after else "?"
        before_txt = f"{before['txn']} ({before['file']}, {before['day']})" if before else "?"
        text = (
            f"store {store} register {register}: transaction {missing} never arrived ({count} missing {where},"
            f" between {after_txt} and {before_txt})"
        )
        entry = {"store": store, "register": register, "missing": missing, "count": count, "where": where}
        gaps.append({**entry, "after": after, "before": before, "explained": data.notes.get(subject)})
        diffs.add(subject, "missing sales", text, store=store, register=register)

    for (store, register), txns in sorted(seen.items()):
        numbers = sorted(txns)
        previous = data.before.get((store, register))
        if previous is not None:
            if previous.txn < numbers[0] - 1:
                gap(
                    store,
                    register,
                    previous.txn + 1,
                    numbers[0] - 1,
                    "across the start of the day",
                    _txn_ref(previous),
                    ref(txns[numbers[0]], numbers[0]),
                )
            elif previous.txn >= numbers[0]:
                notes.append(
                    f"store {store} register {register}: the sequence starts again at {numbers[0]}"
                    f" (the last on {previous.business_day} was {previous.txn})"
                )
        for a, b in zip(numbers, numbers[1:], strict=False):
            if b > a + 1:
                gap(store, register, a + 1, b - 1, "within the day", ref(txns[a], a), ref(txns[b], b))
        following = data.after.get((store, register))
        if following is not None and following.txn > numbers[-1] + 1:
            gap(
                store,
                register,
                numbers[-1] + 1,
                following.txn - 1,
                "across the end of the day",
                ref(txns[numbers[-1]], numbers[-1]),
                _txn_ref(following),
            )
    return gaps, notes


def _by_register(sales: Iterable[SaleOfDay], files: Sequence[FileOfDay]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for s in sales:
        if s.cancelled:
            continue
        key = (s.store_id, s.register_id or "-")
        row = rows.setdefault(key, {"store": key[0], "register": key[1], "orders": 0, "total": Decimal(0)})
        row["orders"] += 1
        row["total"] += s.total
    txns: dict[tuple[str, str], list[int]] = defaultdict(list)
    for f in files:
        if f.store_id and f.register_txn and _NUMBER.match(f.register_txn):
            txns[(f.store_id, f.register_id or "-")].append(int(f.register_txn))
    for key, numbers in txns.items():
        row = rows.setdefault(key, {"store": key[0], "register": key[1], "orders": 0, "total": Decimal(0)})
        row["first_txn"], row["last_txn"] = min(numbers), max(numbers)
    return [
        {**r, "total": _s(r["total"]), "first_txn": r.get("first_txn"), "last_txn": r.get("last_txn")}
        for _, r in sorted(rows.items())
    ]


def _tax(sales: Iterable[SaleOfDay]) -> list[dict[str, Any]]:
    found: dict[tuple[str, str, str, str], Decimal] = defaultdict(Decimal)
    for s in sales:
        if s.cancelled:
            continue
        if s.jurisdictions:
            for j in s.jurisdictions:
                found[(s.store_id, j.name, j.kind, j.rate)] += j.amount
            covered = sum((j.amount for j in s.jurisdictions), Decimal(0))
            if covered != s.tax and s.sales_tax is not None and covered == s.sales_tax:
                found[(s.store_id, "shipping tax (no jurisdiction in the TLog)", "", "")] += s.tax - covered
        elif s.tax:
            found[(s.store_id, "unspecified (the TLog has no tax rates)", "", "")] += s.tax
    return [
        {"store": store, "jurisdiction": name, "type": kind, "rate": rate, "amount": _s(amount)}
        for (store, name, kind, rate), amount in sorted(found.items())
    ]


def _by_hour(sales: Iterable[SaleOfDay]) -> list[dict[str, Any]]:
    found: dict[tuple[int, str], list[Any]] = {}
    for s in sales:
        if s.cancelled or s.hour is None:
            continue
        slot = found.setdefault((s.hour, s.order_type), [0, Decimal(0)])
        slot[0] += 1
        slot[1] += s.total
    return [{"hour": h, "type": t, "orders": n, "total": _s(v)} for (h, t), (n, v) in sorted(found.items())]


def day_sections(
    business_date: date, time_zone: str, data: DayData
) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    """The report's sections besides the per store/type rows: files, differences, rounding, gaps, tax, registers,
    hours, cancelled sales; with the number of unexplained differences."""
    diffs = _Differences(data.notes)
    files = [f for f in data.files if file_day(f, time_zone)[0] == business_date]
    files_section = _files_section(files, time_zone, diffs)
    for sale in data.sales:
        check_sale(sale, diffs)
    gaps, gap_notes = _gaps(files, data, business_date, diffs)
    live = [s for s in data.sales if not s.cancelled]
    cancelled = [
        {"order": s.external_id, "store": s.store_id, "type": s.order_type, "total": _s(s.total)}
        for s in data.sales
        if s.cancelled
    ]
    sections = {
        "files": files_section,
        "differences": diffs.items,
        "rounding": diffs.rounding,
        "missing_transactions": gaps,
        "notes": gap_notes,
        "tax_by_jurisdiction": _tax(live),
        "registers": _by_register(data.sales, files),
        "by_hour": _by_hour(live),
        "cancelled": cancelled,
        "not_stored_sales": sum(1 for s in data.sales if s.source == "ledger"),
    }
    return sections, diffs.unexplained, len(diffs.unexplained)
