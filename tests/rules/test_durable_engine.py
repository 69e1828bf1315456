"""The durable_rules back end flags exactly what the Polars engine flags."""

from __future__ import annotations

import json
import multiprocessing
import random
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from data_contracts import load_dataset
from rules import derived, durable_engine, enriched_lines, evaluate, load_catalog, parse_catalog
from rules.durable_engine import DurableRuleset, evaluate_durable
from rules.errors import RuleError


@pytest.fixture(scope="module")
def dataset(synthetic: Path) -> tuple[dict[str, pl.LazyFrame], pl.DataFrame]:
    tables = load_dataset(synthetic).lazy_tables()
    return tables, enriched_lines(tables)


@pytest.mark.parametrize("legislation", ["current", "reform_art174"])
def test_same_flags_and_evidence_as_polars_on_generated_data(
    dataset: tuple[dict[str, pl.LazyFrame], pl.DataFrame], legislation: str
) -> None:
    tables, lines = dataset
    batch = evaluate(tables, legislation=legislation, lines=lines)
    assert set(batch["rule_id"]) == {rule.id for rule in load_catalog()}
    assert_frame_equal(evaluate_durable(tables, legislation=legislation, lines=lines), batch)


def test_sessions_do_not_leak_into_each_other(dataset: tuple[dict[str, pl.LazyFrame], pl.DataFrame]) -> None:
    tables, lines = dataset
    # Scenario lines (and some background) in two overlapping subsets, checked concurrently.
    scenario = pl.col("claim_id").str.starts_with("C9")
    subsets = [lines.filter(scenario | (pl.col("_i") % 10 == k)).drop("_i").with_row_index("_i") for k in range(2)]
    expected = [evaluate(tables, lines=subset) for subset in subsets]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda frame: evaluate_durable(tables, lines=frame), [*subsets, *subsets]))
    for result, want in zip(results, [*expected, *expected], strict=True):
        assert_frame_equal(result, want)
    assert expected[0].height > 0


def test_facts_encoded_one_by_one_are_those_polars_encodes(
    dataset: tuple[dict[str, pl.LazyFrame], pl.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    tables, lines = dataset
    lines = lines.filter(pl.col("claim_id").str.starts_with("C9") | (pl.col("_i") < 1_000))
    lines = lines.drop("_i").with_row_index("_i").with_columns(pl.col("patient_id") + ' é"\\')  # text to escape
    columns = {name: list(frame.collect_schema()) for name, frame in tables.items()}
    ruleset = DurableRuleset(load_catalog(), "current", lines.columns, columns)
    posted = lines["claim_id"].gather_every(7)
    encoded = {}
    for limit in (0, 10**9):
        monkeypatch.setattr(durable_engine, "FACTS_ENCODED_ONE_BY_ONE", limit)
        facts = durable_engine._line_facts(ruleset, lines, posted)
        encoded[limit] = {
            name: {provider: [(i, json.loads(body)) for i, body in found] for provider, found in by_provider.items()}
            for name, by_provider in facts.items()
        }
    assert encoded[0] == encoded[10**9]
    assert sum(len(found) for by_provider in encoded[0].values() for found in by_provider.values()) > 1_000
    # Ranks past the first of their group were compared: a burst's third line, a duplicate.
    places = [
        body[column]
        for facts in encoded[0].values()
        for found in facts.values()
        for _, body in found
        for column in body
        if column.endswith("_seq")
    ]
    assert max(places) >= 3


def test_places_and_bearing_lines_ranked_in_python_are_those_of_polars() -> None:
    rng = random.Random(7)
    base = datetime(2024, 3, 1, 20, 0)
    n = 400
    frame = pl.DataFrame(
        {
            "provider": [rng.choice([*"abcdefghijklmnopqrst", None]) for _ in range(n)],
            "day": [date(2024, 3, 1) + timedelta(days=rng.randrange(20)) for _ in range(n)],
            # Ties, nulls, and instants a microsecond apart (one millisecond once encoded).
            "at": [rng.choice([None, base, base + timedelta(microseconds=rng.randrange(3))]) for _ in range(n)],
            "claim_id": [f"C{rng.randrange(10**6):07d}" for _ in range(n)],
            durable_engine.POSTED: [rng.random() < 0.01 for _ in range(n)],
        }
    )
    rows = frame.to_dicts()
    for group, order, start in ((("provider", "day"), ("at", "claim_id"), 1), (("day",), ("claim_id",), 0)):
        rank = durable_engine._Rank("place", group, order, start)
        assert rank.places(rows) == frame.select(rank.expr())["place"].to_list()
    for bearing in ([()], [("provider", "day")], [(), ("day",), ("provider",)]):
        mask = pl.any_horizontal(
            [pl.col(durable_engine.POSTED).any().over(g) if g else pl.col(durable_engine.POSTED) for g in bearing]
        )
        expected = frame.select(mask)[:, 0].to_list()
        assert durable_engine._bearing_rows(bearing, rows) == expected
        assert 0 < sum(expected) < n


def test_joins_outside_one_provider_are_refused(dataset: tuple[dict[str, pl.LazyFrame], pl.DataFrame]) -> None:
    tables, lines = dataset
    catalog = parse_catalog(
        """
legislations: {current: Law in force.}
rules:
  - id: SAME_PATIENT_DAY
    titles: {fr: x, nl: x, en: x}
    legal_basis: test
    description: test
    severity: low
    checks:
      - {shape: duplicate_key, reason: dup, key: [patient_id, service_date], keep_first_by: [claim_id]}
"""
    )
    with pytest.raises(RuleError, match=r"SAME_PATIENT_DAY.*provider_nihdi"):
        evaluate_durable(tables, catalog=catalog, lines=lines)


def _flag_count_in_child(root: str, counts: multiprocessing.Queue) -> None:
    counts.put(evaluate_durable(load_dataset(root).lazy_tables()).height)


def test_a_process_started_by_multiprocessing_exits_after_using_the_worker(synthetic: Path) -> None:
    """Its exit joins every child process: the idle worker must be stopped first, not waited for."""
    context = multiprocessing.get_context("spawn")
    counts = context.Queue()
    child = context.Process(target=_flag_count_in_child, args=(str(synthetic), counts))
    child.start()
    child.join(timeout=120)
    hung = child.is_alive()
    if hung:
        child.kill()
    assert not hung, "the forked process did not exit"
    assert child.exitcode == 0
    assert counts.get(timeout=5) > 0


def test_lines_split_over_workers_by_whole_providers_in_parts_of_about_equal_size() -> None:
    sizes = {"a": 400, "b": 300, "c": 250, "d": 100, "e": 60, None: 5}
    lines = pl.DataFrame({"provider_nihdi": [p for p, n in sizes.items() for _ in range(n)]}).with_row_index("_i")
    parts = durable_engine._parts(lines, 2)
    assert sorted(p.height for p in parts) == [550, 565]
    providers = [set(part["provider_nihdi"]) for part in parts]
    assert providers[0].isdisjoint(providers[1])
    assert providers[0] | providers[1] == set(sizes)
    assert all(part["_i"].to_list() == list(range(part.height)) for part in parts)
    assert durable_engine._parts(lines.head(durable_engine.SPLIT_FROM_LINES - 1), 2)[0].height == 499


_DAYS = st.dates(date(1960, 1, 1), date(2040, 12, 31)) | st.sampled_from(
    [date(2024, 2, 29), date(2023, 2, 28), date(2024, 1, 31), date(2023, 12, 31), date(1970, 1, 1), date(1969, 12, 31)]
)
_INSTANTS = st.datetimes(datetime(1960, 1, 1), datetime(2040, 12, 31))  # microseconds, before 1970 too
_LINES = st.lists(
    st.fixed_dictionaries(
        {
            "service_date": _DAYS,
            "service_time": st.none() | st.times(),
            "recorded_at": st.none() | _INSTANTS,
            "encoded_at": st.none() | _INSTANTS,
            "time_window": st.none() | st.sampled_from(["day", "evening", "night"]),
            "code_setting": st.none() | st.sampled_from(["home", "office"]),
            "patient_id": st.none() | st.text(max_size=4),
            "provider_nihdi": st.sampled_from(["10000000001", "10000000002"]),
            "nomenclature_code": st.none() | st.sampled_from(["101010", "104119"]),
        }
    ),
    min_size=1,
    max_size=8,
)
_TYPES = {"service_time": pl.Time, "recorded_at": pl.Datetime("us"), "encoded_at": pl.Datetime("us")}
_TYPES |= {"time_window": pl.Categorical, "code_setting": pl.Categorical, "service_date": pl.Date}


@pytest.mark.parametrize("legislation", ["current", "reform_art174"])
@given(rows=_LINES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_derived_values_computed_in_python_are_those_of_polars(
    dataset: tuple[dict[str, pl.LazyFrame], pl.DataFrame], legislation: str, rows: list[dict]
) -> None:
    """Deadlines from leap days and month ends, instants before 1970 and between milliseconds,
    times with microseconds and missing values in a key: each derived value, and each value
    as encoded for the engine, is the one Polars computes."""
    tables, lines = dataset
    columns = {name: list(frame.collect_schema()) for name, frame in tables.items()}
    ruleset = DurableRuleset(load_catalog(), legislation, lines.columns, columns)
    frame = pl.DataFrame(rows, schema={name: _TYPES.get(name, pl.String) for name in rows[0]})
    twins = ruleset.derived_in_python(frame.schema)
    assert twins is not None
    derive, schema = twins
    by_polars = frame.with_columns(ruleset.derived[0])
    by_python = [dict(line) for line in frame.iter_rows(named=True)]
    for line in by_python:
        for name, twin in derive:
            line[name] = twin(line)
    assert by_python == by_polars.to_dicts()
    encoded = by_polars.with_columns(*durable_engine._ENCODED).to_dicts()
    for line, want in zip(by_python, encoded, strict=True):
        for name, value in line.items():
            encode = derived.encoder(schema[name])
            assert (encode(value) if encode else value) == want[name], name
