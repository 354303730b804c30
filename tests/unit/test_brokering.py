"""The brokering engine: rule order, splitting, filters, sorting and what cannot be filled."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core.brokering import (
    DEFAULT_RULES,
    SORT_KEYS,
    Allocation,
    BrokeringPlan,
    Facility,
    LineToPlace,
    Rule,
    ShipGroup,
    Unfillable,
    broker,
    distance_km,
)

NEW_YORK = (40.7128, -74.0060)
NEWARK = (40.7357, -74.1724)
PHILADELPHIA = (39.9526, -75.1652)
LOS_ANGELES = (34.0522, -118.2437)
NOWHERE = (None, None)


def facility(facility_id, at=NEWARK, group=None, allow=True, max_orders=None, today=0, sequence=None):
    return Facility(
        facility_id=facility_id,
        facility_group=group,
        latitude=at[0],
        longitude=at[1],
        allow_brokering=allow,
        max_orders_per_day=max_orders,
        orders_today=today,
        sequence=sequence,
    )


def line(item_seq, gtin="G1", quantity=1):
    return LineToPlace(item_seq=item_seq, gtin=gtin, quantity=quantity)


def ship_group(*lines, may_split=False, excluded=None, to=NEW_YORK):
    return ShipGroup(
        order_id=1,
        lines=tuple(lines),
        may_split=may_split,
        excluded_facility_id=excluded,
        latitude=to[0],
        longitude=to[1],
    )


def placed(plan):
    """item_seq -> facility, the shape most assertions care about."""
    return {a.item_seq: a.facility_id for a in plan.allocations}


def unfilled(plan):
    return [u.item_seq for u in plan.unfillable]


# Rule order


def test_by_default_the_nearest_facility_with_stock_ships_the_whole_group():
    facilities = [facility("LA", LOS_ANGELES), facility("PHL", PHILADELPHIA), facility("EWR", NEWARK)]
    stock = {("LA", "G1"): 5, ("PHL", "G1"): 5, ("EWR", "G1"): 5, ("LA", "G2"): 5, ("PHL", "G2"): 5}
    plan = broker(ship_group(line(1, "G1"), line(2, "G2")), facilities, stock)
    assert placed(plan) == {1: "PHL", 2: "PHL"}  # EWR is nearer but lacks G2, and the default rule does not split
    assert {a.rule for a in plan.allocations} == {"default: nearest facility"}


def test_the_first_rule_that_can_place_the_whole_group_wins():
    facilities = [facility("WH", PHILADELPHIA, group="WAREHOUSES"), facility("ST", NEWARK, group="STORES")]
    stock = {("WH", "G1"): 5, ("ST", "G1"): 5}
    rules = [Rule("warehouses", facility_group="WAREHOUSES"), Rule("stores", facility_group="STORES")]
    plan = broker(ship_group(line(1)), facilities, stock, rules)
    assert plan == BrokeringPlan((Allocation(1, "WH", 1, "warehouses", "129.6 km"),), ())


def test_a_rule_that_cannot_place_the_group_falls_through_to_the_next_rule():
    facilities = [facility("WH", PHILADELPHIA, group="WAREHOUSES"), facility("ST", NEWARK, group="STORES")]
    stock = {("WH", "G1"): 1, ("ST", "G1"): 5}
    rules = [Rule("warehouses", facility_group="WAREHOUSES"), Rule("stores", facility_group="STORES")]
    plan = broker(ship_group(line(1, quantity=2)), facilities, stock, rules)
    assert [(a.facility_id, a.rule) for a in plan.allocations] == [("ST", "stores")]
    assert plan.unfillable == ()


def test_a_facility_that_does_not_allow_brokering_is_never_chosen():
    facilities = [facility("NO", NEWARK, allow=False), facility("YES", LOS_ANGELES)]
    stock = {("NO", "G1"): 5, ("YES", "G1"): 5}
    assert placed(broker(ship_group(line(1)), facilities, stock)) == {1: "YES"}


# Split or not


def test_one_facility_holding_every_line_is_preferred_to_splitting_even_when_splitting_is_allowed():
    facilities = [facility("NEAR", NEWARK), facility("FAR", LOS_ANGELES)]
    stock = {("NEAR", "G1"): 5, ("FAR", "G1"): 5, ("FAR", "G2"): 5}
    rules = [Rule("split", allow_split=True)]
    plan = broker(ship_group(line(1, "G1"), line(2, "G2"), may_split=True), facilities, stock, rules)
    assert placed(plan) == {1: "FAR", 2: "FAR"}


def test_a_split_rule_uses_the_fewest_facilities_not_the_first_per_line():
    # Issue 12, "fewest shipments": line by line would give three packages (NEAR, MID, FAR); two will do.
    facilities = [facility("NEAR", NEWARK), facility("MID", PHILADELPHIA), facility("FAR", LOS_ANGELES)]
    stock = {("NEAR", "G1"): 5, ("MID", "G2"): 5, ("FAR", "G1"): 5, ("FAR", "G2"): 1, ("FAR", "G3"): 5}
    rules = [Rule("split", allow_split=True, sort=("distance",))]
    group = ship_group(line(1, "G1"), line(2, "G2", 2), line(3, "G3"), may_split=True)
    plan = broker(group, facilities, stock, rules)
    assert placed(plan) == {1: "FAR", 2: "MID", 3: "FAR"}
    assert plan.unfillable == ()


def test_among_splits_of_as_many_facilities_the_rules_sort_decides():
    facilities = [facility("NEAR", NEWARK), facility("MID", PHILADELPHIA), facility("FAR", LOS_ANGELES)]
    stock = {("NEAR", "G1"): 5, ("MID", "G2"): 5, ("FAR", "G1"): 5, ("FAR", "G2"): 5, ("FAR", "G3"): 5}
    rules = [Rule("split", allow_split=True, sort=("distance",))]
    group = ship_group(line(1, "G1"), line(2, "G2"), may_split=True)
    assert placed(broker(group, facilities[:2], stock, rules)) == {1: "NEAR", 2: "MID"}


@pytest.mark.parametrize(("may_split", "allow_split"), [(True, False), (False, True), (False, False)])
def test_without_both_permissions_a_group_is_placed_whole_by_a_rule_or_not_at_all(may_split, allow_split):
    facilities = [
        facility("A", NEWARK, group="STORES"),
        facility("B", NEWARK, group="STORES"),
        facility("WH", LOS_ANGELES, group="WAREHOUSES"),
    ]
    stock = {("A", "G1"): 5, ("B", "G2"): 5, ("WH", "G1"): 5, ("WH", "G2"): 5}
    rules = [
        Rule("stores", facility_group="STORES", allow_split=allow_split),
        Rule("warehouses", facility_group="WAREHOUSES", allow_split=allow_split),
    ]
    group = ship_group(line(1, "G1"), line(2, "G2"), may_split=may_split)
    plan = broker(group, facilities, stock, rules)
    assert placed(plan) == {1: "WH", 2: "WH"}
    assert {a.rule for a in plan.allocations} == {"warehouses"}
    assert broker(group, facilities, stock, rules[:1]).allocations == ()


def test_when_both_permit_it_the_same_group_is_split_by_the_first_rule():
    facilities = [
        facility("A", NEWARK, group="STORES"),
        facility("B", NEWARK, group="STORES"),
        facility("WH", LOS_ANGELES, group="WAREHOUSES"),
    ]
    stock = {("A", "G1"): 5, ("B", "G2"): 5, ("WH", "G1"): 5, ("WH", "G2"): 5}
    rules = [Rule("stores", facility_group="STORES", allow_split=True), Rule("warehouses", facility_group="WAREHOUSES")]
    plan = broker(ship_group(line(1, "G1"), line(2, "G2"), may_split=True), facilities, stock, rules)
    assert placed(plan) == {1: "A", 2: "B"}
    assert {a.rule for a in plan.allocations} == {"stores"}


def test_a_split_rule_places_part_and_the_next_rule_places_the_rest():
    facilities = [facility("ST", NEWARK, group="STORES"), facility("WH", LOS_ANGELES, group="WAREHOUSES")]
    stock = {("ST", "G1"): 5, ("WH", "G2"): 5, ("WH", "G3"): 5}
    rules = [Rule("stores", facility_group="STORES", allow_split=True), Rule("warehouses", facility_group="WAREHOUSES")]
    plan = broker(ship_group(line(1, "G1"), line(2, "G2"), line(3, "G3"), may_split=True), facilities, stock, rules)
    assert [(a.item_seq, a.facility_id, a.rule) for a in plan.allocations] == [
        (1, "ST", "stores"),
        (2, "WH", "warehouses"),
        (3, "WH", "warehouses"),
    ]


def test_the_next_rule_places_the_rest_whole_or_not_at_all_when_it_does_not_split():
    facilities = [
        facility("ST", NEWARK, group="STORES"),
        facility("W1", LOS_ANGELES, group="WAREHOUSES"),
        facility("W2", LOS_ANGELES, group="WAREHOUSES"),
    ]
    stock = {("ST", "G1"): 5, ("W1", "G2"): 5, ("W2", "G3"): 5}
    rules = [Rule("stores", facility_group="STORES", allow_split=True), Rule("warehouses", facility_group="WAREHOUSES")]
    plan = broker(ship_group(line(1, "G1"), line(2, "G2"), line(3, "G3"), may_split=True), facilities, stock, rules)
    assert placed(plan) == {1: "ST"}
    assert unfilled(plan) == [2, 3]


def test_lines_are_allocated_whole_never_split_across_facilities():
    facilities = [facility("A", NEWARK), facility("B", NEWARK)]
    stock = {("A", "G1"): 2, ("B", "G1"): 2}
    plan = broker(ship_group(line(1, quantity=3), may_split=True), facilities, stock, [Rule("split", allow_split=True)])
    assert plan.allocations == ()
    assert unfilled(plan) == [1]


# Filters


def test_the_originating_store_is_never_chosen():
    facilities = [facility("255", NEWARK), facility("WH", LOS_ANGELES)]
    stock = {("255", "G1"): 5, ("WH", "G1"): 5}
    assert placed(broker(ship_group(line(1), excluded="255"), facilities, stock)) == {1: "WH"}
    only_there = broker(ship_group(line(1), excluded="255"), facilities, {("255", "G1"): 5})
    assert only_there.allocations == ()
    assert unfilled(only_there) == [1]


def test_safety_stock_keeps_units_unallocated_at_each_facility():
    facilities = [facility("NEAR", NEWARK), facility("FAR", LOS_ANGELES)]
    stock = {("NEAR", "G1"): 3, ("FAR", "G1"): 4}
    rules = [Rule("keep two", safety_stock=2)]
    assert placed(broker(ship_group(line(1, quantity=1)), facilities, stock, rules)) == {1: "NEAR"}
    assert placed(broker(ship_group(line(1, quantity=2)), facilities, stock, rules)) == {1: "FAR"}
    assert unfilled(broker(ship_group(line(1, quantity=3)), facilities, stock, rules)) == [1]


def test_units_allocated_earlier_in_the_plan_are_not_offered_again():
    facilities = [facility("NEAR", NEWARK), facility("FAR", LOS_ANGELES)]
    stock = {("NEAR", "G1"): 3, ("FAR", "G1"): 5}
    two_lines = ship_group(line(1, quantity=2), line(2, quantity=2), may_split=True)
    split = broker(two_lines, facilities, stock, [Rule("split", allow_split=True)])
    assert placed(split) == {1: "FAR", 2: "FAR"}  # FAR holds both lines together; NEAR cannot
    only_near = broker(two_lines, facilities, {("NEAR", "G1"): 3}, [Rule("split", allow_split=True)])
    assert placed(only_near) == {1: "NEAR"}
    assert unfilled(only_near) == [2]


def test_a_facility_at_its_daily_order_limit_gets_no_new_order():
    stock = {("NEAR", "G1"): 5, ("FAR", "G1"): 5}
    full = [facility("NEAR", NEWARK, max_orders=5, today=5), facility("FAR", LOS_ANGELES)]
    assert placed(broker(ship_group(line(1)), full, stock)) == {1: "FAR"}
    one_left = [facility("NEAR", NEWARK, max_orders=5, today=4), facility("FAR", LOS_ANGELES)]
    assert placed(broker(ship_group(line(1)), one_left, stock)) == {1: "NEAR"}
    closed = [facility("NEAR", NEWARK, max_orders=0, today=0)]
    assert unfilled(broker(ship_group(line(1)), closed, stock)) == [1]


def test_a_facility_already_shipping_part_of_this_order_is_not_counted_twice():
    facilities = [facility("ST", NEWARK, max_orders=5, today=4)]
    # Under the first rule the safety stock leaves no G2 to spare; the second rule finds it at the same store.
    stock = {("ST", "G1"): 2, ("ST", "G2"): 1}
    rules = [Rule("cautious", safety_stock=1, allow_split=True), Rule("last units")]
    plan = broker(ship_group(line(1, "G1"), line(2, "G2"), may_split=True), facilities, stock, rules)
    assert [(a.item_seq, a.facility_id, a.rule) for a in plan.allocations] == [
        (1, "ST", "cautious"),
        (2, "ST", "last units"),
    ]


def test_a_split_may_put_several_lines_at_a_facility_with_room_for_one_more_order():
    facilities = [facility("A", NEWARK, max_orders=3, today=2), facility("B", PHILADELPHIA)]
    stock = {("A", "G1"): 5, ("A", "G3"): 5, ("B", "G2"): 5}
    group = ship_group(line(1, "G1"), line(2, "G2"), line(3, "G3"), may_split=True)
    plan = broker(group, facilities, stock, [Rule("split", allow_split=True)])
    assert placed(plan) == {1: "A", 2: "B", 3: "A"}


def test_a_facility_group_rule_considers_only_that_group():
    facilities = [facility("ST", NEWARK, group="STORES"), facility("OTHER", NEWARK, group=None)]
    stock = {("ST", "G1"): 1, ("OTHER", "G1"): 5}
    plan = broker(ship_group(line(1, quantity=2)), facilities, stock, [Rule("stores", facility_group="STORES")])
    assert plan.allocations == ()


def test_a_max_distance_rule_considers_only_facilities_that_close():
    facilities = [facility("PHL", PHILADELPHIA), facility("LA", LOS_ANGELES)]
    stock = {("PHL", "G1"): 5, ("LA", "G1"): 5}
    rules = [Rule("within 200 km", max_distance_km=200, sort=("sequence",))]
    assert placed(broker(ship_group(line(1)), facilities, stock, rules)) == {1: "PHL"}
    rules = [Rule("within 100 km", max_distance_km=100)]
    assert broker(ship_group(line(1)), facilities, stock, rules).allocations == ()


# Unknown distances


def test_a_max_distance_rule_does_not_match_a_facility_without_coordinates():
    facilities = [facility("NOWHERE", NOWHERE), facility("LA", LOS_ANGELES)]
    stock = {("NOWHERE", "G1"): 5, ("LA", "G1"): 5}
    rules = [Rule("near", max_distance_km=20000), Rule("anywhere", sort=("sequence",))]
    plan = broker(ship_group(line(1)), facilities, stock, rules)
    assert [(a.facility_id, a.rule) for a in plan.allocations] == [("LA", "near")]


def test_a_max_distance_rule_matches_nothing_when_the_ship_to_location_is_unknown():
    facilities = [facility("EWR", NEWARK)]
    stock = {("EWR", "G1"): 5}
    rules = [Rule("near", max_distance_km=20000), Rule("anywhere")]
    plan = broker(ship_group(line(1), to=NOWHERE), facilities, stock, rules)
    assert plan.allocations == (Allocation(1, "EWR", 1, "anywhere", "distance unknown: ship-to location unknown"),)


def test_the_distance_sort_puts_a_facility_without_coordinates_last():
    facilities = [facility("A-NOWHERE", NOWHERE, sequence=1), facility("Z-LA", LOS_ANGELES, sequence=9)]
    stock = {("A-NOWHERE", "G1"): 5, ("Z-LA", "G1"): 5}
    plan = broker(ship_group(line(1)), facilities, stock, [Rule("nearest", sort=("distance", "sequence"))])
    assert placed(plan) == {1: "Z-LA"}


def test_an_allocation_records_that_its_facility_has_no_coordinates():
    plan = broker(ship_group(line(1)), [facility("255", NOWHERE)], {("255", "G1"): 5})
    assert plan.allocations == (
        Allocation(1, "255", 1, "default: nearest facility", "distance unknown: facility 255 has no coordinates"),
    )


def test_an_allocation_records_its_distance_when_known():
    plan = broker(ship_group(line(1)), [facility("EWR", NEWARK)], {("EWR", "G1"): 5})
    assert plan.allocations[0].note == f"{distance_km(*NEW_YORK, *NEWARK):.1f} km" == "14.3 km"


# Sorting


def test_the_inventory_sort_prefers_the_facility_with_the_most_units_of_these_products():
    facilities = [facility("A"), facility("B"), facility("C")]
    rules = [Rule("most stock", sort=("inventory",))]
    # A's plenty of another product does not count.
    stock = {("A", "G1"): 3, ("A", "OTHER"): 100, ("B", "G1"): 5, ("C", "G1"): 4}
    assert placed(broker(ship_group(line(1, "G1")), facilities, stock, rules)) == {1: "B"}
    # Units of every product the group still needs add up: A 2 + 9 beats B 9 + 1.
    stock = {("A", "G1"): 2, ("A", "G2"): 9, ("B", "G1"): 9, ("B", "G2"): 1}
    group = ship_group(line(1, "G1"), line(2, "G2"), may_split=True)
    assert placed(broker(group, facilities, stock, rules)) == {1: "A", 2: "A"}


def test_the_inventory_sort_counts_units_net_of_what_earlier_rules_allocated():
    facilities = [facility("A", group="STORES"), facility("B", group="WAREHOUSES")]
    stock = {("A", "G1"): 5, ("B", "G1"): 4}
    rules = [
        Rule("stores", facility_group="STORES", safety_stock=2, allow_split=True),
        Rule("most stock", sort=("inventory",)),
    ]
    # The stores rule ships 3 from A and, keeping 2 back, cannot ship the second line; of A's 5 only 2 are
    # left for the next rule, so B's 4 come first.
    group = ship_group(line(1, "G1", 3), line(2, "G1", 1), may_split=True)
    plan = broker(group, facilities, stock, rules)
    assert [(a.item_seq, a.facility_id, a.rule) for a in plan.allocations] == [
        (1, "A", "stores"),
        (2, "B", "most stock"),
    ]


def test_the_sequence_sort_puts_lower_sequences_first_and_none_last():
    facilities = [facility("A", sequence=None), facility("B", sequence=7), facility("C", sequence=3)]
    stock = {("A", "G1"): 5, ("B", "G1"): 5, ("C", "G1"): 5}
    rules = [Rule("by sequence", sort=("sequence",))]
    assert placed(broker(ship_group(line(1)), facilities, stock, rules)) == {1: "C"}
    del stock[("C", "G1")]
    assert placed(broker(ship_group(line(1)), facilities, stock, rules)) == {1: "B"}
    del stock[("B", "G1")]
    assert placed(broker(ship_group(line(1)), facilities, stock, rules)) == {1: "A"}


def test_sort_keys_break_ties_in_the_order_the_rule_lists_them():
    facilities = [
        facility("NEAR", NEWARK, sequence=2),
        facility("MID", PHILADELPHIA, sequence=1),
        facility("FAR", LOS_ANGELES, sequence=1),
    ]
    stock = {("NEAR", "G1"): 5, ("MID", "G1"): 5, ("FAR", "G1"): 5}
    by_sequence = broker(ship_group(line(1)), facilities, stock, [Rule("s", sort=("sequence", "distance"))])
    assert placed(by_sequence) == {1: "MID"}
    by_distance = broker(ship_group(line(1)), facilities, stock, [Rule("d", sort=("distance", "sequence"))])
    assert placed(by_distance) == {1: "NEAR"}


def test_equal_facilities_are_chosen_by_facility_id_whatever_their_input_order():
    facilities = [facility("C"), facility("A"), facility("B")]
    stock = {("A", "G1"): 5, ("B", "G1"): 5, ("C", "G1"): 5}
    for order in (facilities, facilities[::-1]):
        assert placed(broker(ship_group(line(1)), order, stock, [Rule("any", sort=())])) == {1: "A"}
        assert placed(broker(ship_group(line(1)), order, stock)) == {1: "A"}  # same place, same distance


def test_an_unknown_sort_key_is_a_value_error():
    with pytest.raises(ValueError, match="'nearest'"):
        broker(ship_group(line(1)), [facility("A")], {("A", "G1"): 1}, [Rule("typo", sort=("nearest",))])


# Unfillable and the shape of the plan


def test_the_unfillable_reason_names_the_quantity_the_product_and_the_rules_tried():
    rules = [Rule("a"), Rule("b", safety_stock=1)]
    plan = broker(ship_group(line(1, "197076109628", 2)), [facility("A")], {("A", "197076109628"): 1}, rules)
    assert plan == BrokeringPlan(
        (), (Unfillable(1, "no facility has 2 of 197076109628 available under any rule (rules tried: a, b)"),)
    )


def test_the_unfillable_reason_says_when_a_line_was_available_only_apart_from_the_rest():
    facilities = [facility("A"), facility("B")]
    stock = {("A", "G1"): 5, ("B", "G2"): 5}
    plan = broker(ship_group(line(1, "G1"), line(2, "G2"), line(3, "G3")), facilities, stock)
    assert plan.unfillable == (
        Unfillable(
            1,
            "1 of G1 was available only apart from the rest of the ship group, and no rule could split it"
            " off (rules tried: default: nearest facility)",
        ),
        Unfillable(
            2,
            "1 of G2 was available only apart from the rest of the ship group, and no rule could split it"
            " off (rules tried: default: nearest facility)",
        ),
        Unfillable(3, "no facility has 1 of G3 available under any rule (rules tried: default: nearest facility)"),
    )


def test_with_no_rules_every_line_is_unfillable():
    plan = broker(ship_group(line(1)), [facility("A")], {("A", "G1"): 5}, [])
    assert plan.unfillable == (Unfillable(1, "no facility has 1 of G1 available under any rule (rules tried: none)"),)


def test_allocations_and_unfillable_lines_come_in_item_seq_order():
    facilities = [facility("ST", NEWARK, group="STORES"), facility("WH", LOS_ANGELES, group="WAREHOUSES")]
    stock = {("ST", "G2"): 5, ("WH", "G4"): 5, ("WH", "G1"): 5}
    rules = [
        Rule("stores", facility_group="STORES", allow_split=True),
        Rule("warehouses", facility_group="WAREHOUSES", allow_split=True),
    ]
    group = ship_group(line(5, "G5"), line(4, "G4"), line(3, "G3"), line(2, "G2"), line(1, "G1"), may_split=True)
    plan = broker(group, facilities, stock, rules)
    assert [(a.item_seq, a.facility_id) for a in plan.allocations] == [(1, "WH"), (2, "ST"), (4, "WH")]
    assert unfilled(plan) == [3, 5]


def test_an_empty_ship_group_gets_an_empty_plan():
    assert broker(ship_group(), [facility("A")], {("A", "G1"): 5}) == BrokeringPlan((), ())


def test_broker_does_not_mutate_its_inputs():
    facilities = [facility("A", max_orders=2, today=1), facility("B", LOS_ANGELES)]
    stock = {("A", "G1"): 2, ("B", "G1"): 5, ("B", "G2"): 5}
    rules = [Rule("first", allow_split=True, safety_stock=1), Rule("second", allow_split=True)]
    group = ship_group(line(2, "G2"), line(1, "G1"), line(3, "G1"), may_split=True)
    before = copy.deepcopy((group, facilities, stock, rules))
    plan = broker(group, facilities, stock, rules)
    assert plan.allocations
    assert (group, facilities, stock, rules) == before


def test_the_default_rules_are_one_nearest_facility_rule_without_split():
    (rule,) = DEFAULT_RULES
    assert rule == Rule("default: nearest facility", sort=("distance",))
    assert not rule.allow_split and rule.safety_stock == 0 and rule.facility_group is None


# Distance


def test_new_york_to_los_angeles_is_about_3936_km():
    assert distance_km(*NEW_YORK, *LOS_ANGELES) == pytest.approx(3936, abs=10)


def test_distance_is_zero_to_the_same_place_and_the_same_both_ways():
    assert distance_km(*NEW_YORK, *NEW_YORK) == 0
    assert distance_km(*NEW_YORK, *PHILADELPHIA) == pytest.approx(distance_km(*PHILADELPHIA, *NEW_YORK))
    assert distance_km(0, 0, 0, 180) == pytest.approx(6371.0088 * 3.141592653589793)


# Properties

FACILITY_IDS = ("F1", "F2", "F3", "F4")
GTINS = ("G1", "G2", "G3")
places = st.one_of(st.just(NOWHERE), st.sampled_from([NEW_YORK, NEWARK, PHILADELPHIA, LOS_ANGELES]))


@st.composite
def scenarios(draw):
    facilities = [
        Facility(
            facility_id=fid,
            facility_group=draw(st.sampled_from([None, "STORES", "WAREHOUSES"])),
            latitude=(at := draw(places))[0],
            longitude=at[1],
            allow_brokering=draw(st.booleans()),
            max_orders_per_day=draw(st.one_of(st.none(), st.integers(0, 3))),
            orders_today=draw(st.integers(0, 3)),
            sequence=draw(st.one_of(st.none(), st.integers(0, 3))),
        )
        for fid in FACILITY_IDS
    ]
    stock = draw(st.dictionaries(st.tuples(st.sampled_from(FACILITY_IDS), st.sampled_from(GTINS)), st.integers(0, 6)))
    item_seqs = draw(st.lists(st.integers(1, 20), unique=True, max_size=6))
    lines = tuple(LineToPlace(seq, draw(st.sampled_from(GTINS)), draw(st.integers(1, 4))) for seq in item_seqs)
    group = ShipGroup(
        order_id=1,
        lines=lines,
        may_split=draw(st.booleans()),
        excluded_facility_id=draw(st.one_of(st.none(), st.sampled_from(FACILITY_IDS))),
        latitude=(to := draw(places))[0],
        longitude=to[1],
    )
    rules = [
        Rule(
            f"r{index}",
            facility_group=draw(st.sampled_from([None, "STORES", "WAREHOUSES"])),
            max_distance_km=draw(st.sampled_from([None, 50.0, 500.0])),
            safety_stock=draw(st.integers(0, 2)),
            allow_split=draw(st.booleans()),
            sort=tuple(draw(st.permutations(SORT_KEYS)))[: draw(st.integers(0, 3))],
        )
        for index in range(draw(st.integers(0, 3)))
    ]
    return group, facilities, stock, rules


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_a_plan_respects_stock_exclusion_and_capacity_and_accounts_for_every_line_once(scenario):
    group, facilities, stock, rules = scenario
    before = copy.deepcopy(scenario)
    plan = broker(group, facilities, stock, rules)
    assert scenario == before

    quantities = {line.item_seq: line.quantity for line in group.lines}
    seen = [a.item_seq for a in plan.allocations] + [u.item_seq for u in plan.unfillable]
    assert sorted(seen) == sorted(quantities)
    assert all(a.quantity == quantities[a.item_seq] for a in plan.allocations)

    by_id = {f.facility_id: f for f in facilities}
    gtin_of = {line.item_seq: line.gtin for line in group.lines}
    rule_index = {rule.name: index for index, rule in enumerate(rules)}
    for a in plan.allocations:
        assert a.facility_id != group.excluded_facility_id
        assert by_id[a.facility_id].allow_brokering
        rule = rules[rule_index[a.rule]]
        assert rule.facility_group is None or by_id[a.facility_id].facility_group == rule.facility_group
        if rule.max_distance_km is not None:
            assert a.note is not None and a.note.endswith(" km")
            assert float(a.note.removesuffix(" km")) <= rule.max_distance_km + 0.05
    # After each rule, what the plan has taken at a facility and product leaves that rule's safety stock.
    taken: dict[tuple[str, str], int] = {}
    for index, rule in enumerate(rules):
        now = [a for a in plan.allocations if rule_index[a.rule] == index]
        for a in now:
            key = (a.facility_id, gtin_of[a.item_seq])
            taken[key] = taken.get(key, 0) + a.quantity
        for key in {(a.facility_id, gtin_of[a.item_seq]) for a in now}:
            assert taken[key] <= stock.get(key, 0) - rule.safety_stock
    # Each facility this order uses is one order more for it that day, and it had room for one.
    for fid in {a.facility_id for a in plan.allocations}:
        limit = by_id[fid].max_orders_per_day
        assert limit is None or by_id[fid].orders_today + 1 <= limit


def test_where_the_greedy_split_needs_three_facilities_two_are_found_when_two_will_do():
    # A holds the most lines, but taking A first leaves 5 and 6 for two more packages; B and C ship it all.
    facilities = [facility("A", NEWARK), facility("B", PHILADELPHIA), facility("C", LOS_ANGELES)]
    stock = {("A", g): 1 for g in ("G1", "G2", "G3", "G4")}
    stock |= {("B", g): 1 for g in ("G1", "G2", "G5")} | {("C", g): 1 for g in ("G3", "G4", "G6")}
    group = ship_group(*(line(i, f"G{i}") for i in range(1, 7)), may_split=True)
    plan = broker(group, facilities, stock, [Rule("split", allow_split=True, sort=("distance",))])
    assert placed(plan) == {1: "B", 2: "B", 5: "B", 3: "C", 4: "C", 6: "C"}
