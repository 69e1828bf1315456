from __future__ import annotations

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from data_contracts.keys import first_reads, looked_up, may_repeat, rows_that_may_repeat


def test_rows_of_repeated_keys_are_candidates_nulls_equal() -> None:
    frame = pl.DataFrame({"a": ["x", "y", "x", None, None, "z"], "b": [1, 1, 1, None, None, 2]})
    single = frame.select(may_repeat(pl.col("a"))).to_series().to_list()
    pair = frame.select(may_repeat(pl.struct("a", "b"))).to_series().to_list()
    assert single == [True, False, True, True, True, False]
    assert pair == single
    assert frame.lazy().pipe(rows_that_may_repeat, pl.struct("a", "b")).collect().equals(frame.filter(pair))


def test_the_first_read_of_each_key_is_kept_nulls_equal() -> None:
    frame = pl.DataFrame({"a": ["x", "y", "x", None, None, "z", "y"], "b": [1, 1, 2, None, None, 2, 1]})
    single = frame.select(first_reads(pl.col("a"))).to_series().to_list()
    pair = frame.select(first_reads(pl.struct("a", "b"))).to_series().to_list()
    assert single == [True, True, False, True, False, True, False]
    assert pair == [True, True, True, True, False, True, False]
    # The same in a plan that filters on it, as the table's contract does.
    assert frame.lazy().filter(first_reads(pl.col("a"))).collect()["a"].to_list() == ["x", "y", None, "z"]


def _joined(keys: pl.Series, table: pl.DataFrame) -> pl.DataFrame:
    return keys.to_frame(table.columns[0]).join(table, on=table.columns[0], how="left", maintain_order="left")[:, 1:]


def _weak_hash(key: pl.Expr) -> pl.Expr:
    """A hash under which every two ids of one length collide."""
    return key.str.len_bytes().cast(pl.UInt64)


@given(
    keys=st.lists(st.one_of(st.none(), st.text("abc", min_size=1, max_size=3)), max_size=30),
    table_keys=st.sets(st.text("abc", min_size=1, max_size=3), max_size=12),
)
def test_a_lookup_by_hash_finds_exactly_what_a_join_finds_even_when_hashes_collide(
    keys: list[str | None], table_keys: set[str]
) -> None:
    ids = pl.Series("invoice_id", keys, dtype=pl.String)
    table = pl.DataFrame({"invoice_id": sorted(table_keys)}, schema={"invoice_id": pl.String}).with_columns(
        pl.col("invoice_id").str.to_uppercase().alias("holder"), pl.int_range(pl.len()).alias("row")
    )
    assert looked_up(ids, table).equals(_joined(ids, table))
    assert looked_up(ids, table, hashed=_weak_hash).equals(_joined(ids, table))


def test_a_key_under_another_keys_hash_is_not_found() -> None:
    table = pl.DataFrame({"invoice_id": ["aa", "bbb"], "row": [0, 1]})
    ids = pl.Series("invoice_id", ["zz", "aa", None, "bbb", "c"])
    assert looked_up(ids, table, hashed=_weak_hash)["row"].to_list() == [None, 0, None, 1, None]
