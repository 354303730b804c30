"""Returns: a TLog whose `returnProductList` holds the returned items and `refundPaymentDetails` the refunds.

The published samples carry both lists empty, so the shape of a return is our documented choice:
- header: `orderId` (the return transaction), `creationDate`, `storeId`, optional `originalOrderId`
  (the sale being returned; a line's own `originalOrderId` wins), `orderSubTotal`, `discount`,
  `taxSubTotal`, `totalAmount` (the refund, positive), `refundPaymentDetails[]`;
- lines: the sale line fields (`orderItemId`, `productId`, `gtin`, `price`, `quantity`, `subTotal`,
  `tax`/`productTax.totalTax`) plus optional `productClass` (only `Merchandise`, the default, goes back
  on the shelf) and `reasons[]`;
- totals reconcile like a sale: totalAmount = orderSubTotal - discount + taxSubTotal, the lines add up
  to orderSubTotal, and the refunds add up to totalAmount.
An exchange is its sale file plus its return file. A file with both sale and return lines is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from worker.core.inventory import Variance
from worker.core.money import same_cents
from worker.core.oms import id_type
from worker.core.retailers import Retailer
from worker.core.tlog import (
    EpochMillis,
    LineSchema,
    Money,
    Text,
    TLogError,
    _Lenient,
    _opt_money,
    _opt_text,
    check_totals,
)
from worker.core.validation import flatten_messages

POS_RETURN = "POS_RETURN"
RESTOCKED_CLASSES = {"MERCHANDISE"}
SELLABLE, DAMAGED = "SELLABLE", "DAMAGED"
# productCondition values, and return reasons, that keep a returned unit off the shelf (counted non-sellable)
DAMAGED_CONDITIONS = {"DAMAGED", "DEFECTIVE", "NON_SELLABLE", "NOT_SELLABLE", "BROKEN", "FAULTY"}
DAMAGED_REASONS = {"DAMAGED", "DEFECTIVE", "BROKEN", "FAULTY", "RTN_DEFECTIVE_ITEM", "RTN_DAMAGED"}


def condition_of(product_condition: str | None, reason: str | None) -> str:
    """SELLABLE or DAMAGED: productCondition decides; without one, a damage reason does."""
    if product_condition:
        return DAMAGED if product_condition.strip().upper().replace(" ", "_") in DAMAGED_CONDITIONS else SELLABLE
    return DAMAGED if (reason or "").strip().upper().replace(" ", "_") in DAMAGED_REASONS else SELLABLE


@dataclass(frozen=True)
class ReturnLine:
    item_seq: int
    product_id: str | None
    gtin: str
    quantity: int
    unit_price: Decimal
    tax: Decimal
    line_total: Decimal
    original_order_id: str | None
    restock: bool
    reason: str | None
    condition: str = SELLABLE  # DAMAGED: counted at the store, non-sellable, never back to available stock
    original_item_seq: int | None = None  # the sale line returned (originalOrderItemId), else found by GTIN


@dataclass(frozen=True)
class Refund:
    seq: int
    payment_method_type_id: str
    pos_payment_method: str
    amount: Decimal


@dataclass(frozen=True)
class Return:
    """What ingest stores for a return file."""

    external_id: str
    original_order_id: str | None
    store_id: str
    return_date: str
    currency: str
    refund_total: Decimal
    discount: Decimal
    tax: Decimal
    lines: tuple[ReturnLine, ...]
    refunds: tuple[Refund, ...]
    ordered_at_ms: int | None = None
    exchange_order_id: str | None = None  # the sale an exchange gave instead (exchangeOrderId)


class ReturnLineSchema(LineSchema):
    original_order_id = _opt_text(data_key="originalOrderId")
    product_class = _opt_text(data_key="productClass")
    product_condition = _opt_text(data_key="productCondition")
    original_order_item_id = Text(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(r"^\d{1,9}$", error="must be a whole number"),
        data_key="originalOrderItemId",
    )
    reasons = fields.Raw(load_default=None, allow_none=True)


class RefundSchema(_Lenient):
    payment_method = Text(required=True, validate=validate.Length(min=1, max=200), data_key="paymentMethod")
    amount = Money(load_default=None, allow_none=True)
    amount_refunded = Money(load_default=None, allow_none=True, data_key="amountRefunded")
    amount_authorized = Money(load_default=None, allow_none=True, data_key="amountAuthorized")
    payment_status = _opt_text(data_key="paymentStatus")

    @validates_schema
    def _has_amount(self, d: dict[str, Any], **_: Any) -> None:
        if all(d.get(k) is None for k in ("amount", "amount_refunded", "amount_authorized")):
            raise ValidationError("one of amount, amountRefunded, amountAuthorized is required", "amount")


class ReturnSchema(_Lenient):
    order_id = Text(
        required=True,
        validate=validate.Regexp(r"^[A-Za-z0-9_.:-]{1,100}$", error="must be 1-100 letters, digits or _.:-"),
        data_key="orderId",
    )
    original_order_id = _opt_text(data_key="originalOrderId")
    exchange_order_id = _opt_text(data_key="exchangeOrderId")
    creation_date = Text(required=True, data_key="creationDate")
    order_date = EpochMillis(load_default=None, allow_none=True, data_key="orderDate")
    store_id = Text(
        required=True,
        validate=validate.Regexp(r"^[A-Za-z0-9_.-]{1,60}$", error="must be 1-60 letters, digits or _.-"),
        data_key="storeId",
    )
    total_amount = Money(required=True, data_key="totalAmount")
    order_sub_total = Money(required=True, data_key="orderSubTotal")
    discount = _opt_money()
    tax_sub_total = _opt_money(data_key="taxSubTotal")
    return_product_list = fields.List(
        fields.Nested(ReturnLineSchema),
        required=True,
        validate=validate.Length(min=1, max=5000),
        data_key="returnProductList",
    )
    refund_payment_details = fields.List(
        fields.Nested(RefundSchema), load_default=list, data_key="refundPaymentDetails"
    )

    @validates_schema
    def _consistent(self, d: dict[str, Any], **_: Any) -> None:
        check_totals(d, "returnProductList")
        refunds = sum((_amount(r) for r in d["refund_payment_details"]), Decimal(0))
        if d["refund_payment_details"] and not same_cents(refunds, d["total_amount"]):
            raise ValidationError(
                f"refunds add up to {refunds}, not totalAmount {d['total_amount']}", "refundPaymentDetails"
            )


RETURN_SCHEMA = ReturnSchema()


def _amount(refund: dict[str, Any]) -> Decimal:
    for key in ("amount", "amount_refunded", "amount_authorized"):
        if refund.get(key) is not None:
            return abs(Decimal(refund[key]))
    return Decimal(0)


def is_return(document: dict[str, Any]) -> bool:
    """A return file has returned items and no sold ones."""
    returned = document.get("returnProductList")
    sold = document.get("orderProductList")
    return bool(returned) and not sold


def has_both(document: dict[str, Any]) -> bool:
    return bool(document.get("returnProductList")) and bool(document.get("orderProductList"))


def to_return(document: dict[str, Any], retailer: Retailer) -> Return:
    """Validate a return document and convert it; errors name the return and the field."""
    record = str(document.get("orderId")) if isinstance(document.get("orderId"), str | int) else None
    try:
        d = RETURN_SCHEMA.load(document)
    except ValidationError as exc:
        raise TLogError(flatten_messages(exc.messages), record) from None
    header_original = d["original_order_id"]
    lines = []
    for line in d["return_product_list"]:
        tax = (line["product_tax"] or {}).get("total_tax", line["tax"])
        reasons = line.get("reasons")
        reason = None
        if isinstance(reasons, list) and reasons:
            first = reasons[0]
            reason = (
                str(first.get("reasonCode") or first.get("reason") or first) if isinstance(first, dict) else str(first)
            )
        condition = condition_of(line.get("product_condition"), reason)
        merchandise = (line.get("product_class") or "Merchandise").upper() in RESTOCKED_CLASSES
        seq = line.get("original_order_item_id")
        lines.append(
            ReturnLine(
                item_seq=int(line["order_item_id"]),
                product_id=line["product_id"],
                gtin=line["gtin"],
                quantity=line["quantity"],
                unit_price=line["price"],
                tax=tax,
                line_total=line["sub_total"] + tax,
                original_order_id=line.get("original_order_id") or header_original,
                restock=merchandise and condition == SELLABLE,
                reason=reason[:200] if reason else None,
                condition=condition if merchandise else SELLABLE,
                original_item_seq=int(seq) if seq else None,
            )
        )
    refunds = []
    for index, refund in enumerate(d["refund_payment_details"]):
        method = retailer.payment_methods.get(refund["payment_method"])
        if method is None:
            raise TLogError(
                f"refundPaymentDetails[{index}].paymentMethod: {refund['payment_method']!r} has no payment"
                f" method mapping; add it to [retailers.{retailer.retailer_id}.payment_methods]",
                record,
            )
        refunds.append(Refund(index + 1, method, refund["payment_method"], _amount(refund)))
    return Return(
        external_id=d["order_id"],
        original_order_id=header_original,
        store_id=d["store_id"],
        return_date=d["creation_date"],
        currency=retailer.currency,
        refund_total=d["total_amount"],
        discount=d["discount"],
        tax=d["tax_sub_total"],
        lines=tuple(lines),
        refunds=tuple(refunds),
        ordered_at_ms=d["order_date"],
        exchange_order_id=d["exchange_order_id"],
    )


@dataclass(frozen=True)
class Restock:
    """A returned line back on the store's shelf: its variance, and the product whose stock it moves."""

    variance: Variance
    product_id: str


def lines_to_restock(ret: Return) -> tuple[ReturnLine, ...]:
    """The returned lines that go back on the shelf (merchandise)."""
    return tuple(line for line in ret.lines if line.restock)


def restock(ret: Return, return_id: int, line: ReturnLine, stocked_product: str | None) -> Restock:
    """One POS_RETURN variance per line, once (its source names the return and line). It moves the product
    the retailer's stock already holds for the GTIN (stocked_product, the store's own row first), else the
    line's product id, else the GTIN itself."""
    variance = Variance(
        ret.store_id,
        id_type(line.gtin),
        line.gtin,
        line.quantity,
        POS_RETURN,
        f"return:{return_id}:{line.item_seq}",
        line.product_id,
        comments=f"POS return {ret.external_id}",
    )
    return Restock(variance, stocked_product if stocked_product is not None else (line.product_id or line.gtin))
