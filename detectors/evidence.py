"""The default detector: one-sided, count-aware evidence against the peer group, summed.

An inspector's question is "does this provider bill *more* than comparable providers, by more
than chance explains?". So, per feature, only the side that could mean overbilling counts,
and a share is judged with its denominator: 9 evening codes out of 60 lines is weaker
evidence than 90 out of 600, though both are 15 %. The score is a plain sum:

- a **share** ``k / n`` (evening codes per line, one-off patients per patient…) becomes
  ``(x - p) / sqrt(p (1 - p) / n + tau²)``, where ``p`` is the peer median share and
  ``tau²`` the spread of shares between peers beyond what counting noise explains (a
  beta-binomial view, estimated robustly); a small practice needs a larger gap to score;
- a **level** (lines per patient, amount per line…) becomes a robust z of its logarithm;
- the peer group says what is usual (its median); its spread, an estimate from a few dozen
  members, is shrunk toward the profession's (:func:`detectors.peers.spread`);
- a feature of ``TRADE_OFFS`` is also judged for the provider's own value of another: a
  practice that bills more lines per patient sees fewer patients only once, so its share of
  one-off patients is also compared with the line its peers draw between the two (the larger
  z counts, and the explanation says which expected share it was measured from);
- features are grouped by what they would reveal (volume, patient list, hours, coding);
  a group's evidence is its strongest feature's one-sided z, and its
  contribution to the score is that z squared. The score is the sum of the contributions,
  so an explanation that lists them is exact.

Every z is measured against the provider's own peer group and period, and counts what its
tail probability is worth against that many peers (a t with one degree of freedom fewer), so
scores of different periods, professions, group sizes and runs are on one scale (that of a
sum of squared standard normals).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from detectors.indicators import FEATURES, GROUPS, LEVELS, SHARES, TRADE_OFFS
from detectors.peers import (
    DEFAULT_MIN_PEERS,
    DEFAULT_PEER_COLUMNS,
    assign_peer_groups,
    by_level,
    level_key,
    peer_levels,
    peer_medians,
    peer_percentiles,
    robust_z,
    spread,
)
from detectors.profiles import ID

NAME = "peer_evidence"
# One feature far out should lead the worklist, not bury every other lead: z counts up to 10.
EVIDENCE_LIMIT = 10.0
NEGLIGIBLE = 5e-4  # the smallest contribution an explanation lists: it shows three decimals
# A z this small is a value at its peers' median give or take the last bit of a float (the
# share a provider is compared with is the peers' median ratio times its own expected share,
# rounded): no evidence, or one run would score it 1e-30, the next 0, and the bottom of the
# worklist would change order between runs of the same data.
AT_MEDIAN = 1e-9
_LOG_OFFSET = 1e-3  # keeps the log of a zero level finite
# A trade-off's line is fitted on z's cut here (see _trade_off): beyond, a provider is what is sought.
FIT_LIMIT = 3.0
_TINY = 1e-6
# Confirmed and unfounded cases each needed before verdicts weigh the evidence.
MIN_VERDICTS = 5
PRIOR_VERDICTS = 50  # how many verdicts the unsupervised weights (all 1) are worth
# Below ``min_peers``, a provider is still compared within the profession if it has this many.
MIN_PROFESSION_PEERS = 8


def _expected_share(feature: str, group: Sequence[str], adjusted: bool) -> pl.Expr:
    """The share a provider is compared with: the peer median share, or with the patient mix,
    its expected share scaled by the peers' median observed/expected ratio."""
    x = pl.col(feature)
    if not adjusted:
        return x.median().over(group)
    e = pl.col(f"expected_{feature}").fill_null(x).clip(lower_bound=_TINY)
    return ((x / e).median().over(group) * e).clip(0.0, 1.0)


def _share_scale(feature: str, denominator: str, group: Sequence[str], pool: Sequence[str], adjusted: bool) -> pl.Expr:
    """The spread of a share's gap from what its peers make expected (:func:`_expected_share`):
    its counting noise, and the spread between peers beyond counting noise (``tau²``)."""
    x = pl.col(feature)
    n = pl.col(denominator).cast(pl.Float64)
    p = _expected_share(feature, group, adjusted)
    # A share nobody has (p = 0) still has a counting noise: half a case over the median count.
    p_noise = pl.max_horizontal(p, 0.5 / n.median().over(group)).clip(upper_bound=0.5)
    noise = p_noise * (1 - p_noise) / n
    tau2 = (spread(x - p, group, pool) ** 2 - noise.median().over(group)).clip(lower_bound=0.0)
    return (noise + tau2).sqrt()


def _compared(feature: str, adjusted: bool) -> pl.Expr:
    """The column holding the share a provider is compared with (:func:`_expected_share`):
    ``mix_`` given the patient mix, else the peer median, ``median_``."""
    return pl.col(f"mix_{feature}" if adjusted else f"median_{feature}")


def _share_zs(adjusted: bool) -> list[pl.Expr]:
    """Per share ``_z_``: its count-aware z, from the columns :func:`_peer_z` and the peer
    statistics wrote (what it is compared with, ``_s_`` its spread)."""
    return [
        pl.when(pl.col(denominator) > 0)
        .then((pl.col(f) - _compared(f, adjusted)) / pl.col(f"_s_{f}"))
        .otherwise(0.0)
        .alias(f"_z_{f}")
        for f, denominator in SHARES.items()
    ]


def _as_normal(t: pl.Expr, df: pl.Expr) -> pl.Expr:
    """The normal z with the same tail probability as ``t`` on ``df`` degrees of freedom
    (Wallace's approximation): what a z measured against ``df + 1`` peers is worth."""
    return ((8 * df + 1) / (8 * df + 3)) * (df * (t**2 / df).log1p()).sqrt() * t.sign()


def _peer_z(features: Sequence[str], group: Sequence[str], pool: Sequence[str], adjusted: bool) -> list[pl.Expr]:
    """Per level ``_z_``: its z against the peers in ``group``, both sides; per share ``_s_``:
    the spread its z is measured in (:func:`_share_zs`). Spreads are shrunk toward those of
    ``pool`` (:func:`detectors.peers.spread`)."""
    levels = [f for f in features if f not in SHARES]
    scales = [_share_scale(f, SHARES[f], group, pool, adjusted).alias(f"_s_{f}") for f in features if f in SHARES]
    logs = robust_z([f"_log_{f}" for f in levels], group, pool)
    return scales + [z.alias(f"_z_{f}") for f, z in zip(levels, logs, strict=True)]


def _trade_off(feature: str, against: str, group: Sequence[str]) -> list[pl.Expr]:
    """``_t_<feature>``: how far the z of ``feature`` lies above what peers with the provider's
    z of ``against`` show, as a robust z of its residual from the group's line; ``_fit_<feature>``:
    the z that line gives the provider.

    The line's slope is fitted through the group's z's cut at ``FIT_LIMIT``, so that the few
    providers far out, those sought, do not bend it; a provider beyond it is read at the line's
    end (compared with the peers who bill most like it, not with an extrapolation no peer
    shows). Only a falling line is a trade-off: where both rise together, the feature is
    judged as without it.
    """
    zy, zx = pl.col(f"_z_{feature}"), pl.col(f"_z_{against}")
    cx, cy = zx.clip(-FIT_LIMIT, FIT_LIMIT), zy.clip(-FIT_LIMIT, FIT_LIMIT)
    slope = ((cx * cy).sum().over(group) / (cx * cx).sum().over(group)).fill_nan(0.0).clip(upper_bound=0.0)
    residual = zy - slope * cx
    centre = residual.median().over(group)
    gap = residual - centre
    scale = spread(gap, group)
    # A gap within AT_MEDIAN is the last bit of a float (every share at what peers make
    # expected, say), not a residual whose spread could measure it.
    t = pl.when((scale > 0) & (gap.abs() > AT_MEDIAN)).then(gap / scale).otherwise(0.0)
    return [t.alias(f"_t_{feature}"), (slope * cx + centre).alias(f"_fit_{feature}")]


def _judged_with_trade_offs(adjusted: bool) -> list[pl.Expr]:
    """Per feature of ``TRADE_OFFS``: ``_z_`` the larger of its z against peers and for its
    trade-off; ``mix_``, when the trade-off carries, the share peers billing like the
    provider show (for their patients too, given the patient mix); ``basis_``, what that
    expected share is expected for (``patients``, the other feature's name, or both)."""
    exprs = []
    for feature, against in TRADE_OFFS.items():
        carries = pl.col(f"_t_{feature}") > pl.col(f"_z_{feature}")
        for_trade_off = (_compared(feature, adjusted) + pl.col(f"_s_{feature}") * pl.col(f"_fit_{feature}")).clip(
            0.0, 1.0
        )
        usual = pl.col(f"mix_{feature}") if adjusted else pl.lit(None, pl.Float64)
        exprs += [
            pl.max_horizontal(f"_z_{feature}", f"_t_{feature}").alias(f"_z_{feature}"),
            pl.when(carries).then(for_trade_off).otherwise(usual).alias(f"mix_{feature}"),
            pl.when(carries)
            .then(pl.lit(f"patients_and_{against}" if adjusted else against))
            .otherwise(pl.lit("patients" if adjusted else None, pl.String))
            .alias(f"basis_{feature}"),
        ]
    return exprs


def _evidence(features: Sequence[str]) -> list[pl.Expr]:
    """Per feature ``e_``: its one-sided z (0 when below peers or within ``AT_MEDIAN`` above
    them), clipped to ``EVIDENCE_LIMIT``, from the ``_z_`` columns (:func:`_peer_z`,
    :func:`_share_zs`, :func:`_judged_with_trade_offs`) and ``peer_group_size``.

    The peers' median and spread are estimates: a z against 9 peers proves less than the same
    z against 300, so each is worth the normal z of a t with one degree of freedom fewer than
    the peers. The ``_z_`` are columns, not expressions: the conversion writes its input
    three times, and Polars would compute a z written inside it, windows and all, each time."""
    df = (pl.col("peer_group_size") - 1).clip(lower_bound=1).cast(pl.Float64)

    def one_sided(z: pl.Expr) -> pl.Expr:
        return pl.when(z > AT_MEDIAN).then(z).otherwise(0.0)

    return [
        _as_normal(one_sided(pl.col(f"_z_{f}").fill_nan(0.0).fill_null(0.0)), df)
        .clip(0.0, EVIDENCE_LIMIT)
        .alias(f"e_{f}")
        for f in features
    ]


def _mix_expected(features: Sequence[str], group: Sequence[str]) -> list[pl.Expr]:
    """Per feature ``mix_``: the value its z is measured from, for the provider's patient mix."""
    exprs = [_expected_share(f, group, adjusted=True).alias(f"mix_{f}") for f in features if f in SHARES]
    return exprs + [
        (pl.col(f"_log_{f}").median().over(group).exp() * (pl.col(f"expected_{f}") + _LOG_OFFSET) - _LOG_OFFSET)
        .clip(lower_bound=0.0)
        .alias(f"mix_{f}")
        for f in features
        if f not in SHARES
    ]


def peer_evidence(
    profiles: pl.DataFrame,
    *,
    peer_columns: Sequence[str] = DEFAULT_PEER_COLUMNS,
    min_peers: int = DEFAULT_MIN_PEERS,
    weights: dict[str, float] | None = None,
) -> pl.DataFrame:
    """Profiles with peer group, per feature ``e_`` / ``median_`` / ``pct_``, per group ``g_``, and ``score``.

    A group's ``g_`` is its contribution: the largest ``weight * z²`` of its features (every
    weight is 1 unless verdicts taught otherwise); the score is their sum.
    """
    weight = weights or dict.fromkeys(FEATURES, 1.0)
    adjusted = all(f"expected_{f}" in profiles.columns for f in FEATURES)

    def log(column: str) -> pl.Expr:
        return pl.col(column).clip(lower_bound=0.0).add(_LOG_OFFSET).log()

    # A level is judged by its log, or with the patient mix by its log observed/expected ratio.
    prepared = profiles.with_columns(
        (log(f) - log(f"expected_{f}").fill_null(log(f)) if adjusted else log(f)).alias(f"_log_{f}") for f in LEVELS
    )
    grouped = assign_peer_groups(prepared, peer_columns, min_size=min_peers, min_widest=MIN_PROFESSION_PEERS)
    levels = peer_levels(grouped)

    # The widest named level (the profession alone): narrower groups' spreads lean on its.
    profession = len(peer_columns) - 1

    def build(group: list[str], level: int) -> list[pl.Expr]:
        mix = _mix_expected(FEATURES, group) if adjusted else []
        pool = [*group[:-1], level_key(max(level, profession))]
        return [
            *_peer_z(FEATURES, group, pool, adjusted),
            *peer_medians(FEATURES, group),
            *peer_percentiles(FEATURES, group),
            *mix,
        ]

    def trade_offs(group: list[str], _: int) -> list[pl.Expr]:
        return [e for feature, against in TRADE_OFFS.items() for e in _trade_off(feature, against, group)]

    evidence = (
        grouped.with_columns(by_level(build, levels, ("period",)))
        .with_columns(_share_zs(adjusted))
        .with_columns(by_level(trade_offs, levels, ("period",)))
        .with_columns(_judged_with_trade_offs(adjusted))
        .with_columns(_evidence(FEATURES))
    )
    scored = evidence.with_columns(
        pl.max_horizontal(weight[f] * pl.col(f"e_{f}") ** 2 for f in members).alias(f"g_{name}")
        for name, members in GROUPS.items()
    )
    scored = scored.with_columns(pl.sum_horizontal(f"g_{name}" for name in GROUPS).alias("score"))
    return scored.drop(c for c in scored.columns if c.startswith(("_peer_", "_log_", "_z_", "_s_", "_t_", "_fit_")))


def _expected_for(feature: str, columns: Sequence[str]) -> pl.Expr:
    """What a feature's expected value is expected for: ``patients`` (the patient mix), the
    name of the feature its trade-off reads, both joined by ``_and_``, or nothing."""
    if f"basis_{feature}" in columns:
        return pl.col(f"basis_{feature}")
    return pl.lit("patients" if f"mix_{feature}" in columns else None, pl.String)


def _contributions(evidence: pl.DataFrame, weights: dict[str, float] | None) -> pl.DataFrame:
    """Per row and group, the feature that carries the group and its exact contribution."""
    weight = weights or dict.fromkeys(FEATURES, 1.0)
    long = pl.concat(
        [
            evidence.select(
                "_row",
                "peer_group_size",
                pl.lit(group).alias("group"),
                pl.col(f).alias("value"),
                pl.lit(f).alias("feature"),
                pl.col(f"median_{f}").alias("peer_median"),
                (pl.col(f"mix_{f}") if f"mix_{f}" in evidence.columns else pl.lit(None, pl.Float64)).alias("expected"),
                _expected_for(f, evidence.columns).alias("expected_for"),
                pl.col(f"pct_{f}").alias("peer_percentile"),
                pl.col(f"e_{f}").alias("z"),
                (weight[f] * pl.col(f"e_{f}") ** 2).alias("_term"),
                pl.col(f"g_{group}").alias("contribution"),
                pl.lit(i).alias("_order"),
            )
            for group, members in GROUPS.items()
            for i, f in enumerate(members)
        ]
    )
    # The group's carrier: its largest term (the first listed on ties). A contribution the
    # explanation would write as 0.000 is a value at its peers' median give or take the last
    # bit of a floating-point sum: listed or not by chance, so never listed.
    return (
        long.filter(pl.col("contribution") >= NEGLIGIBLE)
        .sort("_row", "group", "_term", "_order", descending=[False, False, True, False])
        .group_by("_row", "group", maintain_order=True)
        .first()
        .sort("_row", "contribution", descending=[False, True])
        .drop("_order", "_term")
    )


class PeerEvidence:
    """The one-sided, count-aware peer-evidence detector; see the module docstring.

    Unsupervised, it has nothing to learn. Given inspectors' verdicts (``fit(profiles, y)``
    with ``y`` the providers of closed cases and whether each was ``confirmed``), it weighs
    each feature's ``z²`` by what a logistic regression on the verdicts says it is worth,
    shrunk towards 1 by ``PRIOR_VERDICTS`` (a handful of cases nudges, hundreds decide). The
    score keeps its form, a sum of group contributions the explanation lists.
    """

    name = NAME
    members: tuple[str, ...] = ()
    params = None

    def __init__(self, peer_columns: Sequence[str] = DEFAULT_PEER_COLUMNS, min_peers: int = DEFAULT_MIN_PEERS) -> None:
        self.peer_columns = peer_columns
        self.min_peers = min_peers

    @property
    def feature_names_(self) -> list[str]:
        return list(FEATURES)

    def evidence(self, profiles: pl.DataFrame) -> pl.DataFrame:
        """Per row its evidence (see :func:`peer_evidence`) and its ``score``."""
        return peer_evidence(
            profiles,
            peer_columns=self.peer_columns,
            min_peers=self.min_peers,
            weights=getattr(self, "weights_", None),
        )

    def fit(self, profiles: pl.DataFrame, y: pl.DataFrame | None = None) -> PeerEvidence:
        """Unsupervised without ``y``; with verdicts (``provider_nihdi``, ``confirmed``), weighted.

        Fewer than ``MIN_VERDICTS`` confirmed or unfounded cases teach nothing reliable: the
        weights stay unset and the unsupervised score is used (``verdicts_`` says how many).
        """
        self.weights_: dict[str, float] | None = None
        self.verdicts_ = 0
        if y is None or y.is_empty():
            return self
        labelled = self.evidence(profiles).join(y.select(ID, "confirmed"), on=ID, how="inner")
        confirmed = int(labelled["confirmed"].sum())
        self.verdicts_ = y.height
        if min(confirmed, labelled.height - confirmed) < MIN_VERDICTS:
            return self
        # scikit-learn takes a second or more to import: only verdicts need it, not a run.
        from sklearn.linear_model import LogisticRegression

        X = labelled.select(pl.col(f"e_{f}") ** 2 for f in FEATURES).to_numpy()
        model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000).fit(X, labelled["confirmed"])
        learned = np.clip(model.coef_[0], 0.0, None)
        if learned.sum() > 0:
            learned = learned / learned.mean()  # relative worth, 1 on average
            n = labelled[ID].n_unique()
            weights = (PRIOR_VERDICTS + n * learned) / (PRIOR_VERDICTS + n)
            self.weights_ = dict(zip(FEATURES, weights.tolist(), strict=True))
        return self

    def explained(self, profiles: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The evidence frame (with ``_row``) and each row's contributions, one per group."""
        evidence = self.evidence(profiles).with_row_index("_row")
        return evidence, _contributions(evidence, getattr(self, "weights_", None))
