"""Peer groups with fallback, robust normalisation, detectors and their explanations."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from detectors.peers import assign_peer_groups, robust_z
from detectors.profiles import FEATURES
from detectors.scoring import fit_profiles, score_profiles, score_table, top_decile_streaks
from detectors.zoo import NAMES, Detector


def _profiles(groups: dict[tuple[str, str, str], int], seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for (profession, qualification, region), size in groups.items():
        for i in range(size):
            row = {"provider_nihdi": f"{profession}{qualification}{region}{i:04d}", "period": "2024"}
            row |= {"profession": profession, "qualification": qualification, "region": region}
            row |= {name: float(rng.normal(10, 1)) for name in FEATURES}
            rows.append(row)
    return pl.DataFrame(rows)


def test_small_groups_fall_back_to_wider_ones() -> None:
    profiles = _profiles(
        {("gp", "003", "BRU"): 25, ("gp", "003", "WAL"): 5, ("gp", "004", "WAL"): 5, ("dentist", "303", "BRU"): 3}
    )
    groups = dict(
        assign_peer_groups(profiles, min_size=20)
        .group_by("peer_group")
        .agg(pl.len(), pl.col("peer_group_size").first())
        .select("peer_group", "peer_group_size")
        .iter_rows()
    )
    # 25 stay in their own group; the 5 Walloon GPs of qualification 003 are compared with
    # all 30 GPs of 003, those of 004 with all 35 GPs; the 3 dentists with everyone.
    assert groups == {"gp|003|BRU": 25, "gp|003": 30, "gp": 35, "all": 38}


def test_peer_grouping_is_configurable_and_checked() -> None:
    profiles = _profiles({("gp", "003", "BRU"): 4, ("gp", "003", "WAL"): 4})
    assert set(assign_peer_groups(profiles, ["region"], min_size=4)["peer_group"]) == {"BRU", "WAL"}
    with pytest.raises(ValueError, match="specialty"):
        assign_peer_groups(profiles, ["specialty"])


def test_robust_z_uses_median_and_mad_then_mean_deviation() -> None:
    frame = pl.DataFrame({"g": ["a"] * 5 + ["b"] * 4, "x": [1.0, 2.0, 3.0, 4.0, 100.0, 5.0, 5.0, 5.0, 9.0]})
    z = frame.with_columns(robust_z(["x"], ["g"]))["z_x"].to_list()
    # Group a: median 3, MAD 1 -> scale 1.4826. Group b: MAD 0, mean |dev| 1 -> scale 1.2533.
    assert z[:4] == pytest.approx([-2 / 1.4826, -1 / 1.4826, 0.0, 1 / 1.4826])
    assert z[4] == 30.0  # clipped
    assert z[5:] == pytest.approx([0.0, 0.0, 0.0, 4 / 1.2533])


@pytest.mark.parametrize("name", NAMES)
def test_every_detector_ranks_a_planted_outlier_first(name: str) -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 5))
    X[17] = [6, -6, 6, -6, 6]
    detector = Detector(name, random_state=1).fit(X)
    scores = detector.score(X)
    assert scores.shape == (300,)
    assert int(np.argmax(scores)) == 17
    assert np.array_equal(Detector(name, random_state=1).fit(X).score(X), scores)  # seeded


def test_unknown_detector_is_named() -> None:
    with pytest.raises(ValueError, match="Unknown detector 'svm'"):
        Detector("svm").fit(np.zeros((10, 2)))


def test_zoo_scores_are_explained_in_the_peer_groups_terms() -> None:
    profiles = _profiles({("gp", "003", "BRU"): 300})
    planted = {"evening_share": 40.0, "night_share": 30.0, "home_visit_share": 20.0}
    profiles = profiles.with_columns(
        pl.when(pl.col("provider_nihdi") == "gp003BRU0007").then(value).otherwise(pl.col(name)).alias(name)
        for name, value in planted.items()
    )
    scores = score_profiles(fit_profiles(profiles, "ensemble"), profiles)
    assert scores.columns[:5] == ["provider_nihdi", "peer_group", "score", "rank", "explanation"]
    first = scores.row(0, named=True)
    assert first["provider_nihdi"] == "gp003BRU0007"
    assert first["rank"] == 1
    assert scores["rank"].to_list() == list(range(1, 301))
    assert scores["score"].is_sorted(descending=True)
    median = profiles.filter(pl.col("provider_nihdi") != "gp003BRU0007")["evening_share"].median()
    assert first["explanation"].startswith("share of evening codes: 40.0 against a peer median of ")
    assert "higher than 99% of 300 peers" in first["explanation"]
    top = json.loads(first["contributions"])
    assert [t["feature"] for t in top] == list(planted)
    assert top[0]["value"] == 40.0
    assert top[0]["peer_median"] == pytest.approx(median, abs=0.2)
    assert top[0]["robust_z"] > 10


def test_bring_your_own_features() -> None:
    rng = np.random.default_rng(5)
    table = pl.DataFrame(
        {
            "npi": [f"N{i}" for i in range(200)],
            "state": ["A", "B"] * 100,
            "claims": rng.normal(100, 10, 200),
            "amount": rng.normal(1000, 50, 200),
            "note": ["x"] * 200,
        }
    ).with_columns(pl.when(pl.col("npi") == "N42").then(400.0).otherwise(pl.col("claims")).alias("claims"))
    scores = score_table(table, "npi", peer_group="state", detector="iforest")
    assert scores.columns == ["npi", "score", "rank"]
    assert scores.row(0)[0] == "N42"
    with pytest.raises(ValueError, match="'provider'"):
        score_table(table, "provider")
    with pytest.raises(ValueError, match="no numeric column"):
        score_table(table.select("npi", "note"), "npi")


def test_top_decile_streaks_count_consecutive_periods_only() -> None:
    # Ten providers per period; "a" tops 2022, 2023 and 2025, "b" only 2023; 2024 has others on top.
    rows = []
    for period, top in (("2022", "a"), ("2023", "a"), ("2024", "x"), ("2025", "a")):
        rows += [{"provider_nihdi": f"p{i}", "period": period, "score": float(i)} for i in range(9)]
        rows.append({"provider_nihdi": top, "period": period, "score": 100.0})
    rows.append({"provider_nihdi": "b", "period": "2023", "score": 50.0})  # 11th in 2023: top decile is 2
    scores = pl.DataFrame(rows)
    streaks = scores.with_columns(top_decile_streaks(scores).alias("streak"))
    by = {(r["provider_nihdi"], r["period"]): r["streak"] for r in streaks.iter_rows(named=True)}
    assert [by[("a", p)] for p in ("2022", "2023", "2025")] == [1, 2, 1]  # 2024 breaks the run
    assert by[("b", "2023")] == 1
    assert by[("x", "2024")] == 1
    assert by[("p0", "2022")] == 0


def test_labels_on_some_rows_lift_the_rest() -> None:
    """Legitimate outliers top the unsupervised order; labels on some rows teach it."""
    rng = np.random.default_rng(8)
    n = 1000
    fraud = np.zeros(n, dtype=bool)
    fraud[:60] = True
    legitimate = np.zeros(n, dtype=bool)
    legitimate[60:120] = True
    table = pl.DataFrame(
        {
            "npi": [f"N{i:04d}" for i in range(n)],
            "night_duty": rng.normal(0, 1, n) + 6 * legitimate,
            "claims_per_patient": rng.normal(0, 1, n) + 2.5 * fraud,
            "amount_per_claim": rng.normal(0, 1, n) + 2.5 * fraud,
        }
    )
    labelled = np.arange(n) % 5 == 0  # a fifth of the rows, 12 of the frauds
    labels = pl.DataFrame({"npi": table["npi"].filter(pl.Series(labelled)), "confirmed": fraud[labelled]})
    held_out = pl.col("npi").is_in(labels["npi"].implode()).not_()
    truth = set(table["npi"].filter(pl.Series(fraud & ~labelled)))

    def precision(scores: pl.DataFrame) -> float:
        top = scores.filter(held_out).sort("score", descending=True).head(len(truth))["npi"]
        return len(truth & set(top)) / len(truth)

    plain = precision(score_table(table, "npi"))
    guided = precision(score_table(table, "npi", labels=labels))
    assert guided > plain + 0.2
    few = pl.concat([labels.filter("confirmed").head(4), labels.filter(~pl.col("confirmed")).head(30)])
    # Fewer than 5 confirmed: nothing is learnt.
    assert_frame_equal(score_table(table, "npi", labels=few), score_table(table, "npi"))
