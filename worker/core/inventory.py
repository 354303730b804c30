"""Inventory inputs: the variance feed, and the facility and inventory files an operator loads.

A variance file is applied record by record, so a bad record is rejected (its line and field named) while
the good ones still count. A load file is all or nothing: every bad row is reported at once and nothing
is loaded. Quantities are whole units (int), never float.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from worker.core.money import JsonError, loads_decimal

VARIANCE_COLUMNS = (
    "facilityId",
    "idType",
    "idValue",
    "availableDelta",
    "locationSeqId",
    "varianceReasonId",
    "comments",
)
ID_TYPES = ("SKU", "UPCA", "EAN", "GTIN")  # product id types accepted in variance records
REASONS = ("POS_SALE", "VAR_INTEGR", "VAR_DAMAGED", "VAR_LOST", "VAR_FOUND", "VAR_MANUAL", "POS_RETURN")

FACILITY_COLUMNS = (
    "facility_id",
    "name",
    "facility_type",
    "postal_code",
    "latitude",
    "longitude",
    "allow_brokering",
    "max_orders_per_day",
    "facility_group",
    "sequence",
)
INVENTORY_COLUMNS = ("facility_id", "product_id", "gtin", "quantity_on_hand")

MAX_DELTA = 1_000_000  # one variance moving a million units is corrupt data, not a stock count
MAX_ON_HAND = 10_000_000
MAX_INT = 2_147_483_647  # a PostgreSQL integer; anything larger is a typo, not a capacity
MAX_FACILITY_ID = 60
MAX_ID = 255
MAX_COMMENTS = 1000

_OPTIONAL_VARIANCE = ("locationSeqId", "comments")
_WHOLE_TEXT = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")  # ASCII only: int() and Decimal() also take "1_000" and "١"
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_GTIN = re.compile(r"[0-9]{8,14}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FLAGS = {"true": True, "yes": True, "y": True, "1": True, "false": False, "no": False, "n": False, "0": False}
_SHOWN = 40

_T = TypeVar("_T")


class InputError(ValueError):
    """A whole input cannot be used (empty, not UTF-8, no header, wrong header, not CSV nor a JSON array)."""


class LoadError(ValueError):
    """A load file has a bad row or header; the message names the file line (header is line 1)."""

    def __init__(self, *errors: str):
        self.errors = errors
        super().__init__("; ".join(errors))


@dataclass(frozen=True)
class VarianceRecord:
    line: int  # CSV: file line number (header is line 1, first record line 2); JSON: 1-based index in the array
    facility_id: str
    id_type: str  # upper-cased
    id_value: str
    available_delta: int  # may be negative, never 0
    location_seq_id: str | None
    reason_id: str
    comments: str | None


@dataclass(frozen=True)
class Rejected:
    line: int
    reason: str  # starts with "line N: " (CSV) or "record N: " (JSON) and names the field


@dataclass(frozen=True)
class VarianceFile:
    format: str  # "csv" or "json"
    records: tuple[VarianceRecord, ...]
    rejected: tuple[Rejected, ...]
    ignored: int = 0  # POS_SALE records of a retailer whose in-store sales lower stock: never applied


@dataclass(frozen=True)
class Variance:
    """One inventory change, as the variance feed and the update API describe it."""

    facility_id: str
    id_type: str  # SKU (product_id) or UPCA/EAN/GTIN (gtin)
    id_value: str
    available_delta: int
    reason_id: str
    source: str  # unique per retailer: applying the same source twice changes nothing
    product_id: str | None = None
    location_seq_id: str | None = None
    comments: str | None = None


@dataclass(frozen=True)
class VarianceFileApplied:
    """What became of a variance file's records, and so of the file: it fails when none was applied."""

    applied: int
    rejected: tuple[Rejected, ...]  # at parsing and at applying, by line
    failed: bool
    summary: str | None  # for the ledger row: how many were rejected, and the first reasons


@dataclass(frozen=True)
class FacilityRow:
    facility_id: str
    name: str | None
    facility_type: str | None
    postal_code: str | None
    latitude: float | None  # -90..90
    longitude: float | None  # -180..180
    allow_brokering: bool
    max_orders_per_day: int | None  # None = no limit
    facility_group: str | None
    sequence: int | None


@dataclass(frozen=True)
class InventoryRow:
    facility_id: str
    product_id: str
    gtin: str | None
    quantity_on_hand: int  # may be negative: a store can be oversold


class _Invalid(ValueError):
    """One value cannot be used; the message says why and the caller names the field."""


class _Fields:
    """One record's values; each read returns the value, or a placeholder after noting why it cannot."""

    def __init__(self, values: Mapping[str, Any]):
        self.values = values
        self.errors: list[str] = []

    def blank(self, name: str) -> bool:
        value = self.values.get(name)
        return value is None or (isinstance(value, str) and not value.strip())

    def read(self, name: str, reader: Callable[..., _T], placeholder: _T, **options: Any) -> _T:
        try:
            return reader(self.values.get(name), **options)
        except _Invalid as exc:
            self.errors.append(f"{name}: {exc}")
            return placeholder


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if len(text) > _SHOWN:
        text = text[:_SHOWN] + "..."
    return repr(text) if isinstance(value, str) else text


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | Decimal):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "string" if isinstance(value, str) else type(value).__name__


def _text(value: Any, max_len: int = MAX_ID, identifier: bool = True) -> str | None:
    """Stripped text, None when empty; JSON numbers keep their text (facility ids like 254 often are numbers)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise _Invalid(f"must be text, found {_json_type(value)}")
    if isinstance(value, Decimal) and not value.is_finite():
        raise _Invalid(f"{value} is not text")
    text = str(value).strip()
    if not text:
        return None
    if len(text) > max_len:
        raise _Invalid(f"is longer than {max_len} characters")
    # free text may span lines; an identifier with a line break or NUL is corrupt and breaks SQL and logs
    if "\x00" in text or (identifier and _CONTROL.search(text)):
        raise _Invalid(f"{_show(text)} contains a control character")
    return text


def _required(value: Any, max_len: int = MAX_ID) -> str:
    text = _text(value, max_len)
    if text is None:
        raise _Invalid("required")
    return text


def _choice(value: Any, choices: tuple[str, ...], upper: bool = False) -> str:
    text = _required(value)
    code = text.upper() if upper else text
    if code not in choices:
        raise _Invalid(f"{_show(text)} is not one of {', '.join(choices)}")
    return code


def _whole(value: Any, low: int, high: int) -> int | None:
    """A whole number within [low, high]: "3", "+2", "-1", "2.0" and JSON 2 or 2.0; None when empty."""
    number: Decimal
    if value is None:
        return None
    if isinstance(value, bool):
        raise _Invalid(f"must be a number, found {_json_type(value)}")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise _Invalid(f"{value} is not a whole number")
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if not _WHOLE_TEXT.fullmatch(text):
            raise _Invalid(f"{_show(text)} is not a whole number")
        number = Decimal(text)
        value = text
    else:
        raise _Invalid(f"must be a number, found {_json_type(value)}")
    # range before int(): Decimal("1e999999999") is finite, and int() of it would not finish
    if not low <= number <= high:
        raise _Invalid(f"{_show(value)} is not between {low} and {high}")
    if number != number.to_integral_value():
        raise _Invalid(f"{_show(value)} is not a whole number")
    return int(number)


def _required_whole(value: Any, low: int, high: int) -> int:
    number = _whole(value, low, high)
    if number is None:
        raise _Invalid("required")
    return number


def _delta(value: Any) -> int:
    number = _required_whole(value, -MAX_DELTA, MAX_DELTA)
    if number == 0:
        raise _Invalid(
            f"{_show(value.strip() if isinstance(value, str) else value)} is zero; a variance must change the quantity"
        )
    return number


def _coordinate(value: str, bound: int) -> float | None:
    text = value.strip()
    if not text:
        return None
    if not _DECIMAL_TEXT.fullmatch(text):  # float() also takes "nan", "inf" and "1_0"
        raise _Invalid(f"{_show(text)} is not a number")
    number = float(text)
    if not -bound <= number <= bound:
        raise _Invalid(f"{_show(text)} is not between -{bound} and {bound}")
    return number


def _flag(value: str) -> bool:
    text = value.strip().lower()
    if not text:
        return True  # brokering is the point of loading a facility; opting out must be explicit
    if text not in _FLAGS:
        raise _Invalid(f"{_show(value.strip())} is not one of true/false/yes/no/y/n/1/0")
    return _FLAGS[text]


def _gtin(value: str) -> str | None:
    text = value.strip()
    if not text:
        return None
    if not _GTIN.fullmatch(text):
        raise _Invalid(f"{_show(text)} is not 8 to 14 digits")
    return text


def _rows(text: str, error: Callable[[str], ValueError]) -> Iterator[tuple[int, list[str]]]:
    """Non-blank CSV rows with the file line each starts on (a quoted value may span lines)."""
    # strict: a stray or unclosed quote would otherwise silently swallow the following records
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise error(f"line {start}: not valid CSV: {exc}") from None
        # spreadsheets end files with rows of bare commas; they hold nothing
        if any(cell.strip() for cell in cells):
            yield start, cells


def _header(
    line: int, cells: list[str], required: tuple[str, ...], known: tuple[str, ...], strict: bool
) -> tuple[list[str], list[str]]:
    """Column names and the problems with them; strict headers (our own files) allow no unknown column."""
    names = [cell.strip() for cell in cells]
    problems: list[str] = []
    missing = [name for name in required if name not in names]
    if missing:
        problems.append(f"line {line}: missing columns: {', '.join(missing)} (header: {_show(','.join(names))})")
    counts = Counter(names)  # not names.count(): a garbage header row can hold a million cells
    repeated = sorted(name for name, count in counts.items() if count > 1 and (strict or name in known))
    if repeated:
        problems.append(f"line {line}: columns appear twice: {', '.join(name or '(blank)' for name in repeated)}")
    if strict:
        unknown = list(dict.fromkeys(name for name in names if name not in known))
        if unknown:
            problems.append(f"line {line}: unknown columns: {', '.join(name or '(blank)' for name in unknown)}")
    return names, problems


def parse_variance_file(data: bytes) -> VarianceFile:
    """Bytes of a variance file (CSV, or a JSON array of the same records) to records and rejected records."""
    text = _decode(data)
    content = text.lstrip()
    if not content:
        raise InputError("no records: the file holds only whitespace")
    # the published flow names CSV content *.json, so only the content can tell the formats apart
    if content.startswith("["):
        return _variance_json(_load_json(text))
    if content.startswith("{"):
        try:
            document = _load_json(text)
        except InputError:
            document = None  # not JSON after all; CSV parsing reports what is wrong with it
        if document is not None:
            raise InputError(f"top level must be a JSON array of records, found {_json_type(document)}")
    return _variance_csv(text)


def _decode(data: bytes) -> str:
    if not data:
        raise InputError("empty file (0 bytes)")
    bom = len(data) - len(data.removeprefix(b"\xef\xbb\xbf"))
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = bom + exc.start  # an offset into the file as ops see it, BOM included
        raise InputError(f"not UTF-8: byte 0x{data[offset]:02x} at offset {offset}") from None


def _load_json(text: str) -> Any:
    try:
        # NaN and Infinity become Decimal so the record holding one is rejected, not the whole file
        return loads_decimal(text, special_numbers=True)
    except JsonError as exc:
        raise InputError(str(exc)) from None


def _variance_json(document: Any) -> VarianceFile:
    if not isinstance(document, list):
        raise InputError(f"top level must be a JSON array of records, found {_json_type(document)}")
    if not document:
        raise InputError("no records: the JSON array is empty")
    records: list[VarianceRecord] = []
    rejected: list[Rejected] = []
    for number, item in enumerate(document, start=1):
        if not isinstance(item, dict):
            # a producer that mixes shapes in one array is broken; guessing which records are real is not safe
            raise InputError(f"record {number}: must be a JSON object, found {_json_type(item)}")
        _variance_record(number, f"record {number}", item, records, rejected)
    return VarianceFile("json", tuple(records), tuple(rejected))


def _variance_csv(text: str) -> VarianceFile:
    rows = _rows(text, InputError)
    first = next(rows, None)
    if first is None:
        raise InputError("no header row")
    header_line, cells = first
    required = tuple(name for name in VARIANCE_COLUMNS if name not in _OPTIONAL_VARIANCE)
    names, problems = _header(header_line, cells, required, VARIANCE_COLUMNS, strict=False)
    if problems:
        raise InputError("; ".join(problems))
    position = {name: index for index, name in enumerate(names) if name in VARIANCE_COLUMNS}
    records: list[VarianceRecord] = []
    rejected: list[Rejected] = []
    for line, cells in rows:
        if any(cell.strip() for cell in cells[len(names) :]):
            rejected.append(
                Rejected(
                    line,
                    f"line {line}: has {len(cells)} values but the header has"
                    f" {len(names)} columns (an unquoted comma?)",
                )
            )
            continue
        values = {name: cells[index] if index < len(cells) else "" for name, index in position.items()}
        _variance_record(line, f"line {line}", values, records, rejected)
    if not records and not rejected:
        raise InputError(f"no records after the header on line {header_line}")
    return VarianceFile("csv", tuple(records), tuple(rejected))


def _variance_record(
    line: int, where: str, values: Mapping[str, Any], records: list[VarianceRecord], rejected: list[Rejected]
) -> None:
    fields = _Fields(values)
    record = VarianceRecord(
        line=line,
        facility_id=fields.read("facilityId", _required, "", max_len=MAX_FACILITY_ID),
        id_type=fields.read("idType", _choice, "", choices=ID_TYPES, upper=True),
        id_value=fields.read("idValue", _required, ""),
        available_delta=fields.read("availableDelta", _delta, 0),
        location_seq_id=fields.read("locationSeqId", _text, None),
        reason_id=fields.read("varianceReasonId", _choice, "", choices=REASONS),
        comments=fields.read("comments", _text, None, max_len=MAX_COMMENTS, identifier=False),
    )
    if fields.errors:
        rejected.append(Rejected(line, f"{where}: {'; '.join(fields.errors)}"))
    else:
        records.append(record)


def parse_facilities_csv(text: str) -> list[FacilityRow]:
    """An operator's facilities CSV to rows; a bad header or any bad row raises one LoadError naming them all."""
    return _load(text, FACILITY_COLUMNS, _facility, ("facility_id",))


def parse_inventory_csv(text: str) -> list[InventoryRow]:
    """An operator's inventory CSV to rows; a bad header or any bad row raises one LoadError naming them all."""
    return _load(text, INVENTORY_COLUMNS, _inventory, ("facility_id", "product_id"))


def _facility(fields: _Fields) -> FacilityRow:
    row = FacilityRow(
        facility_id=fields.read("facility_id", _required, "", max_len=MAX_FACILITY_ID),
        name=fields.read("name", _text, None, identifier=False),
        facility_type=fields.read("facility_type", _text, None),
        postal_code=fields.read("postal_code", _text, None),
        latitude=fields.read("latitude", _coordinate, None, bound=90),
        longitude=fields.read("longitude", _coordinate, None, bound=180),
        allow_brokering=fields.read("allow_brokering", _flag, True),
        max_orders_per_day=fields.read("max_orders_per_day", _whole, None, low=0, high=MAX_INT),
        facility_group=fields.read("facility_group", _text, None),
        sequence=fields.read("sequence", _whole, None, low=-MAX_INT, high=MAX_INT),
    )
    # half a position cannot be used for distance rules; judge by the cells so a bad value is not reported twice
    if fields.blank("latitude") != fields.blank("longitude"):
        given, absent = ("latitude", "longitude") if fields.blank("longitude") else ("longitude", "latitude")
        fields.errors.append(f"{absent}: required when {given} is given")
    return row


def _inventory(fields: _Fields) -> InventoryRow:
    return InventoryRow(
        facility_id=fields.read("facility_id", _required, "", max_len=MAX_FACILITY_ID),
        product_id=fields.read("product_id", _required, ""),
        gtin=fields.read("gtin", _gtin, None),
        quantity_on_hand=fields.read("quantity_on_hand", _required_whole, 0, low=-MAX_ON_HAND, high=MAX_ON_HAND),
    )


def _load(text: str, columns: tuple[str, ...], build: Callable[[_Fields], _T], key: tuple[str, ...]) -> list[_T]:
    rows = _rows(text.removeprefix("\ufeff"), LoadError)
    first = next(rows, None)
    if first is None:
        raise LoadError("empty file: no header row")
    header_line, cells = first
    names, problems = _header(header_line, cells, columns, columns, strict=True)
    if problems:
        raise LoadError(*problems)
    errors: list[str] = []
    loaded: list[_T] = []
    seen: dict[tuple[Any, ...], int] = {}
    for line, cells in rows:
        if len(cells) != len(names):
            errors.append(f"line {line}: has {len(cells)} values but the header has {len(names)} columns")
            continue
        fields = _Fields(dict(zip(names, cells, strict=True)))
        row = build(fields)
        errors.extend(f"line {line}: {error}" for error in fields.errors)
        # a repeat is worth reporting even when either row has other errors: ops fix the file in one pass
        identity = tuple(getattr(row, name) for name in key)
        if "" in identity:  # the placeholder of a key that was itself reported
            continue
        if identity in seen:
            described = ", ".join(f"{name} {_show(value)}" for name, value in zip(key, identity, strict=True))
            errors.append(f"line {line}: {described} repeats line {seen[identity]}")
            continue
        seen[identity] = line
        if not fields.errors:
            loaded.append(row)
    if errors:
        raise LoadError(*errors)
    if not loaded:
        raise LoadError(f"line {header_line}: no data rows after the header")
    return loaded


def record_label(file_format: str) -> str:
    """How messages name a record's position: "line" in a CSV file, "record" in a JSON array."""
    return "record" if file_format == "json" else "line"


def variance_for_record(
    record: VarianceRecord, file_id: int, label: str, facility_known: bool, product_id: str | None
) -> Variance | Rejected:
    """A variance record of a known facility and product becomes a variance, once per file and line;
    otherwise it is rejected, its line and field named. product_id: the retailer's product it names, if any."""
    if not facility_known:
        return Rejected(record.line, f"{label} {record.line}: facilityId: unknown facility {record.facility_id!r}")
    if product_id is None:
        return Rejected(
            record.line, f"{label} {record.line}: idValue: unknown product {record.id_type} {record.id_value!r}"
        )
    return Variance(
        record.facility_id,
        record.id_type,
        record.id_value,
        record.available_delta,
        record.reason_id,
        f"file:{file_id}:{record.line}",
        product_id,
        record.location_seq_id,
        record.comments,
    )


def variance_file_applied(parsed: VarianceFile, applied: int, rejected: Sequence[Rejected]) -> VarianceFileApplied:
    """The verdict on a variance file: rejected records listed by line (the first five in the summary); a
    file with none applied fails."""
    every = sorted([*parsed.rejected, *rejected], key=lambda r: (r.line, r.reason))
    summary = None
    if every:
        shown = "; ".join(r.reason for r in every[:5])
        more = f"; and {len(every) - 5} more" if len(every) > 5 else ""
        summary = f"{len(every)} of {applied + len(every) + parsed.ignored} records rejected: {shown}{more}"
    if parsed.ignored:
        note = (
            f"{parsed.ignored} POS_SALE record(s) ignored: this retailer's in-store sales lower its stock"
            ' (in_store_decrements = "sales")'
        )
        summary = f"{summary}; {note}" if summary else note
    return VarianceFileApplied(applied, tuple(every), applied == 0 and not parsed.ignored, summary)
