"""From profiles to scored providers: peer normalisation, the detector, and explanations.

The output is the contract's ``provider_scores.parquet``: ``provider_nihdi``, ``peer_group``,
``score`` (higher is more anomalous), ``rank`` (1 is the most anomalous) and ``explanation``,
plus ``period``, ``peer_group_size`` and ``contributions`` (the explanation as JSON).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from detectors import evidence
from detectors.evidence import PeerEvidence
from detectors.indicators import NAMED_FROM, TOP_FEATURES, TRADE_OFFS
from detectors.peers import DEFAULT_MIN_PEERS, DEFAULT_PEER_COLUMNS, assign_peer_groups, peer_statistics, robust_z
from detectors.profiles import FEATURES, ID
from detectors.zoo import NAMES as ZOO
from detectors.zoo import Detector

DEFAULT = evidence.NAME
DETECTORS = (evidence.NAME, *ZOO)
# A table of unknown features has no counts nor groups for the peer evidence: the ensemble.
TABLE_DEFAULT = "ensemble"
Model = PeerEvidence | Detector


def normalise(
    profiles: pl.DataFrame,
    features: Sequence[str] = tuple(FEATURES),
    *,
    peer_columns: Sequence[str] = DEFAULT_PEER_COLUMNS,
    min_peers: int = DEFAULT_MIN_PEERS,
) -> pl.DataFrame:
    """Profiles with their peer group and, per feature, ``z_``, ``median_`` and ``pct_`` columns."""
    grouped = assign_peer_groups(profiles, peer_columns, min_size=min_peers)
    return peer_statistics(grouped, features, within=("period",))


def matrix(normalised: pl.DataFrame, features: Sequence[str]) -> np.ndarray:
    return normalised.select(f"z_{f}" for f in features).to_numpy()


def fit_profiles(
    profiles: pl.DataFrame,
    detector: str = DEFAULT,
    *,
    features: Sequence[str] = tuple(FEATURES),
    peer_columns: Sequence[str] = DEFAULT_PEER_COLUMNS,
    min_peers: int = DEFAULT_MIN_PEERS,
    random_state: int = 0,
    verdicts: pl.DataFrame | None = None,
) -> Model:
    """A detector fitted on ``profiles``, carrying the features and peer settings it used.

    ``verdicts`` (``provider_nihdi``, ``confirmed``: closed cases) guide the default detector.
    """
    if detector == evidence.NAME:
        return PeerEvidence(peer_columns, min_peers).fit(profiles, verdicts)
    model = Detector(detector, random_state=random_state)
    normalised = normalise(profiles, features, peer_columns=peer_columns, min_peers=min_peers)
    model.fit(matrix(normalised, features))
    model.feature_names_ = list(features)
    model.peer_columns_ = list(peer_columns)
    model.min_peers_ = min_peers
    return model


def _explanations(normalised: pl.DataFrame, features: Sequence[str]) -> pl.DataFrame:
    """Per row: the top features by |robust z|, as a sentence and as JSON."""
    rows = normalised.select(
        pl.int_range(pl.len()).alias("_row"),
        "peer_group_size",
        *(pl.col(f"{p}_{f}") for p in ("z", "median", "pct") for f in features),
        *features,
    )
    long = pl.concat(
        [
            rows.select(
                "_row",
                "peer_group_size",
                pl.lit(f).alias("feature"),
                pl.col(f).alias("value"),
                pl.col(f"median_{f}").alias("peer_median"),
                pl.col(f"z_{f}").alias("robust_z"),
                pl.col(f"pct_{f}").alias("peer_percentile"),
            )
            for f in features
        ]
    )
    top = (
        long.sort("_row", pl.col("robust_z").abs(), descending=[False, True], maintain_order=True)
        .group_by("_row", maintain_order=True)
        .head(TOP_FEATURES)
    )
    higher = pl.col("robust_z") >= 0
    share = pl.when(higher).then(pl.col("peer_percentile")).otherwise(1 - pl.col("peer_percentile"))
    sentence = pl.format(
        "{}: {} against a peer median of {} ({} than {}% of {} peers, robust z {})",
        pl.col("feature").replace_strict(FEATURES, default=pl.col("feature")),
        pl.col("value").round_sig_figs(3),
        pl.col("peer_median").round_sig_figs(3),
        pl.when(higher).then(pl.lit("higher")).otherwise(pl.lit("lower")),
        (share * 100).floor().cast(pl.Int64),
        pl.col("peer_group_size"),
        pl.col("robust_z").round(1),
    )
    item = pl.struct("feature", "value", "peer_median", pl.col("robust_z").round(2), pl.col("peer_percentile").round(3))
    return (
        top.group_by("_row", maintain_order=True)
        .agg(sentence.str.join("; ").alias("explanation"), item.struct.json_encode().alias("_items"))
        .select(
            "_row",
            "explanation",
            pl.format("[{}]", pl.col("_items").list.join(",")).alias("contributions"),
        )
    )


def _expected_for_words() -> dict[str, str]:
    """What an explanation says an expected value is expected for, per ``expected_for`` code
    (:func:`detectors.evidence._expected_for`)."""
    words = {"patients": "their patients"}
    for against in TRADE_OFFS.values():
        words[against] = f"their {FEATURES[against]}"
        words[f"patients_and_{against}"] = f"their patients and {FEATURES[against]}"
    return words


def _evidence_explanations(contributions: pl.DataFrame) -> pl.DataFrame:
    """Per row: the groups that make up the score, largest first, as a sentence and as JSON.

    The JSON lists every contribution of at least ``evidence.NEGLIGIBLE`` (they sum to the
    score); the sentence names the largest ones beyond chance.
    """
    basis = pl.col("expected_for").replace_strict(_expected_for_words(), default="their patients")
    mix = pl.format(" and {} expected for {}", pl.col("expected").round_sig_figs(3), basis).fill_null("")
    sentence = pl.format(
        "{}: {} against a peer median of {}{} (higher than {}% of {} peers, adds {} to the score)",
        pl.col("feature").replace_strict(FEATURES, default=pl.col("feature")),
        pl.col("value").round_sig_figs(3),
        pl.col("peer_median").round_sig_figs(3),
        mix,
        (pl.col("peer_percentile") * 100).floor().cast(pl.Int64),
        pl.col("peer_group_size"),
        pl.col("contribution").round(1),
    )
    item = pl.struct(
        "group",
        "feature",
        "value",
        "peer_median",
        pl.col("expected").round_sig_figs(4),
        "expected_for",
        pl.col("peer_percentile").round(3),
        pl.col("z").round(2).alias("robust_z"),
        pl.col("contribution").round(3),
    )
    return contributions.group_by("_row", maintain_order=True).agg(
        sentence.filter(pl.col("contribution") >= NAMED_FROM).head(TOP_FEATURES).str.join("; ").alias("explanation"),
        pl.format("[{}]", item.struct.json_encode().str.join(",")).alias("contributions"),
    )


def top_decile_streaks(scores: pl.DataFrame) -> pl.Series:
    """Per row, how many consecutive periods up to this one the provider was in the top decile.

    Periods are consecutive when adjacent among the periods of ``scores``; a one-off outlier
    has a streak of 1, one that stays at the top of its period for three years, 3.
    """
    top = pl.col("score").rank("ordinal", descending=True).over("period") <= (pl.len().over("period") / 10).ceil()
    step = pl.col("period").rank("dense").cast(pl.Int64)
    ordered = scores.select(pl.int_range(pl.len()).alias("_row"), ID, top.alias("_top"), step.alias("_step")).sort(
        ID, "_step"
    )
    broken = ~pl.col("_top") | (pl.col("_step").diff().over(ID).fill_null(1) != 1)
    streaks = ordered.with_columns(broken.cum_sum().over(ID).alias("_run")).with_columns(
        pl.col("_top").cast(pl.Int64).cum_sum().over(ID, "_run").alias("top_decile_streak")
    )
    return streaks.sort("_row")["top_decile_streak"]


def _ranked(frame: pl.DataFrame) -> pl.DataFrame:
    ranked = frame.with_columns(pl.col("score").rank("ordinal", descending=True).cast(pl.Int64).alias("rank"))
    return (
        ranked.with_columns(top_decile_streaks(ranked))
        .sort("rank")
        .select(
            ID,
            "peer_group",
            "score",
            "rank",
            "explanation",
            "period",
            "peer_group_size",
            "contributions",
            "top_decile_streak",
        )
    )


def score_profiles(model: Model, profiles: pl.DataFrame) -> pl.DataFrame:
    """The contract's provider scores for ``profiles``, ranked 1 = most anomalous."""
    if isinstance(model, PeerEvidence):
        scored, contributions = model.explained(profiles)
        return _ranked(
            scored.select("_row", ID, "period", "peer_group", "peer_group_size", "score")
            .join(_evidence_explanations(contributions), on="_row", how="left")
            .with_columns(
                pl.when(pl.col("explanation").fill_null("") == "")
                .then(pl.lit("no feature above the peer median by more than chance"))
                .otherwise(pl.col("explanation"))
                .alias("explanation"),
                pl.col("contributions").fill_null("[]"),
            )
        )
    features = list(model.feature_names_)
    normalised = normalise(profiles, features, peer_columns=model.peer_columns_, min_peers=model.min_peers_)
    scores = model.score(matrix(normalised, features)) if normalised.height else np.array([], dtype=float)
    explained = _explanations(normalised, features)
    return _ranked(
        normalised.select(ID, "period", "peer_group", "peer_group_size")
        .with_columns(pl.Series("score", scores, dtype=pl.Float64))
        .with_row_index("_row")
        .join(explained, on="_row", how="left")
    )


def score_table(
    table: pl.DataFrame,
    id_column: str,
    *,
    peer_group: str | None = None,
    detector: str = TABLE_DEFAULT,
    random_state: int = 0,
    labels: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Score any table of numeric features per id: ``id_column``, ``score``, ``rank``.

    Every numeric column but the id and the peer group is a feature; features are
    normalised within the peer group (or over the whole table), nulls count as the median.
    ``labels`` (``id_column``, ``confirmed``) for some ids make it semi-supervised: see
    :func:`guided_scores`.
    """
    for column in (id_column, peer_group):
        if column and column not in table.columns:
            msg = f"Column '{column}' is not in the table; it has {', '.join(table.columns)}"
            raise ValueError(msg)
    if table.is_empty():
        msg = "The feature table has no rows"
        raise ValueError(msg)
    features = [c for c, t in table.schema.items() if t.is_numeric() and c not in (id_column, peer_group)]
    if not features:
        msg = f"The feature table has no numeric column besides '{id_column}'"
        raise ValueError(msg)
    group = pl.col(peer_group).cast(pl.String) if peer_group else pl.lit("all")
    normalised = (
        table.with_columns(group.alias("_peer"), *(pl.col(f).cast(pl.Float64) for f in features))
        .with_columns(pl.col(f).fill_null(pl.col(f).median().over("_peer")) for f in features)
        .with_columns(robust_z(features, ["_peer"]))
    )
    X = matrix(normalised, features)
    scores = Detector(detector, random_state=random_state).fit(X).score(X)
    if labels is not None:
        known = normalised.select(id_column).join(
            labels.select(pl.col(id_column).cast(normalised.schema[id_column]), pl.col("confirmed").cast(pl.Boolean)),
            on=id_column,
            how="left",
        )["confirmed"]
        scores = guided_scores(X, scores, known, random_state=random_state)
    return (
        normalised.select(id_column)
        .with_columns(pl.Series("score", scores, dtype=pl.Float64))
        .with_columns(pl.col("score").rank("ordinal", descending=True).cast(pl.Int64).alias("rank"))
        .sort("rank")
    )


def guided_scores(X: np.ndarray, unsupervised: np.ndarray, known: pl.Series, *, random_state: int = 0) -> np.ndarray:
    """Unsupervised scores guided by labels on some rows (``known``: True, False or null).

    A gradient-boosted classifier learns from the labelled rows over the features and the
    unsupervised score (as PyOD's XGBOD does); the result averages the two percentile ranks,
    so that what the labels did not cover keeps its unsupervised order. With fewer than
    ``MIN_VERDICTS`` of either class, the unsupervised scores are returned unchanged.
    """
    labelled = known.is_not_null().to_numpy()
    y = known.fill_null(False).to_numpy()
    if min(int(y[labelled].sum()), int((~y[labelled]).sum())) < evidence.MIN_VERDICTS:
        return unsupervised
    from sklearn.ensemble import HistGradientBoostingClassifier  # a second of import, for labels only

    features = np.column_stack([X, unsupervised])
    classifier = HistGradientBoostingClassifier(max_depth=3, learning_rate=0.05, random_state=random_state)
    probability = classifier.fit(features[labelled], y[labelled]).predict_proba(features)[:, 1]

    def percentile(values: np.ndarray) -> np.ndarray:
        return np.argsort(np.argsort(values, kind="stable"), kind="stable") / max(1, values.size - 1)

    return (percentile(unsupervised) + percentile(probability)) / 2
