"""The ERP comparison: the retailer's export of a day against what the OMS holds, every difference at the
finest level both sides have.

The export is a CSV with a header; columns (any order, names as written here):

- `store`, `type` (IN_STORE, SEND_SALE, MIXED, RETURN) and `total`: required;
- `day` (YYYY-MM-DD, the store-local business day): optional, the audited day when absent;
- `order_id`: optional; a row with one is an order, a row without one is a store/day/type summary;
- `orders`: the number of orders of a summary row (required there);
- `merchandise`, `discounts`, `tax`, `shipping`: optional components, compared when present.

Returns have negative amounts, as in the audit. When the export has order rows, orders are compared one by one
(missing on either side, counted in another day, which amount differs); summary rows are compared per store,
day and type (order count and each amount). Amounts are compared rounded to the cent (half up).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from worker.core.audit import TYPES, ErpFileError
from worker.core.dayaudit import SaleOfDay
from worker.core.money import cents

COMPONENTS = ("merchandise", "discounts", "tax", "shipping", "total")


@dataclass(frozen=True)
class ErpLine:
    line: int
    store: str
    day: date
    order_type: str
    total: Decimal
    order_id: str | None = None
    orders: int | None = None
    amounts: dict[str, Decimal] = field(default_factory=dict)  # the components present, total included


def parse_erp_export(text: str, default_day: date) -> list[ErpLine]:
    """Read the export; every error names its line and column, all of them at once."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise ErpFileError("empty file") from None
    missing = [c for c in ("store", "type", "total") if c not in header]
    if missing:
        raise ErpFileError(f"line 1: missing columns: {', '.join(missing)}")
    index = {name: i for i, name in enumerate(header)}
    lines: list[ErpLine] = []
    errors: list[str] = []
    for number, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) < len(header):
            errors.append(f"line {number}: has {len(cells)} values, the header has {len(header)}")
            continue

        def cell(name: str, cells: list[str] = cells) -> str:
            return cells[index[name]].strip() if name in index else ""

        kind = cell("type").upper()
        if kind not in TYPES:
            errors.append(f"line {number}: type: {cell('type')!r} is not one of {', '.join(TYPES)}")
            continue
        day = default_day
        if cell("day"):
            try:
                day = date.fromisoformat(cell("day"))
            except ValueError:
                errors.append(f"line {number}: day: {cell('day')!r} is not YYYY-MM-DD")
                continue
        amounts: dict[str, Decimal] = {}
        bad = False
        for name in COMPONENTS:
            if not cell(name):
                continue
            try:
                amount = Decimal(cell(name))
                if not amount.is_finite():
                    raise ArithmeticError
            except (ArithmeticError, ValueError):
                errors.append(f"line {number}: {name}: {cell(name)!r} is not a number")
                bad = True
                continue
            amounts[name] = amount
        if bad:
            continue
        if "total" not in amounts:
            errors.append(f"line {number}: total: empty")
            continue
        order_id = cell("order_id") or None
        orders = None
        if order_id is None:
            try:
                orders = int(cell("orders"))
            except ValueError:
                errors.append(
                    f"line {number}: orders: {cell('orders')!r} is not a whole number (a summary row needs it)"
                )
                continue
        if not cell("store"):
            errors.append(f"line {number}: store: empty")
            continue
        lines.append(ErpLine(number, cell("store"), day, kind, amounts["total"], order_id, orders, amounts))
    if errors:
        raise ErpFileError("; ".join(errors))
    return lines


@dataclass
class Comparison:
    level: str  # "order" or "store/day/type"
    differences: list[dict[str, Any]] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return not self.differences


def _amounts(sale: SaleOfDay) -> dict[str, Decimal]:
    return {
        "merchandise": sale.merchandise,
        "discounts": sale.discounts,
        "tax": sale.tax,
        "shipping": sale.shipping,
        "total": sale.total,
    }


def compare(
    business_date: date,
    sales: Sequence[SaleOfDay],
    erp: Sequence[ErpLine],
    elsewhere: Callable[[list[str]], dict[str, tuple[date, str, str]]],
) -> Comparison:
    """The day's sales (not cancelled) against the export; elsewhere(ids) says on which day, store and type the
    OMS counts sales it does not have on this day."""
    ours = [s for s in sales if not s.cancelled]
    order_rows = [e for e in erp if e.order_id is not None]
    summary_rows = [e for e in erp if e.order_id is None and e.day == business_date]
    result = Comparison("order" if order_rows else "store/day/type")
    add = result.differences.append

    def amount_diffs(subject: str, what: str, mine: dict[str, Decimal], theirs: dict[str, Decimal]) -> None:
        for name in COMPONENTS:
            if name not in theirs:
                continue
            a, b = cents(mine[name]), cents(theirs[name])
            if a != b:
                text = (
                    f"{what}: {a} here, {b} in the ERP, difference {a - b}"
                    if name == "total"
                    else f"{what}: {name} {a} here, {b} in the ERP, difference {a - b}"
                )
                add(
                    {
                        "kind": "amount differs",
                        "component": name,
                        "subject": subject,
                        "text": text,
                        "oms": str(a),
                        "erp": str(b),
                        "difference": str(a - b),
                    }
                )

    if order_rows:
        today: dict[tuple[bool, str], ErpLine] = {
            (e.order_type == "RETURN", str(e.order_id)): e for e in order_rows if e.day == business_date
        }
        other_days = {(e.order_type == "RETURN", str(e.order_id)): e for e in order_rows if e.day != business_date}
        mine = {(s.order_type == "RETURN", s.external_id): s for s in ours}
        cancelled = {(s.order_type == "RETURN", s.external_id) for s in sales if s.cancelled}
        unknown = [k[1] for k in today if k not in mine]
        found = elsewhere([x for x in unknown if x is not None])
        for key, theirs_row in today.items():
            sale = mine.get(key)
            oid = str(theirs_row.order_id)
            if sale is None and key in cancelled:
                add(
                    {
                        "kind": "cancelled here",
                        "subject": oid,
                        "order": oid,
                        "text": f"{oid}: cancelled (voided) here, counted in the ERP (line {theirs_row.line},"
                        f" {cents(theirs_row.total)})",
                    }
                )
                continue
            if sale is None:
                where = found.get(oid)
                if where is not None and where[0] != business_date:
                    add(
                        {
                            "kind": "counted in another day",
                            "subject": oid,
                            "order": oid,
                            "text": f"{oid}: in the ERP on {business_date}, here on {where[0]} (store {where[1]})",
                        }
                    )
                else:
                    add(
                        {
                            "kind": "missing in the OMS",
                            "subject": oid,
                            "order": oid,
                            "line": theirs_row.line,
                            "text": f"in the ERP, not here: {oid} (line {theirs_row.line}, {theirs_row.order_type},"
                            f" {cents(theirs_row.total)})",
                        }
                    )
                continue
            amount_diffs(oid, oid, _amounts(sale), theirs_row.amounts)
            if sale.store_id != theirs_row.store:
                add(
                    {
                        "kind": "store differs",
                        "subject": oid,
                        "order": oid,
                        "text": f"{oid}: store {sale.store_id} here, {theirs_row.store} in the ERP",
                    }
                )
            if sale.order_type != theirs_row.order_type:
                add(
                    {
                        "kind": "type differs",
                        "subject": oid,
                        "order": oid,
                        "text": f"{oid}: type {sale.order_type} here, {theirs_row.order_type} in the ERP",
                    }
                )
        for key, sale in mine.items():
            if key in today:
                continue
            other = other_days.get(key)
            if other is not None:
                add(
                    {
                        "kind": "counted in another day",
                        "subject": sale.external_id,
                        "order": sale.external_id,
                        "text": f"{sale.external_id}: here on {business_date}, in the ERP on {other.day}"
                        f" (line {other.line})",
                    }
                )
            else:
                add(
                    {
                        "kind": "missing in the ERP",
                        "subject": sale.external_id,
                        "order": sale.external_id,
                        "text": f"here, not in the ERP: {sale.external_id} ({sale.order_type}, {cents(sale.total)})",
                    }
                )
    groups: dict[tuple[str, str], list[SaleOfDay]] = defaultdict(list)
    for s in ours:
        groups[(s.store_id, s.order_type)].append(s)
    if summary_rows or not order_rows:
        summaries = {(e.store, e.order_type): e for e in summary_rows}
        for group in sorted(set(groups) | set(summaries)):
            subject = f"{group[0]}/{business_date}/{group[1]}"
            summary = summaries.get(group)
            sales_of = groups.get(group, [])
            if summary is None:
                add(
                    {
                        "kind": "missing in the ERP",
                        "subject": subject,
                        "text": f"here, not in the ERP: store {group[0]} {group[1]} ({len(sales_of)} orders,"
                        f" {cents(sum((s.total for s in sales_of), Decimal(0)))})",
                    }
                )
                continue
            if not sales_of:
                add(
                    {
                        "kind": "missing in the OMS",
                        "subject": subject,
                        "line": summary.line,
                        "text": f"in the ERP, not here: store {group[0]} {group[1]} (line {summary.line},"
                        f" {summary.orders} orders, {cents(summary.total)})",
                    }
                )
                continue
            if summary.orders is not None and summary.orders != len(sales_of):
                add(
                    {
                        "kind": "order count differs",
                        "subject": subject,
                        "text": f"{subject}: {len(sales_of)} orders here, {summary.orders} in the ERP",
                    }
                )
            sums = {name: sum((_amounts(s)[name] for s in sales_of), Decimal(0)) for name in COMPONENTS}
            amount_diffs(subject, subject, sums, summary.amounts)
    return result


def erp_csv_for(sales: Sequence[SaleOfDay], business_date: date, per_order: bool) -> str:
    """An export in the documented format built from sales (the demo's and the tests' ERP side)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    head = ["store", "day", "type", "orders", *COMPONENTS]
    writer.writerow(head + (["order_id"] if per_order else []))
    ours = [s for s in sales if not s.cancelled]
    if per_order:
        for s in ours:
            a = _amounts(s)
            writer.writerow(
                [s.store_id, business_date, s.order_type, 1, *[cents(a[n]) for n in COMPONENTS], s.external_id]
            )
    else:
        groups: dict[tuple[str, str], list[SaleOfDay]] = defaultdict(list)
        for s in ours:
            groups[(s.store_id, s.order_type)].append(s)
        for (store, kind), group in sorted(groups.items()):
            sums = [cents(sum((_amounts(s)[n] for s in group), Decimal(0))) for n in COMPONENTS]
            writer.writerow([store, business_date, kind, len(group), *sums])
    return out.getvalue()
