from __future__ import annotations

from pathlib import Path

import pytest

from secm.synth import generate


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated dataset with every labelled scenario, shared by the session."""
    root = tmp_path_factory.mktemp("synthetic") / "data"
    generate(root, n_lines=30_000, seed=11)
    return root


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECM_HOME", str(tmp_path / "secm-home"))
    # MLflow exports the tracking URI it is given to the environment: undo it after each test.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
