"""The embedded default: threads, processes, or inline (synchronous, for tests and debuggers)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import Executor as _PoolExecutor
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Literal, Self

from runner.errors import ExecutorError

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
        self._abandoned = 0  # running work that was cancelled (timed out) but cannot be stopped

    def __enter__(self) -> Self:
        if self.mode == "threads":
            self._pool = ThreadPoolExecutor(self.slots, thread_name_prefix="shardmap-worker")
        elif self.mode == "processes":
            self._pool = ProcessPoolExecutor(self.slots)
        else:
            self._pool = InlineExecutor()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pool is None:
            return
        if self.mode == "processes" and self._abandoned:
            # A timed-out batch may never return; end its process rather than wait forever.
            # ProcessPoolExecutor has no public way to stop running work.
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.terminate()
        # Timed-out thread work cannot be interrupted; do not wait for it on the way out.
        self._pool.shutdown(
            wait=self.mode == "processes" and not self._abandoned, cancel_futures=True
        )
        self._pool = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        if self._pool is None:
            raise ExecutorError("executor is not open; use it as a context manager")
        return self._pool.submit(fn, *args, **kwargs)

    def cancel(self, futures: Iterable[Future]) -> None:
        for future in futures:
            if not future.cancel() and not future.done():
                self._abandoned += 1

    def describe(self) -> str:
        return f"local {self.mode} x{self.slots}"


def _inline(**options: Any) -> LocalExecutor:
    return LocalExecutor("inline", **options)


def _processes(**options: Any) -> LocalExecutor:
    return LocalExecutor("processes", **options)
