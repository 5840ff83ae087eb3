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


def write_jsonl(path: Path, items: list[Any]) -> str:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return str(path)


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
        "listing-on-s3": {
            "Worker": "object-stats", "Source": f"s3://{bucket}/objects/",
            "ItemSelector": {"Key.$": "$$.Map.Item.Value.Key",
                             "Source.$": "$$.Map.Item.Source"},
            "ItemBatcher": {"MaxItemsPerBatch": 7},
        },
    }  # fmt: skip


@pytest.mark.slow
def test_local_and_dask_give_identical_results(
    tmp_path: Path, s3_server, bucket: str, s3_client, dask_scheduler: str
) -> None:
    for name, data in pipelines(tmp_path, bucket, s3_client).items():
        spec = MapSpec.from_dict(data)
        local = run(spec, dest=str(tmp_path / "local" / name), executor="threads")
        remote = run(spec, dest=str(tmp_path / "dask" / name), executor="dask")
        assert local.status == remote.status, name
        assert remote.item_counts == local.item_counts, name
        assert comparable(remote.manifest_url) == comparable(local.manifest_url), name


def test_the_progress_line_shows_the_dashboard(dask_scheduler: str) -> None:
    from runner.executors.dask import DaskExecutor

    with DaskExecutor(max_workers=8) as executor:
        described = executor.describe()
        assert executor.slots == 2  # two single-threaded workers, whatever MaxConcurrency says
    assert described.startswith(f"dask {dask_scheduler} x2 dashboard http")


@pytest.mark.slow
def test_a_dask_worker_killed_mid_run_loses_and_duplicates_nothing(
    tmp_path: Path, cluster, dask_scheduler: str
) -> None:
    _, client = cluster
    source = write_jsonl(tmp_path / "items.jsonl", [{"n": n} for n in range(2000)])
    spec = MapSpec.from_dict({"Worker": f"{W}:slow_double", "Source": source,
                              "ItemBatcher": {"MaxItemsPerBatch": 10,
                                              "BatchInput": {"sleep": 0.03}},
                              "MaxConcurrency": 2,
                              "ResultWriter": {"Destination": str(tmp_path / "out")}})  # fmt: skip
    seen: list[int] = []

    def progress(p: Any) -> None:
        seen.append(p.items.succeeded)

    outcome: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: outcome.update(result=run(spec, executor="dask", on_progress=progress))
    )
    runner.start()
    deadline = time.monotonic() + 60
    while (not seen or seen[-1] < 300) and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    succeeded_at_kill = seen[-1] if seen else 0
    os.kill(victim, signal.SIGKILL)  # the nanny restarts it; Dask reschedules its task
    runner.join(timeout=180)
    assert victim not in client.run(os.getpid).values()  # it really died (and was replaced)
    result = outcome["result"]
    assert result.succeeded, (result.error, result.cause)
    assert succeeded_at_kill < 2000 and seen[-1] == 2000  # the kill landed mid-run
    frame = load_results(result.manifest_url)
    assert list(frame["index"]) == list(range(2000))
    assert list(frame["output"]) == [2 * n for n in range(2000)]
