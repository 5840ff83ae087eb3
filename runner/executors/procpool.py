"""A process pool where a dying worker fails only its own task, and a running task can be stopped.

``concurrent.futures.ProcessPoolExecutor`` treats one dead worker (SIGKILL, the out-of-memory
killer, ``os._exit``) as a broken pool: every pending future fails with ``BrokenProcessPool``.
It also cannot stop running work, so a timed-out batch keeps its process busy until it returns.
For a batch runner both are wrong: a batch that exhausts memory should fail that batch alone,
and a timeout should free its slot.

:class:`IsolatedProcessPool` gives each worker process its own pipe. One manager thread in the
parent waits on every pipe, every process sentinel and a wakeup pipe, so it knows at once which
process died and which task that process held::

    submit() ─► FIFO queue ─► manager thread ─► pipe ─► worker process
                                   ▲                          │
                                   └── reply, or its death ◄──┘

A task whose process dies fails with :class:`WorkerProcessDied`; the pool starts a replacement
process when work is waiting, so capacity stays ``max_workers``. A task's future records when
it started (:func:`runner.executors.base.started_at`): the moment the manager hands it to a
worker process that is up and idle, waiting on its pipe, so it starts at once. Time queued
behind other tasks, or while a process starts, is not running time.

Workers never outlive the driver: each holds the read end of a second pipe whose write end only
the driver holds, and a thread in the worker blocks on it; end-of-file (the driver died, even by
SIGKILL) ends the worker at once. ``PR_SET_PDEATHSIG`` would not do: workers are forked from the
fork server, which is their parent, and it stays alive as long as any worker does.

Signals: a worker ignores SIGINT and SIGTERM (a handler that does nothing; a program the task
execs gets the default handlers back). Ctrl-C reaches the whole process group, and the driver
decides what becomes of running batches (it aborts them and kills their processes), so no
batch dies half-way as a failure of its own first.

Ownership rule (why there is no double completion): a running task's future is attached to its
worker; whoever detaches it under the pool lock (the manager on a reply or a death, ``kill()``,
``shutdown(wait=False)``) is the only one to complete it. Futures are completed outside the lock,
so done-callbacks may call back into the pool.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import traceback
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, InvalidStateError
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_ready
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

from runner.errors import ExecutorError
from runner.executors.base import mark_started

__all__ = ["IsolatedProcessPool", "TaskExited", "WorkerProcessDied"]

log = logging.getLogger("shardmap")

_STOP = b""  # an empty message tells an idle worker to exit
_READY = b"ready"  # a new worker's first message (replies are pickles: they start with 0x80)
_STOP_GRACE_SECONDS = 5.0  # an idle worker exits at once; past this it is stuck, so kill it
_PROTOCOL = pickle.HIGHEST_PROTOCOL


class WorkerProcessDied(ExecutorError):
    """The process running a task died, or was stopped, before it sent the task's result.

    ``pid`` is the process; ``exitcode`` its exit status as in
    :attr:`multiprocessing.Process.exitcode` (negative: the signal that ended it; ``None``:
    unknown); ``stopped_by`` names what stopped it on purpose (``"kill()"``, ...) or is ``None``
    when it died on its own.

    ``where`` names the process when it is not one of this pool's (``"Dask worker
    tcp://..."``), ``note`` adds what else is known, ``doing`` replaces "running this batch".

    >>> str(WorkerProcessDied(1234, 3))
    'worker process 1234 died running this batch (exit code 3)'
    >>> str(WorkerProcessDied(1234, 3, where="Dask worker tcp://10.0.0.5:4321"))
    'Dask worker tcp://10.0.0.5:4321 (process 1234) died running this batch (exit code 3)'
    """

    def __init__(
        self,
        pid: int | None,
        exitcode: int | None,
        stopped_by: str | None = None,
        *,
        where: str | None = None,
        note: str | None = None,
        doing: str = "running this batch",
    ) -> None:
        self.pid = pid
        self.exitcode = exitcode
        self.stopped_by = stopped_by
        self.where = where
        self.note = note
        self.doing = doing
        if where:
            who = where if pid is None else f"{where} (process {pid})"
        else:
            who = f"worker process {pid}"
        if stopped_by:
            message = f"{who} was stopped (SIGKILL) by {stopped_by} while {doing}"
        else:
            message = f"{who} died {doing} ({_describe_exit(exitcode)})"
        super().__init__(f"{message}; {note}" if note else message)

    def __reduce__(self) -> tuple[Any, ...]:
        # The default would rebuild from ``args`` (the message alone) and fail.
        fields = (self.pid, self.exitcode, self.stopped_by, self.where, self.note, self.doing)
        return _rebuild_died, fields


def _rebuild_died(
    pid: int | None,
    exitcode: int | None,
    stopped_by: str | None,
    where: str | None,
    note: str | None,
    doing: str = "running this batch",
) -> WorkerProcessDied:
    return WorkerProcessDied(pid, exitcode, stopped_by, where=where, note=note, doing=doing)


class TaskExited(ExecutorError):
    """A task raised ``SystemExit`` (it called ``sys.exit``). It fails that task alone: given
    back as itself, ``Future.result()`` would raise it in the caller and end the driver.

    >>> str(TaskExited(3, "worker process 1234"))
    'the task called sys.exit(3) in worker process 1234'
    """

    def __init__(self, code: object, where: str) -> None:
        self.code = code
        self.where = where
        super().__init__(f"the task called sys.exit({code!r}) in {where}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.code, self.where)


def task_error(exc: BaseException, where: str) -> BaseException:
    """What a task's exception becomes for its future: ``SystemExit`` is :class:`TaskExited`
    (with the original as its cause); anything else, ``KeyboardInterrupt`` included (the
    scheduling loop stops the run for it, as for a worker in its own thread), stays itself."""
    if isinstance(exc, SystemExit):
        error = TaskExited(exc.code, where)
        error.__cause__ = exc
        return error
    return exc


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit status unknown"
    if exitcode >= 0:
        return f"exit code {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        return f"killed by signal {-exitcode}"
    if -exitcode == signal.SIGKILL:
        # The kernel's OOM killer says so only in the kernel log; this is the user's best hint.
        return f"killed by {name}, as the out-of-memory killer does"
    return f"killed by {name}"


class _RemoteTraceback(Exception):
    """The worker's traceback as text. Pickling drops an exception's traceback, so (as in
    concurrent.futures) this is chained as ``__cause__`` and a printed error shows where it
    failed in the worker."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


@dataclass(eq=False, slots=True)
class _Task:
    future: Future[Any]
    payload: bytes  # pickled (fn, args, kwargs)


@dataclass(eq=False, slots=True)
class _Worker:
    process: BaseProcess
    conn: Connection  # the parent's end of this worker's pipe
    watch: Connection  # held open, never written: the worker ends when it closes (see above)
    pid: int
    future: Future[Any] | None = None  # the running task's; None while idle
    stopping: bool = False  # killed on purpose: it takes no more work
    eof: bool = False  # its pipe hit end-of-file: only its sentinel is still worth waiting on
    ready: bool = False  # it said it started: a task given to it starts running at once


class IsolatedProcessPool(Executor):
    """A ``concurrent.futures`` process pool that survives its workers.

    A worker process that dies fails only the task it was running (with
    :class:`WorkerProcessDied`); :meth:`kill` stops one running task by killing its process.
    At most ``max_workers`` tasks run at once, the rest wait in FIFO order. Processes and the
    manager thread start on the first :meth:`submit`. ``fn`` and its arguments must pickle;
    ``mp_context`` defaults to forkserver on Linux (see :func:`_default_context`).

    >>> with IsolatedProcessPool(2) as pool:  # doctest: +SKIP
    ...     pool.submit(pow, 2, 10).result()
    1024
    """

    def __init__(self, max_workers: int, *, mp_context: BaseContext | None = None) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, not {max_workers}")
        self._max_workers = max_workers
        self._ctx: Any = mp_context or _default_context()  # typeshed's BaseContext lacks Process
        self._lock = threading.Lock()  # guards every field below
        self._queue: deque[_Task] = deque()
        self._workers: list[_Worker] = []  # only the manager thread adds or removes
        self._manager: threading.Thread | None = None
        self._wake_r: int | None = None  # a byte here wakes the manager
        self._wake_w: int | None = None
        self._closing = False  # shutdown() was called: no new tasks
        self._killing = False  # stop everything now: shutdown(wait=False) or a manager failure
        self._broken: BaseException | None = None  # why the manager failed

    @property
    def max_workers(self) -> int:
        return self._max_workers

    # -- public API ------------------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Queue ``fn(*args, **kwargs)`` to run in a worker process; thread-safe."""
        future: Future[Any] = Future()
        try:
            # Pickled now, in the caller's thread: the task is a snapshot of its arguments, and
            # an unpicklable one fails its own future (as in ProcessPoolExecutor).
            payload = pickle.dumps((fn, args, kwargs), _PROTOCOL)
        except Exception as exc:
            with self._lock:
                self._check_open()
            future.set_exception(exc)
            return future
        with self._lock:
            self._check_open()
            self._queue.append(_Task(future, payload))
            self._start_manager()
            self._wake()
        return future

    def kill(self, future: Future[Any]) -> bool:
        """Stop ``future``'s task: SIGKILL its process if it runs, cancel it if it still waits.

        A killed task's future fails with :class:`WorkerProcessDied` before this returns; a
        replacement process starts when work is waiting. Returns False if the task had already
        finished.
        """
        with self._lock:
            worker = next((w for w in self._workers if w.future is future), None)
            if worker is not None:
                worker.future = None
                self._kill_process(worker)
        if worker is None:
            return not future.done() and future.cancel()
        _resolve(future, error=WorkerProcessDied(worker.pid, -signal.SIGKILL, "kill()"))
        return True

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the pool; it then refuses new tasks.

        ``wait=True`` lets running tasks, and queued ones unless ``cancel_futures``, finish
        first. ``wait=False`` must not hang on a stuck task, so it stops everything now: queued
        tasks are cancelled and running ones killed (their futures fail with
        :class:`WorkerProcessDied`). Either way every worker process is reaped on return.
        """
        with self._lock:
            self._closing = True
            queued = list(self._queue) if cancel_futures or not wait else []
            if queued:
                self._queue.clear()
            stopped = [] if wait else self._kill_all()
            self._wake()
            manager = self._manager
        for task in queued:
            task.future.cancel()
        for pid, running in stopped:
            error = WorkerProcessDied(pid, -signal.SIGKILL, "shutdown(wait=False)")
            _resolve(running, error=error)
        # From a done-callback the manager would wait for itself; it finishes on its own.
        if manager is not None and manager is not threading.current_thread():
            manager.join()

    # -- called with the lock held ---------------------------------------------------------------
    def _check_open(self) -> None:
        if self._broken is not None:
            raise ExecutorError(f"the process pool failed: {self._broken!r}") from self._broken
        if self._closing:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _start_manager(self) -> None:
        if self._manager is not None:
            return
        self._wake_r, self._wake_w = os.pipe()
        # Non-blocking both ways: a full pipe already means "wake up", so writers never wait.
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._manager = threading.Thread(
            target=self._manage, name="shardmap-procpool-manager", daemon=True
        )
        self._manager.start()
        _live_pools.add(self)

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"\0")

    def _kill_process(self, worker: _Worker) -> None:
        worker.stopping = True
        worker.process.kill()  # safe: a listed worker is not reaped yet, so its pid is its own

    def _kill_all(self) -> list[tuple[int, Future[Any]]]:
        """Kill every process now; returns the (pid, future) of the tasks that were running."""
        self._killing = True
        stopped = []
        for worker in self._workers:
            if worker.future is not None:
                stopped.append((worker.pid, worker.future))
                worker.future = None
            self._kill_process(worker)
        return stopped

    def _drop_cancelled(self) -> None:
        while self._queue and self._queue[0].future.cancelled():
            self._queue.popleft()

    def _pop_task(self) -> _Task | None:
        while self._queue:
            task = self._queue.popleft()
            if task.future.set_running_or_notify_cancel():  # False: cancelled while queued
                return task
        return None

    # -- the manager thread ----------------------------------------------------------------------
    def _manage(self) -> None:
        """Start processes, hand out tasks, collect replies and deaths, until shut down."""
        try:
            while True:
                self._fill()
                if self._finished():
                    return
                self._wait_and_handle()
        except BaseException as exc:  # a bug here must not leave futures pending forever
            log.exception("the shardmap process pool manager failed")
            self._abort(exc)
        finally:
            self._stop_workers()

    def _fill(self) -> None:
        """Give queued tasks to idle workers in FIFO order, starting processes as needed."""
        while True:
            for worker, future, payload in self._assign():
                mark_started(future)  # before the send: its reply is read by this thread, later
                self._send(worker, payload)
            with self._lock:
                self._drop_cancelled()
                room = len(self._workers) < self._max_workers
                if self._killing or not self._queue or not room:
                    return
            self._add(self._spawn())

    def _assign(self) -> list[tuple[_Worker, Future[Any], bytes]]:
        with self._lock:
            assigned: list[tuple[_Worker, Future[Any], bytes]] = []
            if self._killing:
                return assigned
            for worker in self._workers:
                # Only started workers get tasks: a task is "running" (its timeout clock
                # ticks) from when it is handed out, and starting a process takes a while.
                if worker.ready and worker.future is None and not worker.stopping:
                    task = self._pop_task()
                    if task is None:
                        break
                    worker.future = task.future
                    assigned.append((worker, task.future, task.payload))
            return assigned

    def _finished(self) -> bool:
        with self._lock:
            if self._killing:
                return True
            self._drop_cancelled()
            idle = all(worker.future is None for worker in self._workers)
            return self._closing and not self._queue and idle

    def _spawn(self) -> _Worker:
        parent_end, child_end = self._ctx.Pipe()
        watched_end, watch = self._ctx.Pipe(duplex=False)  # (read end, write end)
        inherited: tuple[int, ...] = ()
        if self._ctx.get_start_method() == "fork":
            # The child gets copies of the parent's pipe ends; it closes them so that every
            # worker sees end-of-file, and exits, if the parent dies.
            assert self._wake_r is not None and self._wake_w is not None
            others = [fd for w in self._workers for fd in (w.conn.fileno(), w.watch.fileno())]
            inherited = (parent_end.fileno(), watch.fileno(), self._wake_r, self._wake_w, *others)
        process = self._ctx.Process(
            target=_worker_main,
            args=(child_end, watched_end, inherited),
            name="shardmap-procpool-worker",
        )
        try:
            process.start()
        except BaseException:
            parent_end.close()
            watch.close()
            raise
        finally:
            child_end.close()  # the child holds its own; ours would hide the child's exit
            watched_end.close()
        assert process.pid is not None
        return _Worker(process, parent_end, watch, process.pid)

    def _add(self, worker: _Worker) -> None:
        with self._lock:
            self._workers.append(worker)
            if self._killing:  # shutdown(wait=False) came while it was starting
                self._kill_process(worker)

    def _send(self, worker: _Worker, payload: bytes) -> None:
        # OSError: the process is gone; its sentinel reports that and fails the task.
        with contextlib.suppress(OSError):
            worker.conn.send_bytes(payload)

    def _wait_and_handle(self) -> None:
        """Block (no polling) until a reply, a death or a wakeup arrives; handle what is ready."""
        assert self._wake_r is not None
        workers = list(self._workers)
        waitables: list[Any] = [self._wake_r]
        for worker in workers:
            waitables.append(worker.process.sentinel)
            if not worker.eof:
                waitables.append(worker.conn)
        ready = set(wait_for_ready(waitables))
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 4096):
                    pass
        for worker in workers:
            if worker.conn in ready:
                self._receive(worker)
            if worker.process.sentinel in ready:
                self._bury(worker)

    def _receive(self, worker: _Worker) -> None:
        try:
            message = worker.conn.recv_bytes()
        except (EOFError, OSError):  # it exited, or was killed mid-reply: the sentinel follows
            worker.eof = True
            return
        if message == _READY:
            worker.ready = True
            return
        with self._lock:
            future, worker.future = worker.future, None
        if future is not None:  # None: kill() took the task first, the reply is moot
            _deliver(future, message)

    def _bury(self, worker: _Worker) -> None:
        """A worker process ended: fail the task it held and free its slot."""
        with self._lock:
            self._workers.remove(worker)
            future, worker.future = worker.future, None
        if future is not None and not worker.eof:
            # A whole reply sent just before dying still counts.
            with contextlib.suppress(EOFError, OSError):
                if worker.conn.poll():
                    _deliver(future, worker.conn.recv_bytes())
                    future = None
        exitcode = _reap(worker.process)
        worker.conn.close()
        worker.watch.close()
        if future is not None:
            _resolve(future, error=WorkerProcessDied(worker.pid, exitcode))

    def _abort(self, exc: BaseException) -> None:
        """The manager failed: fail every waiting and running task instead of leaving it hung."""
        with self._lock:
            self._broken = exc
            self._closing = True
            futures = [task.future for task in self._queue]
            self._queue.clear()
            futures += [future for _, future in self._kill_all()]
        for future in futures:
            error = ExecutorError(f"the process pool failed: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            _resolve(future, error=error)

    def _stop_workers(self) -> None:
        """Stop and reap every process and close the wakeup pipe: the manager is ending."""
        with self._lock:
            workers, self._workers = self._workers, []
            wake = (self._wake_r, self._wake_w)
            self._wake_r = self._wake_w = None
        for worker in workers:
            if not worker.stopping:
                with contextlib.suppress(OSError):
                    worker.conn.send_bytes(_STOP)
        for worker in workers:
            worker.process.join(_STOP_GRACE_SECONDS)
            if worker.process.exitcode is None:
                worker.process.kill()
            _reap(worker.process)
            worker.conn.close()
            worker.watch.close()
        for fd in wake:
            if fd is not None:
                os.close(fd)


def _default_context() -> BaseContext:
    """forkserver where there is one: workers fork from a clean single-threaded server.

    Plain fork copies the driver mid-run: a lock another thread held (OpenSSL's, taken by the
    planner's boto3 client; seen hanging a worker in ``SSL_CTX_new``) stays held forever in the
    child, and s3fs's event loop and live connections are shared by both sides. The server is
    started once per driver process and preloads the runner, so a worker still starts fast.
    """
    if sys.platform == "linux":
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["runner.child", "runner.shards", "pyarrow", "fsspec"])
        return ctx
    return multiprocessing.get_context(None)


def _reap(process: BaseProcess) -> int | None:
    """Wait for an ended process, free its resources, return its exit code."""
    process.join()
    exitcode = process.exitcode
    # None, and close() refusing, happen only if another thread's multiprocessing call
    # (active_children(), Process.start()) reaped the process at the same moment.
    with contextlib.suppress(ValueError):
        process.close()
    return exitcode


def _resolve(future: Future[Any], result: Any = None, error: BaseException | None = None) -> None:
    """Complete ``future`` unless it is already done (cancelled by its owner meanwhile)."""
    with contextlib.suppress(InvalidStateError):
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def _deliver(future: Future[Any], message: bytes) -> None:
    """Complete ``future`` from a worker's reply."""
    try:
        ok, value, *rest = pickle.loads(message)
    except Exception as exc:  # e.g. the result's class cannot be imported in this process
        error = RuntimeError(
            f"the task's reply could not be unpickled: {type(exc).__name__}: {exc}"
        )
        error.__cause__ = exc
        _resolve(future, error=error)
        return
    if ok:
        _resolve(future, result=value)
    else:
        value.__cause__ = _RemoteTraceback(rest[0])
        _resolve(future, error=value)


# -- the worker process ----------------------------------------------------------------------------
#: A worker whose driver died exits with this (nobody reads it: for ``ps`` and core dumps).
_ORPHANED_EXIT_CODE = 70


def _worker_main(conn: Connection, watched: Connection, inherited_fds: tuple[int, ...]) -> None:
    """Run tasks from ``conn`` one at a time until told to stop or the parent goes away."""
    for fd in inherited_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    threading.Thread(
        target=_exit_when_closed, args=(watched,), name="shardmap-driver-watch", daemon=True
    ).start()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _ignore_signal)  # the driver decides (see the module docstring)
    try:
        conn.send_bytes(_READY)
    except OSError:  # the parent is gone already
        return
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):  # the parent is gone
            return
        if message == _STOP:
            return
        reply = _run_task(message)
        try:
            conn.send_bytes(reply)
        except OSError:
            return


def _exit_when_closed(watched: Connection) -> None:
    """End this process the moment the driver is gone, busy or not (a thread of its own: the
    task may never read its pipe again)."""
    with contextlib.suppress(EOFError, OSError):
        watched.recv_bytes()  # nothing is ever sent: this returns only at end-of-file
    os._exit(_ORPHANED_EXIT_CODE)


def _ignore_signal(signum: int, frame: Any) -> None:
    """Nothing: unlike SIG_IGN, a handler is reset by exec, and interrupted calls resume."""


def _run_task(message: bytes) -> bytes:
    """The pickled reply: ``(True, result)`` or ``(False, exception, traceback_text)``.

    Every exception comes back, so that the worker lives on and the task fails on its own,
    as in ``ProcessPoolExecutor``; ``SystemExit`` comes back as :class:`TaskExited`.
    """
    try:
        fn, args, kwargs = pickle.loads(message)
        result = fn(*args, **kwargs)
    except BaseException as exc:
        return _encode_error(task_error(exc, f"worker process {os.getpid()}"))
    try:
        return pickle.dumps((True, result), _PROTOCOL)
    except Exception as exc:  # a result that cannot travel back is the task's failure
        return _encode_error(exc)


def _encode_error(exc: BaseException) -> bytes:
    text = "".join(traceback.format_exception(exc))
    try:
        message = pickle.dumps((False, exc, text), _PROTOCOL)
        pickle.loads(message)  # some exceptions pickle but cannot be rebuilt (extra __init__ args)
        return message
    except Exception:
        summary = "".join(traceback.format_exception_only(exc)).strip()
        stand_in = RuntimeError(f"{summary} (the exception could not be pickled)\n\n{text}")
        return pickle.dumps((False, stand_in, text), _PROTOCOL)


# -- interpreter exit ------------------------------------------------------------------------------
_live_pools: weakref.WeakSet[IsolatedProcessPool] = weakref.WeakSet()


def _shutdown_at_exit() -> None:
    # Workers are not daemonic, so tasks may start processes of their own; without this,
    # multiprocessing's exit handler (registered before this one, so run after it) would wait
    # forever for idle workers. As with the standard pools, queued work finishes first.
    for pool in list(_live_pools):
        pool.shutdown(wait=True)


atexit.register(_shutdown_at_exit)
