"""The same runs on a real Dask LocalCluster (two worker processes) as on the local executor."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from runner import MapSpec, load_results, run
from tests.comparing import comparable

W = "tests.workers_for_tests"


# The Dask fixtures (cluster, dask_scheduler, own_cluster) are in tests/conftest.py.


def write_jsonl(path: Path, items: list[Any]) -> str:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return str(path)


SHARDED = {"batched-with-failures", "csv-on-s3", "parquet-row-groups-on-s3",
           "quoted-csv-in-small-shards", "listing-on-s3"}  # fmt: skip


def parquet_on_s3(s3_client, bucket: str, rows: int, group: int) -> str:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    table = pa.table({"n": list(range(rows)), "tag": [f"t{n % 7}" for n in range(rows)]})
    pq.write_table(table, sink, row_group_size=group)
    s3_client.put_object(Bucket=bucket, Key="data/t.parquet", Body=sink.getvalue())
    return f"s3://{bucket}/data/t.parquet"


def quoted_csv_on_s3(s3_client, bucket: str, rows: int) -> str:
    """Quoted delimiters and line breaks; with SHARDMAP_SHARD_BYTES small, shard edges land
    inside quoted fields."""
    body = "id,text\n" + "".join(
        f'{n},"line one {n}\nline, two ""{n}"""\n' if n % 3 else f"{n},plain {n}\n"
        for n in range(rows)
    )
    s3_client.put_object(Bucket=bucket, Key="data/quoted.csv", Body=body.encode())
    return f"s3://{bucket}/data/quoted.csv"


def pipelines(tmp_path: Path, bucket: str, s3_client) -> dict[str, dict[str, Any]]:
    items = [{"n": n, "fail": n % 53 == 7, "v": {"w": n}} for n in range(600)]
    jsonl = write_jsonl(tmp_path / "items.jsonl", items)
    csv_body = "n,name\n" + "".join(f"{n},name-{n}\n" for n in range(300))
    s3_client.put_object(Bucket=bucket, Key="data/rows.csv", Body=csv_body.encode())
    for n in range(40):
        s3_client.put_object(Bucket=bucket, Key=f"objects/{n:03d}.txt", Body=b"x" * n)
    return {
        "batched-with-failures": {
            "Worker": f"{W}:fail_marked", "Source": jsonl,
            "ItemBatcher": {"MaxItemsPerBatch": 25}, "ToleratedFailurePercentage": 50,
        },
        "selector-and-batch-input": {
            "Worker": "echo", "Source": jsonl, "ItemReader": {"ReaderConfig": {"InputType": "JSONL",
                                                                               "MaxItems": 200}},
            "ItemSelector": {"i.$": "$$.Map.Item.Index", "w.$": "$$.Map.Item.Value.v.w"},
            "ItemBatcher": {"MaxInputBytesPerBatch": 400, "BatchInput": {"tag": "x"}},
        },
        "csv-on-s3": {
            "Worker": "echo", "Source": f"s3://{bucket}/data/rows.csv",
            "ItemBatcher": {"MaxItemsPerBatch": 40},
        },
        "parquet-row-groups-on-s3": {
            "Worker": "echo", "Source": parquet_on_s3(s3_client, bucket, rows=230, group=40),
            "ItemSelector": {"i.$": "$$.Map.Item.Index", "n.$": "$$.Map.Item.Value.n"},
            "ItemBatcher": {"MaxItemsPerBatch": 17},
        },
        "quoted-csv-in-small-shards": {
            "Worker": "echo", "Source": quoted_csv_on_s3(s3_client, bucket, rows=400),
            "ItemBatcher": {"MaxItemsPerBatch": 9, "BatchInput": {"b": 1}},
        },
        "listing-on-s3": {
            "Worker": "object-stats", "Source": f"s3://{bucket}/objects/",
            "ItemSelector": {"Key.$": "$$.Map.Item.Value.Key",
                             "Source.$": "$$.Map.Item.Source"},
            "ItemBatcher": {"MaxItemsPerBatch": 7},
        },
    }  # fmt: skip


@pytest.mark.slow
def test_local_and_dask_give_identical_results(
    tmp_path: Path, s3_server, bucket: str, s3_client, dask_scheduler: str, monkeypatch
) -> None:
    """Dask reads CSV, JSONL, Parquet and listing shards on its workers; local runs read on
    the driver."""
    monkeypatch.setenv("SHARDMAP_SHARD_BYTES", "2000")  # many shards, edges inside quotes
    for name, data in pipelines(tmp_path, bucket, s3_client).items():
        spec = MapSpec.from_dict(data)
        local = run(spec, dest=str(tmp_path / "local" / name), executor="threads")
        remote = run(spec, dest=str(tmp_path / "dask" / name), executor="dask")
        assert remote.shard_reading == (name in SHARDED), name
        assert local.status == remote.status, name
        assert remote.item_counts == local.item_counts, name
        assert comparable(remote.manifest_url) == comparable(local.manifest_url), name


def test_the_progress_line_shows_the_dashboard(dask_scheduler: str) -> None:
    from runner.executors.dask import DaskExecutor

    with DaskExecutor(max_workers=8) as executor:
        described = executor.describe()
        assert executor.slots == 2  # two single-threaded workers, whatever MaxConcurrency says
    assert described.startswith(f"dask {dask_scheduler} x2 dashboard http")


#: A batch whose worker died fails with WorkerProcessDied; only the pipeline's Retry reruns it.
RETRY_LOST_WORKERS = [{"ErrorEquals": ["WorkerProcessDied"], "IntervalSeconds": 0,
                       "MaxAttempts": 1}]  # fmt: skip


def kill_a_worker_mid_run(
    tmp_path: Path,
    client: Any,
    state_dir: Path,
    *,
    items: int,
    sleep: float,
    kill_after: int,
    **fields: Any,
) -> None:
    """Run ``slow_double`` over ``items`` items on Dask, SIGKILL a worker process once
    ``kill_after`` items succeeded, and check every item came back exactly once, and that
    the one batch running there (single-threaded workers), if any, failed with
    WorkerProcessDied and was rerun by Retry alone: nothing else failed an attempt."""
    from runner.journal import Journal

    source = write_jsonl(tmp_path / "items.jsonl", [{"n": n} for n in range(items)])
    spec = MapSpec.from_dict({"Worker": f"{W}:slow_double", "Source": source,
                              "ItemBatcher": {"MaxItemsPerBatch": 10,
                                              "BatchInput": {"sleep": sleep}},
                              "ResultWriter": {"Destination": str(tmp_path / "out")},
                              "Retry": RETRY_LOST_WORKERS, **fields})  # fmt: skip
    seen: list[int] = []
    outcome: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: outcome.update(
            result=run(spec, executor="dask", on_progress=lambda p: seen.append(p.items.succeeded))
        )
    )
    runner.start()
    deadline = time.monotonic() + 60
    while (not seen or seen[-1] < kill_after) and time.monotonic() < deadline:
        time.sleep(0.05)
    victim = sorted(client.run(os.getpid).values())[0]
    succeeded_at_kill = seen[-1] if seen else 0
    os.kill(victim, signal.SIGKILL)  # the nanny restarts it; Dask reschedules its tasks
    runner.join(timeout=180)
    assert victim not in client.run(os.getpid).values()  # it really died (and was replaced)
    result = outcome["result"]
    assert result.succeeded, (result.error, result.cause)
    assert succeeded_at_kill < items and seen[-1] == items  # the kill landed mid-run
    frame = load_results(result.manifest_url)
    assert list(frame["index"]) == list(range(items))
    assert list(frame["output"]) == [2 * n for n in range(items)]
    with Journal.open(state_dir, result.run_id, readonly=True) as journal:
        attempts = journal.attempts()
    lost = [a for a in attempts if a.status != "SUCCEEDED"]
    assert len(lost) <= 1 and {a.error for a in lost} <= {"WorkerProcessDied"}, lost
    reruns = [a for a in attempts if a.attempt > 1]
    assert [a.batch for a in reruns] == [a.batch for a in lost]  # by Retry, and only that one


@pytest.mark.slow
def test_a_dask_worker_killed_mid_run_loses_and_duplicates_nothing(
    tmp_path: Path, cluster, dask_scheduler: str, state_dir: Path
) -> None:
    _, client = cluster
    kill_a_worker_mid_run(tmp_path, client, state_dir, items=2000, sleep=0.03, kill_after=300,
                          MaxConcurrency=2)  # fmt: skip


# -- the executor on its own -------------------------------------------------------------------


def add(a: int, b: int) -> int:
    return a + b


def fail_with(message: str) -> None:
    raise ValueError(message)


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def crash_once(marker: str) -> str:
    """Kill the worker process running it, the first time only; each run adds a line to
    ``marker``."""
    with open(marker, "a") as f:
        f.write("ran\n")
    if Path(marker).read_text().count("ran") == 1:
        os._exit(1)  # the nanny starts another worker
    return "survived"


def test_calls_complete_with_their_own_result_or_error(cluster, dask_scheduler: str) -> None:
    import traceback

    from runner.executors.dask import DaskExecutor

    with DaskExecutor() as executor:
        # No flush: the collector sends what nobody flushed.
        assert executor.submit(add, 1, 2).result(timeout=30) == 3
        # Thousands of calls while another client is current (``with Client(...)`` in the
        # fixture): nothing may wait on that client's event loop.
        futures = [executor.submit(add, n, 1) for n in range(3000)]
        executor.flush()
        assert [f.result(timeout=60) for f in futures] == [n + 1 for n in range(3000)]
        failing = [executor.submit(fail_with, f"bad {n}") for n in range(3)]
        lock = executor.submit(add, threading.Lock(), 1)  # cannot be pickled: fails alone
        fine = executor.submit(add, 2, 2)
        executor.flush()
        for n, future in enumerate(failing):
            error = future.exception(timeout=30)
            assert isinstance(error, ValueError) and str(error) == f"bad {n}"
            # the worker's traceback travelled with it (tblib), as for a task of its own
            assert "in fail_with" in "".join(traceback.format_exception(error))
        assert isinstance(lock.exception(timeout=30), Exception)
        assert fine.result(timeout=30) == 4


def test_cancel_and_close_complete_every_future(cluster, dask_scheduler: str) -> None:
    from concurrent.futures import CancelledError

    from runner.executors.dask import DaskExecutor

    with DaskExecutor() as executor:
        unsent = executor.submit(nap, 5)
        executor.cancel([unsent])
        assert isinstance(unsent.exception(timeout=5), CancelledError)
        naps = [executor.submit(nap, 3) for _ in range(4)]
        executor.flush()
        time.sleep(0.5)  # two run, two wait
        executor.cancel(naps[:3])
        for future in naps[:3]:
            assert isinstance(future.exception(timeout=5), CancelledError)
        left = [naps[3], executor.submit(nap, 3)]  # one sent, one never flushed
    for future in left:
        assert isinstance(future.exception(timeout=5), CancelledError)


def test_a_call_says_when_it_started_while_it_runs_never_while_it_waits(
    cluster, dask_scheduler: str
) -> None:
    """Two workers busy with long calls, a third call queued: the long ones' starts reach the
    driver while they run (their deadlines count from them), the queued one has none until
    a worker takes it, and then it is no earlier than one came free."""
    from runner.executors.base import started_at
    from runner.executors.dask import DaskExecutor
    from runner.executors.daskremote import LIVE_START_SECONDS

    with DaskExecutor() as executor:
        busy = [executor.submit(nap, 1.5) for _ in range(2)]
        queued = executor.submit(nap, 0.1)
        executor.flush()
        deadline = time.monotonic() + 30
        while not all(started_at(f) for f in busy):
            assert time.monotonic() < deadline, "no start announced"
            time.sleep(0.01)
        assert not any(f.done() for f in busy)  # announced while they run
        assert started_at(queued) is None and not queued.done()
        seen = time.monotonic()
        assert all(seen - started_at(f).clock >= LIVE_START_SECONDS for f in busy)
        assert queued.result(timeout=30) == 0.1
        busy_ended = min(started_at(f).wall for f in busy) + 1.5
        assert started_at(queued).wall >= busy_ended - 0.01


def test_an_unexpected_collector_error_fails_futures_not_the_run(
    cluster, dask_scheduler: str, monkeypatch
) -> None:
    from runner.errors import ExecutorError
    from runner.executors.dask import DaskExecutor

    broken = RuntimeError("settling broke")

    def deliver(self: Any, chunk: Any, outcomes: Any) -> None:
        raise broken

    with DaskExecutor() as executor:
        original = DaskExecutor._deliver
        monkeypatch.setattr(DaskExecutor, "_deliver", deliver)
        hit = executor.submit(add, 1, 1)
        executor.flush()
        assert hit.exception(timeout=30) is broken  # its futures fail with the reason...
        monkeypatch.setattr(DaskExecutor, "_deliver", original)
        assert executor.submit(add, 2, 2).result(timeout=30) == 4  # ...and the collector goes on

        def take_ready(self: Any) -> Any:
            raise broken

        monkeypatch.setattr(DaskExecutor, "_take_ready", take_ready)
        stranded = executor.submit(nap, 0.2)  # wakes the collector, which now dies
        error = stranded.exception(timeout=30)
        assert isinstance(error, ExecutorError) and error.__cause__ is broken
        later = executor.submit(add, 3, 3)  # a dead collector is not waited on
        assert isinstance(later.exception(timeout=1), ExecutorError)


@pytest.mark.slow
@pytest.mark.parametrize("allowed_failures", [0, 3], ids=["strict-scheduler", "rescheduling"])
def test_only_the_call_running_when_its_worker_died_fails_not_its_task_mates(
    tmp_path: Path, own_cluster, allowed_failures: int
) -> None:
    """Several calls share a Dask task; one kills its worker process. That call fails with
    WorkerProcessDied and never runs again (neither a scheduler that reschedules lost tasks,
    allowed-failures 3 as by default, nor one that does not, reruns it); the calls before it
    in its task (finished, their results lost with the worker) and after it (never started)
    are sent again and succeed."""
    from runner.executors.dask import DaskExecutor, WorkerProcessDied

    _, client = own_cluster
    client.run_on_scheduler(
        lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", allowed_failures)
    )
    marker = tmp_path / "crashed"
    with DaskExecutor() as executor:
        warm = [executor.submit(add, n, 0) for n in range(16)]  # times the calls
        executor.flush()
        assert [f.result(timeout=30) for f in warm] == list(range(16))
        futures = [executor.submit(add, n, 1) for n in range(16)]
        crash = executor.submit(crash_once, str(marker))
        futures += [executor.submit(add, n, 1) for n in range(16, 32)]
        executor.flush()
        mates = [f for f in futures if executor._chunk_of[f] is executor._chunk_of[crash]]
        assert mates  # the crashing call shares its Dask task
        error = crash.exception(timeout=120)
        assert isinstance(error, WorkerProcessDied), error
        assert "died running this batch (exit code 1)" in str(error)
        assert [f.result(timeout=120) for f in futures] == [n + 1 for n in range(32)]
    assert marker.read_text() == "ran\n"  # it ran once: nothing ran it again


@pytest.mark.slow
def test_a_worker_killed_while_calls_share_tasks_loses_and_duplicates_nothing(
    tmp_path: Path, own_cluster, state_dir: Path
) -> None:
    """Short batches travel several to a task: of a killed worker's tasks, only the batch
    that was running fails (and Retry reruns it); the others are sent again."""
    _, client = own_cluster
    kill_a_worker_mid_run(tmp_path, client, state_dir, items=10000, sleep=0.01, kill_after=3000)
