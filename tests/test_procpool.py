"""IsolatedProcessPool: a dying worker fails only its own task; a running task can be killed.

Task functions live at module level so workers (fork, or spawn in one test) can import them.
Time bounds are generous: they only catch hangs.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from runner.executors.procpool import IsolatedProcessPool, WorkerProcessDied

pytestmark = pytest.mark.timeout(60)

RESULT_TIMEOUT = 30  # seconds; any task here finishes in well under one


# -- tasks (run in worker processes) --------------------------------------------------------------
def add(a: int, b: int, *, extra: int = 0) -> int:
    return a + b + extra


def sleep_then(seconds: float, value: object = None) -> object:
    time.sleep(seconds)
    return value


def fail(message: str) -> None:
    raise ValueError(message)


def die_by_sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def exit_with(code: int) -> None:
    os._exit(code)


def append_line(path: str, text: str) -> None:
    with open(path, "a") as f:
        f.write(text + "\n")


def timed_span(seconds: float) -> tuple[int, float, float]:
    start = time.monotonic()  # CLOCK_MONOTONIC is system-wide, so comparable across processes
    time.sleep(seconds)
    return os.getpid(), start, time.monotonic()


def rendezvous(directory: str, parties: int) -> bool:
    """True once ``parties`` tasks run at the same time (each waits for the others)."""
    Path(directory, str(os.getpid())).touch()
    deadline = time.monotonic() + 20
    while len(os.listdir(directory)) < parties:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def length(data: bytes) -> int:
    return len(data)


def make_bytes(size: int) -> bytes:
    return b"x" * size


class HoldsALock(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()  # cannot be pickled


class NeedsTwoArguments(Exception):
    def __init__(self, what: str, why: str) -> None:
        super().__init__(f"{what}: {why}")  # pickles, but cannot be rebuilt from args


def raise_holds_a_lock() -> None:
    raise HoldsALock("locked out")


def raise_needs_two_arguments() -> None:
    raise NeedsTwoArguments("parse", "bad row")


def return_a_lock() -> object:
    return threading.Lock()


# -- helpers --------------------------------------------------------------------------------------
def child_pids() -> set[int]:
    """Live and zombie children (a zombie was not reaped), but not multiprocessing's resource
    tracker and fork server: each starts once and lives as long as the test session."""
    pids = set()
    for child in psutil.Process().children(recursive=True):
        try:
            command = " ".join(child.cmdline())
            if "resource_tracker" not in command and "forkserver" not in command:
                pids.add(child.pid)
        except psutil.ZombieProcess:
            pids.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    before = child_pids()
    yield
    assert child_pids() <= before, "the pool left processes behind"


@pytest.fixture
def pool() -> Iterator[IsolatedProcessPool]:
    pool = IsolatedProcessPool(2)
    yield pool
    pool.shutdown(wait=False)  # kills whatever a failed test left running


# -- tests ----------------------------------------------------------------------------------------
def test_nothing_starts_before_the_first_submit() -> None:
    threads, children = threading.active_count(), child_pids()
    pool = IsolatedProcessPool(3)
    assert threading.active_count() == threads
    assert child_pids() == children
    pool.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(add, 1, 2)


def test_max_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        IsolatedProcessPool(0)


def test_results_and_exceptions_round_trip(pool: IsolatedProcessPool) -> None:
    assert pool.submit(add, 1, 2, extra=3).result(RESULT_TIMEOUT) == 6
    error = pool.submit(fail, "bad input").exception(RESULT_TIMEOUT)
    assert isinstance(error, ValueError)
    assert str(error) == "bad input"
    assert "in fail" in str(error.__cause__)  # the worker's traceback text travels along


def test_large_arguments_and_results(pool: IsolatedProcessPool) -> None:
    assert pool.submit(length, b"y" * 20_000_000).result(RESULT_TIMEOUT) == 20_000_000
    assert len(pool.submit(make_bytes, 40_000_000).result(RESULT_TIMEOUT)) == 40_000_000


def test_queued_tasks_start_in_fifo_order(tmp_path: Path) -> None:
    path = tmp_path / "order.txt"
    with IsolatedProcessPool(1) as pool:
        futures = [pool.submit(append_line, str(path), str(i)) for i in range(8)]
    assert all(f.done() and f.exception() is None for f in futures)
    assert path.read_text().split() == [str(i) for i in range(8)]


def test_at_most_max_workers_run_at_once(pool: IsolatedProcessPool) -> None:
    spans = [f.result(RESULT_TIMEOUT) for f in [pool.submit(timed_span, 0.1) for _ in range(6)]]
    assert len({pid for pid, _, _ in spans}) <= 2
    for _, start, _ in spans:
        running = sum(1 for _, s, e in spans if s <= start < e)
        assert running <= 2


def test_sigkill_fails_only_its_own_task(tmp_path: Path) -> None:
    with IsolatedProcessPool(3) as pool:
        slow = [pool.submit(sleep_then, 0.5, i) for i in range(2)]
        doomed = pool.submit(die_by_sigkill)
        queued = [pool.submit(sleep_then, 0, i) for i in range(4)]

        error = doomed.exception(RESULT_TIMEOUT)
        assert isinstance(error, WorkerProcessDied)
        assert error.exitcode == -signal.SIGKILL
        assert "SIGKILL" in str(error) and str(error.pid) in str(error)
        assert [f.result(RESULT_TIMEOUT) for f in slow] == [0, 1]
        assert [f.result(RESULT_TIMEOUT) for f in queued] == [0, 1, 2, 3]

        # A replacement process keeps the capacity at three tasks at once.
        tasks = [pool.submit(rendezvous, str(tmp_path), 3) for _ in range(3)]
        assert [f.result(RESULT_TIMEOUT) for f in tasks] == [True, True, True]


def test_exit_code_is_reported(pool: IsolatedProcessPool) -> None:
    error = pool.submit(exit_with, 3).exception(RESULT_TIMEOUT)
    assert isinstance(error, WorkerProcessDied)
    assert error.exitcode == 3
    assert "exit code 3" in str(error)
    assert pool.submit(add, 2, 2).result(RESULT_TIMEOUT) == 4


def test_kill_stops_a_running_task(pool: IsolatedProcessPool) -> None:
    stuck = pool.submit(sleep_then, 3600)
    other = pool.submit(sleep_then, 0.2, "other")
    wait_until(stuck.running)
    started = time.monotonic()
    assert pool.kill(stuck) is True
    assert time.monotonic() - started < 5
    error = stuck.exception(0)
    assert isinstance(error, WorkerProcessDied)
    assert "stopped" in str(error) and error.exitcode == -signal.SIGKILL
    assert other.result(RESULT_TIMEOUT) == "other"
    done = pool.submit(add, 1, 1)
    assert done.result(RESULT_TIMEOUT) == 2
    assert pool.kill(done) is False


def test_kill_or_cancel_a_queued_task(pool: IsolatedProcessPool, tmp_path: Path) -> None:
    path = tmp_path / "ran.txt"
    blockers = [pool.submit(sleep_then, 3600) for _ in range(2)]
    killed = pool.submit(append_line, str(path), "killed")
    cancelled = pool.submit(append_line, str(path), "cancelled")
    assert pool.kill(killed) is True
    assert cancelled.cancel() is True
    assert killed.cancelled() and cancelled.cancelled()
    wait_until(lambda: all(f.running() for f in blockers))
    assert all(pool.kill(f) for f in blockers)
    assert pool.submit(add, 1, 2).result(RESULT_TIMEOUT) == 3
    assert not path.exists()  # cancelled tasks never run


def test_a_task_records_its_start_when_a_worker_process_takes_it(
    pool: IsolatedProcessPool,
) -> None:
    """A queued task has no start (a timeout must not count its wait); once a worker process
    takes it, its start is at or before its first line and after the task it waited for."""
    from runner.executors.base import started_at

    first = [pool.submit(timed_span, 0.5) for _ in range(2)]
    queued = pool.submit(timed_span, 0.0)
    wait_until(lambda: all(started_at(f) is not None for f in first))
    assert started_at(queued) is None and not queued.done()  # both processes are busy
    _, began, _ = queued.result(RESULT_TIMEOUT)
    start = started_at(queued)
    assert start is not None
    ended = min(f.result(RESULT_TIMEOUT)[2] for f in first)
    assert ended <= start.clock <= began  # monotonic clocks are system-wide
    assert abs((time.time() - time.monotonic()) - (start.wall - start.clock)) < 0.01


def test_shutdown_without_wait_kills_stuck_tasks() -> None:
    before = child_pids()
    pool = IsolatedProcessPool(2)
    running = [pool.submit(sleep_then, 3600) for _ in range(2)]
    queued = pool.submit(sleep_then, 3600)
    wait_until(lambda: all(f.running() for f in running))
    started = time.monotonic()
    pool.shutdown(wait=False)
    assert time.monotonic() - started < 5
    assert child_pids() == before  # killed and reaped
    for future in running:
        error = future.exception(0)
        assert isinstance(error, WorkerProcessDied) and "shutdown" in str(error)
    assert queued.cancelled()


def test_shutdown_waits_for_queued_work() -> None:
    pool = IsolatedProcessPool(2)
    futures = [pool.submit(sleep_then, 0.05, i) for i in range(5)]
    pool.shutdown(wait=True)
    assert [f.result(0) for f in futures] == [0, 1, 2, 3, 4]


def test_shutdown_can_cancel_queued_work() -> None:
    pool = IsolatedProcessPool(1)
    running = pool.submit(sleep_then, 0.3, "done")
    queued = [pool.submit(sleep_then, 0, i) for i in range(3)]
    wait_until(running.running)
    pool.shutdown(wait=True, cancel_futures=True)
    assert running.result(0) == "done"
    assert all(f.cancelled() for f in queued)


@pytest.mark.parametrize(
    ("task", "type_name", "message"),
    [
        (raise_holds_a_lock, "HoldsALock", "locked out"),
        (raise_needs_two_arguments, "NeedsTwoArguments", "parse: bad row"),
    ],
)
def test_an_unpicklable_exception_becomes_runtime_error(
    pool: IsolatedProcessPool, task: Callable[[], None], type_name: str, message: str
) -> None:
    error = pool.submit(task).exception(RESULT_TIMEOUT)
    if type(error).__name__ == type_name:
        # Once distributed is imported, tblib's pickling support rebuilds such exceptions
        # faithfully; the pool must then hand back the original, message intact.
        assert message in str(error)
        return
    assert isinstance(error, RuntimeError)
    assert type_name in str(error) and message in str(error)
    assert "Traceback (most recent call last)" in str(error)


def test_unpicklable_results_and_tasks_fail_their_own_future(pool: IsolatedProcessPool) -> None:
    assert isinstance(pool.submit(return_a_lock).exception(RESULT_TIMEOUT), TypeError)
    unpicklable: Future = pool.submit(lambda: 1)
    assert unpicklable.exception(0) is not None
    assert pool.submit(add, 1, 2).result(RESULT_TIMEOUT) == 3


def test_submit_from_many_threads(pool: IsolatedProcessPool) -> None:
    def submit_some(start: int) -> list[Future]:
        return [pool.submit(add, i, 1) for i in range(start, start + 25)]

    with ThreadPoolExecutor(4) as threads:
        batches = list(threads.map(submit_some, range(0, 100, 25)))
    results = [f.result(RESULT_TIMEOUT) for batch in batches for f in batch]
    assert results == [i + 1 for i in range(100)]


def test_a_done_callback_may_submit(pool: IsolatedProcessPool) -> None:
    chained: list[Future] = []
    first = pool.submit(add, 1, 1)
    first.add_done_callback(lambda f: chained.append(pool.submit(add, f.result(), 1)))
    first.result(RESULT_TIMEOUT)
    wait_until(lambda: bool(chained))
    assert chained[0].result(RESULT_TIMEOUT) == 3


def test_spawn_context_works() -> None:
    with IsolatedProcessPool(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert pool.submit(add, 20, 22).result(RESULT_TIMEOUT) == 42
        assert isinstance(pool.submit(exit_with, 5).exception(RESULT_TIMEOUT), WorkerProcessDied)


def test_worker_process_died_pickles() -> None:
    error = pickle.loads(pickle.dumps(WorkerProcessDied(1234, -signal.SIGKILL)))
    assert (error.pid, error.exitcode) == (1234, -signal.SIGKILL)
    assert str(error) == str(WorkerProcessDied(1234, -signal.SIGKILL))
    assert "out-of-memory" in str(error)
    assert "exit code 3" in str(WorkerProcessDied(1, 3))
