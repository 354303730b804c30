"""TLog files: decode, validate at the edge, and build the domain sale.

Vendors add fields over time, so unknown TLog fields are ignored; the fields we rely on
(DOMAIN.md, "TLog fields we rely on") are enforced with field-level messages.
Money is Decimal end to end: JSON numbers are parsed as Decimal, never float.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate, validates_schema

from worker.core.money import DuplicateKey, JsonError, loads_decimal, same_cents
from worker.core.validation import flatten_messages

IN_STORE = "IN_STORE"
SHIP_TO_HOME = "SHIP_TO_HOME"
MAX_MONEY = Decimal("1000000000")  # one billion per field is far beyond any sale; larger is corrupt data
MAX_QUANTITY = 100000
# orderDate is milliseconds since the epoch: anything outside 2000-01-01 .. 2100-01-01 is corrupt, or a POS that
# writes seconds or microseconds; refused here so that no value reaching the database can overflow a timestamp.
EPOCH_MS_MIN, EPOCH_MS_MAX = 946_684_800_000, 4_102_444_800_000
MAX_DEPTH = 64
# orderStatus / status / itemStatus values that mean the POS voided or cancelled the sale (or the line)
VOIDED_STATUSES = frozenset({"CANCELLED", "CANCELED", "VOIDED", "VOID"})


def is_voided(status: str | None) -> bool:
    return (status or "").strip().upper() in VOIDED_STATUSES


def TLOG_DATE(text: str) -> datetime:  # noqa: N802 - reads as the format it checks
    """creationDate as the POS writes it: store-local 'YYYY-MM-DD HH:MM:SS'."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S")


class TLogError(ValueError):
    """A TLog file cannot become an order. `reason` names the record and the field."""

    def __init__(self, reason: str, record: str | None = None):
        self.reason = reason
        self.record = record
        super().__init__(f"order {record}: {reason}" if record else reason)


@dataclass(frozen=True)
class PriceAdjustment:
    adjustment_type: str
    amount: Decimal  # as the POS wrote it; the sign is normalised by the OMS mapping


@dataclass(frozen=True)
class SaleLine:
    item_seq: int
    product_id: str | None
    gtin: str
    name: str | None
    price: Decimal
    quantity: int
    sub_total: Decimal
    tax: Decimal
    total: Decimal | None
    fulfillment: str  # IN_STORE or SHIP_TO_HOME
    adjustments: tuple[PriceAdjustment, ...] = ()
    cancelled: bool = False  # itemStatus CANCELLED/VOIDED, or the whole sale is


@dataclass(frozen=True)
class Address:
    first_name: str | None
    last_name: str | None
    address1: str | None
    address2: str | None
    city: str | None
    state: str | None
    postal_code: str | None
    country: str | None
    phone: str | None
    email: str | None


@dataclass(frozen=True)
class Tender:
    payment_method: str
    amount: Decimal
    payment_status: str | None
    capture_status: str | None
    change_back: Decimal = Decimal(0)  # cash given back: amountAuthorized - changeBackAmount is what was kept


@dataclass(frozen=True)
class Sale:
    """One point-of-sale transaction, as the TLog describes it."""

    order_id: str
    creation_date: str  # store-local "YYYY-MM-DD HH:MM:SS", as the OMS expects it
    order_date_ms: int | None
    fulfillment_type: str
    store_id: str
    store_time_zone: str | None
    store_latitude: Decimal | None
    store_longitude: Decimal | None
    total_amount: Decimal
    order_sub_total: Decimal
    discount: Decimal
    tax_sub_total: Decimal
    shipping_sub_total: Decimal
    shipping_tax: Decimal
    shipping_name: str | None
    email: str | None
    phone: str | None
    customer_id: str | None
    customer_email: str | None
    customer_phone: str | None
    customer_first_name: str | None
    customer_last_name: str | None
    billing_first_name: str | None
    billing_last_name: str | None
    shipping_address: Address | None
    tenders: tuple[Tender, ...]
    lines: tuple[SaleLine, ...]
    cancelled: bool = False  # orderStatus or status CANCELLED/VOIDED: the sale was voided at the till
    update_date_ms: int | None = None  # updateDate: which of two versions of an orderId is newer
    shipping_method_id: str | None = None

    @property
    def order_type(self) -> str:
        kinds = {line.fulfillment for line in self.lines}
        if kinds == {IN_STORE}:
            return "IN_STORE"
        if kinds == {SHIP_TO_HOME}:
            return "SEND_SALE"
        return "MIXED"

    def lines_of(self, fulfillment: str) -> tuple[SaleLine, ...]:
        return tuple(line for line in self.lines if line.fulfillment == fulfillment)


class Money(fields.Decimal):
    """A finite amount with at most 4 decimal places, bounded in size."""

    def __init__(self, **kwargs: Any):
        super().__init__(allow_nan=False, **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
            raise ValidationError("must be a number")
        result: Decimal = super()._deserialize(value, attr, data, **kwargs)
        if abs(result) >= MAX_MONEY:
            raise ValidationError(f"{result} is out of range")
        if result != result.quantize(Decimal("0.0001")):
            raise ValidationError(f"{result} has more than 4 decimal places")
        return result


class Quantity(fields.Field):  # type: ignore[type-arg]
    """A whole, positive number of units (1 or 1.0, never 1.5)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            raise ValidationError("must be a whole number")
        try:
            whole = int(value)
        except (ValueError, OverflowError, InvalidOperation):
            raise ValidationError("must be a whole number") from None
        if whole != value:
            raise ValidationError(f"{value} is not a whole number")
        if not 0 < whole <= MAX_QUANTITY:
            raise ValidationError(f"{whole} is not between 1 and {MAX_QUANTITY}")
        return whole


class Text(fields.String):
    """A string; numbers are accepted and kept as their text (ids like 254 are often numbers)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        if isinstance(value, int | Decimal) and not isinstance(value, bool):
            value = str(value)
        result: str = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in result:
            raise ValidationError("contains a NUL character")
        if not result.isascii():
            try:
                result.encode("utf-8")
            except UnicodeEncodeError as exc:
                # a lone surrogate ("\ud800"): JSON allows it, UTF-8 and PostgreSQL do not
                raise ValidationError(f"contains a lone surrogate at character {exc.start}") from None
        return result


class EpochMillis(fields.Integer):
    """A time as milliseconds since the epoch, within EPOCH_MS_MIN .. EPOCH_MS_MAX."""

    def __init__(self, **kwargs: Any):
        super().__init__(strict=False, **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
            raise ValidationError("must be milliseconds since 1970-01-01")
        try:
            whole = int(Decimal(value))
        except (ValueError, ArithmeticError):
            raise ValidationError("must be milliseconds since 1970-01-01") from None
        if whole != Decimal(value):
            raise ValidationError(f"{value} is not a whole number of milliseconds")
        if not EPOCH_MS_MIN <= whole < EPOCH_MS_MAX:
            hint = " (seconds or microseconds?)" if whole > 0 else ""
            raise ValidationError(f"{value} is not a time in milliseconds between 2000 and 2100{hint}")
        return whole


def _opt_text(**kwargs: Any) -> Text:
    return Text(load_default=None, allow_none=True, validate=validate.Length(max=1000), **kwargs)


def _opt_money(**kwargs: Any) -> Money:
    return Money(load_default=Decimal(0), **kwargs)


class _Lenient(Schema):
    class Meta:
        unknown = EXCLUDE  # vendors add fields; ignore what we do not use


class StoreSchema(_Lenient):
    time_zone_id = _opt_text(data_key="timeZoneId")
    latitude = fields.Decimal(allow_nan=False, load_default=None, allow_none=True, validate=validate.Range(-90, 90))
    longitude = fields.Decimal(allow_nan=False, load_default=None, allow_none=True, validate=validate.Range(-180, 180))


class CustomerSchema(_Lenient):
    customer_id = _opt_text(data_key="customerId")
    email = _opt_text()
    first_name = _opt_text(data_key="firstName")
    last_name = _opt_text(data_key="lastName")
    phone_mobile = _opt_text(data_key="phoneMobile")


class BillingSchema(_Lenient):
    first_name = _opt_text(data_key="firstName")
    last_name = _opt_text(data_key="lastName")


class ShippingAddressSchema(_Lenient):
    first_name = _opt_text(data_key="firstName")
    last_name = _opt_text(data_key="lastName")
    address_line1 = Text(required=True, validate=validate.Length(min=1, max=1000), data_key="addressLine1")
    address_line2 = _opt_text(data_key="addressLine2")
    city = Text(required=True, validate=validate.Length(min=1, max=1000))
    state = _opt_text()
    postal_code = Text(required=True, validate=validate.Length(min=1, max=40), data_key="postalCode")
    country_code = _opt_text(data_key="countryCode")
    phone = _opt_text()
    email_address = _opt_text(data_key="emailAddress")

    @post_load
    def _make(self, d: dict[str, Any], **_: Any) -> Address:
        return Address(
            first_name=d["first_name"],
            last_name=d["last_name"],
            address1=d["address_line1"],
            address2=d["address_line2"],
            city=d["city"],
            state=d["state"],
            postal_code=d["postal_code"],
            country=d["country_code"],
            phone=d["phone"],
            email=d["email_address"],
        )


class TenderSchema(_Lenient):
    payment_method = Text(required=True, validate=validate.Length(min=1, max=200), data_key="paymentMethod")
    amount_authorized = Money(required=True, data_key="amountAuthorized")
    payment_status = _opt_text(data_key="paymentStatus")
    capture_status = _opt_text(data_key="captureStatus")
    change_back_amount = Money(load_default=Decimal(0), allow_none=True, data_key="changeBackAmount")

    @post_load
    def _make(self, d: dict[str, Any], **_: Any) -> Tender:
        return Tender(
            d["payment_method"],
            d["amount_authorized"],
            d["payment_status"],
            d["capture_status"],
            abs(d["change_back_amount"] or Decimal(0)),
        )


class PriceAdjustmentSchema(_Lenient):
    price_adjustment_type = Text(
        load_default="DISCOUNT", validate=validate.Length(max=200), data_key="priceAdjustmentType"
    )
    amount = Money(required=True)

    @post_load
    def _make(self, d: dict[str, Any], **_: Any) -> PriceAdjustment:
        return PriceAdjustment(d["price_adjustment_type"] or "DISCOUNT", d["amount"])


class ProductTaxSchema(_Lenient):
    total_tax = Money(required=True, data_key="totalTax")


class LineSchema(_Lenient):
    order_item_id = Text(
        required=True, validate=validate.Regexp(r"^\d{1,9}$", error="must be a whole number"), data_key="orderItemId"
    )
    product_id = _opt_text(data_key="productId")
    gtin = Text(required=True, validate=validate.Regexp(r"^\d{8,14}$", error="must be 8 to 14 digits"))
    name = _opt_text()
    price = Money(required=True, validate=validate.Range(min=0))
    quantity = Quantity(required=True)
    sub_total = Money(required=True, data_key="subTotal")
    tax = _opt_money()
    total = Money(load_default=None, allow_none=True)
    product_tax = fields.Nested(ProductTaxSchema, load_default=None, allow_none=True, data_key="productTax")
    fulfillment_type = _opt_text(data_key="fulfillmentType")
    omni_fulfillment_type = _opt_text(data_key="omniFulfillmentType")
    item_status = _opt_text(data_key="itemStatus")
    price_adjustments = fields.List(
        fields.Nested(PriceAdjustmentSchema), load_default=list, allow_none=True, data_key="priceAdjustments"
    )

    @validates_schema
    def _fulfillment(self, d: dict[str, Any], **_: Any) -> None:
        omni, kind = d.get("omni_fulfillment_type"), d.get("fulfillment_type")
        if omni not in (None, IN_STORE, SHIP_TO_HOME):
            raise ValidationError(f"{omni!r} is not IN_STORE or SHIP_TO_HOME", "omniFulfillmentType")
        if omni is None and kind not in (None, IN_STORE, "ONLINE"):
            raise ValidationError(f"{kind!r} is not IN_STORE or ONLINE", "fulfillmentType")


class TLogSchema(_Lenient):
    order_id = Text(
        required=True,
        validate=validate.Regexp(r"^[A-Za-z0-9_.:-]{1,100}$", error="must be 1-100 letters, digits or _.:-"),
        data_key="orderId",
    )
    creation_date = Text(required=True, data_key="creationDate")
    order_date = EpochMillis(load_default=None, allow_none=True, data_key="orderDate")
    update_date = EpochMillis(load_default=None, allow_none=True, data_key="updateDate")
    order_status = _opt_text(data_key="orderStatus")
    status = _opt_text()
    shipping_method_id = _opt_text(data_key="shippingMethodId")
    fulfillment_type = Text(required=True, validate=validate.OneOf([IN_STORE, "ONLINE"]), data_key="fulfillmentType")
    store_id = Text(
        required=True,
        validate=validate.Regexp(r"^[A-Za-z0-9_.-]{1,60}$", error="must be 1-60 letters, digits or _.-"),
        data_key="storeId",
    )
    store = fields.Nested(StoreSchema, load_default=None, allow_none=True)
    total_amount = Money(required=True, data_key="totalAmount")
    order_sub_total = Money(required=True, data_key="orderSubTotal")
    discount = _opt_money()
    tax_sub_total = _opt_money(data_key="taxSubTotal")
    shipping_sub_total = _opt_money(data_key="shippingSubTotal")
    shipping_tax = _opt_money(data_key="shippingTax")
    shipping_name = _opt_text(data_key="shippingName")
    email = _opt_text()
    phone_number = _opt_text(data_key="phoneNumber")
    customer_profile = fields.Nested(CustomerSchema, load_default=None, allow_none=True, data_key="customerProfile")
    billing_address = fields.Nested(BillingSchema, load_default=None, allow_none=True, data_key="billingAddress")
    shipping_address = fields.Nested(
        ShippingAddressSchema, load_default=None, allow_none=True, data_key="shippingAddress"
    )
    tenders = fields.List(fields.Nested(TenderSchema), load_default=list, allow_none=True)
    order_product_list = fields.List(
        fields.Nested(LineSchema),
        required=True,
        validate=validate.Length(min=1, max=5000, error="must hold 1 to 5000 lines"),
        data_key="orderProductList",
    )

    @validates_schema
    def _consistent(self, d: dict[str, Any], **_: Any) -> None:
        check_totals(d, "orderProductList", ("shippingSubTotal", "shippingTax"))
        lines = d["order_product_list"]
        if (
            any(_fulfillment_of(line, d["fulfillment_type"]) == SHIP_TO_HOME for line in lines)
            and d.get("shipping_address") is None
        ):
            raise ValidationError("required for ship-to-home lines", "shippingAddress")


def _attr(vendor_name: str) -> str:
    """The schema attribute of a vendor's camelCase field (the loaded dict is keyed by attribute)."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", vendor_name).lower()


def check_totals(d: dict[str, Any], list_name: str, extra: tuple[str, ...] = ()) -> None:
    """What a sale and a return share: a readable creationDate, totalAmount = orderSubTotal - discount +
    taxSubTotal (+ the extra fields), line ids that do not repeat, lines that add up to orderSubTotal.
    Names are the vendor's, as the error messages give them."""
    try:
        TLOG_DATE(d["creation_date"])
    except ValueError:
        raise ValidationError("must be 'YYYY-MM-DD HH:MM:SS'", "creationDate") from None
    expected = d["order_sub_total"] - d["discount"] + d["tax_sub_total"] + sum((d[_attr(k)] for k in extra), Decimal(0))
    if not same_cents(expected, d["total_amount"]):
        formula = " + ".join(["orderSubTotal - discount", "taxSubTotal", *extra])
        raise ValidationError(f"{d['total_amount']} does not reconcile: {formula} = {expected}", "totalAmount")
    lines = d[_attr(list_name)]
    seqs = [int(line["order_item_id"]) for line in lines]  # "1" and "01" are the same line
    if len(set(seqs)) != len(seqs):
        raise ValidationError("orderItemId values repeat", list_name)
    # A line voided at the till is not part of the sale's totals (unless the whole sale is voided).
    if not (is_voided(d.get("order_status")) or is_voided(d.get("status"))):
        kept = [line for line in lines if not is_voided(line.get("item_status"))]
        lines = kept if kept else lines
    line_sum = sum((line["sub_total"] for line in lines), Decimal(0))
    if not same_cents(line_sum, d["order_sub_total"]):
        raise ValidationError(
            f"{d['order_sub_total']} differs from the sum of line subTotal ({line_sum})", "orderSubTotal"
        )


# One instance, reused: building a schema (and its nested ones) costs more than validating a sale.
# marshmallow schemas keep no state between loads, so sharing one is safe.
TLOG_SCHEMA = TLogSchema()


def _fulfillment_of(line: dict[str, Any], header: str) -> str:
    omni = line.get("omni_fulfillment_type")
    if omni:
        return str(omni)
    kind = line.get("fulfillment_type") or header
    return SHIP_TO_HOME if kind == "ONLINE" else IN_STORE


def decode(data: bytes) -> dict[str, Any]:
    """Bytes to a JSON object, numbers as Decimal; errors say what and where."""
    if not data:
        raise TLogError("empty file (0 bytes)")
    body = data[3:] if data.startswith(codecs.BOM_UTF8) else data
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + len(data) - len(body)  # an offset into the file as stored, BOM included
        raise TLogError(f"not UTF-8: byte 0x{data[offset]:02x} at offset {offset}") from None
    try:
        document = loads_decimal(text)
    except DuplicateKey as exc:
        raise TLogError(str(exc), None if exc.key == "orderId" else _order_id_of(text)) from None
    except JsonError as exc:
        raise TLogError(str(exc)) from None
    if not isinstance(document, dict):
        raise TLogError(f"top level must be a JSON object, found {type(document).__name__}")
    return document


def _order_id_of(text: str) -> str | None:
    """The orderId of a document refused for a duplicate key, read leniently (last key wins) to name it."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return None
    order_id = document.get("orderId") if isinstance(document, dict) else None
    if not isinstance(order_id, str | int) or isinstance(order_id, bool):
        return None
    shown = str(order_id)
    return shown if len(shown) <= 100 and shown.isprintable() else None  # a name to show, not more text


def _depth_ok(value: Any, limit: int = MAX_DEPTH) -> bool:
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def validate_sale(document: dict[str, Any]) -> Sale:
    """Validate a decoded TLog and build the Sale; errors name the order and the field."""
    record = document.get("orderId") if isinstance(document.get("orderId"), str | int) else None
    record = str(record) if record is not None else None
    if not _depth_ok(document):
        raise TLogError(f"nested deeper than {MAX_DEPTH} levels", record)
    try:
        d = TLOG_SCHEMA.load(document)
    except ValidationError as exc:
        raise TLogError(flatten_messages(exc.messages), record) from None
    return _build(d)


def parse_sale(data: bytes) -> Sale:
    """Bytes of a TLog file to a validated Sale."""
    return validate_sale(decode(data))


def _build(d: dict[str, Any]) -> Sale:
    header = d["fulfillment_type"]
    voided = is_voided(d["order_status"]) or is_voided(d["status"])
    lines = tuple(
        SaleLine(
            item_seq=int(line["order_item_id"]),
            product_id=line["product_id"],
            gtin=line["gtin"],
            name=line["name"],
            price=line["price"],
            quantity=line["quantity"],
            sub_total=line["sub_total"],
            tax=(line["product_tax"] or {}).get("total_tax", line["tax"]),
            total=line["total"],
            fulfillment=_fulfillment_of(line, header),
            adjustments=tuple(line["price_adjustments"] or ()),
            cancelled=voided or is_voided(line["item_status"]),
        )
        for line in d["order_product_list"]
    )
    store = d["store"] or {}
    customer = d["customer_profile"] or {}
    billing = d["billing_address"] or {}
    return Sale(
        order_id=d["order_id"],
        creation_date=d["creation_date"],
        order_date_ms=d["order_date"],
        fulfillment_type=header,
        store_id=d["store_id"],
        store_time_zone=store.get("time_zone_id"),
        store_latitude=store.get("latitude"),
        store_longitude=store.get("longitude"),
        total_amount=d["total_amount"],
        order_sub_total=d["order_sub_total"],
        discount=d["discount"],
        tax_sub_total=d["tax_sub_total"],
        shipping_sub_total=d["shipping_sub_total"],
        shipping_tax=d["shipping_tax"],
        shipping_name=d["shipping_name"],
        email=d["email"],
        phone=d["phone_number"],
        customer_id=customer.get("customer_id"),
        customer_email=customer.get("email"),
        customer_phone=customer.get("phone_mobile"),
        customer_first_name=customer.get("first_name"),
        customer_last_name=customer.get("last_name"),
        billing_first_name=billing.get("first_name"),
        billing_last_name=billing.get("last_name"),
        shipping_address=d["shipping_address"],
        tenders=tuple(d["tenders"] or ()),
        lines=lines,
        cancelled=voided or all(line.cancelled for line in lines),
        update_date_ms=d["update_date"],
        shipping_method_id=d["shipping_method_id"],
    )
