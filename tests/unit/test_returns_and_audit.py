"""Returns and the daily audit, on the pure core."""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from tests.unit.helpers import retailer
from worker.core.audit import (
    AuditOrder,
    ErpFileError,
    csv_cell,
    due_business_date,
    inconsistencies,
    parse_erp_csv,
    reconcile,
    report_csv,
    report_document,
    summarize,
)
from worker.core.dayaudit import DayData, FileOfDay, SaleOfDay, TenderLine
from worker.core.retailers import ConfigError
from worker.core.returns import POS_RETURN, lines_to_restock, restock, to_return
from worker.core.tlog import TLogError
from worker.demo.tlogfactory import dumps, make_return, make_sale
from worker.services.ingest import decide
from worker.services.ports import FAILED, PROCESSED


def test_a_return_file_is_recognised_and_converted():
    sale = make_sale(1, "IN_STORE", lines=2)
    ret = to_return(make_return(1, sale), retailer())
    assert ret.original_order_id == sale["orderId"] and ret.store_id == "254"
    line = sale["orderProductList"][0]
    assert ret.refund_total == line["subTotal"] + line["tax"]
    assert ret.lines[0].restock and ret.lines[0].reason == "DID_NOT_FIT"
    assert ret.refunds[0].payment_method_type_id == "CASH"


def test_decide_routes_a_return_file_to_a_return():
    outcome = decide(dumps(make_return(2)), retailer())
    assert outcome.status == PROCESSED and outcome.ret is not None and outcome.order is None
    assert outcome.restock is True
    assert decide(dumps(make_return(2)), retailer(order_master=False)).restock is False


def test_a_return_without_its_original_is_standalone():
    ret = to_return(make_return(3), retailer())
    assert ret.original_order_id is None


def test_non_merchandise_is_not_put_back_on_the_shelf():
    assert not to_return(make_return(4, product_class="Service"), retailer()).lines[0].restock


def test_return_totals_and_refunds_must_reconcile():
    doc = make_return(5)
    doc["refundPaymentDetails"][0]["amount"] += 1
    with pytest.raises(TLogError, match="refundPaymentDetails: refunds add up to"):
        to_return(doc, retailer())
    doc = make_return(5)
    doc["totalAmount"] += 1
    with pytest.raises(TLogError, match="totalAmount"):
        to_return(doc, retailer())


def test_a_file_with_both_sale_and_return_lines_is_refused_clearly():
    doc = make_return(6)
    doc["orderProductList"] = make_sale(6)["orderProductList"]
    outcome = decide(dumps(doc), retailer())
    assert outcome.status == FAILED and "an exchange comes as a sale file and a return file" in outcome.error


def test_an_unmapped_refund_method_names_the_key_to_add():
    doc = make_return(7)
    doc["refundPaymentDetails"][0]["paymentMethod"] = "Seashells"
    with pytest.raises(TLogError, match=r"refundPaymentDetails\[0\].paymentMethod"):
        to_return(doc, retailer())


def order(x, store="254", kind="IN_STORE", total="10.00", parts=None, tenders=None, units=1):
    total = Decimal(total)
    return AuditOrder(
        x,
        store,
        kind,
        units,
        total,
        Decimal(0),
        Decimal(0),
        Decimal(0),
        total,
        Decimal(parts) if parts else total,
        tenders or {"CASH": total},
    )


def test_summary_groups_by_store_and_type_with_exact_cents():
    rows = summarize(
        [
            order("A", total="0.10"),
            order("B", total="0.20"),
            order("C", kind="SEND_SALE"),
            order("R", kind="RETURN", total="-5.00", tenders={"CASH": Decimal("-5")}),
            order("D", store="255"),
        ]
    )
    assert [(r.store_id, r.order_type, r.orders) for r in rows] == [
        ("254", "IN_STORE", 2),
        ("254", "SEND_SALE", 1),
        ("254", "RETURN", 1),
        ("255", "IN_STORE", 1),
    ]
    assert rows[0].grand_total == Decimal("0.30") and rows[0].tenders["CASH"] == Decimal("0.30")
    document = report_document("acme", "2024-01-12", rows, [], [])
    assert document["totals"]["IN_STORE"] == "10.30" and document["totals"]["RETURN"] == "-5.00"
    assert report_csv(document).splitlines()[1] == "254,IN_STORE,2,2,0.30,0.00,0.00,0.00,0.30,CASH=0.30"


def test_orders_that_do_not_add_up_are_listed():
    problems = inconsistencies([order("A"), order("B", total="10.00", parts="9.99")])
    assert problems == ["in_store B (store 254): parts add up to 9.99, grand total 10.00, difference 0.01"]


def test_reconciliation_finds_missing_orders_and_differences():
    erp = parse_erp_csv(
        "order_id,store,type,total\nA,254,IN_STORE,10.00\nB,254,IN_STORE,9.50\n"
        "Z,254,IN_STORE,3.00\nR,254,RETURN,-5.00\n"
    )
    rec = reconcile([order("A"), order("B"), order("C"), order("R", kind="RETURN", total="-5.00")], erp)
    assert [r.order_id for r in rec.missing_in_oms] == ["Z"]
    assert [o.external_id for o in rec.missing_in_erp] == ["C"]
    assert rec.total_differs == [("B", Decimal("10.00"), Decimal("9.50"))]
    assert not rec.matches
    assert reconcile([order("A")], parse_erp_csv("order_id,store,type,total\nA,254,IN_STORE,10\n")).matches


def test_a_bad_erp_file_names_line_and_column():
    with pytest.raises(ErpFileError, match="line 1: missing columns: total"):
        parse_erp_csv("order_id,store,type\n")
    with pytest.raises(ErpFileError, match="line 3: total: 'ten' is not a number"):
        parse_erp_csv("order_id,store,type,total\nA,1,IN_STORE,1\nB,1,IN_STORE,ten\n")


def test_the_audit_is_due_after_the_local_audit_time():
    assert due_business_date(datetime(2024, 3, 11, 2, 59), "03:00") is None
    assert due_business_date(datetime(2024, 3, 11, 3, 0), "03:00") == date(2024, 3, 10)


def test_the_day_to_audit_is_the_one_asked_for_or_yesterday_once_due():
    from worker.core.audit import day_to_audit

    morning, late = datetime(2024, 3, 11, 2, 0), datetime(2024, 3, 11, 4, 0)
    never = lambda d: False  # noqa: E731
    assert day_to_audit(morning, date(2024, 1, 1), True, "03:00", never) == date(2024, 1, 1)
    assert day_to_audit(morning, None, False, "03:00", never) == date(2024, 3, 10)
    assert day_to_audit(morning, None, True, "03:00", never) is None
    assert day_to_audit(late, None, True, "03:00", never) == date(2024, 3, 10)
    assert day_to_audit(late, None, True, "03:00", lambda d: True) is None  # reported already


def test_audit_settings_are_validated():
    assert retailer(audit_time="03:00", audit_time_zone="America/New_York").audit_time == "03:00"
    with pytest.raises(ConfigError, match="audit_time: must be HH:MM"):
        retailer(audit_time="3am")
    with pytest.raises(ConfigError, match="audit_time_zone: 'Mars/Olympus' is not a time zone"):
        retailer(audit_time_zone="Mars/Olympus")


def test_make_return_does_not_touch_the_original():
    sale = make_sale(9)
    before = copy.deepcopy(sale)
    make_return(9, sale)
    assert sale == before


@pytest.mark.parametrize("text", ['=HYPERLINK("http://x")', "+1+1", "-1+1", "@SUM(A1)", "\tx"])
def test_a_csv_cell_that_looks_like_a_formula_is_escaped(text):
    assert csv_cell(text) == "'" + text


def test_amounts_and_plain_text_in_csv_cells_are_kept():
    assert [csv_cell(v) for v in ("-5.00", "12", "CASH=1.00", Decimal("-1.5"), 3)] == [
        "-5.00",
        "12",
        "CASH=1.00",
        Decimal("-1.5"),
        3,
    ]


def test_the_audit_csv_escapes_a_formula_looking_store_or_tender():
    rows = summarize([order("A", total="0.10", tenders={"=cmd|' /C calc'!A0": Decimal("0.10")})])
    document = report_document("acme", "2024-01-12", rows, [], [])
    line = report_csv(document).splitlines()[1]
    assert ",'=cmd" in line


def test_run_audit_needs_only_its_ports_and_writes_where_it_is_told(tmp_path):
    from tests.unit.fakes import FakeSource
    from worker.services.audit import run_audit

    class Store:
        saved: dict[str, object] = {}

        def day_data(self, retailer_id, business_date, time_zone):
            sale = SaleOfDay(
                "S1",
                "254",
                "IN_STORE",
                "ORDER_COMPLETED",
                "oms",
                1,
                Decimal("10.00"),
                Decimal(0),
                Decimal("0.80"),
                Decimal(0),
                Decimal("10.80"),
                Decimal("10.80"),
                (TenderLine("CASH", Decimal("10.80"), "PAYMENT_SETTLED"),),
            )
            late = FileOfDay(
                7,
                "late.json",
                "claimed",
                None,
                None,
                False,
                None,
                None,
                None,
                None,
                datetime(2024, 1, 12, 20, 0, tzinfo=UTC),
                None,
            )
            return DayData(sales=[sale], files=[late])

        def save(self, retailer_id, business_date, document):
            self.saved[retailer_id] = document

    r = retailer(
        sftp={
            "host": "h",
            "username": "u",
            "private_key": "/k",
            "known_hosts": "/kh",
            "orders_dir": "/in",
            "archive_dir": "/in/a",
            "error_dir": "/in/e",
            "audit_dir": "/audit",
        }
    )
    store, source = Store(), FakeSource()
    document, orders, written = run_audit(r, date(2024, 1, 12), store, source, tmp_path)
    assert [p.name for p in written] == [
        "acme_audit_2024-01-12.csv",
        "acme_audit_2024-01-12.json",
        "acme_audit_2024-01-12.html",
    ]
    assert all(p.parent == tmp_path / "acme" for p in written)
    assert store.saved["acme"] is document and document["unfinished_files"] == ["late.json (claimed)"]
    assert sorted(source.files) == [
        "/audit/acme_audit_2024-01-12.csv",
        "/audit/acme_audit_2024-01-12.html",
        "/audit/acme_audit_2024-01-12.json",
    ]
    assert [o.external_id for o in orders] == ["S1"]


def test_returned_merchandise_goes_back_on_the_product_the_stock_holds_else_the_lines_own():
    sale = make_sale(1, "IN_STORE", lines=2)
    ret = to_return(make_return(1, sale), retailer())
    line = ret.lines[0]
    stocked = restock(ret, 42, line, "STOCKED-ID")
    assert stocked.product_id == "STOCKED-ID"
    v = stocked.variance
    assert (v.facility_id, v.id_type, v.id_value, v.available_delta, v.reason_id, v.source) == (
        ret.store_id,
        "UPCA",
        line.gtin,
        line.quantity,
        POS_RETURN,
        f"return:42:{line.item_seq}",
    )
    assert v.product_id == line.product_id and v.comments == f"POS return {ret.external_id}"
    assert restock(ret, 42, line, None).product_id == line.product_id
    anonymous = dataclasses.replace(line, product_id=None)
    assert restock(ret, 42, anonymous, None).product_id == line.gtin


def test_only_merchandise_lines_are_restocked():
    ret = to_return(make_return(4, product_class="Service"), retailer())
    assert lines_to_restock(ret) == ()
    ret = to_return(make_return(1, make_sale(1, "IN_STORE", lines=2)), retailer())
    assert lines_to_restock(ret) == ret.lines
