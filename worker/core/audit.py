"""The daily sales audit: per store and order type, what the OMS holds for a business day, and a
reconciliation against the retailer's ERP export.

Money is summed exactly (Decimal / numeric) and rounded once, half up to the cent, when reported.
The business day is the store-local date of `creationDate` (a sale at 23:30 local belongs to that day,
whatever UTC says). Returns are their own type, RETURN, with negative amounts (money going back).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from worker.core.dayaudit import DayData, SaleOfDay, day_sections
from worker.core.money import cents
from worker.core.salefacts import COUNTED_TENDERS

ERP_COLUMNS = ("order_id", "store", "type", "total")
TYPES = ("IN_STORE", "SEND_SALE", "MIXED", "RETURN")


@dataclass(frozen=True)
class AuditOrder:
    """One stored order (or return) of the day, with what its parts add up to."""

    external_id: str
    store_id: str
    order_type: str  # IN_STORE, SEND_SALE, MIXED or RETURN
    units: int
    merchandise: Decimal  # unit price x quantity
    discounts: Decimal  # positive: what was taken off
    tax: Decimal
    shipping: Decimal
    grand_total: Decimal
    parts_total: Decimal  # merchandise - discounts + tax + shipping as stored line by line
    tenders: dict[str, Decimal] = field(default_factory=dict)


@dataclass
class AuditRow:
    store_id: str
    order_type: str
    orders: int = 0
    units: int = 0
    merchandise: Decimal = Decimal(0)
    discounts: Decimal = Decimal(0)
    tax: Decimal = Decimal(0)
    shipping: Decimal = Decimal(0)
    grand_total: Decimal = Decimal(0)
    tenders: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))


def summarize(orders: Sequence[AuditOrder]) -> list[AuditRow]:
    """Totals per store and order type, sorted by store then type."""
    rows: dict[tuple[str, str], AuditRow] = {}
    for o in orders:
        row = rows.setdefault((o.store_id, o.order_type), AuditRow(o.store_id, o.order_type))
        row.orders += 1
        row.units += o.units
        row.merchandise += o.merchandise
        row.discounts += o.discounts
        row.tax += o.tax
        row.shipping += o.shipping
        row.grand_total += o.grand_total
        for method, amount in o.tenders.items():
            row.tenders[method] += amount
    return [rows[k] for k in sorted(rows, key=lambda k: (k[0], TYPES.index(k[1]) if k[1] in TYPES else 9))]


def inconsistencies(orders: Sequence[AuditOrder]) -> list[str]:
    """Orders whose lines, taxes and adjustments do not add up to their grand total."""
    return [
        f"{o.order_type.lower()} {o.external_id} (store {o.store_id}): parts add up to {cents(o.parts_total)},"
        f" grand total {cents(o.grand_total)}, difference {cents(o.grand_total - o.parts_total)}"
        for o in orders
        if cents(o.parts_total) != cents(o.grand_total)
    ]


@dataclass(frozen=True)
class ErpRow:
    line: int
    order_id: str
    store: str
    order_type: str
    total: Decimal


class ErpFileError(ValueError):
    """The ERP export cannot be read; the message names the line and the column."""


def parse_erp_csv(text: str) -> list[ErpRow]:
    """The ERP export: header `order_id,store,type,total`; type as in the audit (RETURN totals negative)."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ErpFileError("empty file") from None
    missing = [c for c in ERP_COLUMNS if c not in header]
    if missing:
        raise ErpFileError(f"line 1: missing columns: {', '.join(missing)}")
    index = {name: header.index(name) for name in ERP_COLUMNS}
    rows, errors = [], []
    for line, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        try:
            values = {name: cells[i].strip() for name, i in index.items()}
        except IndexError:
            errors.append(f"line {line}: has {len(cells)} values, the header has {len(header)}")
            continue
        try:
            total = Decimal(values["total"])
            if not total.is_finite():
                raise ArithmeticError
        except (ArithmeticError, ValueError):
            errors.append(f"line {line}: total: {values['total']!r} is not a number")
            continue
        if not values["order_id"]:
            errors.append(f"line {line}: order_id: empty")
            continue
        rows.append(ErpRow(line, values["order_id"], values["store"], values["type"].upper(), total))
    if errors:
        raise ErpFileError("; ".join(errors))
    return rows


@dataclass
class Reconciliation:
    missing_in_oms: list[ErpRow] = field(default_factory=list)
    missing_in_erp: list[AuditOrder] = field(default_factory=list)
    total_differs: list[tuple[str, Decimal, Decimal]] = field(default_factory=list)  # id, ours, theirs
    other_differs: list[str] = field(default_factory=list)  # store or type disagree

    @property
    def matches(self) -> bool:
        return not (self.missing_in_oms or self.missing_in_erp or self.total_differs or self.other_differs)


def _signed_total(o: AuditOrder) -> Decimal:
    return o.grand_total


def reconcile(orders: Sequence[AuditOrder], erp: Sequence[ErpRow]) -> Reconciliation:
    """Order by order: missing on either side, totals that differ (with the difference), store or type."""
    result = Reconciliation()
    ours = {(o.order_type == "RETURN", o.external_id): o for o in orders}
    seen = set()
    for row in erp:
        key = (row.order_type == "RETURN", row.order_id)
        mine = ours.get(key)
        if mine is None:
            result.missing_in_oms.append(row)
            continue
        seen.add(key)
        if cents(_signed_total(mine)) != cents(row.total):
            result.total_differs.append((row.order_id, cents(_signed_total(mine)), cents(row.total)))
        if mine.store_id != row.store:
            result.other_differs.append(f"{row.order_id}: store {mine.store_id} here, {row.store} in the ERP")
        if mine.order_type != row.order_type:
            result.other_differs.append(f"{row.order_id}: type {mine.order_type} here, {row.order_type} in the ERP")
    result.missing_in_erp = [o for key, o in ours.items() if key not in seen]
    return result


def report_document(
    retailer_id: str,
    business_date: str,
    rows: Sequence[AuditRow],
    problems: Sequence[str],
    unfinished_files: Sequence[str],
) -> dict[str, Any]:
    """The report as stored (jsonb) and written (.json): amounts as strings of cents, never floats."""
    return {
        "retailer": retailer_id,
        "business_date": business_date,
        "rows": [
            {
                "store": r.store_id,
                "type": r.order_type,
                "orders": r.orders,
                "units": r.units,
                "merchandise": str(cents(r.merchandise)),
                "discounts": str(cents(r.discounts)),
                "tax": str(cents(r.tax)),
                "shipping": str(cents(r.shipping)),
                "grand_total": str(cents(r.grand_total)),
                "tenders": {m: str(cents(a)) for m, a in sorted(r.tenders.items())},
            }
            for r in rows
        ],
        "totals": {t: str(cents(sum((r.grand_total for r in rows if r.order_type == t), Decimal(0)))) for t in TYPES},
        "inconsistent_orders": list(problems),
        "unfinished_files": list(unfinished_files),
        "consistent": not problems and not unfinished_files,
    }


CSV_COLUMNS = (
    "store",
    "type",
    "orders",
    "units",
    "merchandise",
    "discounts",
    "tax",
    "shipping",
    "grand_total",
    "tenders",
)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def csv_cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula gets a leading apostrophe; amounts like -5.00 stay."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def report_csv(document: dict[str, Any]) -> str:
    """One line per store and type; tenders as `METHOD=amount` pairs separated by ';'."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in document["rows"]:
        tenders = ";".join(f"{m}={a}" for m, a in r["tenders"].items())
        cells = [
            r["store"],
            r["type"],
            r["orders"],
            r["units"],
            r["merchandise"],
            r["discounts"],
            r["tax"],
            r["shipping"],
            r["grand_total"],
            tenders,
        ]
        writer.writerow([csv_cell(c) for c in cells])
    return out.getvalue()


def dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1, sort_keys=True)


class AuditStore(Protocol):
    def day_data(self, retailer_id: str, business_date: date, time_zone: str) -> DayData:
        """The day's sales, its candidate ledger rows, the neighbouring register transactions, the notes."""
        ...

    def save(self, retailer_id: str, business_date: date, document: dict[str, Any]) -> None: ...


def as_audit_order(sale: SaleOfDay) -> AuditOrder:
    """A sale of the day as the per store/type summary sums it: its counted tenders by method."""
    tenders: dict[str, Decimal] = defaultdict(Decimal)
    for t in sale.tenders:
        if t.status in COUNTED_TENDERS:
            tenders[t.method] += t.amount
    return AuditOrder(
        sale.external_id,
        sale.store_id,
        sale.order_type,
        sale.units,
        sale.merchandise,
        sale.discounts,
        sale.tax,
        sale.shipping,
        sale.total,
        sale.parts,
        dict(tenders),
    )


def full_report(retailer_id: str, business_date: date, time_zone: str, data: DayData) -> dict[str, Any]:
    """The whole report of a business day: the per store/type rows and totals (as before), then every file,
    every difference (explained or not), rounding, missing register transactions, tax by jurisdiction,
    registers, the day by hour. `consistent` only when no difference is left unexplained."""
    live = [as_audit_order(s) for s in data.sales if not s.cancelled]
    rows = summarize(live)
    sections, unexplained, count = day_sections(business_date, time_zone, data)
    unfinished = [f"{item['file']} (claimed)" for item in sections["files"]["in_flight"]]
    document = report_document(retailer_id, business_date.isoformat(), rows, inconsistencies(live), unfinished)
    exact = {(r.store_id, r.order_type): r for r in rows}
    for row in document["rows"]:
        r = exact[(row["store"], row["type"])]
        counted = sum(r.tenders.values(), Decimal(0))
        rounded = sum(
            (cents(o.grand_total) for o in live if (o.store_id, o.order_type) == (r.store_id, r.order_type)), Decimal(0)
        )
        row["tenders_total"] = str(cents(counted))
        row["ties_out"] = cents(counted) == cents(r.grand_total) and cents(
            r.merchandise - r.discounts + r.tax + r.shipping
        ) == cents(r.grand_total)
        row["rounding"] = str(cents(r.grand_total) - rounded) if rounded != cents(r.grand_total) else "0.00"
        if rounded != cents(r.grand_total):
            sections["rounding"].append(
                {
                    "subject": f"row:{r.store_id}/{r.order_type}",
                    "text": f"store {r.store_id} {r.order_type}: the orders' rounded totals add up to {rounded},"
                    f" their exact sum rounds to {cents(r.grand_total)}: rounding {row['rounding']}",
                }
            )
    document.update(sections)
    document["time_zone"] = time_zone
    document["differences_count"] = count
    document["consistent"] = count == 0
    return document


def audit_day(
    retailer_id: str, business_date: date, time_zone: str, store: AuditStore
) -> tuple[dict[str, Any], list[SaleOfDay]]:
    """Compute, check and store the report of one business day; the report and the day's sales."""
    data = store.day_data(retailer_id, business_date, time_zone)
    document = full_report(retailer_id, business_date, time_zone, data)
    store.save(retailer_id, business_date, document)
    return document, data.sales


def due_business_date(now_local: datetime, audit_time: str) -> date | None:
    """The day to audit now: yesterday, once the local clock has passed audit_time; None before that."""
    hour, minute = (int(p) for p in audit_time.split(":"))
    if (now_local.hour, now_local.minute) < (hour, minute):
        return None
    return (now_local - timedelta(days=1)).date()


def day_to_audit(
    now_local: datetime,
    requested: date | None,
    due_only: bool,
    audit_time: str | None,
    already_done: Callable[[date], bool],
) -> date | None:
    """Which business day an audit run covers: the one asked for; else yesterday (with due_only: once the
    local audit_time has passed and only if that day has no report yet, None otherwise)."""
    if requested is not None:
        return requested
    if not due_only:
        return (now_local - timedelta(days=1)).date()
    due = due_business_date(now_local, audit_time or "00:00")
    if due is None or already_done(due):
        return None
    return due
