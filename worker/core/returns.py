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

from worker.core.money import same_cents
from worker.core.retailers import Retailer
from worker.core.tlog import LineSchema, Money, Text, TLogError, _Lenient, _opt_money, _opt_text, check_totals
from worker.core.validation import flatten_messages

POS_RETURN = "POS_RETURN"
RESTOCKED_CLASSES = {"MERCHANDISE"}


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


class ReturnLineSchema(LineSchema):
    originalOrderId = _opt_text()  # noqa: N815
    productClass = _opt_text()  # noqa: N815
    reasons = fields.Raw(load_default=None, allow_none=True)


class RefundSchema(_Lenient):
    paymentMethod = Text(required=True, validate=validate.Length(min=1, max=200))  # noqa: N815
    amount = Money(load_default=None, allow_none=True)
    amountRefunded = Money(load_default=None, allow_none=True)  # noqa: N815
    amountAuthorized = Money(load_default=None, allow_none=True)  # noqa: N815
    paymentStatus = _opt_text()  # noqa: N815

    @validates_schema
    def _has_amount(self, d: dict[str, Any], **_: Any) -> None:
        if all(d.get(k) is None for k in ("amount", "amountRefunded", "amountAuthorized")):
            raise ValidationError("one of amount, amountRefunded, amountAuthorized is required", "amount")


class ReturnSchema(_Lenient):
    orderId = Text(required=True, validate=validate.Regexp(r"^[A-Za-z0-9_.:-]{1,100}$",  # noqa: N815
                                                           error="must be 1-100 letters, digits or _.:-"))
    originalOrderId = _opt_text()  # noqa: N815
    creationDate = Text(required=True)  # noqa: N815
    orderDate = fields.Integer(load_default=None, allow_none=True, strict=False)  # noqa: N815
    storeId = Text(required=True, validate=validate.Regexp(r"^[A-Za-z0-9_.-]{1,60}$",  # noqa: N815
                                                           error="must be 1-60 letters, digits or _.-"))
    totalAmount = Money(required=True)  # noqa: N815
    orderSubTotal = Money(required=True)  # noqa: N815
    discount = _opt_money()
    taxSubTotal = _opt_money()  # noqa: N815
    returnProductList = fields.List(fields.Nested(ReturnLineSchema), required=True,  # noqa: N815
                                    validate=validate.Length(min=1, max=5000))
    refundPaymentDetails = fields.List(fields.Nested(RefundSchema), load_default=list)  # noqa: N815

    @validates_schema
    def _consistent(self, d: dict[str, Any], **_: Any) -> None:
        check_totals(d, "returnProductList")
        refunds = sum((_amount(r) for r in d["refundPaymentDetails"]), Decimal(0))
        if d["refundPaymentDetails"] and not same_cents(refunds, d["totalAmount"]):
            raise ValidationError(f"refunds add up to {refunds}, not totalAmount {d['totalAmount']}",
                                  "refundPaymentDetails")


RETURN_SCHEMA = ReturnSchema()


def _amount(refund: dict[str, Any]) -> Decimal:
    for key in ("amount", "amountRefunded", "amountAuthorized"):
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
    header_original = d["originalOrderId"]
    lines = []
    for line in d["returnProductList"]:
        tax = (line["productTax"] or {}).get("totalTax", line["tax"])
        reasons = line.get("reasons")
        reason = None
        if isinstance(reasons, list) and reasons:
            first = reasons[0]
            reason = str(first.get("reasonCode") or first.get("reason") or first) if isinstance(first, dict) \
                else str(first)
        lines.append(ReturnLine(
            item_seq=int(line["orderItemId"]), product_id=line["productId"], gtin=line["gtin"],
            quantity=line["quantity"], unit_price=line["price"], tax=tax, line_total=line["subTotal"] + tax,
            original_order_id=line.get("originalOrderId") or header_original,
            restock=(line.get("productClass") or "Merchandise").upper() in RESTOCKED_CLASSES,
            reason=reason[:200] if reason else None))
    refunds = []
    for index, refund in enumerate(d["refundPaymentDetails"]):
        method = retailer.payment_methods.get(refund["paymentMethod"])
        if method is None:
            raise TLogError(f"refundPaymentDetails[{index}].paymentMethod: {refund['paymentMethod']!r} has no payment"
                            f" method mapping; add it to [retailers.{retailer.retailer_id}.payment_methods]", record)
        refunds.append(Refund(index + 1, method, refund["paymentMethod"], _amount(refund)))
    return Return(external_id=d["orderId"], original_order_id=header_original, store_id=d["storeId"],
                  return_date=d["creationDate"], currency=retailer.currency, refund_total=d["totalAmount"],
                  discount=d["discount"], tax=d["taxSubTotal"], lines=tuple(lines), refunds=tuple(refunds),
                  ordered_at_ms=d["orderDate"])
