"""The embedded default: threads, processes, or inline (synchronous, for tests and debuggers)."""

from __future__ import annotations

import itertools
import os
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Executor as _PoolExecutor
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal, Self

from runner.errors import ExecutorError
from runner.executors.base import mark_started
from runner.executors.procpool import IsolatedProcessPool

__all__ = ["DaemonThreadPool", "InlineExecutor", "LocalExecutor"]

Mode = Literal["threads", "processes", "inline"]


class InlineExecutor(_PoolExecutor):
    """Runs each callable at submit time in the calling thread (dask's SynchronousExecutor)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        mark_started(future)
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


@dataclass(eq=False, slots=True)
class _Call:
    future: Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class DaemonThreadPool(_PoolExecutor):
    """A thread pool whose stuck calls never keep the process alive, and never cost capacity.

    ``ThreadPoolExecutor`` joins its threads at interpreter exit, so one call that never
    returns (a timed-out batch: a thread cannot be interrupted) keeps the process running for
    ever after its results are written. Here the threads are daemons, never joined at exit,
    and :meth:`abandon` gives up on a running call: its thread finishes it in the background
    (the late result lands on the future, where nobody waits for it any more) and then ends,
    while a fresh thread takes its place, so ``max_workers`` calls can still run.

    Threads start on demand, as in ``ThreadPoolExecutor``; a call's exception, whatever its
    class, fails its own future. A call's future records when a thread took it
    (:func:`runner.executors.base.started_at`): time queued behind busy threads is not running
    time.

    >>> with DaemonThreadPool(2) as pool:
    ...     pool.submit(pow, 2, 10).result()
    1024
    """

    def __init__(self, max_workers: int, thread_name_prefix: str = "shardmap-worker") -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, not {max_workers}")
        self._max_workers = max_workers
        self._prefix = thread_name_prefix
        self._numbers = itertools.count()
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards every field below
        self._live: set[threading.Thread] = set()  # threads that count toward max_workers
        self._running: dict[Future[Any], threading.Thread] = {}
        self._idle = 0  # live threads waiting for a call
        self._unclaimed = 0  # calls queued that no thread took yet
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future: Future[Any] = Future()
            self._queue.put(_Call(future, fn, args, kwargs))
            self._unclaimed += 1
            self._grow()
        return future

    def abandon(self, future: Future[Any]) -> bool:
        """Stop waiting for ``future``: cancel it if it is queued; if it runs, let its thread
        finish it unwatched and start a replacement. False if it had already finished and its
        thread moved on."""
        with self._lock:
            thread = self._running.pop(future, None)
            if thread is not None:
                self._live.discard(thread)
                self._grow()
                return True
        return future.cancel()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; the threads end once the queue is done. ``wait`` joins them,
        except abandoned ones (nobody can wait for a call that may never return)."""
        cancelled: list[Future[Any]] = []
        with self._lock:
            self._closed = True
            if cancel_futures:
                while True:
                    try:
                        call = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if call is not None:
                        cancelled.append(call.future)
                        self._unclaimed -= 1
            threads = list(self._live)
            for _ in threads:
                self._queue.put(None)  # one stop per live thread, after the calls still queued
        for future in cancelled:
            future.cancel()
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()

    # -- called with the lock held -----------------------------------------------------------
    def _grow(self) -> None:
        """Start a thread if calls wait that no idle thread will take, and there is room."""
        if self._unclaimed > self._idle and len(self._live) < self._max_workers:
            thread = threading.Thread(
                target=self._work, name=f"{self._prefix}_{next(self._numbers)}", daemon=True
            )
            self._live.add(thread)
            self._idle += 1
            thread.start()
            if self._closed:  # shutdown() already queued the others' stops: this one's too
                self._queue.put(None)

    # -- a pool thread -----------------------------------------------------------------------
    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            call = self._queue.get()
            with self._lock:
                self._idle -= 1
                if call is None:
                    self._live.discard(me)
                    return
                self._unclaimed -= 1
                started = call.future.set_running_or_notify_cancel()  # False: cancelled
                if started:
                    mark_started(call.future)  # its TimeoutSeconds counts from here
                    self._running[call.future] = me
                else:
                    self._idle += 1
            if not started:
                continue
            future = call.future
            try:
                result = call.fn(*call.args, **call.kwargs)
            except BaseException as exc:  # as ThreadPoolExecutor: the future carries it
                future.set_exception(exc)  # a running future cannot be cancelled meanwhile
            else:
                future.set_result(result)
                del result
            del call  # nothing of a finished call lives on in an idle thread
            with self._lock:
                if me not in self._live:  # abandoned: a replacement took this thread's place
                    return
                self._running.pop(future, None)
                self._idle += 1


class LocalExecutor:
    """Batches on this machine. ``max_workers`` defaults to the run's MaxConcurrency, capped
    at the core count for processes (more processes than cores only adds switching)."""

    name = "local"
    prefetch = 2
    reports_starts = True  # every pool below marks a call's start (runner.executors.base)

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
            # Daemon threads: a timed-out batch that never returns must not keep the process
            # alive after the run (ThreadPoolExecutor joins its threads at exit).
            self._pool = DaemonThreadPool(self.slots, thread_name_prefix="shardmap-worker")
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
        # timed-out thread work cannot be interrupted, so it is not waited for (nor joined at
        # exit: the pool's threads are daemons).
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
            elif isinstance(self._pool, DaemonThreadPool):
                # Running thread work cannot be stopped: it is abandoned, and a new thread
                # takes its slot, so a stuck batch does not shrink MaxConcurrency.
                self._pool.abandon(future)
            else:
                future.cancel()

    def describe(self) -> str:
        return f"local {self.mode} x{self.slots}"


def _inline(**options: Any) -> LocalExecutor:
    return LocalExecutor("inline", **options)


def _processes(**options: Any) -> LocalExecutor:
    return LocalExecutor("processes", **options)
