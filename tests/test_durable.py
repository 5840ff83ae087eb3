"""Durable runs: journal, crash-resume with exactly-once results, redrive, status."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fsspec
import pytest
from click.testing import CliRunner

from runner import MapSpec, RunStatus, load_results, run
from runner.cli import main
from runner.engine import redrive, resume
from runner.journal import Journal, JournalError, journal_path

ROOT = Path(__file__).parent.parent
W = "tests.workers_for_tests"


def write_jsonl(path: Path, items: list[Any]) -> str:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return str(path)


def comparable(manifest_url: str) -> list[tuple[Any, ...]]:
    frame = load_results(manifest_url)
    return [
        (int(row.index), row.status, json.dumps(row.output), row.error)
        for row in frame.itertuples()
    ]


def records(manifest_url: str, kind: str) -> list[dict[str, Any]]:
    with fsspec.open(manifest_url) as f:
        manifest = json.load(f)
    out = []
    for entry in manifest["ResultFiles"][kind]:
        with fsspec.open(
            manifest_url.rsplit("/", 1)[0] + "/" + entry["Key"].rsplit("/", 1)[1]
        ) as f:
            out.extend(json.load(f))
    return out


@pytest.mark.slow
def test_chaos_kill_the_driver_and_resume_gives_exactly_once_results(tmp_path: Path) -> None:
    items = [{"n": n, "fail": n % 997 == 5} for n in range(10_000)]
    source = write_jsonl(tmp_path / "items.jsonl", items)
    state = tmp_path / "state"
    common = ["--worker", f"{W}:slow_double", "--batch-size", "20", "--concurrency", "4",
              "--tolerate", "5"]  # fmt: skip
    reference = CliRunner().invoke(
        main, ["--state-dir", str(state), "map", source, "--dest", str(tmp_path / "ref"),
               "--run-id", "reference", *common],
    )  # fmt: skip
    assert reference.exit_code == 0, reference.output
    with Journal.open(state, "reference", readonly=True) as journal:
        expected = comparable(journal.run().manifest_url)
    assert len(expected) == 10_000 and sum(1 for row in expected if row[1] == "FAILED") == 220

    rng = random.Random(20261127)
    kills = attempts = 0
    while kills < 10 and attempts < 30:
        attempts += 1
        run_id = f"chaos-{attempts}"
        driver = subprocess.Popen(
            [sys.executable, "-m", "runner", "--state-dir", str(state), "map", source,
             "--dest", str(tmp_path / "out"), "--run-id", run_id, *common],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(rng.uniform(0.8, 3.0))
        if driver.poll() is not None:
            continue  # finished before the kill: not a crash point
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        if not journal_path(state, run_id).exists():
            continue  # killed while still starting (a loaded machine): nothing to resume
        with Journal.open(state, run_id, readonly=True) as journal:
            if journal.run().status != "RUNNING":
                continue  # the kill landed after the run ended, before the process exited
        kills += 1
        result = resume(run_id, state_dir=str(state))
        assert result.status == RunStatus.SUCCEEDED, (run_id, result.error, result.cause)
        got = comparable(result.manifest_url)
        assert [row[0] for row in got] == list(range(10_000)), run_id  # each item exactly once
        assert got == expected, run_id
        with pytest.raises(JournalError, match="not interrupted"):
            resume(run_id, state_dir=str(state))
    assert kills >= 10, f"only {kills} kills landed mid-run in {attempts} attempts"


def test_resume_refuses_a_changed_source(tmp_path: Path, state_dir: Path) -> None:
    source = tmp_path / "items.jsonl"
    write_jsonl(source, [{"n": n} for n in range(100)])
    spec = MapSpec.from_dict({"Worker": f"{W}:double", "Source": str(source),
                              "ItemBatcher": {"MaxItemsPerBatch": 10},
                              "ResultWriter": {"Destination": str(tmp_path / "out")}})  # fmt: skip
    result = run(spec, run_id="r1")
    assert result.succeeded
    # Pretend the driver died after the run had started: mark it running, one batch undone.
    with Journal.open(state_dir, "r1") as journal:
        journal.update_run(status="RUNNING", pid=None)
        journal.db.execute("UPDATE batch SET status = 'RUNNING' WHERE number = 9")
    write_jsonl(source, [{"n": n + 1} for n in range(100)])
    failed = resume("r1")
    assert failed.status == RunStatus.FAILED and "source changed" in failed.cause


def test_redrive_reruns_only_failures_and_keeps_successes(tmp_path: Path) -> None:
    fixed = tmp_path / "fixed"
    items = [{"n": n, "fail": n in (15, 16, 57)} for n in range(100)]
    source = write_jsonl(tmp_path / "items.jsonl", items)
    spec = MapSpec.from_dict({
        "Worker": f"{W}:fixable", "Source": source,
        "ItemBatcher": {"MaxItemsPerBatch": 10, "BatchInput": {"fixed": str(fixed)}},
        "ToleratedFailureCount": 10, "MaxConcurrency": 1,
        "ResultWriter": {"Destination": str(tmp_path / "out")},
    })  # fmt: skip
    first = run(spec, run_id="redrive-me", executor="threads")
    assert first.status == RunStatus.FAILED
    assert first.error == "States.ExceedToleratedFailureThreshold"
    assert first.item_counts.failed == 20 and first.item_counts.pending > 0
    before = {r["Name"]: r for r in records(first.manifest_url, "SUCCEEDED")}
    assert all(r["RedriveCount"] == 0 for r in before.values())

    fixed.touch()  # the cause is fixed
    second = redrive("redrive-me")
    assert second.status == RunStatus.SUCCEEDED and second.manifest_url == first.manifest_url
    assert second.item_counts.succeeded == 100
    with fsspec.open(second.manifest_url) as f:
        manifest = json.load(f)
    assert manifest["ResultFiles"]["FAILED"] == [] and manifest["ResultFiles"]["PENDING"] == []
    after = {r["Name"]: r for r in records(second.manifest_url, "SUCCEEDED")}
    for name, record in before.items():  # successes of the first attempt are kept as they were
        assert after[name] == record
    rerun = [r for name, r in after.items() if name not in before]
    assert rerun and all(r["RedriveCount"] == 1 for r in rerun)
    frame = load_results(second.manifest_url)
    assert list(frame["index"]) == list(range(100)) and (frame["status"] == "SUCCEEDED").all()
    with pytest.raises(JournalError, match="only FAILED or ABORTED runs redrive"):
        redrive("redrive-me")


def test_redrive_lists_only_the_latest_failures(tmp_path: Path) -> None:
    fixed = tmp_path / "never-fixed"
    items = [{"n": n, "fail": n == 3} for n in range(30)]
    source = write_jsonl(tmp_path / "items.jsonl", items)
    spec = MapSpec.from_dict({
        "Worker": f"{W}:fixable", "Source": source,
        "ItemBatcher": {"MaxItemsPerBatch": 5, "BatchInput": {"fixed": str(fixed)}},
        "ResultWriter": {"Destination": str(tmp_path / "out")},
    })  # fmt: skip
    first = run(spec, run_id="still-broken", executor="inline")
    assert first.status == RunStatus.FAILED
    second = redrive("still-broken", executor="inline")
    assert second.status == RunStatus.FAILED
    failed = records(second.manifest_url, "FAILED")
    assert len(failed) == 1 and failed[0]["RedriveCount"] == 1
    with fsspec.open(second.manifest_url) as f:
        listed = [e["Key"] for files in json.load(f)["ResultFiles"].values() for e in files]
    names = sorted(os.listdir(Path(second.manifest_url).parent))
    assert names == sorted(["manifest.json", *(key.rsplit("/", 1)[1] for key in listed)])
    frame = load_results(second.manifest_url)
    assert sorted(frame["index"]) == list(range(30))  # every item exactly once after redrive


DESCRIBE_MAP_RUN_FIELDS = {
    "mapRunArn", "executionArn", "status", "startDate", "stopDate", "maxConcurrency",
    "toleratedFailurePercentage", "toleratedFailureCount", "itemCounts", "executionCounts",
    "redriveCount", "redriveDate",
}  # fmt: skip
COUNT_FIELDS = {
    "pending", "running", "succeeded", "failed", "timedOut", "aborted", "total",
    "resultsWritten", "failuresNotRedrivable", "pendingRedrive",
}  # fmt: skip


def test_status_json_uses_describe_map_run_field_names(tmp_path: Path, state_dir: Path) -> None:
    items = [{"n": n, "fail": n == 7} for n in range(50)]
    source = write_jsonl(tmp_path / "items.jsonl", items)
    runner = CliRunner()
    done = runner.invoke(main, ["map", source, "--worker", "fail-some", "--dest",
                                str(tmp_path / "out"), "--batch-size", "5", "--tolerate", "20",
                                "--run-id", "described"])  # fmt: skip
    assert done.exit_code == 0, done.output
    shown = runner.invoke(main, ["status", "described", "--json"])
    assert shown.exit_code == 0, shown.output
    described = json.loads(shown.output)
    known = DESCRIBE_MAP_RUN_FIELDS | {"error", "cause", "resultWriterDetails"}
    assert set(described) <= known
    assert {"mapRunArn", "status", "startDate", "itemCounts", "executionCounts"} <= set(described)
    for counts in (described["itemCounts"], described["executionCounts"]):
        assert set(counts) == COUNT_FIELDS
    assert described["status"] == "SUCCEEDED"
    assert described["itemCounts"]["succeeded"] == 45 and described["itemCounts"]["failed"] == 5
    assert described["executionCounts"]["total"] == 10
    assert described["toleratedFailurePercentage"] == 20.0
    listed = runner.invoke(main, ["runs", "--json"])
    assert [r["runId"] for r in json.loads(listed.output)] == ["described"]
    watched = runner.invoke(main, ["status", "--watch"])  # newest run; finished, so one look
    assert watched.exit_code == 0 and "described SUCCEEDED" in watched.output
    missing = runner.invoke(main, ["status", "nope"])
    assert missing.exit_code == 2 and "no journal for run 'nope'" in missing.output


def test_status_follows_a_run_started_elsewhere(tmp_path: Path, state_dir: Path) -> None:
    source = write_jsonl(tmp_path / "items.jsonl", [{"n": n} for n in range(8000)])
    driver = subprocess.Popen(
        [sys.executable, "-m", "runner", "map", source, "--worker", f"{W}:slow_double",
         "--dest", str(tmp_path / "out"), "--batch-size", "10", "--concurrency", "2",
         "--run-id", "followed"],
        cwd=ROOT, env={**os.environ, "SHARDMAP_STATE_DIR": str(state_dir)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (state_dir / "runs" / "followed.sqlite").exists():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        watched = CliRunner().invoke(main, ["status", "followed", "--watch", "--interval", "0.3"])
    finally:
        driver.wait(timeout=120)
    lines = watched.output.strip().splitlines()
    assert len(lines) > 1 and "RUNNING" in lines[0] and "SUCCEEDED" in lines[-1]


def test_redrive_keeps_the_runs_rollover_and_read_ahead(tmp_path: Path, state_dir: Path) -> None:
    """Result files of a redrive roll over at the size the run was started with, and its planner
    reads ahead as far: the journal keeps how the driver ran, not only the spec."""
    fixed = tmp_path / "fixed"
    items = [{"n": n, "fail": n == 7, "pad": "x" * 200} for n in range(60)]
    spec = MapSpec.from_dict({
        "Worker": f"{W}:fixable", "Source": write_jsonl(tmp_path / "items.jsonl", items),
        "ItemBatcher": {"MaxItemsPerBatch": 2, "BatchInput": {"fixed": str(fixed)}},
        "ToleratedFailureCount": 1, "MaxConcurrency": 1,
        "ResultWriter": {"Destination": str(tmp_path / "out")},
    })  # fmt: skip
    first = run(spec, run_id="roll", executor="threads", rollover_bytes=4096, read_ahead_items=8)
    assert first.status == RunStatus.FAILED and first.item_counts.failed == 2
    with Journal.open(state_dir, "roll", readonly=True) as journal:
        assert journal.run().options == {
            "read_ahead_items": 8, "rollover_bytes": 4096, "shard_reading": None,
        }  # fmt: skip
    fixed.touch()
    second = redrive("roll")
    assert second.status == RunStatus.SUCCEEDED and second.item_counts.succeeded == 60
    with fsspec.open(second.manifest_url) as f:
        files = json.load(f)["ResultFiles"]["SUCCEEDED"]
    # 30 records of ~0.6 KB each cannot fit one 4 KiB file: the redrive rolled over as the run
    # did (with AWS's 5 GB default it would have written a single file).
    assert len(files) > 2
    assert all(entry["Size"] <= 4096 + 2048 for entry in files)
    assert len(records(second.manifest_url, "SUCCEEDED")) == 30


def test_executor_options_reach_a_named_executor_only(tmp_path: Path) -> None:
    from tests import workers_for_tests

    spec = MapSpec.from_dict({
        "Worker": f"{W}:count_concurrency", "ItemsPath": "$.items",
        "ItemBatcher": {"MaxItemsPerBatch": 1},
        "ResultWriter": {"Destination": str(tmp_path / "out")},
    })  # fmt: skip
    items = {"items": [{"n": n} for n in range(12)]}
    workers_for_tests.peak_running = 0
    done = run(spec, run_input=items, executor="threads", executor_options={"max_workers": 1})
    assert done.status == RunStatus.SUCCEEDED and workers_for_tests.peak_running == 1
    from runner.executors.local import LocalExecutor

    with pytest.raises(TypeError, match="executor given by name"):
        run(spec, run_input=items, executor=LocalExecutor(max_workers=2),
            executor_options={"max_workers": 1})  # fmt: skip
