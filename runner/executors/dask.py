"""Batches on a Dask ``distributed`` cluster: a LocalCluster of worker processes by default, or an
existing scheduler (``scheduler=`` / ``SHARDMAP_DASK_SCHEDULER``).

Only execution moves: the scheduling loop above keeps concurrency, retries, timeouts,
thresholds, the journal and the results exactly as on the local executor. Dask's futures are
bridged to ``concurrent.futures.Future`` so the loop waits on both kinds the same way.

A Dask task costs milliseconds of scheduler, worker and client time whatever it does, so a map
of small batches is dominated by that cost. The bridge therefore works in bulk:

* ``submit`` only buffers. ``flush`` (called by the loop after each round of submissions) sends
  the buffer with one ``client.map``. What nobody flushes is sent by the collector after
  :data:`AUTOFLUSH_SECONDS`, so ``submit`` alone works.
* Short calls travel several to a Dask task (a *chunk*): as many as keep a chunk's measured
  run time under :data:`CHUNK_SECONDS`, and never so many that fewer than two chunks per worker
  thread are outstanding. Calls of unknown or long duration go one to a task. Each call's
  outcome is pickled on the worker on its own, so one call's error or unpicklable result
  fails that call only.
* A Dask future's done callback only queues it. One collector thread drains the queue, fetches
  every finished chunk with one ``client.gather`` and settles the local futures; chunks that
  erred (``KilledWorker``), were cancelled, or whose data went missing meanwhile are settled one
  by one through ``Future.result()``. Nothing per call happens on Dask's event loop thread.
* The collector never dies silently: an unexpected exception fails the futures it was
  settling; if the collector itself stops, every outstanding future fails with the reason and
  later submissions fail at once.
* A call whose worker process died (Dask's ``KilledWorker``, once the scheduler gave up after
  ``distributed.scheduler.allowed-failures`` deaths) fails with :class:`WorkerProcessDied`
  naming the last worker, its process id and exit status: the scheduler knows the worker and
  its pid, and only the worker's nanny knows how the process ended, which it logs ("Worker
  process 123 was killed by signal 9"); that line is read back from the nanny. A worker
  started without a nanny, or a nanny that logged nothing (it logs no status 0), leaves the
  status unknown, and the error says why.
* A call's ``SystemExit`` fails that call with :class:`TaskExited` (the worker lives on);
  ``KeyboardInterrupt`` comes back as itself, as from a thread, and the loop aborts the run.

Signals: Dask worker processes keep Dask's own handling. SIGINT (Ctrl-C reaches the whole
process group, LocalCluster's workers included) makes a worker shut down, cancelling its
running task; its nanny does not start another. The loop, which got the same SIGINT, aborts
the run and records those batches ABORTED.

``distributed.as_completed`` and ``distributed.wait`` are not used: without ``loop=`` they
follow the *current* client, which inside ``with Client(...)`` (the benchmark, the tests, a
notebook) is not this executor's client; they then await its futures' events on the wrong event
loop, where wakeups can be missed for good (a run that never finishes).
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError, Future, InvalidStateError
from contextlib import suppress
from functools import partial
from itertools import pairwise
from typing import Any, Self

from runner.errors import ExecutorError
from runner.executors.procpool import TaskExited, WorkerProcessDied, task_error

__all__ = ["DaskExecutor", "TaskExited", "WorkerProcessDied"]

ENV_SCHEDULER = "SHARDMAP_DASK_SCHEDULER"
#: Submissions nobody flushed are sent after this long.
AUTOFLUSH_SECONDS = 0.01
#: Calls share a Dask task while the task's measured run time stays under this.
CHUNK_SECONDS = 0.05
#: And never more than this many calls to one task.
MAX_CHUNK = 32
#: How often the collector looks for unflushed submissions while work is outstanding.
_POLL_SECONDS = 0.05
#: How long to wait for a dead worker's nanny to log how its process ended.
DEATH_REPORT_SECONDS = 3.0
#: The nanny's words (distributed.nanny.WorkerProcess._death_message).
_DEATH_MESSAGE = re.compile(
    r"Worker process (\d+) (?:exited with status (-?\d+)|was killed by signal (\d+)"
    r"|was killed by (unknown signal))"
)

log = logging.getLogger("shardmap")

_WAKE = object()  # queued by submit into an idle executor: start the autoflush clock
_STOP = object()  # queued by __exit__: the collector settles what it has, then ends

_Entry = tuple[Future, Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaskExecutor:
    """Run callables on Dask workers.

    ``scheduler``: a ``tcp://host:port`` address; when absent (and ``SHARDMAP_DASK_SCHEDULER``
    is unset) a ``LocalCluster`` with one single-threaded worker process per core is started on
    ``__enter__`` and closed on ``__exit__``.
    """

    name = "dask"
    remote = True  # callables travel by pickle; workers import the worker function by name
    prefetch = 16  # a scheduler round trip costs milliseconds: keep every worker fed
    reads_shards = True  # workers read their own byte ranges and row groups (runner/shards.py)

    def __init__(
        self,
        scheduler: str | None = None,
        *,
        n_workers: int | None = None,
        max_workers: int | None = None,
    ) -> None:
        self.scheduler = scheduler or os.environ.get(ENV_SCHEDULER) or None
        self.n_workers = n_workers or os.cpu_count() or 1
        self.max_workers = max_workers
        self.slots = max_workers or self.n_workers
        self._client: Any = None
        self._cluster: Any = None
        self._threads = 1  # worker threads on the cluster
        self._lock = threading.Lock()  # guards the buffer and the two maps below
        # One flush at a time; cancel waits for it. Reentrant: a done callback run while it is
        # held (a call that could not be sent fails at once) may submit and flush again.
        self._send_lock = threading.RLock()
        self._buffer: list[_Entry] = []
        self._buffered_since = 0.0
        self._chunk_of: dict[Future, _Chunk] = {}  # sent local -> its chunk, until settled
        self._chunks: dict[Any, _Chunk] = {}  # Dask key -> chunk, until the collector takes it
        self._ready: queue.SimpleQueue[Any] = queue.SimpleQueue()  # finished Dask futures
        self._collector: threading.Thread | None = None
        self._broken: BaseException | None = None
        self._call_seconds: float | None = None  # running mean of one call's time on a worker

    def __enter__(self) -> Self:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # an optional dependency in spirit: say how to get it
            raise ExecutorError(
                "the dask executor needs `pip install 'dask[distributed]'`"
            ) from exc
        if self.scheduler:
            self._client = Client(self.scheduler)
        else:
            self._cluster = LocalCluster(
                n_workers=self.n_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
            )
            self._client = Client(self._cluster)
        threads = sum(self._client.nthreads().values()) or 1
        self._threads = threads
        self.slots = min(self.max_workers, threads) if self.max_workers else threads
        self._broken = None
        self._call_seconds = None
        self._ready = queue.SimpleQueue()
        self._collector = threading.Thread(
            target=self._collect, name="shardmap-dask-collector", daemon=True
        )
        self._collector.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        closed = CancelledError("the dask executor closed before this call finished")
        with self._send_lock, self._lock:  # no flush is half done
            unsent, self._buffer = self._buffer, []
            sent = list(self._chunk_of)
            chunks = {id(chunk): chunk for chunk in self._chunk_of.values()}
        for local, *_ in unsent:
            _fail(local, closed)
        if chunks and self._client is not None:
            try:
                self._client.cancel([chunk.remote for chunk in chunks.values()], force=True)
            except Exception:  # closing anyway: the futures below still fail
                log.warning("dask executor: cancelling on close failed", exc_info=True)
        if self._collector is not None:
            self._ready.put(_STOP)
            self._collector.join(timeout=10)
            self._collector = None
        for local in sent:  # those the collector did not settle before it stopped
            _fail(local, closed)
        with self._lock:
            self._chunk_of.clear()
            self._chunks.clear()
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    @property
    def client(self) -> Any:
        if self._client is None:
            raise ExecutorError("executor is not open; use it as a context manager")
        return self._client

    # -- sending -------------------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Buffer one call; it is sent by :meth:`flush` (or by the collector soon after)."""
        self.client  # noqa: B018 - raises when the executor is not open
        local: Future = Future()
        local.set_running_or_notify_cancel()
        if self._broken is not None:
            _fail(local, _collector_failed(self._broken))
            return local
        with self._lock:
            idle = not self._buffer and not self._chunk_of
            if not self._buffer:
                self._buffered_since = time.monotonic()
            self._buffer.append((local, fn, args, kwargs))
        if idle:  # the collector may be waiting without a timeout: start its autoflush clock
            self._ready.put(_WAKE)
        return local

    def flush(self) -> None:
        """Send every buffered call, in chunks, with one ``client.map``."""
        with self._send_lock:
            with self._lock:
                entries, self._buffer = self._buffer, []
                outstanding = len(entries) + len(self._chunk_of)
            if entries and self._client is not None:
                self._send(entries, self._chunk_size(outstanding))

    def _chunk_size(self, outstanding: int) -> int:
        """Calls per Dask task: enough to amortise a task's cost, few enough to keep at least
        two tasks per worker thread outstanding and each task short."""
        seconds = self._call_seconds
        if seconds is None:  # nothing measured yet: one call per task
            return 1
        by_time = int(CHUNK_SECONDS / max(seconds, 1e-6))
        by_depth = outstanding // (2 * self._threads)
        return max(1, min(by_time, by_depth, MAX_CHUNK))

    def _send(self, entries: list[_Entry], size: int) -> None:
        count = -(-len(entries) // size)  # as even as possible: 9 calls by 8 go as 5 + 4
        bounds = [len(entries) * n // count for n in range(count + 1)]
        chunks = [_Chunk(entries[a:b]) for a, b in pairwise(bounds)]
        try:
            remotes = self._client.map(
                _run_calls,
                [chunk.calls() for chunk in chunks],
                key=_task_name(entries[0][1]),
                pure=False,
            )
        except Exception as exc:
            if len(entries) > 1:  # one unsendable call (say, unpicklable) fails only itself
                for entry in entries:
                    self._send([entry], 1)
            else:
                _fail(entries[0][0], exc)
            return
        with self._lock:
            for chunk, remote in zip(chunks, remotes, strict=True):
                chunk.remote = remote
                self._chunks[remote.key] = chunk
                for local in chunk.locals:
                    self._chunk_of[local] = chunk
        for remote in remotes:
            remote.add_done_callback(self._ready.put)  # runs in Dask's callback thread

    def cancel(self, futures: Iterable[Future]) -> None:
        """Cancelled calls fail with ``CancelledError`` at once. A chunk whose calls are all
        cancelled is cancelled on the cluster (force: running ones too); one cancelled in part
        is cancelled and its other calls sent again (they may run twice, and settle once)."""
        wanted = set(futures)
        stop: list[Any] = []
        again: list[_Entry] = []
        with self._send_lock:
            with self._lock:  # each local is either buffered or sent
                cancelled = [entry[0] for entry in self._buffer if entry[0] in wanted]
                if cancelled:
                    self._buffer = [entry for entry in self._buffer if entry[0] not in wanted]
                hit: dict[int, _Chunk] = {}
                for local in wanted:
                    chunk = self._chunk_of.pop(local, None)
                    if chunk is not None:
                        cancelled.append(local)
                        hit[id(chunk)] = chunk
                for chunk in hit.values():
                    if self._chunks.pop(chunk.remote.key, None) is None:
                        continue  # the collector has it: it settles the rest
                    stop.append(chunk.remote)
                    again += [e for e in chunk.entries if self._chunk_of.get(e[0]) is chunk]
                for local, *_ in again:
                    del self._chunk_of[local]
            for local in cancelled:
                _fail(local, CancelledError("cancelled by the caller"))
            if again:
                self._send(again, 1)
        if stop:
            self.client.cancel(stop, force=True)

    # -- collecting ----------------------------------------------------------------------------
    def _collect(self) -> None:
        try:
            while True:
                finished, stop = self._take_ready()
                if finished:
                    self._settle(finished)
                if stop:
                    return
        except BaseException as exc:  # never silently: fail everything outstanding
            self._broken = exc
            log.exception("dask executor: the result collector failed")
            with self._lock:
                outstanding = list(self._chunk_of)
                unsent, self._buffer = self._buffer, []
                self._chunk_of.clear()
                self._chunks.clear()
            for local in outstanding + [entry[0] for entry in unsent]:
                _fail(local, _collector_failed(exc))

    def _take_ready(self) -> tuple[list[Any], bool]:
        """Block for finished Dask futures and take all there are (or flush a stale buffer)."""
        if self._buffer:
            timeout: float | None = max(
                0.0, self._buffered_since + AUTOFLUSH_SECONDS - time.monotonic()
            )
        else:
            timeout = _POLL_SECONDS if self._chunk_of else None
        items: list[Any] = []
        try:
            items.append(self._ready.get(timeout=timeout))
            while True:
                items.append(self._ready.get_nowait())
        except queue.Empty:
            pass
        if self._buffer and time.monotonic() - self._buffered_since >= AUTOFLUSH_SECONDS:
            self.flush()  # nobody called flush: send what waited too long
        stop = any(item is _STOP for item in items)
        return [item for item in items if item is not _WAKE and item is not _STOP], stop

    def _settle(self, remotes: list[Any]) -> None:
        """Settle the calls of finished chunks: one bulk gather, one by one for the rest."""
        with self._lock:
            chunks = [self._chunks.pop(r.key) for r in remotes if r.key in self._chunks]
        try:
            finished = [chunk for chunk in chunks if chunk.remote.status == "finished"]
            if finished:
                try:
                    outcomes = self._client.gather([chunk.remote for chunk in finished])
                except Exception:  # lost or cancelled meanwhile: each on its own below
                    outcomes = None
                if outcomes is not None and len(outcomes) == len(finished):
                    for chunk, chunk_outcomes in zip(finished, outcomes, strict=True):
                        self._deliver(chunk, chunk_outcomes)
            for chunk in chunks:
                if chunk.settled:
                    continue
                try:
                    chunk_outcomes = chunk.remote.result()  # KilledWorker, cancelled, recomputed
                except BaseException as exc:
                    chunk.settled = True
                    if len(chunk.locals) > 1 and not isinstance(exc, CancelledError):
                        self._split(chunk)  # one call may have killed its workers: find it
                        continue
                    error = self._worker_death(exc) if _is_killed_worker(exc) else exc
                    for local in chunk.locals:
                        _fail(local, error)
                else:
                    self._deliver(chunk, chunk_outcomes)
        except BaseException as exc:  # unexpected: these futures fail, the collector goes on
            log.exception("dask executor: settling %d finished tasks failed", len(chunks))
            for chunk in chunks:
                for local in chunk.locals:
                    _fail(local, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            with self._lock:
                for chunk in chunks:
                    for local in chunk.locals:
                        if self._chunk_of.get(local) is chunk:
                            del self._chunk_of[local]

    def _split(self, chunk: _Chunk) -> None:
        """Send a failed chunk's calls again one to a task, so that a call that crashes its
        workers (``KilledWorker``) fails alone, as it would have without chunks."""
        with self._send_lock:
            with self._lock:
                again = [e for e in chunk.entries if self._chunk_of.get(e[0]) is chunk]
                for local, *_ in again:
                    del self._chunk_of[local]
            if again:
                self._send(again, 1)

    def _deliver(self, chunk: _Chunk, outcomes: list[tuple[bool, bytes, float]]) -> None:
        from distributed.protocol.pickle import loads

        chunk.settled = True
        if len(outcomes) != len(chunk.locals):
            error = RuntimeError(f"{len(outcomes)} outcomes for {len(chunk.locals)} calls")
            for local in chunk.locals:
                _fail(local, error)
            return
        for local, (ok, payload, seconds) in zip(chunk.locals, outcomes, strict=True):
            try:
                value = loads(payload)
            except Exception as exc:
                _fail(local, exc)
                continue
            if ok:
                _succeed(local, value)
            else:
                _fail(local, value)
            mean = self._call_seconds
            self._call_seconds = seconds if mean is None else 0.9 * mean + 0.1 * seconds

    def _worker_death(self, killed: Any) -> WorkerProcessDied:
        """``KilledWorker`` as what happened: which worker, its process, how it ended."""
        state = killed.last_worker  # the scheduler's WorkerState of the last worker that died
        address = getattr(state, "address", None) or str(state)
        pid = getattr(state, "pid", None) or None
        exitcode, unknown = self._exit_status(pid, getattr(state, "nanny", None))
        notes = [] if unknown is None else [unknown]
        # Dask counts a batch that only waited in a dying worker's queue as if it ran there.
        deaths = killed.allowed_failures + 1
        notes.append(
            f"Dask gave up on the batch after {deaths} worker{'s' if deaths > 1 else ''} died "
            "while running it or holding it queued "
            f"(distributed.scheduler.allowed-failures = {killed.allowed_failures})"
        )
        error = WorkerProcessDied(
            pid, exitcode, where=f"Dask worker {address}", note="; ".join(notes)
        )
        error.__cause__ = killed
        return error

    def _exit_status(self, pid: int | None, nanny: str | None) -> tuple[int | None, str | None]:
        """``(exit code as Process.exitcode has it, None)`` from the nanny's log, or
        ``(None, why it is unknown)``. The nanny may log the death a moment after the
        scheduler gave up on the task, so its log is read again for a little while."""
        if pid is None:
            return None, "the scheduler did not know its process id"
        if not nanny:
            return None, "it runs without a nanny, the only one told how its process ended"
        deadline = time.monotonic() + DEATH_REPORT_SECONDS
        while True:
            try:
                lines = self._client.sync(self._client.rpc(nanny).get_logs, n=1000)
            except Exception as exc:
                return None, f"its nanny {nanny} could not be asked: {type(exc).__name__}: {exc}"
            for _level, text in reversed(lines):
                found = _DEATH_MESSAGE.search(text)
                if found and int(found[1]) == pid:
                    if found[2] is not None:
                        return int(found[2]), None
                    if found[3] is not None:
                        return -int(found[3]), None
                    return None, "its nanny says it was killed by an unknown signal"
            if time.monotonic() > deadline:
                return None, f"its nanny {nanny} logged no exit status for process {pid}"
            time.sleep(0.1)

    def describe(self) -> str:
        link = getattr(self._client, "dashboard_link", None) if self._client else None
        where = self.scheduler or "LocalCluster"
        return f"dask {where} x{self.slots}" + (f" dashboard {link}" if link else "")


class _Chunk:
    """Calls sent as one Dask task, and what became of them."""

    __slots__ = ("entries", "locals", "remote", "settled")

    def __init__(self, entries: list[_Entry]) -> None:
        self.entries = entries
        self.locals = [entry[0] for entry in entries]
        self.remote: Any = None
        self.settled = False

    def calls(self) -> _Calls:
        return _Calls([(fn, args, kwargs) for _, fn, args, kwargs in self.entries])


class _Calls:
    """The calls of one task, opaque to Dask. Dask walks every dict, list and tuple among a
    task's arguments looking for futures (``dask._task_spec.parse_input``); for batches of a
    hundred items that walk alone cost more than the work. Arguments are passed as given, as by
    ``concurrent.futures``: Dask futures inside them are not resolved."""

    __slots__ = ("calls",)

    def __init__(self, calls: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]):
        self.calls = calls

    def __reduce__(self) -> tuple[Any, ...]:
        return _Calls, (self.calls,)


def _run_calls(batch: _Calls) -> list[tuple[bool, bytes, float]]:
    """On a worker: run each call; its value or exception pickled on its own, and its time."""
    from distributed.protocol.pickle import dumps

    outcomes = []
    for fn, args, kwargs in batch.calls:
        started = time.perf_counter()
        try:
            payload = (True, dumps(fn(*args, **kwargs)))
        except BaseException as exc:  # each call fails on its own, as one task per call would
            payload = (False, _pickled_error(task_error(exc, _this_worker())))
        outcomes.append((*payload, time.perf_counter() - started))
    return outcomes


def _this_worker() -> str:
    try:
        from distributed import get_worker

        return f"Dask worker {get_worker().address} (process {os.getpid()})"
    except Exception:  # not on a worker (a test calling it directly)
        return f"process {os.getpid()}"


def _is_killed_worker(exc: BaseException) -> bool:
    from distributed.scheduler import KilledWorker

    return isinstance(exc, KilledWorker)


def _pickled_error(exc: BaseException) -> bytes:
    """The exception as Dask ships a task's: with its traceback (tblib), causes included, or
    as ``Exception(repr(exc))`` when it cannot be pickled."""
    import tblib.pickling_support
    from distributed.protocol.pickle import dumps, loads

    causes, cause = [], exc.__cause__
    while cause is not None:
        causes.append(cause)
        cause = cause.__cause__
    tblib.pickling_support.install(exc, *causes)
    try:
        data = dumps(exc)
        loads(data)
    except Exception:
        try:
            text = repr(exc)
        except Exception:
            text = f"{type(exc).__name__} (unprintable)"
        data = dumps(Exception(text))
    return data


def _task_name(fn: Any) -> str:
    """The task name prefix on the dashboard: the function's name, as Dask would show it."""
    while isinstance(fn, partial):
        fn = fn.func
    return str(getattr(fn, "__name__", type(fn).__name__)).strip("<>") or "call"


def _succeed(local: Future, value: Any) -> None:
    with suppress(InvalidStateError):  # already failed (cancelled, closed, collector failed)
        local.set_result(value)


def _fail(local: Future, exc: BaseException) -> None:
    with suppress(InvalidStateError):
        local.set_exception(exc)


def _collector_failed(exc: BaseException) -> ExecutorError:
    error = ExecutorError(f"the dask result collector failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error
