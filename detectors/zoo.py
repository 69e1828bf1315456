"""The detector zoo: PyOD detectors behind one scikit-learn style interface, and their ensemble.

Every detector reads a matrix of peer-normalised features (robust z-scores) and returns a
score where higher is more anomalous. The ensemble averages its members' ranks: each member's
score is turned into the share of training providers it exceeds, so members on different
scales weigh the same and a new provider is scored against the training population.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pyod.models.base import BaseDetector

# PyOD's detectors by name, imported when one is built: importing PyOD takes seconds (it
# loads matplotlib, numba and pandas), which a run scored by the default detector never needs.
SINGLE: dict[str, str] = {
    "ecod": "pyod.models.ecod:ECOD",
    "iforest": "pyod.models.iforest:IForest",
    "copod": "pyod.models.copod:COPOD",
    "hbos": "pyod.models.hbos:HBOS",
    "knn": "pyod.models.knn:KNN",
    "lof": "pyod.models.lof:LOF",
}
ENSEMBLE_MEMBERS = ("ecod", "iforest", "copod", "hbos", "knn")
NAMES = (*SINGLE, "ensemble")
DEFAULT = "ensemble"


def _build(name: str, random_state: int, params: dict[str, Any]) -> BaseDetector:
    if name not in SINGLE:
        msg = f"Unknown detector '{name}'; known: {', '.join(NAMES)}"
        raise ValueError(msg)
    if name == "iforest":
        params = {"random_state": random_state, **params}
    module, _, detector = SINGLE[name].partition(":")
    built: BaseDetector = getattr(importlib.import_module(module), detector)(**params)
    return built


class Detector:
    """A PyOD detector (or the rank-averaged ensemble) with ``fit`` / ``score`` / ``explain``.

    ``feature_names`` and the peer settings travel with the fitted model, so that whoever
    loads it from the registry builds the same matrix it was trained on.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(200, 3))
    >>> X[0] = [9, 9, 9]
    >>> Detector("ecod").fit(X).score(X).argmax()
    np.int64(0)
    """

    # Set by ``detectors.scoring.fit_profiles``: what the matrix was built from.
    feature_names_: list[str]
    peer_columns_: list[str]
    min_peers_: int

    def __init__(
        self,
        name: str = DEFAULT,
        *,
        members: Sequence[str] = ENSEMBLE_MEMBERS,
        random_state: int = 0,
        params: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.name = name
        self.members = members
        self.random_state = random_state
        self.params = params

    def _names(self) -> list[str]:
        return list(self.members) if self.name == "ensemble" else [self.name]

    def fit(self, X: np.ndarray, y: Any = None) -> Detector:
        """Fit on the rows of ``X`` (providers × peer-normalised features)."""
        X = np.asarray(X, dtype=np.float64)
        params = self.params or {}
        self.detectors_ = {n: _build(n, self.random_state, dict(params.get(n, {}))).fit(X) for n in self._names()}
        self.training_scores_ = {n: np.sort(d.decision_scores_) for n, d in self.detectors_.items()}
        return self

    def member_scores(self, X: np.ndarray) -> dict[str, np.ndarray]:
        X = np.asarray(X, dtype=np.float64)
        return {n: d.decision_function(X) for n, d in self.detectors_.items()}

    def score(self, X: np.ndarray) -> np.ndarray:
        """Anomaly scores, higher is more anomalous (the ensemble's lie in [0, 1])."""
        scores = self.member_scores(X)
        if self.name != "ensemble":
            return scores[self.name]
        ranks = [
            np.searchsorted(self.training_scores_[n], s, side="right") / len(self.training_scores_[n])
            for n, s in scores.items()
        ]
        return np.mean(ranks, axis=0)

    def explain(self, X: np.ndarray, top: int = 3) -> list[list[tuple[str, float]]]:
        """Per row, the ``top`` features furthest from the peer median: ``(feature, robust z)``."""
        X = np.asarray(X, dtype=np.float64)
        names = list(getattr(self, "feature_names_", [f"x{i}" for i in range(X.shape[1])]))
        order = np.argsort(-np.abs(X), axis=1, kind="stable")[:, :top]
        return [[(names[j], float(row[j])) for j in columns] for row, columns in zip(X, order, strict=True)]
