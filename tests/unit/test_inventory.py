"""Inventory inputs: variance files reject bad records and keep good ones; load files report every bad row."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core.inventory import (
    FACILITY_COLUMNS,
    ID_TYPES,
    INVENTORY_COLUMNS,
    REASONS,
    VARIANCE_COLUMNS,
    FacilityRow,
    InputError,
    InventoryRow,
    LoadError,
    Rejected,
    Variance,
    VarianceFile,
    VarianceRecord,
    parse_facilities_csv,
    parse_inventory_csv,
    parse_variance_file,
    record_label,
    variance_file_applied,
    variance_for_record,
)

HEADER = ",".join(VARIANCE_COLUMNS)
EXAMPLE_ROW = "254,UPCA,197076109642,-1,TLTLTLLL01,VAR_INTEGR,POS in-store sale"
EXAMPLE = VarianceRecord(
    line=2,
    facility_id="254",
    id_type="UPCA",
    id_value="197076109642",
    available_delta=-1,
    location_seq_id="TLTLTLLL01",
    reason_id="VAR_INTEGR",
    comments="POS in-store sale",
)
GOOD = "255,SKU,SKU-1,3,,VAR_FOUND,"
FACILITIES = ",".join(FACILITY_COLUMNS)
INVENTORY = ",".join(INVENTORY_COLUMNS)


def variance_csv(*rows: str, header: str = HEADER) -> bytes:
    return ("\n".join((header, *rows)) + "\n").encode()


def json_record(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "facilityId": "254",
        "idType": "UPCA",
        "idValue": "197076109642",
        "availableDelta": -1,
        "locationSeqId": "TLTLTLLL01",
        "varianceReasonId": "VAR_INTEGR",
        "comments": "POS in-store sale",
    }
    record.update(overrides)
    return record


def input_error(data: bytes) -> str:
    with pytest.raises(InputError) as info:
        parse_variance_file(data)
    return str(info.value)


def load_error(parse: Any, text: str) -> LoadError:
    with pytest.raises(LoadError) as info:
        parse(text)
    return info.value


def facility(**cells: str) -> str:
    return ",".join(cells.get(name, "") for name in FACILITY_COLUMNS)


# --- variance files: formats -------------------------------------------------------------------------------


def test_documented_example_row_parses_to_one_record():
    parsed = parse_variance_file(variance_csv(EXAMPLE_ROW))
    assert parsed == VarianceFile(format="csv", records=(EXAMPLE,), rejected=())


def test_csv_content_named_json_is_detected_as_csv():
    # what arrives as <client>_InventoryUpdate_<stamp>.json in the published flow: CSV bytes
    data = variance_csv(EXAMPLE_ROW).replace(b"\n", b"\r\n")
    parsed = parse_variance_file(data)
    assert parsed.format == "csv"
    assert parsed.records == (EXAMPLE,)


def test_json_array_of_the_same_records_is_detected_and_parsed():
    data = json.dumps(
        [
            json_record(),
            json_record(
                facilityId=255,
                idType="sku",
                idValue="SKU-1",
                availableDelta=3,
                locationSeqId="",
                varianceReasonId="VAR_FOUND",
                comments=None,
            ),
        ]
    )
    parsed = parse_variance_file(data.encode())
    assert parsed.format == "json"
    assert parsed.rejected == ()
    assert parsed.records == (
        VarianceRecord(1, "254", "UPCA", "197076109642", -1, "TLTLTLLL01", "VAR_INTEGR", "POS in-store sale"),
        VarianceRecord(2, "255", "SKU", "SKU-1", 3, None, "VAR_FOUND", None),
    )


def test_json_records_may_omit_optional_keys_and_carry_unknown_ones():
    record = json_record(sourceSystem="POS")
    del record["locationSeqId"], record["comments"]
    parsed = parse_variance_file(json.dumps([record]).encode())
    assert parsed.records[0].location_seq_id is None
    assert parsed.records[0].comments is None


def with_delta(delta: str) -> str:
    """A JSON record whose availableDelta is written exactly as given."""
    return json.dumps(json_record(availableDelta="DELTA")).replace('"DELTA"', delta)


def test_json_integral_floats_and_numeric_strings_are_whole_deltas():
    data = "[" + ",".join(with_delta(delta) for delta in ("2.0", '"-4"', '"+2"', "1e2", "-3")) + "]"
    parsed = parse_variance_file(data.encode())
    assert parsed.rejected == ()
    assert [record.available_delta for record in parsed.records] == [2, -4, 2, 100, -3]


@pytest.mark.parametrize("prefix", [b"\xef\xbb\xbf", b"\xef\xbb\xbf \r\n\t"], ids=["bom", "bom-and-whitespace"])
def test_a_utf8_bom_is_ignored_for_json(prefix: bytes):
    parsed = parse_variance_file(prefix + json.dumps([json_record()]).encode())
    assert parsed.format == "json"
    assert parsed.records[0].facility_id == "254"


def test_a_utf8_bom_is_ignored_for_csv_and_the_header_stays_line_1():
    parsed = parse_variance_file(b"\xef\xbb\xbf" + variance_csv(EXAMPLE_ROW))
    assert parsed.records == (EXAMPLE,)


def test_header_may_reorder_pad_and_add_columns_and_omit_the_optional_ones():
    header = " varianceReasonId , storeName,idValue,availableDelta,idType,facilityId"
    parsed = parse_variance_file(variance_csv("VAR_LOST,Main St,SKU-9,-2,sku,254", header=header))
    assert parsed.records == (VarianceRecord(2, "254", "SKU", "SKU-9", -2, None, "VAR_LOST", None),)


def test_blank_lines_and_comma_only_rows_are_skipped_and_line_numbers_stay_those_of_the_file():
    parsed = parse_variance_file(variance_csv("", EXAMPLE_ROW, ",,,,,,", "   ", GOOD))
    assert [record.line for record in parsed.records] == [3, 6]


def test_a_quoted_comment_spanning_lines_keeps_later_line_numbers_true():
    parsed = parse_variance_file(variance_csv('254,UPCA,1,-1,,POS_SALE,"first\nsecond"', "254,x,1,1,,POS_SALE,"))
    assert parsed.records[0].comments == "first\nsecond"
    assert parsed.rejected[0].reason.startswith("line 4: idType:")


def test_values_are_stripped_and_empty_optional_values_become_none():
    parsed = parse_variance_file(variance_csv(" 254 , upca , 1 , +2 ,  , POS_RETURN ,  "))
    assert parsed.records == (VarianceRecord(2, "254", "UPCA", "1", 2, None, "POS_RETURN", None),)


@pytest.mark.parametrize(
    ("written", "delta"),
    [
        ("-1", -1),
        ("3", 3),
        ("+2", 2),
        ("2.0", 2),
        ("-7.000", -7),
        ("1000000", 1_000_000),
        ("-1000000", -1_000_000),
    ],
)
def test_available_delta_accepts_whole_numbers_in_their_usual_spellings(written: str, delta: int):
    parsed = parse_variance_file(variance_csv(f"254,UPCA,1,{written},,POS_SALE,"))
    assert parsed.records[0].available_delta == delta


@pytest.mark.parametrize("id_type", ["upca", "Ean", "gtin", "SKU"])
def test_id_type_is_matched_without_case_and_stored_upper_case(id_type: str):
    parsed = parse_variance_file(variance_csv(f"254,{id_type},1,1,,POS_SALE,"))
    assert parsed.records[0].id_type == id_type.upper()


# --- variance files: rejected records ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (",UPCA,1,-1,,POS_SALE,", "line 3: facilityId: required"),
        (f"{'F' * 61},UPCA,1,-1,,POS_SALE,", "line 3: facilityId: is longer than 60 characters"),
        ("254,,1,-1,,POS_SALE,", "line 3: idType: required"),
        ("254,UPC,1,-1,,POS_SALE,", "line 3: idType: 'UPC' is not one of SKU, UPCA, EAN, GTIN"),
        ("254,UPCA,,-1,,POS_SALE,", "line 3: idValue: required"),
        ("254,UPCA,12\t3,-1,,POS_SALE,", "line 3: idValue: '12\\t3' contains a control character"),
        ("254,UPCA,1,x,,POS_SALE,", "line 3: availableDelta: 'x' is not a whole number"),
        ("254,UPCA,1,abc,,POS_SALE,", "line 3: availableDelta: 'abc' is not a whole number"),
        ("254,UPCA,1,1.5,,POS_SALE,", "line 3: availableDelta: '1.5' is not a whole number"),
        ("254,UPCA,1,,,POS_SALE,", "line 3: availableDelta: required"),
        ("254,UPCA,1,NaN,,POS_SALE,", "line 3: availableDelta: 'NaN' is not a whole number"),
        ("254,UPCA,1,Infinity,,POS_SALE,", "line 3: availableDelta: 'Infinity' is not a whole number"),
        ("254,UPCA,1,1e3,,POS_SALE,", "line 3: availableDelta: '1e3' is not a whole number"),
        ("254,UPCA,1,1_000,,POS_SALE,", "line 3: availableDelta: '1_000' is not a whole number"),
        ("254,UPCA,1,0,,POS_SALE,", "line 3: availableDelta: '0' is zero; a variance must change the quantity"),
        ("254,UPCA,1,-0.0,,POS_SALE,", "line 3: availableDelta: '-0.0' is zero; a variance must change the quantity"),
        ("254,UPCA,1,1000001,,POS_SALE,", "line 3: availableDelta: '1000001' is not between -1000000 and 1000000"),
        ("254,UPCA,1,-1000001,,POS_SALE,", "line 3: availableDelta: '-1000001' is not between -1000000 and 1000000"),
        ("254,UPCA,1,-1,,,", "line 3: varianceReasonId: required"),
        ("254,UPCA,1,-1,,SALE,", "line 3: varianceReasonId: 'SALE' is not one of " + ", ".join(REASONS)),
        ("254,UPCA,1,-1,,pos_sale,", "line 3: varianceReasonId: 'pos_sale' is not one of " + ", ".join(REASONS)),
        (f"254,UPCA,1,-1,,POS_SALE,{'c' * 1001}", "line 3: comments: is longer than 1000 characters"),
        ("254,UPCA,1,-1,,POS_SALE,in-store,sale", "line 3: has 8 values but the header has 7 columns"),
    ],
)
def test_a_bad_record_is_rejected_naming_line_and_field_while_good_records_parse(row: str, reason: str):
    parsed = parse_variance_file(variance_csv(EXAMPLE_ROW, row, GOOD))
    assert parsed.records == (EXAMPLE, VarianceRecord(4, "255", "SKU", "SKU-1", 3, None, "VAR_FOUND", None))
    assert len(parsed.rejected) == 1
    assert parsed.rejected[0].line == 3
    assert parsed.rejected[0].reason.startswith(reason)


def test_a_rejected_record_names_every_bad_field():
    parsed = parse_variance_file(variance_csv(",upc,1,x,,SALE,"))
    assert parsed.rejected == (
        Rejected(
            2,
            "line 2: facilityId: required; idType: 'upc' is not one of SKU, UPCA, EAN,"
            " GTIN; availableDelta: 'x' is not a whole number; varianceReasonId:"
            " 'SALE' is not one of " + ", ".join(REASONS),
        ),
    )


def test_trailing_empty_values_beyond_the_header_are_harmless():
    parsed = parse_variance_file(variance_csv(EXAMPLE_ROW + ",,"))
    assert parsed.records == (EXAMPLE,)


def test_a_short_row_lacks_only_its_optional_trailing_values():
    parsed = parse_variance_file(variance_csv("254,UPCA,1,-1,,POS_SALE"))
    assert parsed.records[0].comments is None


@pytest.mark.parametrize(
    ("delta", "reason"),
    [
        ("NaN", "record 2: availableDelta: NaN is not a whole number"),
        ("Infinity", "record 2: availableDelta: Infinity is not a whole number"),
        ("-Infinity", "record 2: availableDelta: -Infinity is not a whole number"),
        ("1.5", "record 2: availableDelta: 1.5 is not a whole number"),
        ("0", "record 2: availableDelta: 0 is zero"),
        ("0.0", "record 2: availableDelta: 0.0 is zero"),
        ("true", "record 2: availableDelta: must be a number, found boolean"),
        ("null", "record 2: availableDelta: required"),
        ('"abc"', "record 2: availableDelta: 'abc' is not a whole number"),
        ("[1]", "record 2: availableDelta: must be a number, found array"),
        ("1e999999999", "record 2: availableDelta: 1E+999999999 is not between -1000000 and 1000000"),
        ("9" * 5000, "record 2: availableDelta: 9999999999"),
    ],
)
def test_a_bad_json_record_is_rejected_naming_record_and_field(delta: str, reason: str):
    good = json.dumps(json_record())
    parsed = parse_variance_file(f"[{good}, {with_delta(delta)}, {good}]".encode())
    assert [record.line for record in parsed.records] == [1, 3]
    assert [r.line for r in parsed.rejected] == [2]
    assert parsed.rejected[0].reason.startswith(reason)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"id": 1}, "record 1: facilityId: must be text, found object"),
        (True, "record 1: facilityId: must be text, found boolean"),
        (None, "record 1: facilityId: required"),
    ],
)
def test_a_json_facility_id_must_be_text_or_a_number(value: Any, reason: str):
    parsed = parse_variance_file(json.dumps([json_record(facilityId=value)]).encode())
    assert parsed.records == ()
    assert parsed.rejected[0].reason.startswith(reason)


def test_records_and_rejections_keep_file_order():
    rows = [f"{n},SKU,P{n},{n},,VAR_MANUAL," if n % 3 else f"{n},SKU,P{n},0,,VAR_MANUAL," for n in range(1, 10)]
    parsed = parse_variance_file(variance_csv(*rows))
    assert [record.facility_id for record in parsed.records] == ["1", "2", "4", "5", "7", "8"]
    assert [rejected.line for rejected in parsed.rejected] == [4, 7, 10]


def test_a_file_whose_records_are_all_rejected_is_still_a_file():
    parsed = parse_variance_file(variance_csv("254,UPCA,1,0,,POS_SALE,"))
    assert parsed.records == ()
    assert len(parsed.rejected) == 1


# --- variance files: inputs that cannot be used at all ----------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file (0 bytes)"),
        (b"facilityId,idType\n254,\xff", "not UTF-8: byte 0xff at offset 22"),
        (b"\xef\xbb\xbf[\xc3(", "not UTF-8: byte 0xc3 at offset 4"),
        (b" \n\t ", "no records: the file holds only whitespace"),
        (b'[{"facilityId": "254",\n "idType" "UPCA"}]', "invalid JSON at line 2 column 11: Expecting ':' delimiter"),
        (b"[" * 100_000, "invalid JSON"),
        (json.dumps(json_record()).encode(), "top level must be a JSON array of records, found object"),
        (b"[]", "no records: the JSON array is empty"),
        (json.dumps([json_record(), [1, 2]]).encode(), "record 2: must be a JSON object, found array"),
        (json.dumps(["254,UPCA,1,-1"]).encode(), "record 1: must be a JSON object, found string"),
        (variance_csv(), "no records after the header on line 1"),
        (variance_csv("", ",,,"), "no records after the header on line 1"),
        (
            variance_csv(EXAMPLE_ROW, header="facilityId,idType,idValue,locationSeqId,varianceReasonId"),
            "line 1: missing columns: availableDelta",
        ),
        (
            variance_csv(EXAMPLE_ROW, header=HEADER.replace("idType", "IdType").replace("idValue", "sku")),
            "line 1: missing columns: idType, idValue",
        ),
        (variance_csv(EXAMPLE_ROW, header=HEADER.replace(",", ";")), "line 1: missing columns: facilityId, idType"),
        (variance_csv(EXAMPLE_ROW, header=EXAMPLE_ROW), "line 1: missing columns: facilityId"),
        (variance_csv(EXAMPLE_ROW, header=HEADER + ",idValue"), "line 1: columns appear twice: idValue"),
        (variance_csv(EXAMPLE_ROW, '254,UPCA,1,-1,,POS_SALE,"unclosed'), "line 3: not valid CSV"),
        (variance_csv('254,"UPCA"x,1,-1,,POS_SALE,'), "line 2: not valid CSV"),
    ],
    ids=[
        "empty",
        "not-utf8",
        "not-utf8-after-bom",
        "whitespace",
        "bad-json",
        "json-too-deep",
        "json-object",
        "json-empty-array",
        "json-array-item-not-object",
        "json-array-of-strings",
        "header-only",
        "header-and-blanks",
        "missing-column",
        "missing-columns-by-case",
        "semicolon-separated",
        "no-header-row",
        "column-twice",
        "unclosed-quote",
        "text-after-quote",
    ],
)
def test_an_unusable_input_raises_input_error_saying_why(data: bytes, message: str):
    assert input_error(data).startswith(message)


def test_a_missing_column_error_shows_the_header_it_found():
    message = input_error(variance_csv(EXAMPLE_ROW, header=HEADER.replace(",", ";")))
    assert "facilityId;idType;idValue" in message


def test_input_error_is_a_value_error():
    assert issubclass(InputError, ValueError)


# --- the round trip ---------------------------------------------------------------------------------------

_TEXT = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"))
_FREE_TEXT = st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00")


def _stripped(alphabet: st.SearchStrategy[str], max_size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=1, max_size=max_size).map(str.strip).filter(bool)


@st.composite
def variance_rows(draw: st.DrawFn) -> tuple[VarianceRecord, dict[str, str]]:
    """A valid record (line unset) and the cells that spell it, some in the other accepted spellings."""
    delta = draw(st.integers(-1_000_000, 1_000_000).filter(bool))
    id_type = draw(st.sampled_from(ID_TYPES))
    record = VarianceRecord(
        line=0,
        facility_id=draw(_stripped(_TEXT, 60)),
        id_type=id_type,
        id_value=draw(_stripped(_TEXT, 40)),
        available_delta=delta,
        location_seq_id=draw(st.none() | _stripped(_TEXT, 20)),
        reason_id=draw(st.sampled_from(REASONS)),
        comments=draw(st.none() | _stripped(_FREE_TEXT, 80)),
    )
    spelled_delta = draw(st.sampled_from([str(delta), f"{delta}.0", f"+{delta}" if delta > 0 else str(delta)]))
    cells = {
        "facilityId": record.facility_id,
        "idType": draw(st.sampled_from([id_type, id_type.lower()])),
        "idValue": record.id_value,
        "availableDelta": spelled_delta,
        "locationSeqId": record.location_seq_id or "",
        "varianceReasonId": record.reason_id,
        "comments": record.comments or "",
    }
    return record, cells


@settings(database=None, max_examples=150, deadline=None)
@given(rows=st.lists(variance_rows(), min_size=1, max_size=12), columns=st.permutations(VARIANCE_COLUMNS))
def test_valid_records_written_as_csv_round_trip_exactly(
    rows: list[tuple[VarianceRecord, dict[str, str]]], columns: list[str]
):
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(columns)
    expected = []
    for record, cells in rows:
        # a quoted value may hold line breaks: a record's line is where it starts
        line = len(re.findall(r"\r\n|\r|\n", out.getvalue())) + 1
        writer.writerow([cells[name] for name in columns])
        expected.append(dataclasses.replace(record, line=line))
    parsed = parse_variance_file(out.getvalue().encode())
    assert parsed.rejected == ()
    assert parsed.records == tuple(expected)


# --- facilities load --------------------------------------------------------------------------------------


def test_facilities_load_treats_empty_cells_as_unknown_and_no_limit():
    rows = parse_facilities_csv(f"{FACILITIES}\n{facility(facility_id='254')}\n")
    assert rows == [FacilityRow("254", None, None, None, None, None, True, None, None, None)]


def test_facilities_load_reads_every_column_in_any_order():
    columns = list(reversed(FACILITY_COLUMNS))
    values = {
        "facility_id": "WH-1",
        "name": "West, warehouse",
        "facility_type": "WAREHOUSE",
        "postal_code": "91911",
        "latitude": "32.64",
        "longitude": "-117.08",
        "allow_brokering": "N",
        "max_orders_per_day": "250",
        "facility_group": "WEST",
        "sequence": "-2",
    }
    out = io.StringIO(newline="")
    csv.writer(out).writerows([columns, [values[name] for name in columns]])
    assert parse_facilities_csv("\ufeff" + out.getvalue()) == [
        FacilityRow("WH-1", "West, warehouse", "WAREHOUSE", "91911", 32.64, -117.08, False, 250, "WEST", -2),
    ]


@pytest.mark.parametrize(
    ("written", "allowed"),
    [
        ("true", True),
        ("TRUE", True),
        ("Yes", True),
        ("y", True),
        ("1", True),
        ("", True),
        ("false", False),
        ("No", False),
        ("N", False),
        ("0", False),
    ],
)
def test_allow_brokering_accepts_the_usual_spellings(written: str, allowed: bool):
    rows = parse_facilities_csv(f"{FACILITIES}\n{facility(facility_id='254', allow_brokering=written)}\n")
    assert rows[0].allow_brokering is allowed


def test_coordinates_may_sit_on_the_bounds_and_zero_orders_is_a_limit():
    row = facility(facility_id="254", latitude="-90", longitude="180.0", max_orders_per_day="0")
    rows = parse_facilities_csv(f"{FACILITIES}\n{row}\n")
    assert (rows[0].latitude, rows[0].longitude, rows[0].max_orders_per_day) == (-90.0, 180.0, 0)


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ({"latitude": "91.5", "longitude": "0"}, "line 3: latitude: '91.5' is not between -90 and 90"),
        ({"latitude": "0", "longitude": "-180.01"}, "line 3: longitude: '-180.01' is not between -180 and 180"),
        ({"latitude": "abc", "longitude": "1"}, "line 3: latitude: 'abc' is not a number"),
        ({"latitude": "nan", "longitude": "1"}, "line 3: latitude: 'nan' is not a number"),
        ({"latitude": "1", "longitude": "inf"}, "line 3: longitude: 'inf' is not a number"),
        ({"latitude": "12.5"}, "line 3: longitude: required when latitude is given"),
        ({"longitude": "12.5"}, "line 3: latitude: required when longitude is given"),
        ({"allow_brokering": "maybe"}, "line 3: allow_brokering: 'maybe' is not one of true/false/yes/no/y/n/1/0"),
        ({"max_orders_per_day": "-1"}, "line 3: max_orders_per_day: '-1' is not between 0 and"),
        ({"max_orders_per_day": "2.5"}, "line 3: max_orders_per_day: '2.5' is not a whole number"),
        ({"max_orders_per_day": "ten"}, "line 3: max_orders_per_day: 'ten' is not a whole number"),
        ({"sequence": "x"}, "line 3: sequence: 'x' is not a whole number"),
        ({"facility_id": "", "name": "Main St"}, "line 3: facility_id: required"),
        ({"facility_id": "F" * 61}, "line 3: facility_id: is longer than 60 characters"),
    ],
)
def test_a_bad_facility_row_is_a_load_error_naming_line_and_field(cells: dict[str, str], message: str):
    text = "\n".join([FACILITIES, facility(facility_id="253"), facility(**{"facility_id": "254", **cells})]) + "\n"
    error = load_error(parse_facilities_csv, text)
    assert len(error.errors) == 1
    assert str(error).startswith(message)


def test_a_facility_row_with_the_wrong_number_of_values_is_a_load_error():
    error = load_error(parse_facilities_csv, f"{FACILITIES}\n254,Main\n")
    assert str(error) == "line 2: has 2 values but the header has 10 columns"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (FACILITIES.replace(",sequence", ""), "line 1: missing columns: sequence"),
        (FACILITIES + ",region", "line 1: unknown columns: region"),
        (FACILITIES + ",", "line 1: unknown columns: (blank)"),
        (FACILITIES + ",name", "line 1: columns appear twice: name"),
        (" " + FACILITIES.replace(",", " , "), None),
    ],
)
def test_the_facilities_header_is_strict_but_tolerates_spaces(header: str, message: str | None):
    text = f"{header}\n{facility(facility_id='254')}{',' * (header.count(',') - FACILITIES.count(','))}\n"
    if message is None:
        assert parse_facilities_csv(text)[0].facility_id == "254"
    else:
        assert str(load_error(parse_facilities_csv, text)).startswith(message)


def test_every_bad_facility_row_is_reported_at_once():
    text = (
        "\n".join(
            [
                FACILITIES,
                facility(facility_id="1", latitude="91.5", longitude="0", allow_brokering="maybe"),
                facility(facility_id="2"),
                "",
                facility(facility_id="", sequence="x"),
            ]
        )
        + "\n"
    )
    error = load_error(parse_facilities_csv, text)
    assert error.errors == (
        "line 2: latitude: '91.5' is not between -90 and 90",
        "line 2: allow_brokering: 'maybe' is not one of true/false/yes/no/y/n/1/0",
        "line 5: facility_id: required",
        "line 5: sequence: 'x' is not a whole number",
    )
    assert str(error) == "; ".join(error.errors)


def test_a_repeated_facility_is_a_load_error_naming_both_lines():
    text = (
        "\n".join(
            [
                FACILITIES,
                facility(facility_id="254"),
                facility(facility_id="255"),
                facility(facility_id="254", name="again"),
            ]
        )
        + "\n"
    )
    assert str(load_error(parse_facilities_csv, text)) == "line 4: facility_id '254' repeats line 2"


def test_a_repeat_is_reported_even_when_the_first_row_has_other_errors():
    text = "\n".join([FACILITIES, facility(facility_id="254", sequence="x"), facility(facility_id="254")]) + "\n"
    assert load_error(parse_facilities_csv, text).errors == (
        "line 2: sequence: 'x' is not a whole number",
        "line 3: facility_id '254' repeats line 2",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file: no header row"),
        ("\n\n", "empty file: no header row"),
        (f"{FACILITIES}\n", "line 1: no data rows after the header"),
        (f"{FACILITIES}\n\n{',' * 9}\n", "line 1: no data rows after the header"),
        (f'{FACILITIES}\n"254,,,,,,,,,\n', "line 2: not valid CSV"),
    ],
)
def test_a_facilities_file_without_rows_or_not_csv_is_a_load_error(text: str, message: str):
    assert str(load_error(parse_facilities_csv, text)).startswith(message)


# --- inventory load ---------------------------------------------------------------------------------------


def test_inventory_load_reads_rows_with_and_without_gtin_and_negative_on_hand():
    text = f"{INVENTORY}\n254,P1,00012345678905,12\n254,P2,,-3\n255,P1,12345678,+10000000\n"
    assert parse_inventory_csv(text) == [
        InventoryRow("254", "P1", "00012345678905", 12),
        InventoryRow("254", "P2", None, -3),
        InventoryRow("255", "P1", "12345678", 10_000_000),
    ]


def test_inventory_columns_may_come_in_any_order():
    assert parse_inventory_csv("quantity_on_hand,gtin,product_id,facility_id\n5,,P1,254\n") == [
        InventoryRow("254", "P1", None, 5)
    ]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (",P1,,1", "line 2: facility_id: required"),
        ("254,,,1", "line 2: product_id: required"),
        ("254,P1,1234567,1", "line 2: gtin: '1234567' is not 8 to 14 digits"),
        ("254,P1,123456789012345,1", "line 2: gtin: '123456789012345' is not 8 to 14 digits"),
        ("254,P1,12345678901X,1", "line 2: gtin: '12345678901X' is not 8 to 14 digits"),
        ("254,P1,,", "line 2: quantity_on_hand: required"),
        ("254,P1,,1.5", "line 2: quantity_on_hand: '1.5' is not a whole number"),
        ("254,P1,,many", "line 2: quantity_on_hand: 'many' is not a whole number"),
        ("254,P1,,10000001", "line 2: quantity_on_hand: '10000001' is not between -10000000 and 10000000"),
        ("254,P1,,-10000001", "line 2: quantity_on_hand: '-10000001' is not between -10000000 and 10000000"),
        ("254,P1,1", "line 2: has 3 values but the header has 4 columns"),
    ],
)
def test_a_bad_inventory_row_is_a_load_error_naming_line_and_field(row: str, message: str):
    error = load_error(parse_inventory_csv, f"{INVENTORY}\n{row}\n254,P9,,1\n")
    assert error.errors == (message,)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("facility_id,product_id,quantity_on_hand", "line 1: missing columns: gtin"),
        ("facility_id,product_id,gtin,qoh", "line 1: missing columns: quantity_on_hand"),
        (INVENTORY + ",location", "line 1: unknown columns: location"),
    ],
)
def test_the_inventory_header_must_hold_exactly_its_columns(header: str, message: str):
    assert str(load_error(parse_inventory_csv, f"{header}\n254,P1,,1\n")).startswith(message)


def test_a_header_with_missing_and_unknown_columns_reports_both():
    error = load_error(parse_inventory_csv, "facility_id,product,gtin,quantity_on_hand\n254,P1,,1\n")
    assert [e.split(" (")[0] for e in error.errors] == [
        "line 1: missing columns: product_id",
        "line 1: unknown columns: product",
    ]


def test_a_repeated_facility_and_product_is_a_load_error_naming_both_lines():
    text = f"{INVENTORY}\n254,P1,,1\n255,P1,,1\n254,P2,,1\n254,P1,,7\n"
    error = load_error(parse_inventory_csv, text)
    assert error.errors == ("line 5: facility_id '254', product_id 'P1' repeats line 2",)


def test_every_bad_inventory_row_is_reported_at_once_and_nothing_loads():
    text = f"{INVENTORY}\n254,P1,,1\n254,P2,abc,x\n254,P3,,2\n254,P1,,3\n"
    error = load_error(parse_inventory_csv, text)
    assert error.errors == (
        "line 3: gtin: 'abc' is not 8 to 14 digits",
        "line 3: quantity_on_hand: 'x' is not a whole number",
        "line 5: facility_id '254', product_id 'P1' repeats line 2",
    )


@pytest.mark.parametrize("text", ["", f"{INVENTORY}\n", f"{INVENTORY}\n\n,,,\n"])
def test_an_inventory_file_without_rows_is_a_load_error(text: str):
    load_error(parse_inventory_csv, text)


def test_load_error_is_a_value_error():
    assert issubclass(LoadError, ValueError)


# ---------------------------------------------------------------- applying a variance file: the core's decisions


def test_a_record_of_a_known_facility_and_product_becomes_a_variance_once_per_file_and_line():
    change = variance_for_record(EXAMPLE, 7, "line", True, "VLAKOTA")
    assert change == Variance(
        "254", "UPCA", "197076109642", -1, "VAR_INTEGR", "file:7:2", "VLAKOTA", "TLTLTLLL01", "POS in-store sale"
    )


def test_a_record_of_an_unknown_facility_or_product_is_rejected_naming_its_place_and_field():
    assert variance_for_record(EXAMPLE, 7, "line", False, None) == Rejected(
        2, "line 2: facilityId: unknown facility '254'"
    )
    assert variance_for_record(EXAMPLE, 7, "record", True, None) == Rejected(
        2, "record 2: idValue: unknown product UPCA '197076109642'"
    )
    assert record_label("json") == "record" and record_label("csv") == "line"


def test_a_variance_file_with_records_applied_is_processed_and_lists_the_rejected_by_line():
    parsed = VarianceFile("csv", (), (Rejected(6, "line 6: availableDelta: bad"),))
    result = variance_file_applied(parsed, 2, [Rejected(5, "line 5: idValue: x"), Rejected(4, "line 4: facility")])
    assert not result.failed and result.applied == 2
    assert [r.line for r in result.rejected] == [4, 5, 6]
    assert result.summary == (
        "3 of 5 records rejected: line 4: facility; line 5: idValue: x; line 6: availableDelta: bad"
    )


def test_a_variance_file_with_none_applied_fails_and_a_clean_one_has_no_summary():
    parsed = VarianceFile("json", (), ())
    assert variance_file_applied(parsed, 0, [Rejected(1, "record 1: no")]).failed
    clean = variance_file_applied(parsed, 3, [])
    assert not clean.failed and clean.summary is None and clean.rejected == ()


def test_the_summary_shows_five_reasons_and_counts_the_rest():
    rejected = [Rejected(n, f"line {n}: bad") for n in range(2, 10)]
    summary = variance_file_applied(VarianceFile("csv", (), ()), 1, rejected).summary
    assert summary is not None and summary.startswith("8 of 9 records rejected: line 2: bad;")
    assert summary.endswith("line 6: bad; and 3 more")


def test_a_json_variance_file_with_a_duplicate_key_fails_as_a_whole_naming_the_key():
    # which of two availableDelta values the producer meant cannot be known: the file goes back to it
    data = f'[{json.dumps(json_record())}, {{"facilityId": "254", "availableDelta": 1, "availableDelta": 5}}]'
    assert input_error(data.encode()) == 'invalid JSON: duplicate key "availableDelta" in an object'
