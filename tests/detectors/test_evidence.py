"""The default detector: one-sided, count-aware peer evidence, exact explanations, one scale."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from detectors.indicators import GROUPS
from detectors.profiles import FEATURES
from detectors.scoring import fit_profiles, score_profiles
from detectors.tracking import verdict_lift
from secm.pipeline import profiles_of
from secm.synth import AnomalySettings, generate, lines_for_practice

MOVED = "gp003BRU0007"


def _profiles(n: int = 300, seed: int = 0, lines: float = 500.0) -> pl.DataFrame:
    """Provider-year profiles with counts behind the shares, as ``provider_profiles`` builds them."""
    rng = np.random.default_rng(seed)
    n_lines = rng.poisson(lines, n).astype(float) + 20
    patients = np.round(n_lines / rng.uniform(2.2, 2.8, n))

    def share(p: float, denominator: np.ndarray) -> np.ndarray:
        return rng.binomial(denominator.astype(np.int64), rng.beta(p * 1000, (1 - p) * 1000, n)) / denominator

    values = {name: rng.normal(10, 1, n) for name in FEATURES}
    values |= {
        "lines": n_lines,
        "patients": patients,
        "lines_per_patient": n_lines / patients,
        "repeat_intensity": n_lines / patients * rng.normal(1.3, 0.05, n),
        "amount_per_patient": n_lines / patients * rng.normal(30, 1.5, n),
        "share_patients_seen_once": share(0.33, patients),
        "evening_share": share(0.05, n_lines),
        "night_share": share(0.02, n_lines),
        "weekend_share": share(0.06, n_lines),
        "home_visit_share": share(0.25, n_lines),
        "high_fee_share": share(0.35, n_lines),
    }
    return pl.DataFrame(
        {
            "provider_nihdi": [f"gp003BRU{i:04d}" for i in range(n)],
            "period": "2024",
            "profession": "gp",
            "qualification": "003",
            "region": "BRU",
            **values,
        }
    )


def _moved(profiles: pl.DataFrame, feature: str, factor: float) -> pl.DataFrame:
    """``MOVED`` at ``factor`` times the peer median of ``feature``."""
    moved = pl.col(feature).median() * factor
    return profiles.with_columns(
        pl.when(pl.col("provider_nihdi") == MOVED).then(moved).otherwise(pl.col(feature)).alias(feature)
    )


def _scores(profiles: pl.DataFrame) -> pl.DataFrame:
    return score_profiles(fit_profiles(profiles), profiles)


@pytest.mark.parametrize(
    ("feature", "factor"),
    [
        ("evening_share", 3.0),
        ("share_patients_seen_once", 1.8),
        ("high_fee_share", 1.5),
        ("lines_per_patient", 2.0),
    ],
)
def test_moving_one_feature_names_exactly_that_feature(feature: str, factor: float) -> None:
    def of_moved(frame: pl.DataFrame) -> tuple[dict[str, object], dict[str, dict[str, float]]]:
        scores = _scores(frame)
        row = scores.filter(pl.col("provider_nihdi") == MOVED).row(0, named=True)
        return row, {c["feature"]: c for c in json.loads(row["contributions"])}

    before, was = of_moved(_profiles())
    after, now = of_moved(_moved(_profiles(), feature, factor))
    assert after["rank"] == 1
    assert str(after["explanation"]).startswith(FEATURES[feature] + ":")
    assert "of 300 peers" in str(after["explanation"])
    assert now[feature]["peer_percentile"] > 0.99
    # Only the moved feature's group changed, and the moved feature carries the score.
    group = now[feature]["group"]
    assert {c["group"]: c["contribution"] for c in now.values() if c["group"] != group} == {
        c["group"]: c["contribution"] for c in was.values() if c["group"] != group
    }
    assert now[feature]["contribution"] > 0.8 * float(after["score"])
    assert float(after["score"]) > float(before["score"]) + 20
    # The explanation is the score: its contributions add up to it.
    assert sum(c["contribution"] for c in now.values()) == pytest.approx(after["score"], abs=0.01)


def test_only_more_than_peers_counts() -> None:
    profiles = _profiles()
    baseline = _scores(profiles).filter(pl.col("provider_nihdi") == MOVED)["score"].item()
    lower = _scores(_moved(profiles, "evening_share", 0.0)).filter(pl.col("provider_nihdi") == MOVED)
    assert lower["score"].item() <= baseline
    assert "evening" not in lower["explanation"].item()
    higher = _scores(_moved(profiles, "evening_share", 3.0)).filter(pl.col("provider_nihdi") == MOVED)
    assert higher["score"].item() > baseline + 10


def test_the_same_share_counts_less_on_fewer_lines() -> None:
    profiles = _profiles().with_columns(
        pl.when(pl.col("provider_nihdi") == MOVED).then(0.15).otherwise(pl.col("evening_share")).alias("evening_share")
    )
    small = profiles.with_columns(
        pl.when(pl.col("provider_nihdi") == MOVED).then(60.0).otherwise(pl.col("lines")).alias("lines")
    )
    evidence = {
        name: json.loads(_scores(frame).filter(pl.col("provider_nihdi") == MOVED)["contributions"].item())
        for name, frame in (("usual", profiles), ("small", small))
    }
    evening = {name: next(c for c in items if c["feature"] == "evening_share") for name, items in evidence.items()}
    assert evening["small"]["robust_z"] < evening["usual"]["robust_z"] / 2
    assert evening["usual"]["robust_z"] > 5


def _trading_off(seen_once: float, lines_per_patient: float) -> pl.DataFrame:
    """Large practices whose share of one-off patients falls as their lines per patient rise,
    as practices' do, with ``MOVED`` at the two values given."""
    profiles = _profiles(lines=5000.0)
    line = 0.33 - 0.25 * (pl.col("lines_per_patient") - 2.5)
    rng = np.random.default_rng(1)
    noisy = line + pl.Series(rng.normal(0.0, 0.01, profiles.height))
    moved = pl.col("provider_nihdi") == MOVED
    return profiles.with_columns(
        pl.when(moved).then(lines_per_patient).otherwise(pl.col("lines_per_patient")).alias("lines_per_patient"),
    ).with_columns(pl.when(moved).then(seen_once).otherwise(noisy).alias("share_patients_seen_once"))


def test_one_off_patients_count_against_what_peers_billing_as_many_lines_per_patient_show() -> None:
    """A practice at the peers' median share of one-off patients, but with the lines per patient
    of the busiest fifth (where peers see a quarter fewer patients only once), is a lead: its
    patient list has one-off patients its billing does not explain. On the peers' line, it is
    none."""
    off = _scores(_trading_off(seen_once=0.33, lines_per_patient=2.75))
    row = off.filter(pl.col("provider_nihdi") == MOVED).row(0, named=True)
    carried = {c["feature"]: c for c in json.loads(row["contributions"])}["share_patients_seen_once"]
    assert row["rank"] == 1
    assert str(row["explanation"]).startswith(FEATURES["share_patients_seen_once"] + ":")
    assert "expected for their lines per patient" in str(row["explanation"])
    assert carried["expected_for"] == "lines_per_patient"
    assert carried["peer_percentile"] < 0.6  # no more one-off patients than the peers' median
    assert carried["expected"] == pytest.approx(0.33 - 0.25 * 0.25, abs=0.01)
    assert carried["contribution"] > 25

    on = _scores(_trading_off(seen_once=0.33 - 0.25 * 0.25, lines_per_patient=2.75))
    row = on.filter(pl.col("provider_nihdi") == MOVED).row(0, named=True)
    assert not any(c["group"] == "patient list" and c["contribution"] >= 4 for c in json.loads(row["contributions"]))


def test_every_group_has_features_the_profile_builds() -> None:
    assert {f for members in GROUPS.values() for f in members} <= set(FEATURES)


def test_two_periods_of_one_population_score_on_one_scale(tmp_path: Path) -> None:
    generate(tmp_path, n_lines=160_000, seed=9, n_providers=400)
    profiles = profiles_of(tmp_path)
    scores = _scores(profiles)
    by_period = {
        period: frame["score"].to_numpy()
        for (period,), frame in scores.partition_by("period", as_dict=True).items()
        if frame.height > 300
    }
    assert sorted(by_period) == ["2023", "2024"]
    first, second = by_period.values()
    for q in (0.5, 0.75, 0.9):
        assert np.quantile(first, q) == pytest.approx(np.quantile(second, q), rel=0.25)
    # And the scale is that of summed squared standard normals: the median ordinary profile
    # scores a few units, not hundreds.
    assert 0.5 < np.median(first) < 10


def test_verdicts_teach_the_detector_to_discount_legitimate_outliers(tmp_path: Path) -> None:
    """GPs on night duty are false leads by construction; verdicts on some of them lift the rest."""
    generate(
        tmp_path,
        n_lines=lines_for_practice(800, 150, 2),
        seed=21,
        n_providers=800,
        anomaly_settings=AnomalySettings(atypical=0.05, atypical_kinds=("on_call",)),
    )
    profiles = profiles_of(tmp_path)
    labels = pl.read_parquet(tmp_path / "labels" / "providers.parquet")
    lift = verdict_lift(profiles, labels, shares=(0.2,), seed=3)
    assert lift["verdicts_used_20pct"] == 1.0
    assert lift["precision_at_k_guided_20pct"] > lift["precision_at_k_unsupervised_20pct"]
    assert lift["lift_average_precision_20pct"] > 0.1


def test_too_few_verdicts_leave_the_score_unsupervised() -> None:
    profiles = _profiles()
    few = pl.DataFrame({"provider_nihdi": [MOVED, "gp003BRU0001"], "confirmed": [True, False]})
    model = fit_profiles(profiles, verdicts=few)
    assert model.weights_ is None  # type: ignore[union-attr]
    assert model.verdicts_ == 2  # type: ignore[union-attr]
    assert_frame_equal(score_profiles(model, profiles), _scores(profiles))


def _with_mix(profiles: pl.DataFrame, moved_needs: float = 1.0) -> pl.DataFrame:
    """Expected values for the patient mix: the peer median, ``moved_needs`` times it for ``MOVED``."""
    factor = pl.when(pl.col("provider_nihdi") == MOVED).then(moved_needs).otherwise(1.0)
    return profiles.with_columns((pl.col(f).median() * factor).alias(f"expected_{f}") for f in FEATURES)


def test_a_uniform_patient_mix_changes_no_score() -> None:
    profiles = _moved(_profiles(), "evening_share", 3.0)
    plain, mixed = _scores(profiles), _scores(_with_mix(profiles))
    assert_frame_equal(mixed.select("provider_nihdi", "score"), plain.select("provider_nihdi", "score"))


def test_volume_the_patient_mix_explains_is_no_lead() -> None:
    volume = ("lines_per_patient", "repeat_intensity", "amount_per_patient")
    profiles = _profiles()
    for feature in volume:
        profiles = _moved(profiles, feature, 2.0)

    def volume_of_moved(frame: pl.DataFrame) -> dict[str, float]:
        row = _scores(frame).filter(pl.col("provider_nihdi") == MOVED).row(0, named=True)
        return next((c for c in json.loads(row["contributions"]) if c["group"] == "volume"), {"contribution": 0.0})

    # Twice the peers' lines per patient is a lead for patients who need as much care as theirs...
    unexplained = volume_of_moved(_with_mix(profiles))
    assert unexplained["contribution"] > 50
    assert unexplained["expected"] == pytest.approx(unexplained["peer_median"], rel=0.05)
    # ...and none for patients who need twice as much (old, chronically ill).
    assert volume_of_moved(_with_mix(profiles, moved_needs=2.0))["contribution"] < 4
    named = _scores(_with_mix(profiles)).filter(pl.col("provider_nihdi") == MOVED)["explanation"].item()
    assert "expected for their patients" in named


@pytest.mark.parametrize(
    ("t", "df", "z"),
    # The normal quantile of the t distribution's upper tail probability, from t tables.
    [(7.0, 8, 3.862), (10.0, 40, 7.039), (2.0, 7, 1.719), (3.0, 20, 2.693), (10.0, 299, 9.280)],
)
def test_a_z_against_few_peers_counts_what_its_tail_probability_is_worth(t: float, df: int, z: float) -> None:
    from detectors.evidence import _as_normal

    assert pl.select(_as_normal(pl.lit(t), pl.lit(float(df)))).item() == pytest.approx(z, abs=0.02)


def test_a_peer_group_that_agrees_closely_does_not_make_a_modest_gap_extreme() -> None:
    """Twenty GPs of one region who all bill 2.50 lines per patient, give or take 0.2 %: the
    group says what is usual there, but its spread, estimated from twenty, leans on the
    profession's. One of them at 8 % above the group is unremarkable among GPs."""
    usual = _profiles()
    rng = np.random.default_rng(1)
    tight = (
        usual.head(20)
        .with_columns(
            pl.format("gp003ANT{}", pl.int_range(pl.len()).cast(pl.String).str.zfill(4)).alias("provider_nihdi"),
            pl.lit("ANT").alias("region"),
            pl.Series("lines_per_patient", 2.5 * rng.normal(1.0, 0.002, 20)),
        )
        .with_columns(
            pl.when(pl.col("provider_nihdi") == "gp003ANT0007")
            .then(pl.col("lines_per_patient").median() * 1.08)
            .otherwise(pl.col("lines_per_patient"))
            .alias("lines_per_patient")
        )
    )
    scores = _scores(pl.concat([usual, tight]))
    row = scores.filter(pl.col("provider_nihdi") == "gp003ANT0007").row(0, named=True)
    volume = next(c for c in json.loads(row["contributions"]) if c["feature"] == "lines_per_patient")
    assert row["peer_group"] == "gp|003|ANT"
    assert volume["peer_median"] == pytest.approx(2.5, rel=0.01)  # the group's own median
    assert volume["peer_percentile"] > 0.95  # the highest of its group
    assert 0 < volume["robust_z"] < 2  # 8 % is less than one GP's spread, not 40 of the group's
    assert "lines per patient" not in row["explanation"]


@pytest.mark.parametrize("size", [5, 20, 80])
def test_a_groups_spread_counts_its_members_against_the_pools_twenty(size: int) -> None:
    """The shrunk spread weighs the group's own estimate by its size and the pool's by
    ``POOLED_PEERS``; a pool that is the group itself changes nothing."""
    from detectors.peers import POOLED_PEERS, spread

    # Deviations from the median: ±1 in the group (MAD 1), ±3 in the rest of the pool (MAD 3).
    frame = pl.DataFrame(
        {
            "g": ["a"] * size + ["b"] * 999,
            "p": ["all"] * (size + 999),
            "d": [(-1.0) ** i for i in range(size)] + [3.0 * (-1.0) ** i for i in range(999)],
        }
    )
    shrunk = frame.select(spread(pl.col("d"), ["g"], ["p"]).alias("s")).filter(frame["g"] == "a")["s"]
    pooled = 3.0 * 1.4826
    expected = ((size * 1.4826**2 + POOLED_PEERS * pooled**2) / (size + POOLED_PEERS)) ** 0.5
    assert shrunk.to_list() == pytest.approx([expected] * size)
    alone = frame.select(spread(pl.col("d"), ["g"], ["g"]).alias("s")).filter(frame["g"] == "a")["s"]
    assert alone.to_list() == pytest.approx([1.4826] * size)


def test_shares_at_what_the_patient_mix_makes_expected_are_no_evidence_at_all() -> None:
    """Every GP bills exactly 70 % of the shares their patient mix makes expected: each is at
    the group's median ratio, and the share they are compared with (that ratio times their own
    expected share) differs from their share by the last bit of a float at most. No share is evidence, not even 1e-30:
    a score of 1e-30 against 0 would reorder the bottom of the worklist from run to run."""
    from detectors.evidence import peer_evidence
    from detectors.indicators import SHARES

    usual = _profiles()
    mixed = _with_mix(usual).with_columns((pl.col(f) / 0.7).alias(f"expected_{f}") for f in SHARES)
    evidence = peer_evidence(mixed)
    assert evidence.select(pl.col(f"e_{f}") for f in SHARES).to_numpy().max() == 0.0
    assert evidence["score"].to_list() == evidence["g_volume"].to_list()  # the levels' evidence alone
