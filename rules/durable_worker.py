"""The processes durable_rules runs in: a pool of workers, each replaced before it wears out.

durable_rules' C core corrupts its own memory now and then (more often with threads, and as
sessions and rulesets pile up), ending in a segmentation fault. It therefore runs in worker
processes of its own, never in the caller's. Each worker is replaced after ``WORKER_TASKS``
calls by a successor started ``WARM_UP`` calls earlier (so nobody waits for it to start). A
call that finds its worker dead, or that outlives its deadline (the worker is then killed), is
retried once in a fresh worker; if that fails too, :class:`WorkerUnavailable` says to come back
later. Workers are started as calls need them, up to the pool's size: a batch run uses one,
a service under concurrent checks as many as the machine has cores.

A call goes over a pipe of the worker's own, sent and answered by the calling thread: a real-time
check's call takes a millisecond or two, and ``concurrent.futures``' process pool added as much
again (a thread to feed its queue, another to collect the results, each woken in turn).

Data that many calls share (a published run's reference tables) is sent to each worker once
(:meth:`WorkerPool.run`'s ``shared``) and kept there, so that a call sends only its own.
"""

from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.util
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

WORKER_TASKS = 20_000
WARM_UP = 1_000
SHARED_KEPT = 4  # shared values a worker keeps (runs served at once, with room for a new one)

T = TypeVar("T")


class WorkerUnavailable(RuntimeError):
    """No durable_rules worker answered within its deadline, twice: the caller may retry later."""


# ---------------------------------------------------------------------------------------
# In the worker.

_SHARED: OrderedDict[Hashable, Any] = OrderedDict()


def _warm_up(initializer: Callable[[], None] | None) -> None:
    """Run first in a new worker: unpickling imports the modules the calls will need."""
    if initializer is not None:
        initializer()


def _exit_with(parent: int) -> None:
    """End the worker when the process that started it is gone (killed, crashed)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="secm-parent-watch").start()


def _call(key: Hashable | None, value: Any, sent: bool, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    """``fn(shared, *args)`` with the shared value kept under ``key`` (sent once per worker)."""
    if key is None:
        return fn(value, *args)
    if sent:
        _SHARED[key] = value
        while len(_SHARED) > SHARED_KEPT:
            _SHARED.popitem(last=False)
    _SHARED.move_to_end(key)
    return fn(_SHARED[key], *args)


def _serve(connection: Connection, parent: int, initializer: Callable[[], None] | None) -> None:
    """A worker's life: say it is ready, then answer each call (its result, or what it raised)
    until the pool closes the pipe."""
    _exit_with(parent)
    _warm_up(initializer)
    connection.send(None)
    while True:
        try:
            key, value, sent, fn, args, settle = connection.recv()
        except EOFError:
            return
        try:
            answer: tuple[bool, Any] = (True, _call(key, value, sent, fn, args))
        except BaseException as exc:
            answer = (False, exc)
        try:
            connection.send(answer)
        except Exception as exc:  # an answer or an error that does not pickle
            connection.send((False, RuntimeError(f"the worker's answer could not be sent back: {exc!r}")))
        if settle:
            # What the call built lives as long as its shared value (reference tables, the
            # facts derived from them, the rulesets): the garbage collector need not walk it
            # again at each full collection, a pause of 30 to 100 ms in the middle of a later
            # call. Done once the caller has its answer.
            gc.collect()
            gc.freeze()


# ---------------------------------------------------------------------------------------
# In the caller.


class _Dead(RuntimeError):
    """The worker process is gone (killed, crashed, or closed)."""


class _Late(RuntimeError):
    """The worker did not answer within the call's deadline."""


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    connection: Connection  # the pool's end of the worker's pipe
    warm: Future[None] = field(default_factory=Future)  # done once it has started and imported
    lock: threading.Lock = field(default_factory=threading.Lock)  # one call at a time on the pipe
    tasks: int = 0  # calls given, for its replacement
    busy: int = 0  # calls in flight, to spread calls over workers
    shared: set[Hashable] = field(default_factory=set)  # keys of the values it holds

    def start(self) -> None:
        """Start it and wait, in a thread of its own, for it to say it is ready."""
        self.process.start()

        def ready() -> None:
            with self.lock:
                try:
                    self.connection.recv()
                    self.warm.set_result(None)
                except (EOFError, OSError) as exc:
                    self.warm.set_exception(_Dead(str(exc)))

        threading.Thread(target=ready, daemon=True, name="secm-worker-start").start()

    def call(self, message: tuple[Any, ...], deadline: float | None) -> Any:
        """Send ``message`` and wait ``deadline`` seconds at most for the answer (:class:`_Late`);
        :class:`_Dead` when the worker is gone. What the call raised is raised here."""
        with self.lock:
            if not self.warm.done() or self.warm.exception() is not None:
                raise _Dead("the worker did not start")
            try:
                self.connection.send(message)
                if not self.connection.poll(deadline):
                    raise _Late
                done, value = self.connection.recv()
            except (EOFError, OSError) as exc:  # a broken pipe is an OSError
                raise _Dead(str(exc)) from None
        if not done:
            raise value
        return value

    def kill(self) -> None:
        """Stop it now, whatever it is doing (a hung call never returns on its own)."""
        self.process.kill()

    def retire(self) -> None:
        """Let it finish the call it is given, then close its pipe: it exits."""
        with self.lock:
            self.connection.close()
        self.process.join(timeout=30)


# Each worker runs Polars on one thread: the pool is the parallelism. The setting must be in a
# worker's environment when it starts: before it runs a line of the worker, a spawned process
# imports its parent's main module and unpickles its target, which imports the rules package,
# and both load Polars. Unless the caller set it.
_POLARS_THREADS = "POLARS_MAX_THREADS"
_starting = threading.Lock()


@contextmanager
def _one_polars_thread() -> Iterator[None]:
    """Processes started meanwhile run Polars on one thread, unless the environment says
    otherwise."""
    with _starting:
        if _POLARS_THREADS in os.environ:
            yield
            return
        os.environ[_POLARS_THREADS] = "1"
        try:
            yield
        finally:
            del os.environ[_POLARS_THREADS]


class WorkerPool:
    """Up to ``size`` worker processes, each running one call at a time."""

    def __init__(self, size: int, initializer: Callable[[], None] | None = None) -> None:
        self.size = max(1, size)
        self.initializer = initializer
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._successors: dict[int, _Worker] = {}  # by the id of the worker they will replace
        self._finalized_in: int | None = None

    def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        shared: tuple[Hashable | None, Any] = (None, None),
        deadline: float | None = None,
    ) -> T:
        """``fn(shared_value, *args)`` in a worker; ``shared`` is ``(key, value)`` (key None: not kept).

        Raises :class:`WorkerUnavailable` when two workers in a row died or missed ``deadline``.
        """
        for attempt in range(2):
            worker = self._acquire()
            try:
                if not worker.warm.done():
                    worker.warm.result(timeout=deadline)  # a worker still starting: wait for it
                return worker.call(self._message(worker, fn, args, shared), deadline)
            except (_Dead, _Late, TimeoutError) as exc:
                self._discard(worker)
                if attempt:
                    what = "stopped" if isinstance(exc, _Dead) else "did not answer in time"
                    raise WorkerUnavailable(f"The durable_rules worker {what}, twice; try again later") from None
            finally:
                with self._lock:
                    worker.busy -= 1
        raise AssertionError("unreachable")

    def fill(self) -> None:
        """Start every worker now, rather than when calls first need them."""
        with self._lock:
            while len(self._workers) < self.size:
                self._workers.append(self._new())

    def each(self, fn: Callable[..., Any], *args: Any, shared: tuple[Hashable | None, Any] = (None, None)) -> None:
        """``fn(shared_value, *args)`` once in every worker, all started now: puts the shared
        value, and what ``fn`` derives from it, in place before calls need them. A worker that
        dies meanwhile is replaced when a call next needs one."""
        self.fill()
        with self._lock:
            workers = list(self._workers)
            for worker in workers:
                worker.busy += 1

        def give(worker: _Worker) -> None:
            try:
                worker.warm.result()
                worker.call(self._message(worker, fn, args, shared, settle=True), None)
            except _Dead:
                self._discard(worker)

        try:
            threads = [threading.Thread(target=give, args=(w,)) for w in workers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            with self._lock:
                for worker in workers:
                    worker.busy -= 1

    @staticmethod
    def _message(
        worker: _Worker,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        shared: tuple[Hashable | None, Any],
        settle: bool = False,
    ) -> tuple[Any, ...]:
        """The call for ``worker``, with the shared value unless it holds it already; the worker
        settles what the call built (see ``_serve``) when told to, or when it is sent a value."""
        key, value = shared
        sent = key is not None and key not in worker.shared
        if sent:
            worker.shared.add(key)
        return (key, value if sent or key is None else None, sent, fn, args, settle or sent)

    def shutdown(self) -> None:
        """Stop every worker once it finished what it was given."""
        with self._lock:
            workers = [*self._workers, *self._successors.values()]
            self._workers, self._successors = [], {}
        for worker in workers:
            worker.retire()

    # -- life cycle -------------------------------------------------------------------

    def _acquire(self) -> _Worker:
        """The worker for the next call: an idle one, else the least busy of those started.

        A new worker is started when none is idle and there is room, but calls go to it only
        once it has started (a second or more): a busy worker is free sooner.
        """
        with self._lock:
            started = [w for w in self._workers if w.warm.done()]
            idle = [w for w in started if not w.busy]
            if not idle and len(self._workers) < self.size:
                self._workers.append(self._new())
            worker = self._renewed(idle[0] if idle else min(started or self._workers, key=lambda w: w.busy))
            worker.tasks += 1
            worker.busy += 1
            return worker

    def _renewed(self, worker: _Worker) -> _Worker:
        """``worker``, or its successor once it has served ``WORKER_TASKS`` calls."""
        if worker.tasks >= WORKER_TASKS:
            successor = self._successors.pop(id(worker), None) or self._new()
            threading.Thread(target=worker.retire, daemon=True).start()  # it finishes its call, then exits
            self._workers[self._workers.index(worker)] = successor
            return successor
        if worker.tasks >= WORKER_TASKS - WARM_UP and id(worker) not in self._successors:
            self._successors[id(worker)] = self._new()
        return worker

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
            successor = self._successors.pop(id(worker), None)
        if successor is not None:
            threading.Thread(target=successor.retire, daemon=True).start()

    def _new(self) -> _Worker:
        if self._finalized_in != os.getpid():
            # At the exit of this process (one that multiprocessing started too), the workers are
            # retired before multiprocessing's own exit terminates and joins its daemonic
            # children: each finishes the call it was given and ends when its pipe closes.
            multiprocessing.util.Finalize(None, self.shutdown, exitpriority=100)
            self._finalized_in = os.getpid()
        context = multiprocessing.get_context("spawn")
        mine, theirs = context.Pipe()
        process = context.Process(target=_serve, args=(theirs, os.getpid(), self.initializer), daemon=True)
        worker = _Worker(process, mine)
        with _one_polars_thread():
            worker.start()  # it starts importing what calls need now
        theirs.close()
        return worker
