"""The embedded default: threads, processes, or inline (synchronous, for tests and debuggers)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import Executor as _PoolExecutor
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal, Self

from runner.errors import ExecutorError
from runner.executors.procpool import IsolatedProcessPool

__all__ = ["InlineExecutor", "LocalExecutor"]

Mode = Literal["threads", "processes", "inline"]


class InlineExecutor(_PoolExecutor):
    """Runs each callable at submit time in the calling thread (dask's SynchronousExecutor)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


class LocalExecutor:
    """Batches on this machine. ``max_workers`` defaults to the run's MaxConcurrency, capped
    at the core count for processes (more processes than cores only adds switching)."""

    name = "local"
    prefetch = 2

    def __init__(self, mode: Mode = "threads", max_workers: int | None = None) -> None:
        if mode not in ("threads", "processes", "inline"):
            raise ExecutorError(
                f"local executor mode must be threads, processes or inline: {mode!r}"
            )
        self.mode = mode
        cores = os.cpu_count() or 1
        default = cores if mode == "processes" else min(32, cores + 4)
        self.slots = 1 if mode == "inline" else max(1, max_workers or default)
        self.remote = mode == "processes"
        self._pool: _PoolExecutor | None = None

    def __enter__(self) -> Self:
        if self.mode == "threads":
            self._pool = ThreadPoolExecutor(self.slots, thread_name_prefix="shardmap-worker")
        elif self.mode == "processes":
            # A dead worker fails only its own batch, and a timed-out batch can be killed.
            self._pool = IsolatedProcessPool(self.slots)
        else:
            self._pool = InlineExecutor()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pool is None:
            return
        # Whatever still runs is no longer wanted (the loop cancelled what it stopped waiting
        # for): IsolatedProcessPool kills and reaps its processes before returning, and
        # timed-out thread work cannot be interrupted, so it is not waited for.
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        if self._pool is None:
            raise ExecutorError("executor is not open; use it as a context manager")
        return self._pool.submit(fn, *args, **kwargs)

    def cancel(self, futures: Iterable[Future]) -> None:
        for future in futures:
            if isinstance(self._pool, IsolatedProcessPool):
                self._pool.kill(future)  # a queued batch never starts; a running one is killed
            else:
                future.cancel()  # running thread work cannot be stopped; it is abandoned

    def describe(self) -> str:
        return f"local {self.mode} x{self.slots}"


def _inline(**options: Any) -> LocalExecutor:
    return LocalExecutor("inline", **options)


def _processes(**options: Any) -> LocalExecutor:
    return LocalExecutor("processes", **options)
