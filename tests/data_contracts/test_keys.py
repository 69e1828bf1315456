from __future__ import annotations

import polars as pl

from data_contracts.keys import first_reads, may_repeat, rows_that_may_repeat


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
