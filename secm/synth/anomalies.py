"""Anomalous billing profiles: which kinds, how many, and how strong.

Each anomalous provider gets one kind and an ``intensity`` drawn from the strength's range,
so that a dataset holds anomalies of varied size, as real ones are:

- ``excessive_volume``: the practice bills ``intensity`` times its lines, from the same
  patient list (more lines per patient);
- ``phantom_patients``: one-off patients are added, ``intensity`` times the size of the real
  patient list;
- ``evening_share``: a share ``intensity`` of lines become evening codes;
- ``upcoding``: a share ``intensity`` of lines become the profession's higher-fee code.

Beside them, some ordinary GPs run legitimately atypical practices (``atypical``): on night
duty rotas (``on_call``, a share ``ON_CALL_NIGHT`` of night codes), in nursing homes
(``nursing_home``: residents, old and chronically ill, need more care, so more lines per
patient, and are seen where they live: home visits) or on rural home-visit rounds (``rural_rounds``). They are the false leads an
unsupervised score cannot tell from fraud, and that inspectors' verdicts teach it to discount.

Strengths are set so that ``realistic`` matches what control work reports: 1.7 to 2.2 times
the usual lines per patient, 90 to 140 % phantom patients, an evening share of 12 to 18 %
against about 5 %.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

KINDS = ("upcoding", "excessive_volume", "phantom_patients", "evening_share")
PROFESSIONS = {
    "upcoding": ("gp", "physiotherapist", "dentist"),
    "excessive_volume": ("gp", "nurse", "physiotherapist", "specialist"),
    "phantom_patients": ("gp", "physiotherapist", "dentist"),
    "evening_share": ("gp",),
}
# Kind -> strength -> (low, high) of the intensity.
STRENGTHS: dict[str, dict[str, tuple[float, float]]] = {
    "subtle": {
        "excessive_volume": (1.3, 1.5),
        "phantom_patients": (0.4, 0.6),
        "evening_share": (0.03, 0.05),
        "upcoding": (0.06, 0.1),
    },
    "realistic": {
        "excessive_volume": (1.9, 2.5),
        "phantom_patients": (0.9, 1.4),
        "evening_share": (0.08, 0.14),
        "upcoding": (0.12, 0.2),
    },
    "blatant": {
        "excessive_volume": (3.0, 4.0),
        "phantom_patients": (2.0, 3.0),
        "evening_share": (0.25, 0.35),
        "upcoding": (0.35, 0.5),
    },
}
# The codes an evening or upcoding anomaly moves lines to, per profession.
EVENING_CODES = ("104215", "101275")
UPCODES = {"gp": "101135", "physiotherapist": "560895", "dentist": "374533"}
ON_CALL_NIGHT = 0.12
NIGHT_CODE = "104230"
HOME_VISIT_CODE = "103132"
# Atypical kind -> (lines per patient against an ordinary GP's, share of lines moved, code moved to)
ATYPICAL: dict[str, tuple[float, float, str]] = {
    "on_call": (1.0, ON_CALL_NIGHT, NIGHT_CODE),
    "nursing_home": (1.0, 0.45, HOME_VISIT_CODE),  # more lines per patient come from the residents' needs
    "rural_rounds": (1.0, 0.3, HOME_VISIT_CODE),
}
LINES_PER_PATIENT = 2.5  # background lines per patient and year, measured on the generator


@dataclass(frozen=True)
class AnomalySettings:
    """What ``secm synth`` injects: the kinds, the share of providers per kind, the strength."""

    kinds: tuple[str, ...] = KINDS
    share: float = 0.005
    strength: str = "realistic"
    atypical: float = 0.02  # share of ordinary GPs per kind of legitimately atypical practice
    atypical_kinds: tuple[str, ...] = tuple(ATYPICAL)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kinds) - set(KINDS))
        if unknown:
            msg = f"Unknown anomaly kind(s) {unknown}; known: {', '.join(KINDS)}"
            raise ValueError(msg)
        unknown = sorted(set(self.atypical_kinds) - set(ATYPICAL))
        if unknown:
            msg = f"Unknown atypical practice(s) {unknown}; known: {', '.join(ATYPICAL)}"
            raise ValueError(msg)
        if self.strength not in STRENGTHS:
            msg = f"Unknown anomaly strength {self.strength!r}; known: {', '.join(STRENGTHS)}"
            raise ValueError(msg)
        for name, value in (("anomaly share per kind", self.share), ("atypical share per kind", self.atypical)):
            if not 0 <= value <= 0.2:
                msg = f"The {name} must be between 0 and 0.2, not {value}"
                raise ValueError(msg)


def assign(
    rng: np.random.Generator, providers: pl.DataFrame, taken: set[str], settings: AnomalySettings
) -> pl.DataFrame:
    """``providers`` with ``anomaly`` (kind or null), ``intensity`` (null when not anomalous)
    and ``atypical`` (kind or null). Providers in ``taken`` (the rule scenarios') stay ordinary.
    """
    kinds: dict[str, str] = {}
    for kind in settings.kinds:
        pool = [
            p
            for p, profession in providers.select("provider_nihdi", "profession").iter_rows()
            if profession in PROFESSIONS[kind] and p not in taken and p not in kinds
        ]
        n = max(2, round(providers.height * settings.share)) if settings.share else 0
        for p in rng.choice(pool, size=min(n, len(pool)), replace=False):
            kinds[str(p)] = kind
    assigned = pl.col("provider_nihdi").replace_strict(kinds, default=None, return_dtype=pl.String)
    low, high = (
        assigned.replace_strict(
            {k: STRENGTHS[settings.strength][k][i] for k in KINDS}, default=None, return_dtype=pl.Float64
        )
        for i in (0, 1)
    )
    u = pl.Series(rng.random(providers.height))
    gps = [p for p, prof in providers.select("provider_nihdi", "profession").iter_rows() if prof == "gp"]
    free = [p for p in gps if p not in taken and p not in kinds]
    practices = settings.atypical_kinds
    n_atypical = min(len(free) // max(1, len(practices)), round(len(gps) * settings.atypical)) if practices else 0
    chosen = rng.choice(free, size=n_atypical * len(practices), replace=False) if n_atypical else []
    atypical = {str(p): practices[i // n_atypical] for i, p in enumerate(chosen)}
    return providers.with_columns(
        assigned.alias("anomaly"),
        (low + (high - low) * u).alias("intensity"),
        pl.col("provider_nihdi").replace_strict(atypical, default=None, return_dtype=pl.String).alias("atypical"),
    )


def line_factor(providers: pl.DataFrame) -> np.ndarray:
    """How many times its ordinary size each provider bills (1 for ordinary providers)."""
    kind = providers["anomaly"].to_numpy()
    intensity = providers["intensity"].fill_null(0.0).to_numpy()
    atypical = providers["atypical"].replace_strict({k: v[0] for k, v in ATYPICAL.items()}, default=1.0).to_numpy()
    return np.select(
        [kind == "excessive_volume", kind == "phantom_patients"],
        [intensity, 1.0 + intensity / LINES_PER_PATIENT],
        atypical,
    )


def phantom_share(kind: np.ndarray, intensity: np.ndarray) -> np.ndarray:
    """Per line, the probability that it goes to a one-off phantom patient."""
    extra = intensity / LINES_PER_PATIENT
    return np.where(kind == "phantom_patients", extra / (1.0 + extra), 0.0)


def recode(
    rng: np.random.Generator,
    codes: np.ndarray,
    profession: np.ndarray,
    kind: np.ndarray,
    intensity: np.ndarray,
    atypical: np.ndarray,
) -> np.ndarray:
    """Codes after evening and upcoding anomalies moved a share ``intensity`` of lines, and
    atypical practices theirs (:data:`ATYPICAL`: night codes on call, home visits)."""
    u = rng.random(codes.size)
    moved = u < intensity
    evening = moved & (kind == "evening_share")
    out = codes.copy()
    out[evening] = rng.choice(EVENING_CODES, size=int(evening.sum()), p=(0.7, 0.3))
    for profession_name, code in UPCODES.items():
        out[moved & (kind == "upcoding") & (profession == profession_name)] = code
    for name, (_, share, code) in ATYPICAL.items():
        out[(atypical == name) & (u < share)] = code
    return out
