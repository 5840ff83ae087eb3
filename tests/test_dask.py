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


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as local,
        Client(local) as client,
    ):
        yield local, client


@pytest.fixture
def dask_scheduler(cluster, monkeypatch):
    local, _ = cluster
    monkeypatch.setenv("SHARDMAP_DASK_SCHEDULER", local.scheduler_address)
    return local.scheduler_address


@pytest.fixture
def own_cluster(monkeypatch):
    """A cluster of its own for a test that kills workers: LocalCluster closes a worker's
    nanny for good when that worker is gone again ``lost-worker-timeout`` (15 s) after an
    earlier death, so kills in one shared cluster can strand later tests with one worker."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as local,
        Client(local) as client,
    ):
        monkeypatch.setenv("SHARDMAP_DASK_SCHEDULER", local.scheduler_address)
        yield local, client


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


def kill_a_worker_mid_run(
    tmp_path: Path, client: Any, *, items: int, sleep: float, kill_after: int, **fields: Any
) -> None:
    """Run ``slow_double`` over ``items`` items on Dask, SIGKILL a worker process once
    ``kill_after`` items succeeded, and check every item came back exactly once."""
    source = write_jsonl(tmp_path / "items.jsonl", [{"n": n} for n in range(items)])
    spec = MapSpec.from_dict({"Worker": f"{W}:slow_double", "Source": source,
                              "ItemBatcher": {"MaxItemsPerBatch": 10,
                                              "BatchInput": {"sleep": sleep}},
                              "ResultWriter": {"Destination": str(tmp_path / "out")},
                              **fields})  # fmt: skip
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


@pytest.mark.slow
def test_a_dask_worker_killed_mid_run_loses_and_duplicates_nothing(
    tmp_path: Path, cluster, dask_scheduler: str
) -> None:
    _, client = cluster
    kill_a_worker_mid_run(tmp_path, client, items=2000, sleep=0.03, kill_after=300,
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
    """Kill the worker process running it, the first time only."""
    if not os.path.exists(marker):
        Path(marker).touch()
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
def test_calls_sharing_a_task_its_worker_crashed_are_retried_one_by_one(
    tmp_path: Path, own_cluster
) -> None:
    """A Dask task that keeps killing its workers ends in KilledWorker. When several calls
    share the task, they are sent again one to a task, so only a call that crashes by itself
    would fail: here the crash happens once, and every call succeeds."""
    from runner.executors.dask import DaskExecutor

    _, client = own_cluster
    client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", 0))
    with DaskExecutor() as executor:
        warm = [executor.submit(add, n, 0) for n in range(16)]  # times the calls
        executor.flush()
        assert [f.result(timeout=30) for f in warm] == list(range(16))
        futures = [executor.submit(add, n, 1) for n in range(16)]
        crash = executor.submit(crash_once, str(tmp_path / "crashed"))
        futures += [executor.submit(add, n, 1) for n in range(16, 32)]
        executor.flush()
        tasks = {id(executor._chunk_of[f]) for f in [*futures, crash]}
        assert len(tasks) < len(futures)  # several calls to a Dask task
        assert crash.result(timeout=120) == "survived"
        assert [f.result(timeout=120) for f in futures] == [n + 1 for n in range(32)]
        assert (tmp_path / "crashed").exists()  # a worker did die


@pytest.mark.slow
def test_a_worker_killed_while_calls_share_tasks_loses_and_duplicates_nothing(
    tmp_path: Path, own_cluster
) -> None:
    """Short batches travel several to a task: a killed worker's tasks run again, whole."""
    _, client = own_cluster
    kill_a_worker_mid_run(tmp_path, client, items=10000, sleep=0.01, kill_after=3000)
