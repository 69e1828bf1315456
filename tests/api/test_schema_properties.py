"""Property-based calls generated from the OpenAPI document: no input makes the service fail.

Every operation gets generated paths, queries and bodies (with an admin token, so that the
calls reach the handlers); schemathesis checks that no answer is a server error and that
status codes, content types and bodies match the document.
"""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.app import create_app
from api.auth import create_token
from api.database import migrate
from tests.api.conftest import Published


def test_every_operation_answers_within_its_documented_contract(tmp_path: Path, results: Published) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    results.into(url)
    _, token = create_token(migrate(url), "admin", "schemathesis")
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(url))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:
        _explore(operation, token)


def _explore(operation: schemathesis.APIOperation, token: str) -> None:
    # A claim check answers 422 for well-formed records that break the data contract.
    excluded = [positive_data_acceptance] if operation.path == "/claims/check" else []

    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def call(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, excluded_checks=excluded)

    call()
