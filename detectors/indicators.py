"""The indicators the default detector scores, grouped by what they would reveal, and how many
of them an explanation names.

Kept apart from :mod:`detectors.evidence` so that what only names them (the feedback profile
written to a provider, the benchmarks) does not load the detector's machine-learning stack.
"""

from __future__ import annotations

# Share features and the column counting what each is a share of.
SHARES: dict[str, str] = {
    "share_patients_seen_once": "patients",
    "evening_share": "lines",
    "night_share": "lines",
    "weekend_share": "lines",
    "home_visit_share": "lines",
    "high_fee_share": "lines",
}
LEVELS = ("lines_per_patient", "repeat_intensity", "amount_per_patient")
GROUPS: dict[str, tuple[str, ...]] = {
    "volume": ("lines_per_patient", "repeat_intensity", "amount_per_patient"),
    "patient list": ("share_patients_seen_once",),
    "hours": ("evening_share", "night_share", "weekend_share"),
    "coding": ("high_fee_share", "home_visit_share"),
}
FEATURES: tuple[str, ...] = tuple(f for members in GROUPS.values() for f in members)
# A feature that also counts against what peers billing like the provider show: a practice
# that bills more lines per patient sees fewer patients only once, so one-off patients are
# judged for the provider's own lines per patient too (the larger of the two z's counts).
TRADE_OFFS: dict[str, str] = {"share_patients_seen_once": "lines_per_patient"}
# An explanation names at most this many groups, and a group only when its evidence is beyond
# chance: a z of 2, a contribution of 4.
TOP_FEATURES = 3
NAMED_FROM = 4.0
