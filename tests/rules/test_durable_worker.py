"""The durable_rules worker pool: calls spread over workers, dead or hung workers replaced."""

from __future__ import annotations

import gc
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from rules.durable_worker import WorkerPool, WorkerUnavailable
from tests.interpreter import fresh_output


def _pid(shared: Any) -> tuple[int, Any]:
    return os.getpid(), shared


def _sleep(shared: Any, seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _hang_once(shared: Any, marker: str) -> int:
    """Hangs in the first worker that runs it, answers in the next."""
    if not Path(marker).exists():
        Path(marker).write_text("hung")
        time.sleep(60)
    return os.getpid()


def _die_once(shared: Any, marker: str) -> int:
    if not Path(marker).exists():
        Path(marker).write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


@pytest.fixture
def pool() -> Any:
    workers = WorkerPool(2)
    yield workers
    workers.shutdown()


def test_shared_values_are_sent_once_and_kept(pool: WorkerPool) -> None:
    first = pool.run(_pid, shared=("run-1", {"rows": 3}))
    again = pool.run(_pid, shared=("run-1", None))  # not sent again: the worker kept it
    assert again == first == (first[0], {"rows": 3})


def test_concurrent_calls_use_several_workers(pool: WorkerPool) -> None:
    with ThreadPoolExecutor(4) as threads:
        pids = set(threads.map(lambda _: pool.run(_sleep, 0.5), range(4)))
    assert len(pids) == 2


def test_a_hung_worker_is_replaced_and_the_call_retried(pool: WorkerPool, tmp_path: Path) -> None:
    started = time.perf_counter()
    pid = pool.run(
        _hang_once, str(tmp_path / "marker"), deadline=10.0
    )  # covers the replacement's start on a busy machine too
    assert time.perf_counter() - started < 30
    assert pid != os.getpid()
    assert pool.run(_sleep, 0.0) == pid  # the replacement serves what follows


def test_a_dead_worker_is_replaced_and_the_call_retried(pool: WorkerPool, tmp_path: Path) -> None:
    pid = pool.run(_die_once, str(tmp_path / "marker"), deadline=30.0)
    assert pool.run(_sleep, 0.0) == pid


def test_a_call_that_hangs_twice_is_unavailable_not_a_wrong_answer(pool: WorkerPool) -> None:
    with pytest.raises(WorkerUnavailable, match="did not answer in time"):
        pool.run(_sleep, 60.0, deadline=1.0)
    assert pool.run(_sleep, 0.0) != os.getpid()  # and the pool still serves


def _pid_and_value(shared: Any, seconds: float) -> tuple[int, Any]:
    time.sleep(seconds)
    return os.getpid(), shared


def test_each_worker_gets_the_shared_value_up_front(pool: WorkerPool) -> None:
    pool.each(_sleep, 0.0, shared=("run-2", {"rows": 5}))
    with ThreadPoolExecutor(2) as threads:
        answers = list(threads.map(lambda _: pool.run(_pid_and_value, 0.5, shared=("run-2", None)), range(2)))
    assert len({pid for pid, _ in answers}) == 2  # both workers answered, neither was sent it again
    assert [value for _, value in answers] == [{"rows": 5}, {"rows": 5}]


def _walked(shared: Any) -> tuple[int, int]:
    """How many objects the worker's full collections walk, and how many they leave alone."""
    return len(gc.get_objects()), gc.get_freeze_count()


@pytest.mark.parametrize("how", ["up front", "with a call"])
def test_a_shared_value_is_not_walked_again_by_each_full_collection(how: str) -> None:
    """What a worker keeps for many calls is set aside from the garbage collector once it has
    it: a full collection walking a run's reference data paused calls for 50 to 120 ms."""
    kept = [[n] for n in range(200_000)]  # as many objects to walk
    pool = WorkerPool(1)
    try:
        if how == "up front":
            pool.each(_sleep, 0.0, shared=("run-3", kept))
        else:
            pool.run(_sleep, 0.0, shared=("run-3", kept))
        walked, set_aside = pool.run(_walked, shared=("run-3", None))
    finally:
        pool.shutdown()
    assert set_aside > len(kept) > walked


_POLARS_THREADS_OF_A_WORKER = """
import polars  # the service's main module imports Polars before any worker starts
from rules.durable_worker import WorkerPool

def threads(_shared):
    import polars
    return polars.thread_pool_size()

if __name__ == "__main__":
    pool = WorkerPool(1)
    print(pool.run(threads))
    pool.shutdown()
"""


@pytest.mark.parametrize(("setting", "threads"), [(None, "1"), ("2", "2")])
def test_a_worker_runs_polars_on_one_thread_unless_told_otherwise(
    tmp_path: Path, setting: str | None, threads: str
) -> None:
    """A spawned worker imports its parent's main module and its target's package before it
    runs: setting the limit in the worker left it a Polars thread per core."""
    script = tmp_path / "main.py"
    script.write_text(_POLARS_THREADS_OF_A_WORKER)
    assert fresh_output(script, {"POLARS_MAX_THREADS": setting}) == threads
