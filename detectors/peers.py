"""Peer groups and robust normalisation within them.

A provider is compared with providers of the same profession, qualification and region in
the same period. A group smaller than ``min_size`` is too small to say what is usual, so its
members fall back to a wider group: the grouping columns are dropped from the right
(region first), down to everyone in the period.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import polars as pl

DEFAULT_PEER_COLUMNS: tuple[str, ...] = ("profession", "qualification", "region")
DEFAULT_MIN_PEERS = 20
# 1.4826 × MAD estimates the standard deviation of normal data; so does 1.2533 × mean
# absolute deviation, used when more than half of the peers share one value (MAD = 0).
_MAD_TO_SD = 1.4826
_MEAN_AD_TO_SD = 1.2533
Z_LIMIT = 30.0
POOLED_PEERS = 20  # how many peers the profession's spread counts for in a group's (see spread)


def assign_peer_groups(
    profiles: pl.DataFrame,
    columns: Sequence[str] = DEFAULT_PEER_COLUMNS,
    *,
    min_size: int = DEFAULT_MIN_PEERS,
    within: Sequence[str] = ("period",),
    min_widest: int | None = None,
) -> pl.DataFrame:
    """``profiles`` with ``peer_group`` (e.g. ``gp|003|BRU``) and ``peer_group_size``.

    ``min_widest`` (default ``min_size``) is the size the widest named group (the first
    column alone, e.g. the profession) needs before falling back to everyone: comparing
    shares across professions says nothing, so a detector may accept a smaller group there.

    Also the helper columns ``_peer_0`` … (one key per level, narrowest first) and
    ``_peer_level`` (the level chosen), which ``peer_statistics`` reads.
    """
    missing = [c for c in [*columns, *within] if c not in profiles.columns]
    if missing:
        msg = f"Peer grouping needs column(s) {missing}; the profiles have {profiles.columns}"
        raise ValueError(msg)
    levels = [list(columns[:k]) for k in range(len(columns), 0, -1)]
    keys = [pl.concat_str([pl.col(c).cast(pl.String).fill_null("?") for c in level], separator="|") for level in levels]
    keys.append(pl.lit("all"))
    with_keys = profiles.with_columns(key.alias(level_key(i)) for i, key in enumerate(keys))
    sizes = [pl.len().over(*within, level_key(i)) for i in range(len(keys))]
    level: pl.Expr = pl.lit(len(keys) - 1)
    for i in range(len(keys) - 2, -1, -1):
        needed = min_size if i < len(keys) - 2 or min_widest is None else min_widest
        level = pl.when(sizes[i] >= needed).then(pl.lit(i)).otherwise(level)
    grouped = with_keys.with_columns(level.alias("_peer_level"))
    return grouped.with_columns(
        by_level(
            lambda group, _: [pl.col(group[-1]).alias("peer_group"), pl.len().over(group).alias("peer_group_size")],
            len(keys),
            within,
        )
    ).with_columns(pl.col("peer_group_size").cast(pl.Int64))


def level_key(level: int) -> str:
    """The helper column that keys peer groups at ``level`` (0 the narrowest, see
    :func:`assign_peer_groups`)."""
    return f"_peer_{level}"


def peer_levels(grouped: pl.DataFrame) -> int:
    """How many levels :func:`assign_peer_groups` keyed ``grouped`` by."""
    return sum(1 for c in grouped.columns if c.startswith("_peer_") and c != "_peer_level")


def by_level(build: Callable[[list[str], int], list[pl.Expr]], levels: int, within: Sequence[str]) -> list[pl.Expr]:
    """Each expression of ``build(group, level)`` computed over the peer level chosen for the row."""
    per_level = [build([*within, level_key(i)], i) for i in range(levels)]
    combined = []
    for j, first in enumerate(per_level[0]):
        chain = pl.when(pl.col("_peer_level") == 0).then(first)
        for i in range(1, levels):
            chain = chain.when(pl.col("_peer_level") == i).then(per_level[i][j])
        combined.append(chain.alias(first.meta.output_name()))
    return combined


def peer_statistics(
    grouped: pl.DataFrame, features: Sequence[str], within: Sequence[str] = ("period",)
) -> pl.DataFrame:
    """Per feature ``z_``, ``median_`` and ``pct_`` against the whole peer group of each row.

    A provider that fell back to a wider group is compared with every member of that wider
    group, not only with the others who fell back.
    """
    levels = peer_levels(grouped)

    def build(group: list[str], _: int) -> list[pl.Expr]:
        return [*robust_z(features, group), *peer_medians(features, group), *peer_percentiles(features, group)]

    statistics = grouped.with_columns(by_level(build, levels, within))
    return statistics.drop(c for c in statistics.columns if c.startswith("_peer_"))


def spread(deviation: pl.Expr, group: Sequence[str], pool: Sequence[str] | None = None) -> pl.Expr:
    """The standard deviation of ``deviation`` (from the peer median) in ``group``, as 1.4826 ×
    its median absolute value.

    With ``pool`` (a wider group: the profession), the group's estimate is shrunk toward the
    pool's, as if the pool were ``POOLED_PEERS`` more peers: the MAD of 20 normal values is off
    by a quarter, typically, and a group whose members happen to agree closely would make a
    modest gap look extreme. The group still says what is usual (the median).
    """
    own = deviation.abs().median().over(group) * _MAD_TO_SD
    if pool is None or list(pool) == list(group):
        return own
    pooled = deviation.abs().median().over(pool) * _MAD_TO_SD
    size = pl.len().over(group).cast(pl.Float64)
    return ((size * own**2 + POOLED_PEERS * pooled**2) / (size + POOLED_PEERS)).sqrt()


def robust_z(features: Sequence[str], group: Sequence[str], pool: Sequence[str] | None = None) -> list[pl.Expr]:
    """Per feature, ``(value - peer median) / robust scale``, clipped to ±``Z_LIMIT``; the
    scale is :func:`spread` (with ``pool``, shrunk toward the pool's)."""
    exprs = []
    for feature in features:
        x = pl.col(feature)
        median = x.median().over(group)
        mad = spread(x - median, group, pool)
        mean_ad = (x - median).abs().mean().over(group) * _MEAN_AD_TO_SD
        scale = pl.when(mad > 0).then(mad).when(mean_ad > 0).then(mean_ad).otherwise(None)
        z = ((x - median) / scale).fill_null(0.0).fill_nan(0.0).clip(-Z_LIMIT, Z_LIMIT)
        exprs.append(z.alias(f"z_{feature}"))
    return exprs


def peer_medians(features: Sequence[str], group: Sequence[str]) -> list[pl.Expr]:
    return [pl.col(f).median().over(group).alias(f"median_{f}") for f in features]


def peer_percentiles(features: Sequence[str], group: Sequence[str]) -> list[pl.Expr]:
    """Share of peers with a lower value (0 to 1), ties counted half."""
    return [((pl.col(f).rank("average").over(group) - 0.5) / pl.len().over(group)).alias(f"pct_{f}") for f in features]
