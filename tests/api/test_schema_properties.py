"""Property-based calls generated from the OpenAPI document: no input makes the service fail.

Every operation gets generated paths, queries and bodies (with an admin token, so that the
calls reach the handlers); schemathesis checks that no answer is a server error and that
status codes, content types and bodies match the document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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


NON_FINITE = [float("nan"), float("inf"), float("-inf")]


def test_non_finite_numbers_anywhere_in_a_generated_body_are_never_a_server_error(
    tmp_path: Path, results: Published
) -> None:
    """JSON has no NaN or Infinity, so schemathesis never sends them; Python's JSON reader takes
    them. Each generated body gets one of them in place of one of its values (or as the body)."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    results.into(url)
    _, token = create_token(migrate(url), "admin", "schemathesis")
    app = create_app(url)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    with_body = [op.ok() for op in schema.get_all_operations() if op.ok().method.upper() in ("POST", "PATCH")]
    assert len(with_body) >= 3
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with TestClient(app) as client:
        for operation in with_body:

            @given(case=operation.as_strategy(), data=st.data())
            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def call(case: schemathesis.Case, data: st.DataObject) -> None:
                body = _poisoned(case.body, data.draw(st.sampled_from(NON_FINITE)), data)
                answer = client.request(
                    case.method, case.formatted_path, params=case.query, content=json.dumps(body), headers=headers
                )
                assert answer.status_code < 500, (case.formatted_path, json.dumps(body)[:300], answer.text[:300])

            call()


def _poisoned(body: Any, value: float, data: st.DataObject) -> Any:
    """``body`` with one of its values (at any depth) replaced by ``value``, or ``value`` itself."""
    places: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for key, child in items:
            places.append((node, key))
            walk(child)

    walk(body)
    if not places:
        return value
    node, key = data.draw(st.sampled_from(places))
    node[key] = value
    return body
