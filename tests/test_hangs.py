"""Issue 21, hangs and leaks: a shardmap process always ends, and takes its workers with it.

Each test runs the real ``shardmap`` CLI in a subprocess, because what is under test is the
process itself: that it exits (within a generous bound that only catches a hang), with which
code, and which processes outlive it. Nothing waits by sleeping: workers leave files saying
they started (and their pid), and wait for a ``go`` file where a test must act first.

The worker functions below are importable by name (``tests.test_hangs:...``), so every
executor, pool processes and Dask workers included, can run them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from runner import load_results
from tests.s3server import S3Server, start_seaweedfs

ROOT = Path(__file__).resolve().parents[1]
SHARDMAP = str(Path(sys.executable).parent / "shardmap")
HERE = "tests.test_hangs"
EXIT_BOUND = 120  # seconds: a run here takes a few; past this the process hangs


# -- workers ---------------------------------------------------------------------------------------
def _marked(event: dict[str, Any], key: str) -> bool:
    return any(item.get(key) for item in event["Items"])


def _announce(event: dict[str, Any]) -> None:
    """Write ``<dir>/pid-<first n>`` holding this process's pid (atomically: rename)."""
    folder = Path(event["BatchInput"]["dir"])
    first = event["Items"][0]["n"]
    partial = folder / f".pid-{first}"
    partial.write_text(str(os.getpid()))
    partial.rename(folder / f"pid-{first}")


def wait_for_go(event: dict[str, Any]) -> list[int]:
    """A batch with ``gate: true`` says it started, then waits for ``<dir>/go``; a batch
    with ``fail: true`` fails."""
    if _marked(event, "fail"):
        raise ValueError("this batch fails, so that a FAILED file is written too")
    if _marked(event, "gate"):
        _announce(event)
        go = Path(event["BatchInput"]["dir"], "go")
        deadline = time.monotonic() + EXIT_BOUND
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    return [item["n"] for item in event["Items"]]


def never_returns(event: dict[str, Any]) -> list[int]:
    """A batch with ``stuck: true`` waits for ever (an event nobody sets)."""
    if _marked(event, "stuck"):
        threading.Event().wait()
    return [item["n"] for item in event["Items"]]


def spin_when_marked(event: dict[str, Any]) -> list[int]:
    """A batch with ``spin: true`` writes its pid, then burns a CPU for ever."""
    if _marked(event, "spin"):
        _announce(event)
        while True:
            pass
    return [item["n"] for item in event["Items"]]


# -- helpers ---------------------------------------------------------------------------------------
def pipeline(tmp_path: Path, worker: str, items: list[dict[str, Any]], **fields: Any) -> Path:
    source = tmp_path / "items.jsonl"
    source.write_text("".join(json.dumps(item) + "\n" for item in items))
    data = {
        "Name": "hangs",
        "Worker": f"{HERE}:{worker}",
        "Source": str(source),
        "ItemReader": {"ReaderConfig": {"InputType": "JSONL"}},
        "ItemBatcher": {"MaxItemsPerBatch": 10},
        "ResultWriter": {"Destination": str(tmp_path / "out")},
        **fields,
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def cli_env(**extra: str) -> dict[str, str]:
    # The console script's sys.path does not hold the checkout: workers import tests.* by name.
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``shardmap ARGS`` in a session of its own, so a test can signal its whole group."""
    return subprocess.Popen(
        [SHARDMAP, *args],
        cwd=ROOT,
        env=env or cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(driver: subprocess.Popen, bound: float = EXIT_BOUND) -> tuple[int, str, str]:
    """Wait for the driver to exit by itself; a hang fails the test (and is cleaned up)."""
    try:
        stdout, stderr = driver.communicate(timeout=bound)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)
        stdout, stderr = driver.communicate()
        pytest.fail(f"shardmap did not exit within {bound} s:\n{stdout}\n{stderr}")
    return driver.returncode, stdout, stderr


def wait_for(path: Path, driver: subprocess.Popen, bound: float = 60) -> None:
    deadline = time.monotonic() + bound
    while not path.exists():
        if driver.poll() is not None:
            pytest.fail(f"the driver exited early ({driver.returncode}): {driver.communicate()}")
        if time.monotonic() > deadline:
            os.killpg(driver.pid, signal.SIGKILL)
            pytest.fail(f"{path.name} never appeared: {driver.communicate()}")
        time.sleep(0.02)


def only_manifest(tmp_path: Path) -> str:
    manifests = list((tmp_path / "out").glob("*/manifest.json"))
    assert len(manifests) == 1, manifests
    return str(manifests[0])


# -- S3 unreachable while the results are written -----------------------------------------------
@pytest.fixture
def own_s3() -> Iterator[S3Server]:
    """A SeaweedFS of this test's own: the test stops it."""
    server = start_seaweedfs()
    try:
        server.client().create_bucket(Bucket="results")
        yield server
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("journal", [True, False], ids=["journal", "no-journal"])
def test_s3_stopped_before_the_results_are_written_exits_3_with_the_writer_error(
    tmp_path: Path, own_s3: S3Server, journal: bool
) -> None:
    """The run's batches finish while S3 is up; S3 stops; the results cannot be written. The
    driver must say so and exit 3, not hang at exit on a result file left open (an s3fs file
    whose commit waits on fsspec's event loop)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    items = [{"n": n, "fail": n == 5, "gate": n == 25} for n in range(30)]
    path = pipeline(
        tmp_path,
        "wait_for_go",
        items,
        ToleratedFailureCount=10,
        ItemBatcher={"MaxItemsPerBatch": 10, "BatchInput": {"dir": str(marks)}},
        ResultWriter={"Destination": "s3://results/out"},
    )
    args = ["run", str(path), "--executor", "threads", "--run-id", "s3-gone"]
    env = cli_env(**own_s3.env, SHARDMAP_STATE_DIR=str(tmp_path / "state"))
    driver = start(*args, *([] if journal else ["--no-journal"]), env=env)
    wait_for(marks / "pid-20", driver)  # the last batch runs: SUCCEEDED and FAILED are open
    own_s3.stop()
    (marks / "go").touch()
    code, stdout, stderr = finish(driver)
    assert code == 3, stdout + stderr
    assert "WriterError: s3://results/out/s3-gone/" in stderr
    assert "cannot reach the storage service" in stderr


# -- a timed-out thread that never returns ---------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "exit_code"),
    [
        ({}, 1),  # the timeout fails the run
        ({"MaxConcurrency": 1, "ToleratedFailureCount": 10}, 0),  # the one slot is freed
    ],
    ids=["run-fails", "one-slot"],
)
def test_a_timed_out_thread_that_never_returns_does_not_keep_the_process_alive(
    tmp_path: Path, fields: dict[str, Any], exit_code: int
) -> None:
    """Threads cannot be interrupted: the stuck batch is TIMED_OUT and abandoned. The process
    must still exit once the results are written, and with MaxConcurrency 1 the batches after
    the stuck one must still get a thread."""
    items = [{"n": n, "stuck": n == 5} for n in range(30)]
    path = pipeline(tmp_path, "never_returns", items, TimeoutSeconds=1, **fields)
    env = cli_env(SHARDMAP_STATE_DIR=str(tmp_path / "state"))
    code, stdout, stderr = finish(start("run", str(path), "--executor", "threads", env=env), 60)
    assert code == exit_code, stdout + stderr
    frame = load_results(only_manifest(tmp_path))
    assert sorted(frame["index"]) == list(range(30))
    by_index = dict(zip(frame["index"], frame["status"], strict=True))
    assert {by_index[n] for n in range(10)} == {"TIMED_OUT"}
    assert set(frame[frame["error"] == "States.Timeout"]["index"]) == set(range(10))
    if exit_code == 0:
        assert {by_index[n] for n in range(10, 30)} == {"SUCCEEDED"}


# -- SIGKILL of the driver: no worker process outlives it ------------------------------------------
def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["processes", "dask"])
def test_busy_workers_die_with_a_sigkilled_driver(tmp_path: Path, executor: str) -> None:
    """Two workers spin at 100% CPU in their batches; the driver is SIGKILLed. Every worker
    process, and the fork server or nanny processes they came from, must be gone soon after."""
    marks = tmp_path / "marks"
    marks.mkdir()
    items = [{"n": n, "spin": n in (0, 10)} for n in range(40)]
    path = pipeline(
        tmp_path,
        "spin_when_marked",
        items,
        MaxConcurrency=2,
        ItemBatcher={"MaxItemsPerBatch": 10, "BatchInput": {"dir": str(marks)}},
    )
    env = cli_env(SHARDMAP_STATE_DIR=str(tmp_path / "state"), SHARDMAP_DASK_SCHEDULER="")
    driver = start("run", str(path), "--executor", executor, env=env)
    for first in (0, 10):
        wait_for(marks / f"pid-{first}", driver)
    spinning = [int((marks / f"pid-{first}").read_text()) for first in (0, 10)]
    descendants = psutil.Process(driver.pid).children(recursive=True)
    assert set(spinning) <= {child.pid for child in descendants}  # really this driver's
    for pid in spinning:  # and really busy (not merely started)
        assert _alive(pid)
        assert psutil.Process(pid).cpu_times().user > 0.05 or _burns_cpu(pid)
    driver.kill()
    driver.communicate()
    deadline = time.monotonic() + 30
    while any(_alive(child.pid) for child in descendants) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [child.pid for child in descendants if _alive(child.pid)]
    if left:  # do not leave them burning the CI machine (they kept the driver's group)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    assert not left, f"processes outlived the SIGKILLed driver: {left} (spinning: {spinning})"


def _burns_cpu(pid: int) -> bool:
    return psutil.Process(pid).cpu_percent(interval=0.5) > 50
