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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, Protocol, Self, runtime_checkable

__all__ = ["Executor"]


@runtime_checkable
class Executor(Protocol):
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
