"""The day's audit on the pure core: the facts a file leaves in the ledger, the checks per order, the register
sequence, the ERP comparison and the HTML report."""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from tests.unit.helpers import retailer
from worker.core.audit import ErpFileError, full_report
from worker.core.audit_html import report_html
from worker.core.dayaudit import DayData, FileOfDay, Jurisdiction, SaleOfDay, TenderLine, TxnRef, file_day
from worker.core.erp import compare, erp_csv_for, parse_erp_export
from worker.core.salefacts import partial_facts, register_of, tax_jurisdictions, tender_status
from worker.demo.tlogfactory import dumps, load_sample, make_return, make_sale
from worker.services.ingest import decide
from worker.services.ports import FAILED, PROCESSED, SKIPPED

DAY = date(2024, 1, 12)


def sale(oid="A", total="10.00", tenders=None, kind="IN_STORE", store="254", status="ORDER_COMPLETED", **kw):
    total = Decimal(total)
    return SaleOfDay(
        oid,
        store,
        kind,
        status,
        kw.pop("source", "oms"),
        1,
        kw.pop("merchandise", total),
        Decimal(0),
        kw.pop("tax", Decimal(0)),
        Decimal(0),
        total,
        kw.pop("parts", total),
        tenders if tenders is not None else (TenderLine("CASH", total, "PAYMENT_SETTLED"),),
        **kw,
    )


def ledger_row(i, status="processed", txn=None, day=DAY, name=None, error=None, replayed_by=None, store="254"):
    return FileOfDay(
        i,
        name or f"f{i}.json",
        status,
        error,
        replayed_by,
        True,
        day,
        store if day else None,
        "R1" if txn is not None else None,
        str(txn) if txn is not None else None,
        datetime(2024, 1, 12, 20, 0, tzinfo=UTC),
        None,
        f"O{i}",
    )


def report(data):
    return full_report("acme", DAY, "America/New_York", data)


# ---------------------------------------------------------------- what the ledger keeps of a file


def test_a_sample_leaves_its_day_store_register_transaction_and_tax_by_jurisdiction():
    outcome = decide(dumps(load_sample("inStoreOrdersSample.json")), retailer())
    f = outcome.facts
    assert outcome.status == PROCESSED
    assert (f.business_day, f.store_id, f.register_id, f.register_txn) == (date(2024, 1, 12), "254", "ANY", "8")
    assert f.totals["total"] == "424.62" and f.totals["tenders"] == [
        {"method": "Cash", "amount": "424.62", "status": "PAYMENT_SETTLED"}
    ]
    by_name = {j["name"]: j["amount"] for j in f.totals["jurisdictions"]}
    assert by_name == {"NY CITY TAX": "17.55", "NY SPECIAL TAX359071": "1.47", "NY STATE TAX": "15.6"}
    assert sum(Decimal(a) for a in by_name.values()) == Decimal(f.totals["sales_tax"])


def test_an_in_store_sale_skipped_for_a_retailer_that_is_not_the_order_master_keeps_its_totals():
    outcome = decide(dumps(make_sale(3)), retailer(order_master=False))
    assert outcome.status == SKIPPED and outcome.facts.totals["type"] == "IN_STORE"
    assert outcome.facts.register_txn == "3"


def test_a_failed_file_keeps_what_can_be_read_of_it():
    doc = make_sale(4)
    del doc["orderProductList"][0]["gtin"]
    outcome = decide(dumps(doc), retailer())
    assert outcome.status == FAILED
    assert (outcome.facts.business_day, outcome.facts.store_id, outcome.facts.register_txn) == (DAY, "254", "4")
    assert outcome.facts.totals is None
    assert decide(b"{nope", retailer()).facts == partial_facts(None)


def test_a_return_is_negative_and_keeps_its_register():
    outcome = decide(dumps(make_return(7, register_txn=70)), retailer())
    assert outcome.facts.register_txn == "70" and Decimal(outcome.facts.totals["total"]) < 0


def test_the_register_falls_back_to_the_activity_log_and_odd_values_are_ignored():
    doc = load_sample("inStoreOrdersSample.json")
    del doc["orderAttribution"]
    assert register_of(doc) == ("ANY", "8")
    assert register_of({"orderAttribution": {"registerTransactionId": {"x": 1}}}) == (None, None)
    assert partial_facts({"creationDate": "2024-13-45 10:00:00", "storeId": "../x"}).business_day is None


@pytest.mark.parametrize(
    ("payment", "capture", "status"),
    [
        ("APPROVED", "CAPTURED", "PAYMENT_SETTLED"),
        ("APPROVED", "PENDING", "PAYMENT_AUTHORIZED"),
        ("DECLINED", None, "PAYMENT_DECLINED"),
        ("VOIDED", "CAPTURED", "PAYMENT_VOIDED"),
        (None, None, "PAYMENT_SETTLED"),
    ],
)
def test_tender_statuses_as_the_oms_names_them(payment, capture, status):
    assert tender_status(payment, capture) == status


def test_tax_rates_of_the_lines_are_used_when_the_header_has_none_and_names_are_made_printable():
    doc = load_sample("inStoreOrdersSample.json")
    doc["taxRates"] = []
    rates = tax_jurisdictions(doc)
    assert {r["name"] for r in rates} == {"NY CITY TAX", "NY SPECIAL TAX359071", "NY STATE TAX"}
    assert tax_jurisdictions({"taxRates": [{"taxName": "A\x00B", "taxAmount": 1}]})[0]["name"] == "AB"


# ---------------------------------------------------------------- files of the day


def test_a_file_without_a_sale_is_placed_by_its_name_then_its_time():
    row = ledger_row(1, day=None, name="acme_OrderTLog_2024-01-11-23_59_00.json")
    assert file_day(row, "UTC") == (date(2024, 1, 11), "file name")
    late = ledger_row(2, day=None, name="x.json")  # claimed 20:00 UTC = 15:00 in New York
    assert file_day(late, "America/New_York") == (DAY, "claim time")


def test_every_file_is_counted_and_only_explained_ones_leave_the_day_consistent():
    files = [
        ledger_row(1),
        ledger_row(2, "skipped", error="order X: in-store sale and retailer is not the order master"),
        ledger_row(3, "duplicate", error="same content as ledger row 1"),
        ledger_row(4, "failed", error="order Y: gtin: missing", replayed_by=5),
        ledger_row(5),
    ]
    document = report(DayData(sales=[sale()], files=files))
    assert document["consistent"] and document["files"]["totals"] == {
        "processed": 2,
        "failed": 0,
        "skipped": 1,
        "duplicate": 1,
        "conflict": 0,
        "in_flight": 0,
        "replayed": 1,
        "unknown": 0,
    }
    for status in ("failed", "claimed", "conflict", "quarantined"):
        bad = report(DayData(sales=[sale()], files=[*files, ledger_row(9, status, error="why")]))
        assert not bad["consistent"] and bad["differences"][0]["subject"] == "file:9", status
    other_day = report(DayData(files=[ledger_row(9, "failed", day=date(2024, 1, 11))]))
    assert other_day["consistent"] and other_day["files"]["by_store"] == []


# ---------------------------------------------------------------- every cent


def test_a_tender_short_by_a_cent_is_a_difference_and_a_tenth_of_a_cent_is_named_rounding():
    short = sale("S", "10.00", (TenderLine("CASH", Decimal("9.99"), "PAYMENT_SETTLED"),))
    fraction = sale("F", "10.00", parts=Decimal("10.004"))
    document = report(DayData(sales=[short, fraction]))
    assert [d["subject"] for d in document["differences"]] == ["order:S:tenders"]
    assert document["differences"][0]["difference"] == "-0.01"
    assert document["rounding"][0]["subject"] == "order:F:parts"
    assert "rounding -0.004" in document["rounding"][0]["text"]
    assert not document["consistent"]
    explained = report(DayData(sales=[short], notes={"order:S:tenders": "till rounding"}))
    assert explained["consistent"] and explained["differences"][0]["explained"] == "till rounding"


def test_declined_and_voided_tenders_are_kept_but_not_counted_and_unknown_ones_are_named():
    tenders = (
        TenderLine("CARD", Decimal("10.00"), "PAYMENT_DECLINED"),
        TenderLine("CARD", Decimal("10.00"), "PAYMENT_AUTHORIZED"),
        TenderLine("GIFT", Decimal("3.00"), "PAYMENT_VOIDED"),
    )
    assert report(DayData(sales=[sale(tenders=tenders)]))["consistent"]
    odd = report(DayData(sales=[sale(tenders=(TenderLine("CASH", Decimal("10"), "PAYMENT_RECEIVED"),))]))
    kinds = [d["kind"] for d in odd["differences"]]
    assert kinds == ["tender status", "tenders"]  # not counted, and said why


def test_a_cancelled_sale_is_out_of_the_totals_and_must_have_no_counted_tender():
    void = sale("V", "25.00", (TenderLine("CASH", Decimal("25.00"), "PAYMENT_VOIDED"),), status="ORDER_CANCELLED")
    document = report(DayData(sales=[sale(), void]))
    assert document["consistent"] and document["totals"]["IN_STORE"] == "10.00"
    assert document["cancelled"] == [{"order": "V", "store": "254", "type": "IN_STORE", "total": "25.00"}]
    settled = sale("V", "25.00", status="ORDER_CANCELLED")
    assert report(DayData(sales=[settled]))["differences"][0]["kind"] == "cancelled with tenders"


def test_tax_by_jurisdiction_must_make_the_tax_and_is_summed_per_store():
    rates = (
        Jurisdiction("STATE", "STATE", "0.04", Decimal("0.40")),
        Jurisdiction("CITY", "CITY", "0.045", Decimal("0.45")),
    )
    good = sale("T", "10.85", merchandise=Decimal("10.00"), tax=Decimal("0.85"), jurisdictions=rates)
    bad = sale("U", "10.95", merchandise=Decimal("10.00"), tax=Decimal("0.95"), jurisdictions=rates, store="255")
    document = report(DayData(sales=[good, bad]))
    assert [d["subject"] for d in document["differences"]] == ["order:U:tax"]
    assert {(t["store"], t["jurisdiction"]): t["amount"] for t in document["tax_by_jurisdiction"]} == {
        ("254", "CITY"): "0.45",
        ("254", "STATE"): "0.40",
        ("255", "CITY"): "0.45",
        ("255", "STATE"): "0.40",
    }
    plain = report(DayData(sales=[sale("P", "1.08", merchandise=Decimal("1"), tax=Decimal("0.08"))]))
    assert plain["tax_by_jurisdiction"][0]["jurisdiction"].startswith("unspecified")


# ---------------------------------------------------------------- register sequences


def test_gaps_within_the_day_are_listed_with_their_neighbours_and_a_restart_is_only_noted():
    files = [ledger_row(1, txn=1), ledger_row(2, "failed", txn=2, error="bad"), ledger_row(3, txn=5)]
    document = report(DayData(files=files, notes={"file:2": "replayed tomorrow"}))
    [gap] = document["missing_transactions"]
    assert (gap["missing"], gap["count"], gap["after"]["txn"], gap["before"]["file"]) == ("3-4", 2, 2, "f3.json")
    restart = DayData(
        files=[ledger_row(1, txn=1), ledger_row(2, txn=2)],
        before={("254", "R1"): TxnRef("254", "R1", 900, date(2024, 1, 11), "old.json", "Z")},
    )
    restarted = report(restart)
    assert restarted["consistent"] and "starts again at 1" in restarted["notes"][0]


def test_gaps_across_the_boundaries_name_the_other_days_transaction():
    data = DayData(
        files=[ledger_row(1, txn=12), ledger_row(2, txn=13)],
        before={("254", "R1"): TxnRef("254", "R1", 10, date(2024, 1, 11), "y.json", "Y")},
        after={("254", "R1"): TxnRef("254", "R1", 15, date(2024, 1, 13), "t.json", "T")},
    )
    gaps = report(data)["missing_transactions"]
    assert [(g["missing"], g["where"]) for g in gaps] == [
        ("11", "across the start of the day"),
        ("14", "across the end of the day"),
    ]
    assert gaps[0]["after"] == {"txn": 10, "day": "2024-01-11", "file": "y.json", "order": "Y"}


# ---------------------------------------------------------------- the ERP


def test_the_erp_export_is_read_with_every_error_named():
    lines = parse_erp_export("store,type,orders,total\n254,IN_STORE,2,20.00\n", DAY)
    assert lines[0].day == DAY and lines[0].orders == 2 and lines[0].order_id is None
    with pytest.raises(ErpFileError, match="line 1: missing columns: store, total"):
        parse_erp_export("type\n", DAY)
    with pytest.raises(ErpFileError) as exc:
        parse_erp_export(
            "store,day,type,orders,total\n254,2024-13-01,IN_STORE,1,1\n254,,EXCHANGE,1,1\n254,,IN_STORE,x,1\n", DAY
        )
    message = str(exc.value)
    assert "line 2: day" in message and "line 3: type" in message and "line 4: orders" in message


def test_the_comparison_is_order_by_order_when_the_erp_has_orders():
    ours = [sale("A", "10.00"), sale("B", "5.00", kind="SEND_SALE"), sale("C", "7.00")]
    erp = parse_erp_export(
        "store,day,type,order_id,total,tax\n254,2024-01-12,IN_STORE,A,10.00,0\n254,2024-01-12,SEND_SALE,B,5.00,0.10\n"
        "254,2024-01-11,IN_STORE,C,7.00,0\n254,2024-01-12,IN_STORE,D,1.00,0\n254,2024-01-12,IN_STORE,E,2.00,0\n",
        DAY,
    )
    result = compare(DAY, ours, erp, lambda ids: {"E": (date(2024, 1, 13), "254", "IN_STORE")})
    assert result.level == "order"
    assert [(d["kind"], d["subject"]) for d in result.differences] == [
        ("amount differs", "B"),
        ("missing in the OMS", "D"),
        ("counted in another day", "E"),
        ("counted in another day", "C"),
    ]
    assert result.differences[0]["component"] == "tax"


def test_the_comparison_is_per_store_day_and_type_when_the_erp_has_only_summaries():
    ours = [sale("A", "10.00"), sale("B", "5.00"), sale("C", "3.00", store="255")]
    assert compare(DAY, ours, parse_erp_export(erp_csv_for(ours, DAY, per_order=False), DAY), dict).matches
    assert compare(DAY, ours, parse_erp_export(erp_csv_for(ours, DAY, per_order=True), DAY), dict).matches
    erp = parse_erp_export("store,type,orders,total\n254,IN_STORE,3,15.00\n256,RETURN,1,-2.00\n", DAY)
    found = [(d["kind"], d["subject"]) for d in compare(DAY, ours, erp, dict).differences]
    assert found == [
        ("order count differs", "254/2024-01-12/IN_STORE"),
        ("missing in the ERP", "255/2024-01-12/IN_STORE"),
        ("missing in the OMS", "256/2024-01-12/RETURN"),
    ]


# ---------------------------------------------------------------- the HTML report


def test_the_html_report_is_self_contained_and_escapes_every_value():
    hostile = sale("<img src=x onerror=alert(1)>", "10.00", (TenderLine("CASH", Decimal("9.99"), "PAYMENT_SETTLED"),))
    page = report_html(report(DayData(sales=[hostile], files=[ledger_row(1, txn=1), ledger_row(2, txn=3)])))
    assert "<img" not in page and "&lt;img" in page
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert 'id="hour-chart"' in page and "not consistent" in page


def test_make_sale_reconciles_with_its_own_tax_rates():
    doc = make_sale(1, "MIXED", lines=3)
    assert sum(Decimal(str(r["taxAmount"])) for r in doc["taxRates"]) == doc["taxSubTotal"]
    assert copy.deepcopy(doc)["orderAttribution"]["registerTransactionId"] == "1"


def test_a_truncated_upload_still_says_which_transaction_it_held():
    outcome = decide(dumps(make_sale(7))[:-40], retailer())
    assert outcome.status == FAILED
    f = outcome.facts
    assert (f.business_day, f.store_id, f.register_id, f.register_txn) == (DAY, "254", "ANY", "7")


def test_an_erp_order_cancelled_here_is_named_so():
    void = sale("V", "25.00", (TenderLine("CASH", Decimal("25.00"), "PAYMENT_VOIDED"),), status="ORDER_CANCELLED")
    erp = parse_erp_export("store,type,order_id,total\n254,IN_STORE,V,25.00\n", DAY)
    [diff] = compare(DAY, [void], erp, lambda ids: {}).differences
    assert diff["kind"] == "cancelled here"


def test_the_audit_alert_fires_under_promtool_while_the_last_audit_is_not_consistent():
    import shutil
    import subprocess
    from pathlib import Path

    from tests.conftest import need

    promtool = shutil.which("promtool")
    need(promtool is not None, "promtool (apt-get install prometheus)")
    folder = Path(__file__).resolve().parents[2] / "ops" / "prometheus"
    done = subprocess.run(
        [str(promtool), "test", "rules", "audit_alerts_test.yml"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_rounding_between_the_rounded_orders_and_the_rounded_sum_is_named_for_the_row():
    halves = [sale(o, "1.005", tenders=(TenderLine("CASH", Decimal("1.005"), "PAYMENT_SETTLED"),)) for o in "AB"]
    document = report(DayData(sales=halves))
    assert document["rows"][0]["grand_total"] == "2.01" and document["rows"][0]["rounding"] == "-0.01"
    assert [r["subject"] for r in document["rounding"]] == ["row:254/IN_STORE"]
    assert document["consistent"]


def test_a_sale_skipped_twice_in_other_bytes_is_a_duplicate_of_its_first_file():
    skipped = "order O1: in-store sale and retailer is not the order master"
    a = ledger_row(1, "skipped", error=skipped)
    b = dataclasses.replace(ledger_row(2, "skipped", error=skipped), order_id="O1")
    document = report(DayData(files=[b, a]))
    assert document["files"]["totals"]["skipped"] == 1 and document["files"]["totals"]["duplicate"] == 1
    assert "counted once, from ledger row 1" in document["files"]["duplicate"][0]["reason"]
