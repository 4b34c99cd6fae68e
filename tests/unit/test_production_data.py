"""The local production's generated data: sizes and names (pipelines.dbclone.production_data)."""

from __future__ import annotations

import pytest

from pipelines.dbclone import masking, production_data


@pytest.mark.parametrize("rows", [10, 11, 300, 100_000, 1_234_567])
def test_the_tables_hold_exactly_the_rows_asked_for_with_room_for_the_special_users(
    rows: int,
) -> None:
    sizes = production_data.table_sizes(rows)
    assert sum(sizes.values()) == rows
    assert sizes["customers"] > len(production_data.SPECIAL_USERS)
    assert min(sizes.values()) >= 1


def test_no_masked_name_can_equal_a_production_name() -> None:
    assert not set(production_data._LAST) & set(masking.LAST_NAMES)


def test_the_statements_are_the_same_every_time() -> None:
    assert production_data.data_statements(500) == production_data.data_statements(500)
    assert production_data.marker(500) != production_data.marker(501)
