"""Publishing a run: every row arrives, in the order of each table's index."""

from __future__ import annotations

import polars as pl
import sqlalchemy as sa

from api import tables as t
from api.database import engine_for
from tests.api.conftest import Published


def test_flags_arrive_in_the_order_of_their_index(database_url: str, results: Published) -> None:
    """The flags' index is (run, provider, rule): rows inserted in that order fill its pages one
    after the other, not a random page each. Within a provider and rule they keep the order the
    run wrote them in (by claim)."""
    results.into(database_url)
    engine = engine_for(database_url)
    try:
        with engine.connect() as connection:
            f = t.flags.c
            stored = connection.execute(sa.select(f.provider_nihdi, f.rule_id, f.claim_id).order_by(f.id)).all()
    finally:
        engine.dispose()
    published = pl.DataFrame(stored, schema=["provider_nihdi", "rule_id", "claim_id"], orient="row")
    expected = results.flags.select("provider_nihdi", "rule_id", "claim_id").sort(
        "provider_nihdi", "rule_id", maintain_order=True
    )
    assert results.flags["provider_nihdi"].n_unique() > 1
    assert not results.flags["provider_nihdi"].is_sorted()  # the run's order is not the index's
    assert published.equals(expected)
