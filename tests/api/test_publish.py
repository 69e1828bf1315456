"""Publishing a run: every row arrives, in the order of each table's index."""

from __future__ import annotations

import time

import polars as pl
import pytest
import sqlalchemy as sa

from api import tables as t
from api.database import engine_for
from api.publish import Publication
from tests.api.conftest import Published, rows_of


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


def _begun(url: str, results: Published, run_id: str) -> Publication:
    identity = {"run_id": run_id, "created_at": "2026-02-01T00:00:00+00:00", "dataset": "d", "legislation": "current"}
    return Publication(url, identity, flags=results.flags, quarantine=results.quarantine, references=results.references)


def test_a_publication_begun_before_scoring_stores_what_publish_stores(database_url: str, results: Published) -> None:
    results.into(database_url, run_id="at-once")
    info = {**results.info, "run_id": "in-two-steps", "created_at": "2026-02-01T00:00:00+00:00"}
    with _begun(database_url, results, "in-two-steps") as publication:
        time.sleep(0.2)  # the flags are loading meanwhile
        assert publication.complete(info, results.scores, results.profiles) == "in-two-steps"
    expected = rows_of(database_url, "at-once")
    assert expected["flags"] == results.flags.height > 0
    assert expected["provider_scores"] > 0
    assert rows_of(database_url, "in-two-steps") == expected
    engine = engine_for(database_url)
    try:
        with engine.connect() as connection:
            run = connection.execute(sa.select(t.runs).where(t.runs.c.run_id == "in-two-steps")).one()
    finally:
        engine.dispose()
    assert run.status == "complete"
    assert run.info["volumes"] == results.info["volumes"]  # the info of the scored run, not the first one


def test_a_run_that_fails_after_its_publication_began_publishes_nothing(database_url: str, results: Published) -> None:
    class ScoringFailed(Exception):
        pass

    def run_failing_while_its_flags_load() -> None:
        with _begun(database_url, results, "failed"):
            time.sleep(0.2)
            raise ScoringFailed

    with pytest.raises(ScoringFailed):
        run_failing_while_its_flags_load()
    assert set(rows_of(database_url, "failed").values()) == {0}
    results.into(database_url, run_id="next")  # the database was left unlocked
    assert rows_of(database_url, "next")["flags"] == results.flags.height
