"""Issue 21, executors: a worker's death, exit or interrupt always comes back as a batch outcome
that says what happened, never as a success, a lost batch or the driver's own exit.

On the process pool and on a real Dask ``LocalCluster`` (the process-level findings: how a
worker process ended, ``SystemExit``/``KeyboardInterrupt`` crossing a process boundary, Ctrl-C
reaching the whole process group). The worker functions below are importable by name
(``tests.test_executor_failures:...``) so pool processes and Dask workers can run them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner import MapSpec, load_results, run
from runner.executors.dask import DaskExecutor
from runner.executors.procpool import IsolatedProcessPool, TaskExited

ROOT = Path(__file__).resolve().parents[1]
SHARDMAP = str(Path(sys.executable).parent / "shardmap")
HERE = "tests.test_executor_failures"


# -- workers and tasks -----------------------------------------------------------------------------
def dies_when_marked(event: dict[str, Any]) -> list[int]:
    """A batch with ``die: true`` ends its process: by ``BatchInput.signal`` or ``.code``."""
    if any(item.get("die") for item in event["Items"]):
        how = event["BatchInput"]
        if "signal" in how:
            os.kill(os.getpid(), how["signal"])
        os._exit(how["code"])
    return [item["n"] for item in event["Items"]]


def exits_when_marked(event: dict[str, Any]) -> list[int]:
    """``sys.exit(BatchInput.code)`` for a batch with ``exit: true``."""
    if any(item.get("exit") for item in event["Items"]):
        sys.exit(event["BatchInput"]["code"])
    return [item["n"] for item in event["Items"]]


def interrupts_when_marked(event: dict[str, Any]) -> list[int]:
    """Raises KeyboardInterrupt for a batch with ``interrupt: true``."""
    if any(item.get("interrupt") for item in event["Items"]):
        raise KeyboardInterrupt
    return [item["n"] for item in event["Items"]]


def sleeps_when_marked(event: dict[str, Any]) -> list[int]:
    """A batch with ``slow: true`` writes ``<dir>/started``, then sleeps a long while."""
    if any(item.get("slow") for item in event["Items"]):
        Path(event["BatchInput"]["dir"], "started").touch()
        time.sleep(300)
    return [item["n"] for item in event["Items"]]


def raise_system_exit(code: int) -> None:
    sys.exit(code)


def raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def pid() -> int:
    return os.getpid()


# -- helpers ---------------------------------------------------------------------------------------
def spec_for(tmp_path: Path, worker: str, items: list[dict[str, Any]], **fields: Any) -> MapSpec:
    return MapSpec.from_dict(pipeline_data(tmp_path, worker, items, **fields))


def pipeline_data(
    tmp_path: Path, worker: str, items: list[dict[str, Any]], **fields: Any
) -> dict[str, Any]:
    source = tmp_path / "items.jsonl"
    source.write_text("".join(json.dumps(item) + "\n" for item in items))
    return {
        "Name": "failures",
        "Worker": f"{HERE}:{worker}",
        "Source": str(source),
        "ItemReader": {"ReaderConfig": {"InputType": "JSONL"}},
        "ItemBatcher": {"MaxItemsPerBatch": 10},
        "ResultWriter": {"Destination": str(tmp_path / "out")},
        **fields,
    }


def cli_env(**extra: str) -> dict[str, str]:
    # The console script's sys.path does not hold the checkout: workers import tests.* by name.
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def failed_rows(manifest_url: str) -> Any:
    frame = load_results(manifest_url)
    return frame[frame["status"] != "SUCCEEDED"]


# own_cluster (tests/conftest.py): a LocalCluster of the test's own, as its workers get killed.


# -- a worker process that dies: which one, and how --------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("death", "described"),
    [({"signal": 9}, "killed by SIGKILL"), ({"code": 7}, "exit code 7")],
    ids=["sigkill", "exit-7"],
)
def test_a_dask_worker_death_names_the_worker_its_process_and_how_it_ended(
    tmp_path: Path, own_cluster: tuple[Any, Any], death: dict[str, int], described: str
) -> None:
    """Dask says only ``KilledWorker``; the batch's Cause must say which worker died, that its
    process ended and how (the nanny's report). It fails at that first death, though this
    scheduler's allowed-failures would have Dask run it again: only Retry reruns a batch."""
    _, client = own_cluster
    client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", 1))
    items = [{"n": n, "die": n == 15} for n in range(40)]
    # MaxConcurrency 1: no innocent batch waits on the dying worker (Dask would count it too).
    spec = spec_for(
        tmp_path,
        "dies_when_marked",
        items,
        ToleratedFailureCount=10,
        MaxConcurrency=1,
        ItemBatcher={"MaxItemsPerBatch": 10, "BatchInput": death},
    )
    before = set(client.run(os.getpid).values())
    result = run(spec, executor="dask", shard_reading=False)  # no index task on the victim
    assert result.succeeded, (result.error, result.cause)
    failed = failed_rows(result.manifest_url)
    assert sorted(failed["index"]) == list(range(10, 20))
    assert set(failed["error"]) == {"WorkerProcessDied"}
    cause = failed["cause"].iloc[0]
    assert "Dask worker tcp://127.0.0.1:" in cause and "(process " in cause
    assert "died running this batch" in cause and described in cause
    assert "would have run it again" in cause and "allowed-failures = 1" in cause
    assert len(before - set(client.run(os.getpid).values())) == 1  # one worker died


@pytest.mark.parametrize(
    ("death", "described"),
    [({"signal": 9}, "killed by SIGKILL"), ({"code": 7}, "exit code 7")],
    ids=["sigkill", "exit-7"],
)
def test_a_pool_worker_death_names_its_process_and_how_it_ended(
    tmp_path: Path, death: dict[str, int], described: str
) -> None:
    """The same on the process pool, for the same wording on both executors."""
    items = [{"n": n, "die": n == 15} for n in range(40)]
    spec = spec_for(
        tmp_path,
        "dies_when_marked",
        items,
        ToleratedFailureCount=10,
        ItemBatcher={"MaxItemsPerBatch": 10, "BatchInput": death},
    )
    result = run(spec, executor="processes")
    failed = failed_rows(result.manifest_url)
    assert sorted(failed["index"]) == list(range(10, 20))
    assert set(failed["error"]) == {"WorkerProcessDied"}
    cause = failed["cause"].iloc[0]
    assert "worker process " in cause and "died running this batch" in cause
    assert described in cause


# -- SystemExit and KeyboardInterrupt from a task ----------------------------------------------
@pytest.mark.slow
def test_sys_exit_in_a_dask_worker_fails_its_batch_and_the_cli_exits_1(
    tmp_path: Path, own_cluster: tuple[Any, Any]
) -> None:
    """Issue 21: on Dask ``sys.exit(3)`` in a worker gave exit 0. A worker that exits is a
    failed batch; the run fails (nothing tolerated) and the CLI says so with exit 1."""
    items = [{"n": n, "exit": n == 25} for n in range(50)]
    data = pipeline_data(
        tmp_path,
        "exits_when_marked",
        items,
        ItemBatcher={"MaxItemsPerBatch": 10, "BatchInput": {"code": 3}},
    )
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps(data))
    env = cli_env(SHARDMAP_DASK_SCHEDULER=os.environ["SHARDMAP_DASK_SCHEDULER"])
    done = subprocess.run(
        [SHARDMAP, "run", str(path), "--executor", "dask", "--driver-reading"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Map Run FAILED" in done.stdout
    manifest = next((tmp_path / "out").glob("*/manifest.json"))
    frame = load_results(str(manifest))
    assert sorted(frame["index"]) == list(range(50))  # every item, once
    exited = frame[frame["error"] == "Runtime.ExitError"]
    assert sorted(exited["index"]) == list(range(20, 30))
    assert "exit status 3" in exited["cause"].iloc[0]


@pytest.fixture
def pool() -> Iterator[tuple[IsolatedProcessPool, Any]]:
    """A one-process pool, and how to list its worker pids."""
    with IsolatedProcessPool(1) as pool:
        yield pool, lambda: {pool.submit(pid).result(timeout=60)}


@pytest.fixture
def dask_executor(own_cluster: tuple[Any, Any]) -> Iterator[tuple[DaskExecutor, Any]]:
    """The Dask executor on a two-worker cluster, and how to list its worker pids."""
    _, client = own_cluster
    with DaskExecutor() as executor:
        yield executor, lambda: set(client.run(os.getpid).values())


@pytest.mark.parametrize("where", ["pool", "dask_executor"])
def test_a_task_raising_system_exit_fails_alone_and_its_worker_lives_on(
    request: pytest.FixtureRequest, where: str
) -> None:
    """Given back as itself, a task's SystemExit would end the driver that asks for the
    result: it comes back as TaskExited (with the exit code), and the worker keeps serving."""
    executor, worker_pids = request.getfixturevalue(where)
    before = worker_pids()
    error = executor.submit(raise_system_exit, 3).exception(timeout=60)
    assert isinstance(error, TaskExited) and error.code == 3
    assert "the task called sys.exit(3) in " in str(error)
    named = re.search(r"process (\d+)", str(error))
    assert named and int(named[1]) in before  # it names the worker process it ran in
    assert worker_pids() == before  # no worker process ended or was replaced


@pytest.mark.parametrize("where", ["pool", "dask_executor"])
def test_a_task_raising_keyboard_interrupt_comes_back_as_itself(
    request: pytest.FixtureRequest, where: str
) -> None:
    """As from a thread: the scheduling loop takes it as "stop the run" (ABORTED)."""
    executor, worker_pids = request.getfixturevalue(where)
    before = worker_pids()
    error = executor.submit(raise_keyboard_interrupt).exception(timeout=60)
    assert isinstance(error, KeyboardInterrupt)
    assert worker_pids() == before


@pytest.mark.parametrize("executor", ["processes", "dask"])
def test_keyboard_interrupt_in_a_remote_worker_aborts_the_run_and_keeps_its_batch(
    tmp_path: Path, executor: str, request: pytest.FixtureRequest
) -> None:
    """The same outcome as on threads and inline: the run ABORTED, every item in the
    results, the interrupted batch ABORTED (never dropped, never a bare process death)."""
    if executor == "dask":
        request.getfixturevalue("own_cluster")
    items = [{"n": n, "interrupt": n == 50} for n in range(100)]
    result = run(spec_for(tmp_path, "interrupts_when_marked", items), executor=executor)
    assert str(result.status) == "ABORTED"
    frame = load_results(result.manifest_url)
    assert sorted(frame["index"]) == list(range(100))
    assert set(frame[frame["index"].between(50, 59)]["status"]) == {"ABORTED"}
    assert set(frame["status"]) <= {"SUCCEEDED", "ABORTED", "PENDING"}


# -- Ctrl-C reaches the whole process group ----------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("executor", ["processes", "dask"])
def test_ctrl_c_to_the_process_group_aborts_running_batches_instead_of_failing_them(
    tmp_path: Path, executor: str
) -> None:
    """A terminal's Ctrl-C sends SIGINT to the driver and to every worker process. A pool
    worker ignores it (the driver aborts the batch and kills the process); a Dask worker shuts
    down. Either way the running batch is ABORTED, not FAILED by its worker's death."""
    marks = tmp_path / "marks"
    marks.mkdir()
    items = [{"n": n, "slow": n == 30} for n in range(100)]
    data = pipeline_data(
        tmp_path,
        "sleeps_when_marked",
        items,
        ItemBatcher={"MaxItemsPerBatch": 10, "BatchInput": {"dir": str(marks)}},
    )
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps(data))
    env = cli_env(SHARDMAP_DASK_SCHEDULER="")  # the driver's own LocalCluster, in its group
    driver = subprocess.Popen(
        [SHARDMAP, "run", str(path), "--executor", executor, "--driver-reading"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (marks / "started").exists():
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline, "the slow batch never started"
            time.sleep(0.02)
        os.killpg(driver.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        stdout, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.communicate()
    assert driver.returncode == 1, stdout + stderr
    assert "Map Run ABORTED" in stdout
    manifest = next((tmp_path / "out").glob("*/manifest.json"))
    frame = load_results(str(manifest))
    assert sorted(frame["index"]) == list(range(100))
    slow = frame[frame["index"].between(30, 39)]
    assert set(slow["status"]) == {"ABORTED"}, slow[["status", "error", "cause"]].to_dict()
    assert set(frame["status"]) <= {"SUCCEEDED", "ABORTED", "PENDING"}
