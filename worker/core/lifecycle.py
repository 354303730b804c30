"""An order's life after the sale (docs/order-lifecycle.md): the fulfilment feed's records, the statuses an item
goes through, what a correction of a stored sale changes, and the current payload.

Pure: the SQL that applies these lives in worker/adapters/postgres/lifecycle.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from worker.core.inventory import (
    MAX_FACILITY_ID,
    InputError,
    Rejected,
    _decode,
    _Fields,
    _header,
    _json_type,
    _load_json,
    _required,
    _required_whole,
    _rows,
    _text,
)
from worker.core.oms import (
    ITEM_APPROVED,
    ITEM_CANCELLED,
    ITEM_COMPLETED,
    ORDER_APPROVED,
    ORDER_CANCELLED,
    ORDER_COMPLETED,
    json_default,
)

SHIPPED, REJECTED, CANCELLED = "SHIPPED", "REJECTED", "CANCELLED"
FULFILLMENT_STATUSES = (SHIPPED, REJECTED)
FULFILLMENT_COLUMNS = ("orderId", "itemSeq", "facilityId", "quantity", "status", "trackingCode", "reason")
_OPTIONAL = ("trackingCode", "reason", "quantity")
MAX_QUANTITY = 100000
# the brokering queue and parking: not a facility, nothing is reserved there
NOT_A_FACILITY = ("_NA_", "UNFILLABLE_PARKING", "REJECTED_ITM_PARKING")


@dataclass(frozen=True)
class FulfillmentRecord:
    line: int  # CSV: file line (header is line 1); JSON: 1-based index in the array
    external_id: str  # the order's orderId, as the POS named it
    item_seq: int
    facility_id: str
    quantity: int | None  # None: the whole line
    status: str  # SHIPPED or REJECTED
    tracking_code: str | None
    reason: str | None


@dataclass(frozen=True)
class FulfillmentFile:
    format: str  # "csv" or "json"
    records: tuple[FulfillmentRecord, ...]
    rejected: tuple[Rejected, ...]


@dataclass(frozen=True)
class StoredItem:
    """An order line as it stands, read under the order's lock."""

    item_seq: int
    fulfillment: str
    status_id: str
    facility_id: str
    quantity: int
    gtin: str


@dataclass(frozen=True)
class ItemChange:
    """What one action does to one line: its new status and facility, and the stock it moves."""

    item_seq: int
    status_id: str
    facility_id: str
    release: int  # units whose reservation ends at `stock_facility`
    ship: int  # units that leave `stock_facility` (on hand and reserved both drop)
    stock_facility: str | None
    exclude: str | None = None  # a facility the line must not go back to (rejected by the store)
    note: str = ""


class ActionRefused(ValueError):
    """A ship, reject or cancel that cannot be done; the message names the order, the line and why."""


def label(file_format: str) -> str:
    return "record" if file_format == "json" else "line"


def parse_fulfillment_file(data: bytes) -> FulfillmentFile:
    """A fulfilment file's bytes (CSV with a header, or a JSON array of the same records; the content tells which,
    not the name) to records and rejected records (line and field named)."""
    text = _decode(data)
    content = text.lstrip()
    if not content:
        raise InputError("no records: the file holds only whitespace")
    if content.startswith("["):
        document = _load_json(text)
        if not isinstance(document, list) or not document:
            raise InputError("no records: the JSON array is empty")
        records: list[FulfillmentRecord] = []
        rejected: list[Rejected] = []
        for number, item in enumerate(document, start=1):
            if not isinstance(item, dict):
                raise InputError(f"record {number}: must be a JSON object, found {_json_type(item)}")
            _record(number, f"record {number}", item, records, rejected)
        return FulfillmentFile("json", tuple(records), tuple(rejected))
    if content.startswith("{"):
        raise InputError("top level must be a JSON array of records, found object")
    rows = _rows(text, InputError)
    first = next(rows, None)
    if first is None:
        raise InputError("no header row")
    header_line, cells = first
    required = tuple(n for n in FULFILLMENT_COLUMNS if n not in _OPTIONAL)
    names, problems = _header(header_line, cells, required, FULFILLMENT_COLUMNS, strict=False)
    if problems:
        raise InputError("; ".join(problems))
    position = {name: index for index, name in enumerate(names) if name in FULFILLMENT_COLUMNS}
    records, rejected = [], []
    for line, row in rows:
        if any(cell.strip() for cell in row[len(names) :]):
            rejected.append(Rejected(line, f"line {line}: has {len(row)} values but the header has {len(names)}"))
            continue
        values = {name: row[index] if index < len(row) else "" for name, index in position.items()}
        _record(line, f"line {line}", values, records, rejected)
    if not records and not rejected:
        raise InputError(f"no records after the header on line {header_line}")
    return FulfillmentFile("csv", tuple(records), tuple(rejected))


def _status(value: Any) -> str:
    text = _required(value).upper()
    if text not in FULFILLMENT_STATUSES:
        from worker.core.inventory import _Invalid

        raise _Invalid(f"{text!r} is not one of {', '.join(FULFILLMENT_STATUSES)}")
    return text


def _optional_quantity(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _required_whole(value, 1, MAX_QUANTITY)


def _record(
    line: int, where: str, values: Mapping[str, Any], records: list[FulfillmentRecord], rejected: list[Rejected]
) -> None:
    f = _Fields(values)
    record = FulfillmentRecord(
        line=line,
        external_id=f.read("orderId", _required, ""),
        item_seq=f.read("itemSeq", _required_whole, 0, low=1, high=999_999_999),
        facility_id=f.read("facilityId", _required, "", max_len=MAX_FACILITY_ID),
        quantity=f.read("quantity", _optional_quantity, None),
        status=f.read("status", _status, ""),
        tracking_code=f.read("trackingCode", _text, None),
        reason=f.read("reason", _text, None, max_len=1000, identifier=False),
    )
    if f.errors:
        rejected.append(Rejected(line, f"{where}: {'; '.join(f.errors)}"))
    else:
        records.append(record)


# ---------------------------------------------------------------- actions on one line


def ship(item: StoredItem, facility_id: str | None, quantity: int | None, where: str) -> ItemChange:
    """The facility shipped the line: on hand and reserved drop there by its quantity; the item is completed.
    A line is shipped whole (a different quantity is refused, naming both)."""
    _open(item, where, "ship")
    if item.facility_id in NOT_A_FACILITY:
        raise ActionRefused(f"{where}: not allocated to a facility yet ({item.facility_id}); nothing to ship")
    if facility_id and facility_id != item.facility_id:
        raise ActionRefused(f"{where}: allocated to {item.facility_id}, not {facility_id}")
    if quantity is not None and quantity != item.quantity:
        raise ActionRefused(f"{where}: quantity {quantity} differs from the line's {item.quantity}; ship it whole")
    return ItemChange(item.item_seq, ITEM_COMPLETED, item.facility_id, 0, item.quantity, item.facility_id)


def reject(item: StoredItem, facility_id: str | None, reason: str | None, where: str) -> ItemChange:
    """The facility cannot fill the line: its reservation ends, the line goes back to the brokering queue, and
    that facility is excluded for this order's line (the next brokering run places it elsewhere)."""
    _open(item, where, "reject")
    if item.facility_id in NOT_A_FACILITY:
        raise ActionRefused(f"{where}: not allocated to a facility ({item.facility_id}); nothing to reject")
    if facility_id and facility_id != item.facility_id:
        raise ActionRefused(f"{where}: allocated to {item.facility_id}, not {facility_id}")
    return ItemChange(
        item.item_seq,
        ITEM_APPROVED,
        "_NA_",
        item.quantity,
        0,
        item.facility_id,
        exclude=item.facility_id,
        note=reason or "rejected by the store",
    )


def cancel(item: StoredItem, where: str) -> ItemChange:
    """The line is cancelled: a reservation it holds ends; nothing ships."""
    _open(item, where, "cancel")
    reserved = item.fulfillment == "SHIP_TO_HOME" and item.facility_id not in NOT_A_FACILITY
    return ItemChange(
        item.item_seq,
        ITEM_CANCELLED,
        item.facility_id,
        item.quantity if reserved else 0,
        0,
        item.facility_id if reserved else None,
    )


def _open(item: StoredItem, where: str, action: str) -> None:
    if item.status_id == ITEM_CANCELLED:
        raise ActionRefused(f"{where}: cancelled already; cannot {action} it")
    if item.status_id == ITEM_COMPLETED:
        raise ActionRefused(f"{where}: completed already (shipped or sold in store); cannot {action} it")


def order_status(statuses: list[str]) -> str:
    """An order is cancelled when every item is, completed when every item is done (completed or cancelled)."""
    if all(s == ITEM_CANCELLED for s in statuses):
        return ORDER_CANCELLED
    if all(s in (ITEM_COMPLETED, ITEM_CANCELLED) for s in statuses):
        return ORDER_COMPLETED
    return ORDER_APPROVED


# ---------------------------------------------------------------- the payload as it stands


def current_payload(received: Any, items: list[StoredItem], status: str) -> Any:
    """The as-received createSalesOrder envelope with each item's status and facility as they stand now: a ship
    group whose items went to different facilities is split into one group per facility."""
    payload = json.loads(json.dumps(received, default=json_default))
    order = payload[0]["dataList"][0]["data"]["order"]
    order["statusId"] = status
    by_fulfillment: dict[str, list[StoredItem]] = {}
    for item in sorted(items, key=lambda i: i.item_seq):
        by_fulfillment.setdefault(item.fulfillment, []).append(item)
    groups = []
    for group in order["shipGroup"]:
        kind = "SHIP_TO_HOME" if "shipTo" in group else "IN_STORE"
        pool = list(by_fulfillment.get(kind, []))
        split: dict[str, list[dict[str, Any]]] = {}
        for entry in group["items"]:
            match = next((i for i in pool if i.gtin == str(entry.get("idValue"))), None)
            if match is None:
                split.setdefault(group.get("facilityId", ""), []).append(entry)
                continue
            pool.remove(match)
            entry["status"] = match.status_id
            split.setdefault(match.facility_id if kind == "SHIP_TO_HOME" else group["facilityId"], []).append(entry)
        for facility, entries in split.items():
            groups.append({**group, "facilityId": facility, "items": entries})
    order["shipGroup"] = groups
    return payload


# ---------------------------------------------------------------- corrections of a stored sale


def payload_diff(stored: Any, received: Any, path: str = "") -> list[dict[str, Any]]:
    """Field by field: every path where two createSalesOrder envelopes differ, with both values."""
    a, b = _plain(stored), _plain(received)
    out: list[dict[str, Any]] = []
    _diff(a, b, path, out)
    return out


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=json_default))


def _diff(a: Any, b: Any, path: str, out: list[dict[str, Any]]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            _diff(a.get(key), b.get(key), f"{path}.{key}" if path else key, out)
    elif isinstance(a, list) and isinstance(b, list):
        for index in range(max(len(a), len(b))):
            _diff(a[index] if index < len(a) else None, b[index] if index < len(b) else None, f"{path}[{index}]", out)
    elif _number(a) != _number(b):
        out.append({"field": path, "stored": a, "received": b})


def _number(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Decimal(str(value))
    return value


def describe_diff(diff: list[dict[str, Any]], limit: int = 8) -> str:
    """A diff in one line, for a ledger row's error: `field: stored -> received; ...`."""
    shown = "; ".join(f"{d['field']}: {_v(d['stored'])} -> {_v(d['received'])}" for d in diff[:limit])
    more = f"; and {len(diff) - limit} more" if len(diff) > limit else ""
    return shown + more


def _v(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Correction:
    """What to do with a TLog whose orderId is stored already with other content."""

    outcome: str  # "conflict" (older or same updateDate), "cancel" (only cancellations), "replace", "refuse"
    cancel_items: tuple[int, ...] = ()  # lines the newer version cancels
    reason: str = ""


def judge_correction(
    stored_updated_ms: int | None,
    received_updated_ms: int | None,
    diff: list[dict[str, Any]],
    cancelled_now: set[int],
    stock_moved: bool,
    stored_cancelled: set[int],
) -> Correction:
    """A newer version (a later updateDate) is applied: cancellations always (the lines it voids are cancelled,
    their stock released once), other changes only while the stored order has moved no stock (else refused with
    the diff, since a sale's effect on stock cannot be undone in place); an older or equal version is a conflict.
    cancelled_now: lines the received version cancels; stock_moved: the stored order lowered stock, reserved,
    shipped or was returned."""
    if received_updated_ms is None or stored_updated_ms is not None and received_updated_ms <= stored_updated_ms:
        when = "no updateDate" if received_updated_ms is None else f"updateDate {received_updated_ms}"
        return Correction(
            "conflict", reason=f"{when} is not later than the stored version's ({stored_updated_ms or 'none'})"
        )
    newly = tuple(sorted(cancelled_now - stored_cancelled))
    if newly:
        # a void: the lines it names are cancelled whatever happened since (totals and tenders follow it)
        return Correction("cancel", newly, f"a newer version cancels line(s) {', '.join(map(str, newly))}")
    others = [d for d in diff if not _is_status_field(d["field"])]
    if not others:
        return Correction("cancel", (), "a newer version with nothing to apply")
    if stock_moved:
        return Correction(
            "refuse",
            reason="a newer version changes a sale that has already moved stock (decremented, reserved, shipped"
            " or returned); that cannot be undone in place",
        )
    return Correction("replace", reason="a newer version replaces the stored one (no stock had moved)")


def _is_status_field(path: str) -> bool:
    return path.rsplit(".", 1)[-1] in ("status", "statusId")
