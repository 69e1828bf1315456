"""Registered models and their cards over HTTP, for every role."""

from __future__ import annotations

from detectors.tracking import promote, train_zoo
from tests.api.conftest import Published, Service


def test_every_role_reads_the_models_and_the_champions_card(service: Service, results: Published) -> None:
    assert service.get("/models", role="sca").json() == []
    runs = train_zoo(results.profiles, detectors=["peer_evidence"])
    promote(runs[0].version, "Dr. Approver")
    for role in ("inspector", "data_scientist", "sca", "admin"):
        listed = service.get("/models", role=role)
        assert listed.status_code == 200, listed.text
        assert [(m["version"], m["champion"], m["approved_by"]) for m in listed.json()] == [
            (runs[0].version, True, "Dr. Approver")
        ]
    card = service.get(f"/models/{runs[0].version}", role="data_scientist").json()
    assert card["approved_at"]
    assert card["card"]["model"] == "peer_evidence"
    assert card["card"]["peer_grouping"]["min_peers"] == 20
    assert "disparities" in card["card"]["fairness"]
    assert card["card"]["evaluation"]["temporal_holdout"]["status"] == "evaluated"
    missing = service.get("/models/42")
    assert missing.status_code == 404
    assert "version 42" in missing.json()["detail"]
    assert service.get("/models/latest").status_code == 422
    assert service.client.get("/models").status_code == 401
