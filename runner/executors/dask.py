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
* A call's ``SystemExit`` fails that call with :class:`TaskExited` (the worker lives on);
  ``KeyboardInterrupt`` comes back as itself, as from a thread, and the loop aborts the run.

Retries are the loop's alone. Tasks are sent with ``retries=0``, and a worker process that dies
is not a reason for Dask to run a batch again: as on the process pool, the batch that was
running there fails with :class:`WorkerProcessDied` (naming the worker, its process and, from
its nanny's log, the signal or exit status), and only the pipeline's Retry runs it again.

* Which batch was running. The scheduler knows only the tasks a worker held, queued ones
  included (with ``worker-saturation`` above 1 a single-threaded worker holds two), and a task
  may hold a chunk of several calls. So each worker thread records the call it starts, and
  once its task is done, in a small file of its own (a ``pwrite`` in place, which outlives a
  SIGKILL); when a worker dies, its nanny, which lives on, reads the dead process's records
  back for the driver. The call running there fails; the other calls of its chunk, and the
  chunks that only waited there, are sent again: they never started, or they finished and
  their results died with the worker (those run twice: execution is at-least-once, results
  exactly once). A call sent again :data:`MAX_LOST_RESENDS` times this way fails.
* When that cannot be known (a worker without a nanny, a nanny that does not answer, a process
  that recorded nothing), every call of the lost task that had not finished fails with
  ``WorkerProcessDied`` saying so: a batch that may have killed its worker never succeeds
  without Retry. (A worker that dies holding only queued tasks before it ever started a call of
  this executor is such a case.)
* Shardmap's own LocalCluster is started with ``allowed-failures`` 0, so the scheduler never
  reschedules a task whose worker died (it fails it with ``KilledWorker`` at the first death).
* An existing scheduler keeps its own ``distributed.scheduler.allowed-failures`` (3 by
  default): a client cannot change it for one task, and changing it on a shared scheduler
  would change it for everyone. Its value is read when the executor opens. When it is 0, the
  above holds as is. Otherwise the scheduler puts a task back in its queue the moment its
  worker dies, and nothing a client does can stop that. So each task then first claims itself
  on the scheduler (``get_metadata``/``set_metadata``, two round trips, about a millisecond,
  per Dask task, not per batch): the rerun Dask hands to another worker finds the claim,
  refuses to run any of its calls and names the worker that died, and the batch fails with
  ``WorkerProcessDied`` at the first loss, exactly as above. What is not possible: having it
  fail before Dask reschedules it (it is reported when the rerun reaches a worker, normally at
  once, later on a cluster busy with other work), and avoiding the claim's cost, short of
  setting ``allowed-failures: 0`` on that scheduler.
* A worker retired on purpose (``retire_workers``, adaptive scaling) hands its tasks back to the
  scheduler, which runs them elsewhere: that is not a death, and Dask reruns them as it would.

When a call starts. TimeoutSeconds counts from when a worker takes the batch, and the results'
StartDate is that moment (:func:`runner.executors.base.started_at`). Every call carries its
start time (the worker's clock) back with its outcome; a call still running after
:data:`~runner.executors.daskremote.LIVE_START_SECONDS` is also announced while it runs, by a
watcher thread on the worker, as an event on a topic of this executor's (``Worker.log_event``;
``Client.subscribe_topic``), with how long it has run, so the driver arms its deadline from its
start without comparing clocks. Shorter calls cost no message: none of them can time out. A
call that holds the GIL without pause (some C extensions) silences its worker altogether, its
announcement included; Dask then removes the silent worker after
``distributed.scheduler.worker-ttl`` and the batch fails with ``WorkerProcessDied``.

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

import itertools
import logging
import os
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError, Future, InvalidStateError
from contextlib import suppress
from functools import partial
from itertools import pairwise
from typing import Any, Self

from runner.errors import ExecutorError
from runner.executors.base import mark_started
from runner.executors.daskremote import (
    CLAIMS,
    DONE,
    Calls,
    Rerun,
    Where,
    drop_records,
    read_records,
    run_calls,
    topic,
)
from runner.executors.procpool import TaskExited, WorkerProcessDied
from runner.settings import settings

__all__ = ["DaskExecutor", "TaskExited", "WorkerProcessDied"]

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
#: A call whose worker died while it waited there (or after it finished, its result with it)
#: is sent again at most this many times; then it fails with WorkerProcessDied.
MAX_LOST_RESENDS = 3
#: The nanny's words (distributed.nanny.WorkerProcess._death_message).
_DEATH_MESSAGE = re.compile(
    r"Worker process (\d+) (?:exited with status (-?\d+)|was killed by signal (\d+)"
    r"|was killed by (unknown signal))"
)

log = logging.getLogger("shardmap")

_WAKE = object()  # queued by submit into an idle executor: start the autoflush clock
_STOP = object()  # queued by __exit__: the collector settles what it has, then ends
_UNKNOWN = object()  # which call a lost task was running cannot be known

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
    reports_starts = True  # from the workers (see the module docstring)

    def __init__(
        self,
        scheduler: str | None = None,
        *,
        n_workers: int | None = None,
        max_workers: int | None = None,
    ) -> None:
        self.scheduler = scheduler or settings().dask_scheduler
        self.n_workers = n_workers or os.cpu_count() or 1
        self.max_workers = max_workers
        self.slots = max_workers or self.n_workers
        self._client: Any = None
        self._cluster: Any = None
        self._threads = 1  # worker threads on the cluster
        self._token = ""  # names this opening's tasks, start records and event topic
        self._claims = False  # tasks claim themselves: the scheduler reschedules lost tasks
        self._allowed_failures: int | None = None  # the scheduler's, when it reschedules
        self._numbers = itertools.count()
        self._lock = threading.Lock()  # guards the buffer and the maps below
        # One flush at a time; cancel waits for it. Reentrant: a done callback run while it is
        # held (a call that could not be sent fails at once) may submit and flush again.
        self._send_lock = threading.RLock()
        self._buffer: list[_Entry] = []
        self._buffered_since = 0.0
        self._chunk_of: dict[Future, _Chunk] = {}  # sent local -> its chunk, until settled
        self._chunks: dict[int, _Chunk] = {}  # chunk number -> chunk, until the collector takes it
        self._resent: dict[Future, int] = {}  # how often a call was sent again after a loss
        self._records: dict[Where, dict[int, int] | None] = {}  # a dead process's start records
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
                # A task whose worker died fails at once (KilledWorker): only the loop retries.
                scheduler_kwargs={"allowed_failures": 0},
            )
            self._client = Client(self._cluster)
        threads = sum(self._client.nthreads().values()) or 1
        self._threads = threads
        self.slots = min(self.max_workers, threads) if self.max_workers else threads
        self._token = uuid.uuid4().hex[:16]
        self._allowed_failures = None
        self._claims = self._scheduler_reschedules()
        # On the same stream as the tasks that follow, so it is in place before any runs.
        self._client.subscribe_topic(topic(self._token), self._on_start)
        self._broken = None
        self._call_seconds = None
        self._ready = queue.SimpleQueue()
        self._collector = threading.Thread(
            target=self._collect, name="shardmap-dask-collector", daemon=True
        )
        self._collector.start()
        return self

    def _scheduler_reschedules(self) -> bool:
        """Whether the scheduler runs a task again when its worker dies (allowed-failures)."""
        if self._cluster is not None:
            return False  # ours: started with allowed-failures 0
        try:
            allowed = self._client.run_on_scheduler(
                lambda dask_scheduler: dask_scheduler.allowed_failures  # a lambda travels by value
            )
        except Exception as exc:
            log.info(
                "dask executor: could not read the scheduler's allowed-failures (%s: %s); "
                "tasks claim themselves so that Dask never reruns a batch",
                type(exc).__name__,
                exc,
            )
            return True
        self._allowed_failures = allowed or None
        if allowed:
            log.info(
                "dask executor: scheduler %s reschedules a task whose worker died "
                "(distributed.scheduler.allowed-failures = %s); each task claims itself "
                "(a scheduler round trip) so that only the pipeline's Retry reruns a batch; "
                "allowed-failures: 0 on that scheduler saves the round trip",
                self.scheduler,
                allowed,
            )
        return bool(allowed)

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
            self._resent.clear()
            self._records.clear()
        if self._client is not None:
            self._clean_up()
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
            drop_records(self._token)  # its workers and nannies ran on this machine

    def _clean_up(self) -> None:
        """Best effort: drop this opening's start records and claims on the cluster."""
        with suppress(Exception):
            self._client.unsubscribe_topic(topic(self._token))
        if self._cluster is not None:
            return
        try:
            self._client.run(drop_records, self._token, on_error="ignore")
            if self._claims:
                self._client.set_metadata([CLAIMS, self._token], None)
        except Exception:
            log.debug("dask executor: cleaning up on the cluster failed", exc_info=True)

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
        chunks = [_Chunk(entries[a:b], next(self._numbers)) for a, b in pairwise(bounds)]
        name = _task_name(entries[0][1])
        try:
            remotes = self._client.map(
                run_calls,
                [chunk.calls(self._token, self._claims) for chunk in chunks],
                key=[f"{name}-{self._token}-{chunk.number}" for chunk in chunks],
                retries=0,  # the loop's Retry decides (and Dask's default may not be 0)
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
                self._chunks[chunk.number] = chunk
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
                    if self._chunks.pop(chunk.number, None) is None:
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

    # -- starts, from the workers (on the client's event loop) ----------------------------------
    def _on_start(self, event: tuple[float, Any]) -> None:
        """A call has run for a while: its deadline counts from when it started."""
        try:
            number, index, wall, elapsed = event[1]
            chunk = self._chunks.get(number)  # gone: settled, its start came with its outcome
            if chunk is not None and 0 <= index < len(chunk.locals):
                mark_started(chunk.locals[index], clock=time.monotonic() - elapsed, wall=wall)
        except Exception:  # never break the client's event loop over one message
            log.warning("dask executor: a start event could not be read: %r", event)

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
            taken = (self._chunks.pop(_chunk_number(r.key), None) for r in remotes)
            chunks = [chunk for chunk in taken if chunk is not None]
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
                    if _is_killed_worker(exc):
                        self._lost(chunk, self._where_it_ran(chunk, exc), exc)
                        continue
                    chunk.settled = True
                    for local in chunk.locals:
                        _fail(local, exc)
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

    def _deliver(self, chunk: _Chunk, outcomes: Any) -> None:
        from distributed.protocol.pickle import loads

        if isinstance(outcomes, Rerun):  # Dask ran it again: its first worker died with it
            self._lost(chunk, outcomes.first, None)
            return
        chunk.settled = True
        if len(outcomes) != len(chunk.locals):
            error = RuntimeError(f"{len(outcomes)} outcomes for {len(chunk.locals)} calls")
            for local in chunk.locals:
                _fail(local, error)
            return
        now = time.monotonic()
        for local, (ok, payload, seconds, wall) in zip(chunk.locals, outcomes, strict=True):
            mark_started(local, clock=now - seconds, wall=wall)  # unless announced while it ran
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

    # -- a worker that died --------------------------------------------------------------------
    def _where_it_ran(self, chunk: _Chunk, killed: Any) -> Where | None:
        """The worker process a ``KilledWorker`` task was on when it died: where it had claimed
        itself (when tasks claim themselves; ``None`` if it never started), else the worker
        the scheduler names."""
        if self._claims:
            try:
                claim = self._client.get_metadata([CLAIMS, self._token, str(chunk.number)], None)
            except Exception as exc:  # then which worker, and so which call, is unknown
                log.warning("dask executor: the scheduler's claims could not be read: %s", exc)
                return Where("(unknown address)", None, None)
            return None if claim is None else Where(*claim)
        state = killed.last_worker  # the scheduler's WorkerState of the worker that died
        address = getattr(state, "address", None) or str(state)
        return Where(address, getattr(state, "pid", None) or None, getattr(state, "nanny", None))

    def _lost(self, chunk: _Chunk, where: Where | None, killed: Any) -> None:
        """``chunk``'s worker process died before its outcome came back (``where``: the
        process, ``None`` when the chunk never started). The call that was running fails with
        WorkerProcessDied; the others are sent again (see the module docstring)."""
        chunk.settled = True
        with self._lock:
            pending = [e for e in chunk.entries if self._chunk_of.get(e[0]) is chunk]
            for local, *_ in pending:
                del self._chunk_of[local]
        if not pending:
            return
        running = self._running_call(chunk, where)
        index_of = {id(local): n for n, local in enumerate(chunk.locals)}
        failed: list[_Entry] = []
        again: list[_Entry] = []
        for entry in pending:
            hit = running is _UNKNOWN or index_of[id(entry[0])] == running
            (failed if hit else again).append(entry)
        if failed:
            assert where is not None  # a chunk that never started has no running call
            error = self._death(where, unknown=running is _UNKNOWN, size=len(chunk.locals))
            if killed is not None:
                error.__cause__ = killed
            for local, *_ in failed:
                _fail(local, error)
        resend: list[_Entry] = []
        for entry in again:
            times = self._resent.get(entry[0], 0) + 1
            if times > MAX_LOST_RESENDS:
                error = WorkerProcessDied(
                    None,
                    None,
                    where="Dask workers",
                    doing=f"{times} times holding this batch",
                    note="it waited there, or had finished and its result died with them",
                )
                _fail(entry[0], error)
                continue
            self._resent[entry[0]] = times
            entry[0].add_done_callback(self._forget_resent)
            resend.append(entry)
        if resend:
            with self._send_lock:
                self._send(resend, 1)

    def _forget_resent(self, local: Future) -> None:
        self._resent.pop(local, None)

    def _running_call(self, chunk: _Chunk, where: Where | None) -> Any:
        """Index of the call ``chunk`` was running when its worker died; ``None`` when none
        was (it never started, or its calls were all done); ``_UNKNOWN``."""
        if where is None:
            return None
        if where not in self._records:
            self._records[where] = self._recorded_starts(where)
        records = self._records[where]
        if records is None:
            return _UNKNOWN
        index = records.get(chunk.number)
        return None if index is None or index == DONE else index

    def _recorded_starts(self, where: Where) -> dict[int, int] | None:
        """The dead process's start records, read back by its nanny; ``None`` if it has none
        (no nanny, no answer, nothing recorded)."""
        if not where.nanny or where.pid is None:
            return None
        from distributed.protocol.pickle import dumps

        try:
            reply = self._client.sync(
                self._client.rpc(where.nanny).run,
                function=dumps(read_records),
                args=dumps((self._token, where.pid)),
            )
        except Exception as exc:
            log.warning("dask executor: nanny %s could not be asked: %s", where.nanny, exc)
            return None
        if not isinstance(reply, dict) or reply.get("status") != "OK":
            log.warning("dask executor: nanny %s did not read the records: %r", where.nanny, reply)
            return None
        result = reply.get("result")
        return result if isinstance(result, dict) else None

    def _death(self, where: Where, *, unknown: bool, size: int) -> WorkerProcessDied:
        """What happened, as the process pool says it: which worker, its process, how it
        ended."""
        exitcode, why = self._exit_status(where.pid, where.nanny)
        notes = [] if why is None else [why]
        if self._allowed_failures:
            notes.append(
                "the scheduler would have run it again (distributed.scheduler.allowed-failures"
                f" = {self._allowed_failures}); shardmap does not: only the pipeline's Retry does"
            )
        if unknown:
            notes.append(
                "shardmap could not learn whether this batch was running there or only "
                + ("queued" if size == 1 else f"queued or done (one of {size} in a Dask task)")
                + ": the dead process's start records could not be read from its nanny"
            )
        return WorkerProcessDied(
            where.pid, exitcode, where=f"Dask worker {where.address}", note="; ".join(notes)
        )

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

    __slots__ = ("entries", "locals", "number", "remote", "settled")

    def __init__(self, entries: list[_Entry], number: int) -> None:
        self.entries = entries
        self.locals = [entry[0] for entry in entries]
        self.number = number  # in its Dask key, its start records and its events
        self.remote: Any = None
        self.settled = False

    def calls(self, token: str, claims: bool) -> Calls:
        calls = [(fn, args, kwargs) for _, fn, args, kwargs in self.entries]
        return Calls(calls, token, self.number, claims)


def _is_killed_worker(exc: BaseException) -> bool:
    from distributed.scheduler import KilledWorker

    return isinstance(exc, KilledWorker)


def _task_name(fn: Any) -> str:
    """The task name prefix on the dashboard: the function's name, as Dask would show it."""
    while isinstance(fn, partial):
        fn = fn.func
    return str(getattr(fn, "__name__", type(fn).__name__)).strip("<>") or "call"


def _chunk_number(key: Any) -> int:
    """A chunk's number from its Dask key (``<name>-<token>-<number>``)."""
    return int(str(key).rsplit("-", 1)[1])


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
