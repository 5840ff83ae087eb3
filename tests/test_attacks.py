"""Issue 21's engine findings: false successes, lost items, signals, crash points, exit codes.

Each test reproduces an attack through the public CLI (a real ``shardmap`` process where the
finding is about the process: its exit code, a signal, a kill) or the public API, and checks
that every item ends up in the results exactly once with an honest status.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from runner import MapSpec, load_results, run
from runner.journal import Journal, default_state_dir
from runner.status import describe_map_run

A = "tests.attack_workers"
ROOT = Path(__file__).resolve().parents[1]


def write_jsonl(path: Path, items: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return str(path)


def pipeline(tmp_path: Path, worker: str, items: list[dict[str, Any]], **fields: Any) -> Path:
    """A pipeline file over ``items`` (JSONL), batches of 10, results under tmp_path/out."""
    data = {
        "Name": "attack",
        "Worker": worker,
        "Source": write_jsonl(tmp_path / "items.jsonl", items),
        "ItemReader": {"ReaderConfig": {"InputType": "JSONL"}},
        "ItemBatcher": {"MaxItemsPerBatch": 10},
        "ResultWriter": {"Destination": str(tmp_path / "out")},
        **fields,
    }
    path = tmp_path / "pipeline.json.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def shardmap(*args: str, timeout: float = 120, **popen: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def only_run_id() -> str:
    runs = sorted(Path(default_state_dir(), "runs").glob("*.sqlite"))
    assert len(runs) == 1, runs
    return runs[0].stem


def described(run_id: str) -> dict[str, Any]:
    with Journal.open(default_state_dir(), run_id, readonly=True) as journal:
        return describe_map_run(journal)


def manifest_of(tmp_path: Path, run_id: str) -> str:
    return str(tmp_path / "out" / run_id / "manifest.json")


def assert_every_item_once(manifest: str, total: int) -> Any:
    frame = load_results(manifest)
    assert sorted(frame["index"].tolist()) == list(range(total))
    return frame


# -- a worker that exits is a failed batch --------------------------------------------------


@pytest.mark.parametrize("executor", ["inline", "threads"])
@pytest.mark.parametrize("code", [0, 3])
def test_a_worker_calling_sys_exit_fails_its_batch_not_the_driver(
    tmp_path: Path, executor: str, code: int
) -> None:
    items = [{"n": n, "exit": n == 25} for n in range(50)]
    path = pipeline(tmp_path, f"{A}:exits", items, ItemBatcher={
        "MaxItemsPerBatch": 10, "BatchInput": {"code": code}})  # fmt: skip
    done = shardmap("run", str(path), "--executor", executor)
    assert done.returncode == 1, done.stdout + done.stderr  # the run failed; never a false 0
    assert "Map Run FAILED" in done.stdout
    run_id = only_run_id()
    assert described(run_id)["status"] == "FAILED"
    frame = assert_every_item_once(manifest_of(tmp_path, run_id), 50)
    failed = frame[frame["status"] == "FAILED"]
    assert sorted(failed["index"]) == list(range(20, 30))
    assert set(failed["error"]) == {"Runtime.ExitError"}
    assert f"exit status {code}" in failed["cause"].iloc[0]


def test_a_worker_calling_sys_exit_on_the_process_pool_fails_its_batch(tmp_path: Path) -> None:
    items = [{"n": n, "exit": n == 5} for n in range(20)]
    spec = MapSpec.from_yaml(pipeline(tmp_path, f"{A}:exits", items, ToleratedFailureCount=10))
    result = run(spec, executor="processes")
    assert result.succeeded and result.item_counts.failed == 10
    frame = assert_every_item_once(result.manifest_url, 20)
    assert set(frame[frame["status"] == "FAILED"]["error"]) == {"Runtime.ExitError"}


# -- KeyboardInterrupt and signals: the run is ABORTED, no batch is dropped -----------------


@pytest.mark.parametrize("executor", ["inline", "threads"])
def test_keyboard_interrupt_in_a_worker_aborts_the_run_and_keeps_its_batch(
    tmp_path: Path, executor: str
) -> None:
    items = [{"n": n, "interrupt": n == 500} for n in range(1000)]
    spec = MapSpec.from_yaml(pipeline(tmp_path, f"{A}:interrupts", items))
    result = run(spec, executor=executor)
    assert str(result.status) == "ABORTED"
    frame = assert_every_item_once(result.manifest_url, 1000)  # 1,000 rows, not 990
    interrupted = frame[frame["index"] == 500]
    assert interrupted["status"].iloc[0] == "ABORTED"
    counts = described(result.run_id)["itemCounts"]
    assert counts["running"] == 0 and counts["total"] == 1000
    assert counts["resultsWritten"] == 1000


def _start_slow_run(tmp_path: Path, executor: str) -> tuple[subprocess.Popen, Path]:
    marks = tmp_path / "marks"
    marks.mkdir()
    items = [{"n": n, "slow": n == 30} for n in range(100)]
    path = pipeline(tmp_path, f"{A}:slow_when_marked", items, ItemBatcher={
        "MaxItemsPerBatch": 10, "BatchInput": {"dir": str(marks), "seconds": 120}})  # fmt: skip
    driver = subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(path), "--executor", executor],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (marks / "started-30").exists():  # the slow batch is running: now interrupt
        assert driver.poll() is None, driver.communicate()
        assert time.monotonic() < deadline, "the slow batch never started"
        time.sleep(0.02)
    return driver, marks


@pytest.mark.parametrize(
    ("executor", "signum", "cause"),
    [
        ("inline", signal.SIGINT, "stopped by the user (Ctrl-C)"),
        ("threads", signal.SIGINT, "stopped by the user (Ctrl-C)"),
        ("inline", signal.SIGTERM, "stopped by SIGTERM"),
        ("threads", signal.SIGTERM, "stopped by SIGTERM"),
    ],
)
def test_sigint_and_sigterm_abort_the_run_with_every_item_in_the_results(
    tmp_path: Path, executor: str, signum: int, cause: str
) -> None:
    driver, _ = _start_slow_run(tmp_path, executor)
    driver.send_signal(signum)
    stdout, stderr = driver.communicate(timeout=60)
    assert driver.returncode == 1, stdout + stderr
    assert "Map Run ABORTED" in stdout and cause in stdout
    run_id = only_run_id()
    assert f"shardmap redrive {run_id}" in stderr
    record = described(run_id)
    assert record["status"] == "ABORTED" and record["itemCounts"]["running"] == 0
    frame = assert_every_item_once(manifest_of(tmp_path, run_id), 100)
    assert frame[frame["index"] == 30]["status"].iloc[0] == "ABORTED"
    assert set(frame["status"]) <= {"SUCCEEDED", "ABORTED", "PENDING"}


# -- a reader failing mid-file: the items it read are accounted for -------------------------


@pytest.mark.parametrize("selector", [None, {"n.$": "$$.Map.Item.Value.n"}])
def test_items_read_before_a_reader_fails_are_pending_not_lost(
    tmp_path: Path, selector: Any
) -> None:
    source = tmp_path / "items.jsonl"
    good = "".join(json.dumps({"n": n}) + "\n" for n in range(25))
    source.write_text(good + "{not json\n" + json.dumps({"n": 26}) + "\n")
    fields: dict[str, Any] = {
        "Name": "attack",
        "Worker": "echo",
        "Source": str(source),
        "ItemReader": {"ReaderConfig": {"InputType": "JSONL"}},
        "ItemBatcher": {"MaxItemsPerBatch": 10},
        "ResultWriter": {"Destination": str(tmp_path / "out")},
    }
    if selector:
        fields["ItemSelector"] = selector
    result = run(MapSpec.from_dict(fields), executor="threads")
    assert str(result.status) == "FAILED" and result.error == "States.ItemReaderFailed"
    assert "line 26" in result.cause
    assert result.item_counts.total == 25
    frame = assert_every_item_once(result.manifest_url, 25)
    pending = frame[frame["status"] == "PENDING"]
    assert sorted(pending["index"]) == [20, 21, 22, 23, 24]
    assert [item["n"] for item in pending["item"]] == [20, 21, 22, 23, 24]


# -- outputs over AWS's 256 KiB -----------------------------------------------------------


@pytest.mark.parametrize("executor", ["inline", "processes"])
def test_output_over_256_kib_fails_its_batch_with_data_limit_exceeded(
    tmp_path: Path, executor: str
) -> None:
    items = [{"n": n, "big": n == 3} for n in range(20)]
    path = pipeline(
        tmp_path,
        f"{A}:big_output",
        items,
        ItemBatcher={"MaxItemsPerBatch": 10, "BatchInput": {"bytes": 256 * 1024 + 1}},
        Retry=[{"ErrorEquals": ["States.ALL"], "MaxAttempts": 3, "IntervalSeconds": 0}],
        ToleratedFailureCount=10,
    )
    result = run(MapSpec.from_yaml(path), executor=executor)
    frame = assert_every_item_once(result.manifest_url, 20)
    failed = frame[frame["status"] == "FAILED"]
    assert sorted(failed["index"]) == list(range(10))
    assert set(failed["error"]) == {"States.DataLimitExceeded"}
    assert "262,147 bytes of JSON" in failed["cause"].iloc[0]  # the string and its quotes
    with Journal.open(default_state_dir(), result.run_id, readonly=True) as journal:
        attempts = journal.db.execute("SELECT attempts FROM batch WHERE number = 0").fetchone()
    assert attempts[0] == 1  # States.ALL does not catch States.DataLimitExceeded (AWS)


def test_output_of_exactly_256_kib_passes(tmp_path: Path) -> None:
    items = [{"n": n, "big": True} for n in range(10)]
    # the JSON string adds two quotes
    path = pipeline(tmp_path, f"{A}:big_output", items, ItemBatcher={
        "MaxItemsPerBatch": 10, "BatchInput": {"bytes": 256 * 1024 - 2}})  # fmt: skip
    assert run(MapSpec.from_yaml(path), executor="inline").succeeded


def test_marshal_error_cause_names_no_private_class(tmp_path: Path) -> None:
    path = pipeline(tmp_path, f"{A}:a_set", [{"n": n} for n in range(10)])
    result = run(MapSpec.from_yaml(path), executor="inline")
    frame = load_results(result.manifest_url)
    cause = json.loads(frame["cause"].iloc[0])
    assert frame["error"].iloc[0] == "Runtime.MarshalError"
    assert cause["errorType"] == "Runtime.MarshalError"
    assert "_NotJson" not in frame["cause"].iloc[0]


# -- crash points of the export: status never claims results that do not exist -------------

EXPORT_POINTS = ["export:outcome-recorded", "export:files-written", "export:manifest-written"]


@pytest.mark.parametrize("point", EXPORT_POINTS)
@pytest.mark.parametrize("finish", ["export", "resume"])
def test_a_driver_killed_while_exporting_is_finished_by_export_or_resume(
    tmp_path: Path, point: str, finish: str
) -> None:
    path = pipeline(tmp_path, "echo", [{"n": n} for n in range(200)])
    marker = tmp_path / "crashed-at"
    driver = subprocess.run(
        [sys.executable, "-m", "tests.crash_driver", point, "run", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CRASH_MARKER": str(marker)},
    )
    assert driver.returncode == -signal.SIGKILL, driver.stdout + driver.stderr
    assert marker.read_text() == point  # killed exactly there, not before or after
    run_id = only_run_id()
    record = described(run_id)
    assert record["status"] == "RUNNING"  # not SUCCEEDED: its results are not all written
    assert record["itemCounts"]["resultsWritten"] == 0
    assert record["shardmap"] == {"outcome": "SUCCEEDED", "resultsExported": False}
    status = shardmap("status", run_id)
    assert f"shardmap export {run_id}" in status.stderr

    redrive = shardmap("redrive", run_id)
    assert redrive.returncode == 2 and "only FAILED or ABORTED runs redrive" in redrive.stderr
    finished = shardmap(finish, run_id)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "Map Run SUCCEEDED" in finished.stdout
    record = described(run_id)
    assert record["status"] == "SUCCEEDED"
    assert record["itemCounts"]["resultsWritten"] == 200
    frame = assert_every_item_once(manifest_of(tmp_path, run_id), 200)
    assert set(frame["status"]) == {"SUCCEEDED"}
    again = shardmap("export", run_id)
    assert again.returncode == 2 and "no results waiting" in again.stderr


def test_a_driver_killed_after_the_export_left_a_finished_run(tmp_path: Path) -> None:
    path = pipeline(tmp_path, "echo", [{"n": n} for n in range(30)])
    driver = subprocess.run(
        [sys.executable, "-m", "tests.crash_driver", "export:done", "run", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert driver.returncode == -signal.SIGKILL
    run_id = only_run_id()
    assert described(run_id)["status"] == "SUCCEEDED"
    assert_every_item_once(manifest_of(tmp_path, run_id), 30)


# -- exit codes say who must act -------------------------------------------------------------


def test_an_unreachable_http_source_exits_3_and_says_so(tmp_path: Path) -> None:
    url = "http://someone:hunter2@127.0.0.1:9/items.jsonl"  # port 9: nothing listens
    done = shardmap("map", url, "--worker", "echo", "--dest", str(tmp_path / "out"))
    output = done.stdout + done.stderr
    assert done.returncode == 3, output
    assert "cannot reach the storage service" in output
    assert "no such bucket" not in output
    assert "hunter2" not in output and "someone" not in output


def test_a_full_disk_at_the_destination_exits_3_and_names_the_file(tmp_path: Path) -> None:
    path = pipeline(tmp_path, "echo", [{"n": n} for n in range(20)])
    run_dir = tmp_path / "out" / "full-disk"
    run_dir.mkdir(parents=True)
    (run_dir / "SUCCEEDED_0.json").symlink_to("/dev/full")  # every write: ENOSPC
    done = shardmap("run", str(path), "--run-id", "full-disk")
    output = done.stdout + done.stderr
    assert done.returncode == 3, output
    assert "WriterError" in output and "SUCCEEDED_0.json" in output
    assert "no space left on the device" in output
    assert described("full-disk")["status"] == "RUNNING"  # not SUCCEEDED: nothing written


def test_access_denied_by_s3_exits_3_and_says_so(tmp_path: Path, bucket: str, s3_client) -> None:
    s3_client.put_object(Bucket=bucket, Key="items.jsonl", Body=b'{"n": 1}\n')
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    done = shardmap(
        "map", f"s3://{bucket}/items.jsonl", "--worker", "echo", "--dest", str(tmp_path), env=env
    )
    output = done.stdout + done.stderr
    assert done.returncode == 3, output
    assert "access denied" in output and f"s3://{bucket}/items.jsonl" in output
    assert "not-the-secret" not in output
