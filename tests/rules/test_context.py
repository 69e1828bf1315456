"""The enriched lines: integer-packed third-party uses and lookups beside the lines."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from data_contracts import load_dataset
from rules.context import UseCodes, enrich
from tests import factories as f

NUMBERS = ["0400000001", "0400000002", "PSEUDO-9"]
PROVIDERS = [f.GP, f.NURSE, f.OTHER_GP]


@settings(max_examples=60, deadline=None)  # polars' first calls are slow on a busy machine
@given(
    st.lists(
        st.tuples(
            st.sampled_from([None, *NUMBERS]),
            st.sampled_from(PROVIDERS),
            st.dates(date(2020, 1, 1), date(2020, 12, 31)),
        ),
        min_size=1,
    )
)
def test_packed_uses_decode_to_what_was_packed(uses: list[tuple[str | None, str, date]]) -> None:
    schema = {"third_party_number": pl.String, "provider_nihdi": pl.String, "service_date": pl.Date}
    frame = pl.DataFrame(uses, schema=schema, orient="row")
    codes = UseCodes(
        pl.Series("third_party_number", NUMBERS), pl.Series("provider_nihdi", PROVIDERS), date(2020, 1, 1), 366
    )
    coded = frame.join(codes.numbers, on="third_party_number", how="left", maintain_order="left").join(
        codes.providers, on="provider_nihdi", how="left", maintain_order="left"
    )
    packed = coded.select(codes.use(pl.col("_number"), pl.col("_provider"), pl.col("service_date"))).to_series()
    assert packed.n_unique() == frame.n_unique()  # three parts, no two uses packed alike
    decoded = codes.numbered(codes.located(packed.to_frame("_use").lazy())).collect()
    expected = coded.select(
        codes.pair(pl.col("_number"), pl.col("_provider")).alias("_pair"), "third_party_number", "service_date"
    )
    assert_frame_equal(decoded.select(expected.columns), expected, check_row_order=False)


def test_enrich_keeps_line_order_and_reads_the_registry(tmp_path: Path) -> None:
    day = date(2024, 3, 15)
    lines = [
        f.tp_line("C3", "I1", service_date=day),
        f.line("C1", service_date=day + timedelta(days=1), submitted_date=day + timedelta(days=1)),
        f.tp_line("C2", "I2", service_date=day),
        f.tp_line("C4", "I1", provider_nihdi=f.OTHER_GP),
    ]
    invoices = [f.invoice("I1"), f.invoice("I2", number=None)]
    dataset = load_dataset(f.write_dataset(tmp_path, lines=lines, invoices=invoices))
    enriched = enrich(dataset.lazy_tables())
    assert enriched["claim_id"].to_list() == ["C3", "C1", "C2", "C4"]
    assert enriched["tp_status"].to_list() == ["ok", None, "missing", "not_authorized"]
    assert enriched["tp_authorized_on_date"].to_list() == [None, None, None, f.GP]
    assert enriched["effective_submitted_date"].to_list() == [
        date(2024, 4, 10),
        day + timedelta(days=1),
        *[date(2024, 4, 10)] * 2,
    ]


def test_enrich_refuses_lines_of_unknown_providers(tmp_path: Path) -> None:
    dataset = load_dataset(f.write_dataset(tmp_path, lines=[f.line("C1")]))
    tables = dataset.lazy_tables() | {"providers": dataset.tables["providers"].head(0).lazy()}
    with pytest.raises(ValueError, match="provider missing from 'providers'"):
        enrich(tables)
