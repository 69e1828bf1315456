"""The in-memory worklist answers what filtering, then sorting, then paging the run's rows says."""

from __future__ import annotations

import json
import random

import numpy as np
import polars as pl
import pytest

from api.worklist import SORT_KEYS, Filters, Worklist

RULES = ["LATE_ATTESTATION", "DUPLICATE_BILLING", "TP_PSEUDO_NUMBER"]


def _providers(n: int, seed: int) -> pl.DataFrame:
    """Flagged providers as the worklist reads them: ties, missing scores and regions, lists."""
    rng = np.random.default_rng(seed)
    pick = rng.random
    return pl.DataFrame(
        {
            "run_id": "run",
            "provider_nihdi": [f"{10_000_000_000 + i:011d}" for i in rng.permutation(n)],
            "profession": rng.choice(["gp", "nurse", "physio"], n),
            "region": [None if pick() < 0.2 else r for r in rng.choice(["BRU", "VLA", "WAL"], n)],
            "lines_flagged": rng.integers(0, 5, n),
            "amount_at_stake_eur": rng.integers(0, 20, n) * 10.0,  # many ties
            "rules": [[r for r in RULES if pick() < 0.3] for _ in range(n)],
            "insurers": [[i for i in ("100", "200", "300") if pick() < 0.5] for _ in range(n)],
            "years": [[y for y in ("2023", "2024") if pick() < 0.6] for _ in range(n)],
            "score": [None if pick() < 0.1 else round(float(pick()), 2) for _ in range(n)],
            "rank": rng.integers(1, n + 1, n),
            "persistence": rng.integers(0, 4, n),
        }
    )


def _expected(providers: pl.DataFrame, f: Filters, sort: str, order: str) -> list[str]:
    """Filter, then sort (nulls last, ties by provider number), the plain way."""
    kept = providers.filter(
        pl.col("rules").list.contains(f.rule) if f.rule else True,
        pl.col("region") == f.region if f.region else True,
        pl.col("years").list.contains(str(f.year)) if f.year else True,
        pl.col("score") >= f.min_score if f.min_score is not None else True,
        pl.col("persistence") >= f.min_persistence if f.min_persistence is not None else True,
    )
    keys = list(SORT_KEYS[sort])
    if sort != "provider":
        keys.append("provider_nihdi")
    descending = [order == "desc"] * len(SORT_KEYS[sort]) + [False] * (len(keys) - len(SORT_KEYS[sort]))
    return kept.sort(keys, descending=descending, nulls_last=True)["provider_nihdi"].to_list()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pages_are_the_filtered_rows_in_order(seed: int) -> None:
    providers = _providers(500, seed)
    worklist = Worklist(providers)
    rng = random.Random(seed)
    for _ in range(60):
        f = Filters(
            rule=rng.choice([None, *RULES]),
            region=rng.choice([None, "", "BRU", "WAL", "nowhere"]),
            year=rng.choice([None, 2023, 2024, 1999]),
            min_score=rng.choice([None, 0.0, 0.5, 0.95]),
            min_persistence=rng.choice([None, 0, 2]),
        )
        sort, order = rng.choice(list(SORT_KEYS)), rng.choice(["desc", "asc"])
        expected = _expected(providers, f, sort, order)
        size = rng.choice([1, 7, 50])
        for number in (1, 2, len(expected) // size + 1, len(expected) // size + 2):
            total, items = worklist.page(f, sort, order, number, size)
            assert total == len(expected)
            assert [json.loads(i)["provider_nihdi"] for i in items] == expected[(number - 1) * size : number * size]


def test_a_page_answers_the_row_as_published() -> None:
    providers = _providers(50, 9)
    _, items = Worklist(providers).page(Filters(), "provider", "asc", 1, 1)
    first = providers.sort("provider_nihdi").row(0, named=True)
    assert [json.loads(i) for i in items] == [{k: v for k, v in first.items() if k != "run_id"}]
    assert Worklist(providers).provider(first["provider_nihdi"]) == json.loads(items[0])
    assert Worklist(providers).provider("00000000000") is None


def test_values_a_run_does_not_have_match_nobody_and_are_not_kept() -> None:
    worklist = Worklist(_providers(100, 4))
    for value in range(50):
        assert worklist.page(Filters(profession=f"unknown-{value}"), "amount", "desc", 1, 50) == (0, [])
    assert worklist.page(Filters(profession="gp"), "amount", "desc", 1, 50)[0] > 0
    assert len(worklist._having) == 1
