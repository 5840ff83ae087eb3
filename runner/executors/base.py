"""The executor contract: run a callable somewhere, hand back a ``concurrent.futures.Future``.

Concurrency limits, retries, timeouts and tolerated-failure decisions live once, in the
scheduling loop (:mod:`runner.engine`), never in an executor. Executors report through their
futures; they never touch the writer or the journal. No threads or processes start in
``__init__``: an executor is opened by ``__enter__`` and closed by ``__exit__``.

Optional, and so not part of the protocol below (the loop looks it up with ``getattr``):
``flush(self) -> None`` sends the calls ``submit`` buffered, in bulk. An executor that has it
may buffer ``submit`` calls and send them together; the loop calls ``flush`` after each round
of submissions (the planner after each submission of its own). Such an executor must still send
what nobody flushes after a short delay, so that ``submit(...).result()`` alone never waits
forever, and its ``cancel`` and ``__exit__`` must complete buffered futures too (with
``CancelledError``). ``reads_shards: bool``: when true and the reader can split its input, the
loop sends shard references (:mod:`runner.shards`) instead of items, and workers read them.

When a call starts (``reports_starts: bool``). TimeoutSeconds counts from the moment a worker
takes a batch, not from ``submit``: a batch waiting behind others in an executor's queue is not
running, and the results' StartDate is when the first attempt began. An executor whose
``reports_starts`` is true records that moment on the future with :func:`mark_started` as the
call begins (the process pool when it hands the call to a worker process, the thread pool when
a thread takes it, Dask from the worker: see :mod:`runner.executors.dask`), and at the latest
before the future completes; :func:`started_at` reads it. For an executor without it, the loop
counts a call as started when it first sees ``Future.running()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, NamedTuple, Protocol, Self, runtime_checkable

__all__ = ["CallStart", "Executor", "mark_started", "started_at"]

_STARTED_AT = "started_at"  # the attribute of a Future that holds its CallStart


class CallStart(NamedTuple):
    """When a call began running.

    ``clock`` is :func:`time.monotonic` in the driver's process, where a deadline counts from;
    ``wall`` is :func:`time.time` when it began, by the clock of the machine that ran it (the
    StartDate of its result record).
    """

    clock: float
    wall: float


def mark_started(
    future: Future[Any], clock: float | None = None, wall: float | None = None
) -> None:
    """Record that ``future``'s call began running now (or at ``clock``/``wall``). The first
    record stands: a later one (say, from the outcome of a call already reported) is ignored.

    >>> from concurrent.futures import Future
    >>> future = Future()
    >>> mark_started(future, clock=1.0, wall=1700000000.0)
    >>> mark_started(future, clock=2.0, wall=1700000001.0)
    >>> started_at(future)
    CallStart(clock=1.0, wall=1700000000.0)
    """
    if getattr(future, _STARTED_AT, None) is None:
        start = CallStart(
            time.monotonic() if clock is None else clock, time.time() if wall is None else wall
        )
        setattr(future, _STARTED_AT, start)  # one store: other threads see all of it or none


def started_at(future: Future[Any]) -> CallStart | None:
    """When ``future``'s call began running, if its executor said so (else ``None``)."""
    return getattr(future, _STARTED_AT, None)


@runtime_checkable
class Executor(Protocol):
    """Runs callables somewhere and hands back futures; the loop decides everything else.

    Implement it to add an executor (``runner.executors.get_executor`` also takes an instance).
    """

    name: str
    #: How many batches it can usefully run at once (the loop never keeps more in flight).
    slots: int
    #: Whether callables must be importable by name (separate processes or machines).
    remote: bool
    #: Batches queued per slot when MaxConcurrency is unlimited: more hides a round trip.
    prefetch: int

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future: ...

    def cancel(self, futures: Iterable[Future]) -> None:
        """Best effort: stop these futures' work (unstarted ones never start)."""
        ...

    def describe(self) -> str:
        """One line for the progress display (e.g. a dashboard address)."""
        ...
