"""Admission control: beyond the limit, a request waits briefly, then gets 503 with Retry-After."""

from __future__ import annotations

import anyio
import httpx2
import pytest
from starlette.types import Receive, Scope, Send

from api.admission import Admission


async def _slow(scope: Scope, receive: Receive, send: Send) -> None:
    await anyio.sleep(0.5)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize(("queue", "expected"), [(10, [200, 200, 503]), (0, [200, 503, 503])])
def test_requests_beyond_the_limit_wait_then_get_503(queue: int, expected: list[int]) -> None:
    app = Admission(_slow, limit=1, wait=0.7, queue=queue)

    async def main() -> list[httpx2.Response]:
        answers: list[httpx2.Response] = []
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:

            async def get(delay: float) -> None:
                await anyio.sleep(delay)
                answers.append(await client.get("/providers/flagged"))

            async with anyio.create_task_group() as group:
                for i in range(3):
                    group.start_soon(get, i * 0.05)
        return answers

    answers = anyio.run(main)
    assert sorted(r.status_code for r in answers) == sorted(expected)
    busy = [r for r in answers if r.status_code == 503]
    assert all(r.headers["retry-after"] == "1" and "saturated" in r.json()["detail"] for r in busy)


def test_health_is_never_held_back() -> None:
    app = Admission(_slow, limit=1, wait=0.01, queue=0)

    async def main() -> list[int]:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
            statuses: list[int] = []

            async def get(path: str) -> None:
                statuses.append((await client.get(path)).status_code)

            async with anyio.create_task_group() as group:
                group.start_soon(get, "/cases")
                await anyio.sleep(0.05)
                group.start_soon(get, "/health")
        return statuses

    assert anyio.run(main) == [200, 200]


def test_a_lane_counts_its_requests_apart_from_the_others() -> None:
    app = Admission(_slow, limit=1, wait=0.01, queue=0, lanes={"/claims/check": 2})

    async def main() -> dict[str, list[int]]:
        transport = httpx2.ASGITransport(app=app)
        statuses: dict[str, list[int]] = {"/claims/check": [], "/cases": []}
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:

            async def get(path: str) -> None:
                statuses[path].append((await client.get(path)).status_code)

            async with anyio.create_task_group() as group:
                for path in ("/claims/check", "/claims/check", "/cases", "/claims/check", "/cases"):
                    group.start_soon(get, path)
                    await anyio.sleep(0.02)
        return statuses

    statuses = anyio.run(main)
    assert sorted(statuses["/claims/check"]) == [200, 200, 503]  # two at once in the lane
    assert sorted(statuses["/cases"]) == [200, 503]  # the checks took none of the others' one slot
