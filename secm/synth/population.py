"""Who bills: providers, institutions, third-party numbers and the registry.

Every provider's mod-97 check digits are computed for realism only; the loader never
rejects a row on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

PROFESSIONS = {
    # profession: (share of providers, NIHDI profession digit, qualification codes, size factor)
    "gp": (0.34, 1, ("003", "004", "005"), 1.6),
    "specialist": (0.24, 1, ("580", "730", "690", "470"), 1.0),
    "nurse": (0.15, 4, ("401", "402"), 2.0),
    "physiotherapist": (0.12, 5, ("520", "521"), 1.3),
    "dentist": (0.09, 3, ("301", "303"), 0.8),
    "midwife": (0.03, 4, ("409",), 0.4),
    "other": (0.03, 8, ("800",), 0.5),
}
REGIONS = {"VLA": (0.58, (2000, 3999)), "WAL": (0.32, (4000, 7999)), "BRU": (0.10, (1000, 1210))}
INSURERS = {"100": 0.40, "200": 0.06, "300": 0.28, "400": 0.08, "500": 0.13, "600": 0.01, "900": 0.04}
# Billing software packages and their market shares (illustrative names).
SOFTWARE = {"medisoft-7": 0.34, "carenote": 0.27, "praxis-one": 0.21, "kinelog": 0.10, "dentaflow": 0.08}
PSEUDO_NUMBER = "0999999922"  # the fictitious number abolished in February 2021


def nihdi(profession_digit: np.ndarray, sequence: np.ndarray, qualification: np.ndarray) -> list[str]:
    """11-digit NIHDI numbers: profession digit, 5-digit sequence, 2 check digits, qualification."""
    base = profession_digit.astype(np.int64) * 100_000 + sequence
    check = 97 - (base % 97)
    return [f"{b:06d}{c:02d}{q}" for b, c, q in zip(base, check, qualification, strict=True)]


@dataclass(frozen=True)
class Population:
    providers: pl.DataFrame  # contract columns + n_lines, tp_number, institution, pool_* (see shared_pools)
    registry: pl.DataFrame
    institutions: list[str]


def _software(sequence: np.ndarray) -> np.ndarray:
    """Each provider's billing package, by market share, spread by its sequence number.

    Derived rather than drawn, so that the random stream of the rest of the population
    does not depend on the list of packages.
    """
    bounds = np.cumsum(list(SOFTWARE.values()))
    spread = (sequence * 2654435761 % 1000) / 1000
    return np.array(list(SOFTWARE), dtype=object)[
        np.minimum(np.searchsorted(bounds, spread, side="right"), len(SOFTWARE) - 1)
    ]


def _sizes(rng: np.random.Generator, factor: np.ndarray, total: int) -> np.ndarray:
    """Heavy-tailed practice sizes summing exactly to ``total``."""
    weights = factor * rng.lognormal(0.0, 0.9, size=factor.size)
    raw = weights / weights.sum() * total
    sizes = np.floor(raw).astype(np.int64)
    remainder = total - sizes.sum()
    sizes[np.argsort(raw - sizes)[::-1][:remainder]] += 1
    return sizes


def preferential(patient: pl.Expr) -> pl.Expr:
    """One patient in four has the preferential reimbursement (BIM/VT), by pseudonym index."""
    return patient % 4 == 0


def patient_pseudonym(patient: pl.Expr) -> pl.Expr:
    return pl.format("PSN{}", patient.cast(pl.String).str.zfill(10))


# Contacts a patient needs, against 1 for a young patient in good health: chronic illness
# and old age bring more visits, and old patients more of them at home (see billing).
CHRONIC_NEED = 0.8
ELDERLY_NEED = 0.5
ELDERLY_AGE = 80


def _spread(index: Any) -> Any:
    """A stable hash of pseudonym indices (a NumPy array or a Polars expression), 0 to 9 999."""
    return (index * 2246822519) % 10_000


@dataclass(frozen=True)
class PatientTraits:
    """Birth year and chronic condition of every pseudonym index ``0 .. n-1``.

    They are stable hashes of the index, so that every line of one patient agrees with the
    ``patients`` table; ``residents`` (nursing-home residents) are born 1920 to 1945 and
    chronically ill. Phantom patients (indices beyond ``n``) have no traits.
    """

    birth_year: np.ndarray
    chronic: np.ndarray

    @classmethod
    def of(cls, n: int, residents: np.ndarray | None = None) -> PatientTraits:
        spread = _spread(np.arange(n, dtype=np.int64))
        resident = residents if residents is not None else np.zeros(n, dtype=bool)
        birth_year = np.where(resident, 1920 + spread % 26, 1928 + spread % 97)
        return cls(birth_year, resident | ((spread // 7) % 5 == 0))

    def need(self, patient: np.ndarray, year: int) -> np.ndarray:
        """How many contacts each patient needs against a healthy young one (1 for phantoms)."""
        chronic = self.chronic[self._index(patient)] & self._known(patient)
        return 1.0 + CHRONIC_NEED * chronic + ELDERLY_NEED * self.elderly(patient, year)

    def elderly(self, patient: np.ndarray, year: int) -> np.ndarray:
        """Whether each patient is ``ELDERLY_AGE`` or older in ``year`` (phantoms are not)."""
        return self._known(patient) & (year - self.birth_year[self._index(patient)] >= ELDERLY_AGE)

    def _known(self, patient: np.ndarray) -> np.ndarray:
        return patient < self.birth_year.size

    def _index(self, patient: np.ndarray) -> np.ndarray:
        """Indices safe to look up: a phantom reads index 0, masked out by :meth:`_known`."""
        return np.where(self._known(patient), patient, 0)

    def pool_need(self, providers: pl.DataFrame, year: int) -> np.ndarray:
        """Each provider's mean patient need over its list (see :func:`shared_pools`)."""
        cumulative = np.concatenate([[0.0], np.cumsum(self.need(np.arange(self.birth_year.size), year))])
        base, start, size, span = (
            providers[c].to_numpy() for c in ("pool_base", "pool_start", "pool_size", "pool_span")
        )
        first = np.minimum(start + size, span)
        total = cumulative[base + first] - cumulative[base + start]
        wrapped = start + size - first  # the part of the list that wraps round to the start
        total += cumulative[base + np.minimum(wrapped, span)] - cumulative[base]
        return total / size

    def table(self) -> pl.DataFrame:
        """The ``patients`` table."""
        index = pl.int_range(self.birth_year.size, dtype=pl.Int64)
        spread = _spread(index)
        return pl.select(
            patient_pseudonym(index).alias("patient_id"),
            pl.Series("birth_year", self.birth_year, dtype=pl.Int64),
            pl.when(spread < 5)
            .then(pl.lit("X"))
            .when(spread % 2 == 0)
            .then(pl.lit("F"))
            .otherwise(pl.lit("M"))
            .alias("sex"),
            preferential(index).alias("preferential_reimbursement"),
            pl.Series("chronic_condition", self.chronic, dtype=pl.Boolean),
        )


def shared_pools(profession: np.ndarray, region: np.ndarray, size: np.ndarray) -> dict[str, np.ndarray]:
    """Patient lists that overlap across professions, as in life: one patient sees a GP, a
    specialist and a physiotherapist of their region.

    Each region has a population of patient indices ``[base, base + span)``, as large as its
    GPs' lists together (every patient has one GP). Each profession's lists tile that
    population in turn, wrapping round, so that a specialist's patients are also some GPs'.
    A provider's patient ``k`` is ``base + (start + k) % span``.
    """
    start = np.zeros(size.size, dtype=np.int64)
    span = np.zeros(size.size, dtype=np.int64)
    base = np.zeros(size.size, dtype=np.int64)
    offset = 0
    for r in np.unique(region):
        here = region == r
        gps = here & (profession == "gp")
        population = int(max(size[gps].sum() if gps.any() else size[here].sum(), size[here].max()))
        for p in np.unique(profession[here]):
            rows = np.flatnonzero(here & (profession == p))
            start[rows] = (np.cumsum(size[rows]) - size[rows]) % population
        span[here], base[here] = population, offset
        offset += population
    return {"pool_start": start, "pool_size": size, "pool_span": span, "pool_base": base}


def make_population(rng: np.random.Generator, n_providers: int, n_lines: int, years: int = 2) -> Population:
    """Providers of ``n_lines`` lines over ``years`` years, each with a patient list of its size."""
    names = list(PROFESSIONS)
    shares = np.array([PROFESSIONS[p][0] for p in names])
    profession = rng.choice(len(names), size=n_providers, p=shares / shares.sum())
    # Every profession is present, however small the dataset.
    profession[: len(names)] = np.arange(len(names))
    digits = np.array([PROFESSIONS[names[p]][1] for p in profession])
    qualification = np.array([rng.choice(PROFESSIONS[names[p]][2]) for p in profession])
    sequence = rng.permutation(np.arange(10_000, 10_000 + n_providers))
    region_names = list(REGIONS)
    region_p = np.array([REGIONS[r][0] for r in region_names])
    region = rng.choice(len(region_names), size=n_providers, p=region_p)
    region[:3] = np.arange(3)
    postcode = np.array(
        [rng.integers(REGIONS[region_names[r]][1][0], REGIONS[region_names[r]][1][1] + 1) for r in region]
    )
    factor = np.array([PROFESSIONS[names[p]][3] for p in profession])
    sizes = _sizes(rng, factor, n_lines)
    ids = nihdi(digits, sequence, qualification)

    # Group practices share one third-party number: about a third of providers in groups of 2-5.
    order = rng.permutation(n_providers)
    group = np.empty(n_providers, dtype=np.int64)
    position, number = 0, 0
    while position < n_providers:
        width = int(rng.choice([1, 1, 1, 2, 3, 4, 5]))
        group[order[position : position + width]] = number
        position += width
        number += 1
    tp_numbers = np.array([f"0{400_000_000 + 7 * g:09d}" for g in range(number)])

    institutions = nihdi(np.full(12, 7), np.arange(50_000, 50_012), np.full(12, "000"))
    pool_size = np.maximum(20, (sizes / rng.uniform(2.5, 6.0, size=n_providers) * 2 / years).astype(np.int64))
    providers = pl.DataFrame(
        {
            "provider_nihdi": ids,
            "profession": [names[p] for p in profession],
            "region": [region_names[r] for r in region],
            "postcode": [f"{p:04d}" for p in postcode],
            "n_lines": sizes,
            "tp_number": tp_numbers[group],
            "institution": [institutions[i] for i in rng.integers(0, len(institutions), n_providers)],
            "software": _software(sequence),
            **shared_pools(np.array([names[p] for p in profession]), region, pool_size),
        }
    )
    valid_from = pl.date(2015, 1, 1) + pl.duration(days=pl.Series(rng.integers(0, 2000, n_providers)))
    registry = providers.select(
        pl.col("tp_number").alias("third_party_number"),
        pl.col("provider_nihdi").alias("authorized_nihdi"),
        pl.format("Practice {}", pl.col("tp_number").str.slice(6)).alias("holder_name"),
        valid_from.alias("valid_from"),
        pl.lit(None, dtype=pl.Date).alias("valid_to"),
    )
    return Population(providers=providers, registry=registry, institutions=institutions)
