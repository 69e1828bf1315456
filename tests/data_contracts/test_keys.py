from __future__ import annotations

import polars as pl

from data_contracts.keys import may_repeat, rows_that_may_repeat


def test_rows_of_repeated_keys_are_candidates_nulls_equal() -> None:
    frame = pl.DataFrame({"a": ["x", "y", "x", None, None, "z"], "b": [1, 1, 1, None, None, 2]})
    single = frame.select(may_repeat(pl.col("a"))).to_series().to_list()
    pair = frame.select(may_repeat(pl.struct("a", "b"))).to_series().to_list()
    assert single == [True, False, True, True, True, False]
    assert pair == single
    assert frame.lazy().pipe(rows_that_may_repeat, pl.struct("a", "b")).collect().equals(frame.filter(pair))
