"""The journal's read API: what report, status, triggers, the Snakefile's helpers and the notebook
read instead of opening SQLite themselves, and ``delete_run``, the one way to remove a journal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner import MapRunResult, RunStatus, run
from runner.journal import (
    Journal,
    JournalError,
    default_state_dir,
    delete_run,
    find_run,
    journal_path,
)
from runner.status import describe_map_run, map_run_result
from tests.test_engine import spec_for, write_jsonl

W = "tests.workers_for_tests"


def _run_with_a_retried_failure(tmp_path: Path) -> MapRunResult:
    items = [{"n": n, "fail": n in (3, 14)} for n in range(20)]
    source = write_jsonl(str(tmp_path / "items.jsonl"), items)
    spec = spec_for(
        source,
        str(tmp_path / "out"),
        f"{W}:fail_marked",
        ItemBatcher={"MaxItemsPerBatch": 5},
        ToleratedFailurePercentage=50,
        Retry=[{"ErrorEquals": ["ValueError"], "MaxAttempts": 1, "IntervalSeconds": 0}],
    )
    result = run(spec, executor="inline")
    assert result.status == RunStatus.SUCCEEDED
    return result


def test_batches_attempts_and_failures_read_back(tmp_path: Path) -> None:
    result = _run_with_a_retried_failure(tmp_path)
    row = find_run(default_state_dir(), result.run_id)
    assert row is not None and row.id == result.run_id and row.status == "SUCCEEDED"
    with Journal.open(default_state_dir(), result.run_id, readonly=True) as journal:
        batches = journal.batches()
        attempts = journal.attempts()
        failures = journal.failure_summary()
    assert [b.number for b in batches] == [0, 1, 2, 3]
    assert [b.first_index for b in batches] == [0, 5, 10, 15]
    assert [b.status for b in batches] == ["FAILED", "SUCCEEDED", "FAILED", "SUCCEEDED"]
    assert [b.attempts for b in batches] == [2, 1, 2, 1]  # one retry of each failing batch
    assert all(b.error == "ValueError" for b in batches if b.status == "FAILED")
    # An attempt row per try, in the order they started: 4 first attempts and 2 retries.
    assert len(attempts) == 6
    assert sorted((a.batch, a.attempt) for a in attempts) == [
        (0, 1), (0, 2), (1, 1), (2, 1), (2, 2), (3, 1),
    ]  # fmt: skip
    assert all(a.stopped is not None and a.stopped >= a.started for a in attempts)
    assert failures == [("ValueError", 2, 10)]


def test_map_run_result_reads_what_the_run_returned(tmp_path: Path) -> None:
    result = _run_with_a_retried_failure(tmp_path)
    with Journal.open(default_state_dir(), result.run_id, readonly=True) as journal:
        again = map_run_result(journal)
        described = describe_map_run(journal)
    assert again.status == result.status and again.map_run_arn == result.map_run_arn
    assert again.item_counts == result.item_counts
    assert again.execution_counts == result.execution_counts
    assert again.manifest_url == result.manifest_url
    assert again.describe()["itemCounts"] == described["itemCounts"]


def test_find_run_is_none_without_a_run_row(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    assert find_run(state, "missing") is None
    path = journal_path(state, "half-made")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")  # what a process killed inside Journal.create leaves
    assert find_run(state, "half-made") is None


def test_delete_run_removes_the_journal_with_its_wal_and_shm(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    path = journal_path(state, "half-made")
    path.parent.mkdir(parents=True)
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        path.with_name(name).write_bytes(b"left over")
    assert delete_run(state, "half-made") is True
    assert list(path.parent.iterdir()) == []
    assert delete_run(state, "half-made") is False  # nothing left: nothing to do


def test_delete_run_refuses_while_the_driver_lives(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    journal = Journal.create(
        state,
        run_id="live",
        map_run_arn="arn:aws:states:local:000000000000:mapRun:test/Map:live",
        spec={"Worker": "echo"},
        run_input={},
        dest_url=str(tmp_path / "out"),
        executor="inline",
    )
    with journal:  # RUNNING, beating, in this (alive) process
        with pytest.raises(JournalError, match="still running in process"):
            delete_run(state, "live")
        assert journal_path(state, "live").exists()
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
        journal.update_run(pid=int(gone.stdout))  # its driver died
        journal.commit(force=True)
    assert find_run(state, "live") is not None
    assert delete_run(state, "live") is True
    assert not journal_path(state, "live").exists()
    assert not os.path.exists(f"{journal_path(state, 'live')}-wal")
