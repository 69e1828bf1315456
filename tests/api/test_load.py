"""The real server under 200 concurrent clients: every request answered, none slow, no deadlock."""

from __future__ import annotations

import random
from pathlib import Path

from api.auth import create_token
from api.database import migrate
from bench.service import drive, serving
from tests.api.conftest import Published


def test_two_hundred_clients_are_all_answered_within_five_seconds(results: Published, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    results.into(url)
    _, token = create_token(migrate(url), "inspector", "load")
    providers = results.scores["provider_nihdi"].unique().sort().to_list()

    def request(rng: random.Random) -> tuple[str, dict[str, object]]:
        if rng.random() < 0.5:
            return "/providers/flagged", {"sort": rng.choice(["amount", "score"]), "page": rng.randint(1, 3)}
        return f"/providers/{rng.choice(providers)}", {}

    with serving(str(tmp_path), url, workers=2) as (base, _):
        load = drive(base, token, request, clients=200, seconds=4, timeout=5)
    summary = load.summary()
    assert summary["errors"] == 0, summary
    assert summary["requests"] > 200, summary
    assert summary["max_ms"] < 5_000, summary
