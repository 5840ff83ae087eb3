"""What runs on Dask's side for :class:`runner.executors.dask.DaskExecutor`: a task's calls on a
worker process (each outcome pickled on its own, start times announced while a call runs),
the start records a worker's nanny reads back when its process dies, and the claim a task
makes on a scheduler that reschedules. The driver side, and why each of these exists, is
in :mod:`runner.executors.dask`; these functions are shipped to workers by reference.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any, NamedTuple

from runner.executors.procpool import task_error

log = logging.getLogger("shardmap")

#: A call still running after this long is announced to the driver (its deadline starts from
#: its start); shorter calls report their start with their outcome only.
LIVE_START_SECONDS = 0.05


#: Scheduler metadata under which tasks claim themselves (only on schedulers that reschedule).
CLAIMS = "shardmap-claims"


DONE = -1  # a start record's call index once its task's calls are all done


class Where(NamedTuple):
    """A Dask worker process: its address, process id and nanny's address (if any)."""

    address: str
    pid: int | None
    nanny: str | None


class Rerun(NamedTuple):
    """A task's outcome when Dask ran it again after its worker died: none of its calls ran
    again; ``first`` is where it ran before."""

    first: Where


class Calls:
    """The calls of one task, opaque to Dask. Dask walks every dict, list and tuple among a
    task's arguments looking for futures (``dask._task_spec.parse_input``); for batches of a
    hundred items that walk alone cost more than the work. Arguments are passed as given, as by
    ``concurrent.futures``: Dask futures inside them are not resolved."""

    __slots__ = ("calls", "claims", "number", "token")

    def __init__(
        self,
        calls: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]],
        token: str = "",
        number: int = 0,
        claims: bool = False,
    ) -> None:
        self.calls = calls
        self.token = token
        self.number = number
        self.claims = claims

    def __reduce__(self) -> tuple[Any, ...]:
        return Calls, (self.calls, self.token, self.number, self.claims)


def run_calls(batch: Calls) -> list[tuple[bool, bytes, float, float]] | Rerun:
    """On a worker: run each call; its value or exception pickled on its own, its time and
    when it started (this machine's clock)."""
    from distributed.protocol.pickle import dumps

    worker = current_worker()
    if batch.claims and worker is not None:
        first = claim(worker, batch)
        if first is not None:
            return Rerun(first)
    outcomes = []
    for index, (fn, args, kwargs) in enumerate(batch.calls):
        wall, started = PROBE.begin(worker, batch, index)
        try:
            payload = (True, dumps(fn(*args, **kwargs)))
        except BaseException as exc:  # each call fails on its own, as one task per call would
            payload = (False, pickled_error(task_error(exc, this_worker())))
        PROBE.end_call()
        outcomes.append((*payload, time.perf_counter() - started, wall))
    PROBE.end(batch)
    return outcomes


def claim(worker: Any, batch: Calls) -> Where | None:
    """Claim this task on the scheduler before any of its calls runs; where it ran before, if
    it did (Dask rescheduled it after that worker died)."""
    from distributed.utils import sync

    keys = [CLAIMS, batch.token, str(batch.number)]
    first = sync(worker.loop, worker.scheduler.get_metadata, keys=keys, default=None)
    if first is not None:
        return Where(*first)
    here = [worker.address, os.getpid(), worker.nanny]
    sync(worker.loop, worker.scheduler.set_metadata, keys=keys, value=here)
    return None


class Probe:
    """On a worker process: the call each thread runs, told to whoever needs it.

    * Its nanny, if the process dies: each thread rewrites a record in a file of its own as a
      call starts and once its task's calls are done (:func:`records_dir`). A ``pwrite`` in
      place costs a microsecond or two and outlives the process (SIGKILL, the OOM killer).
    * The driver, while the call runs: a watcher thread announces each call that has run
      :data:`LIVE_START_SECONDS` (``Worker.log_event`` on the executor's topic).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()  # guards the fields below, and writes to the files
        self.files: dict[tuple[str, int], int | None] = {}  # (token, thread) -> fd (None: failed)
        self.closed: set[str] = set()  # tokens whose executor closed: record nothing more
        # thread -> [worker, token, chunk number, call index, wall start, perf start, announced]
        self.running: dict[int, list[Any] | None] = {}
        self.busy = threading.Event()
        self.watcher: threading.Thread | None = None

    def begin(self, worker: Any, batch: Calls, index: int) -> tuple[float, float]:
        thread = threading.get_ident()
        self._record(batch.token, thread, f"{batch.number} {index}")  # before the call runs
        wall, started = time.time(), time.perf_counter()
        with self.lock:
            self.running[thread] = [worker, batch.token, batch.number, index, wall, started, False]
            self.busy.set()
            if self.watcher is None and worker is not None:
                self.watcher = threading.Thread(
                    target=self._watch, name="shardmap-dask-starts", daemon=True
                )
                self.watcher.start()
        return wall, started

    def end_call(self) -> None:
        with self.lock:
            self.running[threading.get_ident()] = None

    def end(self, batch: Calls) -> None:
        thread = threading.get_ident()
        self._record(batch.token, thread, f"{batch.number} {DONE}")
        with self.lock:
            self.running.pop(thread, None)
            if not self.running:
                self.busy.clear()

    def _record(self, token: str, thread: int, text: str) -> None:
        key = (token, thread)
        data = text.encode().ljust(32)
        # Under the lock, so that close() never closes an fd a write is about to use (the
        # number could then name another file): calls abandoned by the loop may still run.
        with self.lock:
            if token in self.closed:
                return
            fd = self.files.get(key, -1)
            if fd == -1:
                fd = self.files[key] = open_record(token, thread)
            if fd is not None:
                try:
                    os.pwrite(fd, data, 0)
                except OSError:  # it records nothing more: its nanny then says "unknown"
                    self.files[key] = None

    def close(self, token: str) -> None:
        with self.lock:
            self.closed.add(token)
            for key in [key for key in self.files if key[0] == token]:
                fd = self.files.pop(key)
                if fd is not None:
                    with suppress(OSError):
                        os.close(fd)

    def _watch(self) -> None:
        while True:
            self.busy.wait()
            time.sleep(LIVE_START_SECONDS)
            now = time.perf_counter()
            due = []
            with self.lock:
                for entry in self.running.values():
                    if entry is not None and not entry[6] and now - entry[5] >= LIVE_START_SECONDS:
                        entry[6] = True
                        due.append(entry)
            for worker, token, number, index, wall, started, _ in due:
                try:
                    elapsed = time.perf_counter() - started
                    worker.log_event(topic(token), [number, index, wall, elapsed])
                except Exception:  # a worker closing: its tasks' outcomes tell the rest
                    log.debug("dask worker: announcing a start failed", exc_info=True)


PROBE = Probe()


def topic(token: str) -> str:
    return f"shardmap-starts-{token}"


def records_dir(token: str) -> str:
    """Where a worker machine keeps one executor opening's start records (the worker and its
    nanny share the machine, and so the temporary directory)."""
    return os.path.join(tempfile.gettempdir(), "shardmap-dask", token)


def open_record(token: str, thread: int) -> int | None:
    folder = records_dir(token)
    try:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{os.getpid()}-{thread}")
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError:
        log.warning("dask worker: cannot record call starts under %s", folder, exc_info=True)
        return None


def read_records(token: str, pid: int) -> dict[int, int] | None:
    """On a nanny: what process ``pid`` recorded, chunk number -> the call it was running
    (``DONE``: all done); ``None`` when it recorded nothing."""
    paths = glob.glob(os.path.join(records_dir(token), f"{pid}-*"))
    if not paths:
        return None
    records: dict[int, int] = {}
    for path in paths:
        with contextlib.suppress(OSError, ValueError), open(path) as f:
            number, index = f.read().split()
            records[int(number)] = int(index)
    return records


def drop_records(token: str) -> None:
    """On each worker (and on the driver for its own LocalCluster): forget an opening's records."""
    PROBE.close(token)
    shutil.rmtree(records_dir(token), ignore_errors=True)


def current_worker() -> Any:
    try:
        from distributed import get_worker

        return get_worker()
    except Exception:  # not on a worker (a test calling it directly)
        return None


def this_worker() -> str:
    worker = current_worker()
    if worker is None:
        return f"process {os.getpid()}"
    return f"Dask worker {worker.address} (process {os.getpid()})"


def pickled_error(exc: BaseException) -> bytes:
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
