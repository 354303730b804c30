"""A Sale to the HotWax `createSalesOrder` envelope (DOMAIN.md, "The OMS order JSON").

Unlike the published mapping, unitPrice is the line's price (not its quantity), quantity is
the real quantity (not fixed at 1), lastName is spelled lastName, and discounts are kept as
adjustments so that the order's parts add up to its grand total.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from worker.core.brokering import BROKERING_QUEUE
from worker.core.money import cents, same_cents
from worker.core.retailers import Retailer
from worker.core.tlog import IN_STORE, SHIP_TO_HOME, Sale, SaleLine, TLogError

ORDER_COMPLETED, ORDER_APPROVED, ORDER_CANCELLED = "ORDER_COMPLETED", "ORDER_APPROVED", "ORDER_CANCELLED"
ITEM_COMPLETED, ITEM_APPROVED, ITEM_CANCELLED = "ITEM_COMPLETED", "ITEM_APPROVED", "ITEM_CANCELLED"
PAYMENT_SETTLED, PAYMENT_AUTHORIZED = "PAYMENT_SETTLED", "PAYMENT_AUTHORIZED"
PAYMENT_DECLINED, PAYMENT_VOIDED = "PAYMENT_DECLINED", "PAYMENT_VOIDED"
COUNTED_PAYMENTS = (PAYMENT_SETTLED, PAYMENT_AUTHORIZED)  # what adds up to the order total
DECLINED_TENDER_STATUSES = {"DECLINED", "FAILED", "REJECTED", "ERROR"}
VOIDED_TENDER_STATUSES = {"VOIDED", "VOID", "CANCELLED", "CANCELED", "REVERSED", "REFUNDED"}
CAPTURED = {"CAPTURED", "SETTLED", "COMPLETED"}
# the GTIN's length says which kind of id it is: UPC-A 12, EAN-13, GTIN-14 (EAN-8 is an EAN too)
ID_TYPES_BY_LENGTH = {12: "UPCA", 13: "EAN", 14: "GTIN", 8: "EAN"}


@dataclass(frozen=True)
class OrderLine:
    """One stored order line (a row of order_items)."""

    item_seq: int
    product_id: str | None
    gtin: str
    quantity: int
    unit_price: Decimal
    tax: Decimal
    line_total: Decimal
    fulfillment: str
    status_id: str
    facility_id: str


@dataclass(frozen=True)
class Payment:
    seq: int
    payment_method_type_id: str
    pos_payment_method: str
    amount: Decimal
    status_id: str


@dataclass(frozen=True)
class Adjustment:
    seq: int
    item_seq: int | None  # None: order level
    adjustment_type: str
    amount: Decimal


@dataclass(frozen=True)
class Order:
    """What ingest stores: the typed columns and the full OMS envelope."""

    external_id: str
    order_type: str
    status_id: str
    store_id: str
    order_date: str
    currency: str
    grand_total: Decimal
    lines: tuple[OrderLine, ...]
    payments: tuple[Payment, ...]
    adjustments: tuple[Adjustment, ...]
    payload: list[dict[str, Any]]
    ordered_at_ms: int | None = None
    updated_ms: int | None = None  # the TLog's updateDate: which of two versions of the orderId is newer


def id_type(gtin: str) -> str:
    """The OMS idType of a GTIN, from its length: 12 UPCA, 13 (and 8) EAN, 14 GTIN; other lengths GTIN."""
    return ID_TYPES_BY_LENGTH.get(len(gtin), "GTIN")


def shipment_method(retailer: Retailer, shipping_name: str | None, shipping_method_id: str | None = None) -> str:
    """The OMS shipment method of a send-sale: the TLog's own shippingMethodId when the retailer's table maps
    it, else its shippingName through the table; no method at all is STANDARD. A method the table does not
    know fails the file (TLogError names it), as an unknown payment method does."""
    table = retailer.shipment_methods
    if shipping_method_id and shipping_method_id in table:
        return table[shipping_method_id]
    if shipping_name and shipping_name in table:
        return table[shipping_name]
    if not shipping_name and not shipping_method_id:
        return "STANDARD"
    named = " / ".join(
        f"{key} {value!r}"
        for key, value in (("shippingMethodId", shipping_method_id), ("shippingName", shipping_name))
        if value
    )
    raise TLogError(
        f"{named} has no shipment method mapping; add it to [retailers.{retailer.retailer_id}.shipment_methods]"
    )


def customer_external_id(sale: Sale) -> str:
    """The POS customer id; the OMS party ids drop '@' (the published sample does the same)."""
    return (sale.customer_id or "NA").replace("@", "")


def _discount_type(adjustment_type: str) -> str:
    return "PROMOTION_ADJUSTMENT" if "PROMO" in adjustment_type.upper() else "DISCOUNT_ADJUSTMENT"


def _item(line: SaleLine, status: str) -> dict[str, Any]:
    if line.cancelled:
        status = ITEM_CANCELLED
    adjustments: list[dict[str, Any]] = [{"type": "SALES_TAX", "amount": line.tax}]
    # A discount lowers the order total, so it is a negative adjustment whatever sign the POS used.
    adjustments += [
        {"type": _discount_type(a.adjustment_type), "amount": -abs(a.amount)} for a in line.adjustments if a.amount
    ]
    return {
        "idType": id_type(line.gtin),
        "idValue": line.gtin,
        "status": status,
        "quantity": line.quantity,
        "unitPrice": line.price,
        "itemAdjustments": adjustments,
    }


def _ship_to(sale: Sale) -> dict[str, Any]:
    a = sale.shipping_address
    assert a is not None  # validated: ship-to-home lines require a shipping address
    name = " ".join(p for p in (a.first_name, a.last_name) if p)
    return {
        "postalAddress": {
            "name": name,
            "address1": a.address1 or "",
            "address2": a.address2 or "",
            "city": a.city or "",
            "state": a.state or "",
            "postalCode": a.postal_code or "",
            "country": a.country or "",
            "residentialAddress": "Y",
        },
        "email": {"infoString": a.email or sale.customer_email or sale.email or ""},
        "phoneNumber": {"contactNumber": a.phone or sale.customer_phone or sale.phone or ""},
    }


def payment_status(payment_status: str | None, capture_status: str | None) -> str:
    """A tender's OMS status: declined or voided as the POS says; an approved tender is settled once captured
    and authorized while not. A POS that reports no capture status took the tender at the till: settled."""
    status, capture = (payment_status or "").strip().upper(), (capture_status or "").strip().upper()
    if status in DECLINED_TENDER_STATUSES or capture in DECLINED_TENDER_STATUSES:
        return PAYMENT_DECLINED
    if status in VOIDED_TENDER_STATUSES or capture in VOIDED_TENDER_STATUSES:
        return PAYMENT_VOIDED
    if not capture or capture in CAPTURED:
        return PAYMENT_SETTLED
    return PAYMENT_AUTHORIZED


def _payments(sale: Sale, retailer: Retailer) -> list[Payment]:
    """Every tender, declined and voided ones too (kept, never counted); a counted tender's amount is what the
    till kept (amountAuthorized less changeBackAmount). Counted tenders must add up to the total (a voided sale
    excepted): a file that does not reconcile fails naming the amounts."""
    prefs: list[Payment] = []
    for index, tender in enumerate(sale.tenders):
        method = retailer.payment_methods.get(tender.payment_method)
        if method is None:
            raise TLogError(
                f"tenders[{index}].paymentMethod: {tender.payment_method!r} has no payment method mapping;"
                f" add it to [retailers.{retailer.retailer_id}.payment_methods]",
                sale.order_id,
            )
        status = payment_status(tender.payment_status, tender.capture_status)
        if tender.change_back and tender.change_back > tender.amount:
            raise TLogError(
                f"tenders[{index}].changeBackAmount: {tender.change_back} is more than"
                f" amountAuthorized {tender.amount}",
                sale.order_id,
            )
        kept = tender.amount - tender.change_back if status in COUNTED_PAYMENTS else tender.amount
        prefs.append(Payment(len(prefs) + 1, method, tender.payment_method, kept, status))
    if not sale.cancelled:
        reconcile_payments(sale, prefs)
    return prefs


def reconcile_payments(sale: Sale, payments: list[Payment]) -> None:
    """Approved tenders (captured or authorized), less the change given, add up to the order total."""
    counted = [p for p in payments if p.status_id in COUNTED_PAYMENTS]
    paid = sum((p.amount for p in counted), Decimal(0))
    change = sum((t.change_back for t in sale.tenders), Decimal(0))
    if not sale.tenders and sale.total_amount == 0:
        return
    if not same_cents(paid, sale.total_amount):
        others = len(payments) - len(counted)
        gross = cents(paid + change)
        raise TLogError(
            f"tenders: approved tenders add up to {gross}"
            + (f" less {cents(change)} change given = {cents(paid)}" if change else "")
            + f", not totalAmount {cents(sale.total_amount)}"
            + (f" ({others} declined or voided tender(s) not counted)" if others else ""),
            sale.order_id,
        )


def line_discount(line: SaleLine) -> Decimal:
    return sum((abs(a.amount) for a in line.adjustments), Decimal(0))


def to_order(sale: Sale, retailer: Retailer) -> Order:
    """Convert a validated sale for a retailer; raises TLogError for what only the mapping can see."""
    in_store, ship = sale.lines_of(IN_STORE), sale.lines_of(SHIP_TO_HOME)
    live_ship = [line for line in ship if not line.cancelled]
    may_split = "Y" if retailer.may_split else "N"
    ship_groups: list[dict[str, Any]] = []
    if in_store:
        ship_groups.append(
            {
                "facilityId": sale.store_id,
                "shipmentMethodTypeId": retailer.in_store_shipment_method,
                "orderFacilityId": sale.store_id,
                "maySplit": may_split,
                "carrierPartyId": "_NA_",
                "items": [_item(line, ITEM_COMPLETED) for line in in_store],
            }
        )
    if ship:
        ship_groups.append(
            {
                "facilityId": BROKERING_QUEUE,
                "shipmentMethodTypeId": _shipment_method(retailer, sale),
                "shipTo": _ship_to(sale),
                "orderFacilityId": sale.store_id,
                "maySplit": may_split,
                "carrierPartyId": "_NA_",
                "items": [_item(line, ITEM_APPROVED) for line in ship],
            }
        )
    order_adjustments: list[dict[str, Any]] = []
    if ship or sale.shipping_sub_total or sale.shipping_tax:
        order_adjustments += [
            {"type": "SHIPPING_CHARGES", "amount": sale.shipping_sub_total},
            {"type": "SHIPPING_SALES_TAX", "amount": sale.shipping_tax},
        ]
    # Header discount not carried by line adjustments is an order-level discount.
    unassigned = sale.discount - sum((line_discount(line) for line in sale.lines), Decimal(0))
    if unassigned > 0:
        order_adjustments.append({"type": "DISCOUNT_ADJUSTMENT", "amount": -unassigned})
    elif unassigned < 0:
        raise TLogError(
            f"discount: {sale.discount} is less than the line priceAdjustments ({sale.discount - unassigned})",
            sale.order_id,
        )

    status = ORDER_CANCELLED if sale.cancelled else ORDER_COMPLETED if not live_ship else ORDER_APPROVED
    payments = _payments(sale, retailer)
    first = sale.billing_first_name or sale.customer_first_name
    last = sale.billing_last_name or sale.customer_last_name
    order: dict[str, Any] = {
        "externalId": sale.order_id,
        "orderName": sale.order_id,
        "channel": retailer.channel,
        "customerExternalId": customer_external_id(sale),
        "firstName": first or "",
        "lastName": last or "",
        "email": sale.customer_email or sale.email or "",
        "phone": sale.customer_phone or sale.phone or "",
        "priority": "2",
        "orderDate": sale.creation_date,
        "statusId": status,
        "productStoreId": retailer.product_store_id,
        "externalProductStoreId": retailer.product_store_id,
        "currencyCode": retailer.currency,
        "grandTotal": sale.total_amount,
        "orderIdentifications": [{"orderIdentificationTypeId": "PS_ORD_ID", "idValue": sale.order_id}],
        "shipGroup": ship_groups,
        "orderAdjustments": order_adjustments,
        "orderPaymentPref": [
            {"statusId": p.status_id, "paymentMethodTypeId": p.payment_method_type_id, "maxAmount": p.amount}
            for p in payments
        ],
    }
    data_list: list[dict[str, Any]] = [{"serviceName": "createSalesOrder", "data": {"order": order}}]
    if live_ship:
        data_list.append(
            {
                "serviceName": "createExcludedOrderFacilityForOrder",
                "data": {"externalId": sale.order_id, "orderFacilityId": sale.store_id},
            }
        )
    payload = [{"dataList": data_list}]
    parts = order_parts_total(payload)
    if not same_cents(parts, sale.total_amount):
        raise TLogError(
            f"totalAmount: {sale.total_amount} differs from what the lines, taxes and adjustments add up to ({parts})",
            sale.order_id,
        )
    lines = tuple(
        OrderLine(
            item_seq=line.item_seq,
            product_id=line.product_id,
            gtin=line.gtin,
            quantity=line.quantity,
            unit_price=line.price,
            tax=line.tax,
            line_total=line.sub_total - line_discount(line) + line.tax,
            fulfillment=line.fulfillment,
            status_id=ITEM_CANCELLED
            if line.cancelled
            else ITEM_COMPLETED
            if line.fulfillment == IN_STORE
            else ITEM_APPROVED,
            facility_id=sale.store_id if line.fulfillment == IN_STORE else BROKERING_QUEUE,
        )
        for line in sale.lines
    )
    return Order(
        external_id=sale.order_id,
        order_type=sale.order_type,
        status_id=status,
        store_id=sale.store_id,
        order_date=sale.creation_date,
        currency=retailer.currency,
        grand_total=sale.total_amount,
        lines=lines,
        payments=tuple(payments),
        adjustments=_adjustments(in_store + ship, ship_groups, order_adjustments),
        payload=payload,
        ordered_at_ms=sale.order_date_ms,
        updated_ms=sale.update_date_ms,
    )


def _shipment_method(retailer: Retailer, sale: Sale) -> str:
    try:
        return shipment_method(retailer, sale.shipping_name, sale.shipping_method_id)
    except TLogError as exc:
        raise TLogError(exc.reason, sale.order_id) from None


def _adjustments(
    lines: tuple[SaleLine, ...], ship_groups: list[dict[str, Any]], order_adjustments: list[dict[str, Any]]
) -> tuple[Adjustment, ...]:
    """Item adjustments in ship-group order (the order lines were emitted in), then order-level ones."""
    items = [item for group in ship_groups for item in group["items"]]
    found: list[tuple[int | None, str, Decimal]] = [
        (line.item_seq, adj["type"], adj["amount"])
        for line, item in zip(lines, items, strict=True)
        for adj in item["itemAdjustments"]
    ]
    found += [(None, adj["type"], adj["amount"]) for adj in order_adjustments]
    return tuple(Adjustment(seq, item_seq, kind, amount) for seq, (item_seq, kind, amount) in enumerate(found, 1))


def order_parts_total(payload: list[dict[str, Any]]) -> Decimal:
    """Items at unit price, plus item and order adjustments: equals grandTotal for a whole order."""
    order = payload[0]["dataList"][0]["data"]["order"]
    total = Decimal(0)
    items = [item for group in order["shipGroup"] for item in group["items"]]
    # a line voided at the till is not part of the sale (unless the whole sale is voided)
    skip_cancelled = any(item.get("status") != ITEM_CANCELLED for item in items)
    for group in order["shipGroup"]:
        for item in group["items"]:
            if skip_cancelled and item.get("status") == ITEM_CANCELLED:
                continue
            total += Decimal(str(item["unitPrice"])) * item["quantity"]
            total += sum((Decimal(str(a["amount"])) for a in item["itemAdjustments"]), Decimal(0))
    total += sum((Decimal(str(a["amount"])) for a in order["orderAdjustments"]), Decimal(0))
    return total


def json_default(value: Any) -> Any:
    """JSON for Decimal without losing a cent: integral amounts as ints, others as the shortest float."""
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            return int(value)
        as_float = float(value)
        if Decimal(repr(as_float)) != value:
            raise ValueError(f"{value} cannot be written as a JSON number without rounding")
        return as_float
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
