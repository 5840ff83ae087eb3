"""One engine, four executors: the same behaviour on inline, threads, processes and Dask.

Retries, timeouts and tolerated failures live in the scheduling loop alone (issue 14), so a
run's outcome must not depend on where its batches ran: the same results (apart from
timestamps), the same number of attempts under Retry, the same WorkerProcessDied for a batch
whose worker process is SIGKILLed (retried by Retry only), TimeoutSeconds counted from when a
worker takes a batch (never its time queued behind busy workers) and StartDate that moment.

States are proved by files the workers write (attempts, start and end times) and by the
journal, not by sleeping. Worker functions live here, importable by name
(``tests.test_executor_conformance:...``), so pool processes and Dask workers run them.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from runner import MapSpec, WorkerError, load_results, run
from runner.executors.base import Executor
from runner.executors.dask import MAX_CHUNK, DaskExecutor
from runner.executors.local import LocalExecutor
from runner.journal import Journal
from tests.comparing import comparable

HERE = "tests.test_executor_conformance"
SLOTS = 2  # every executor here runs two batches at once (inline: one)
EXECUTORS = ["inline", "threads", "processes", "dask"]


# -- workers ---------------------------------------------------------------------------------------
def doubles(event: dict[str, Any]) -> list[Any]:
    """Fails a batch holding an item marked ``fail``; else each item's ``n`` doubled."""
    for item in event["Items"]:
        if item.get("fail"):
            raise WorkerError("Marked.Failure", f"item {item['n']} is marked to fail")
    return [{"n": item["n"], "double": 2 * item["n"], "tag": event["BatchInput"]["tag"]}
            for item in event["Items"]]  # fmt: skip


def counts_attempts(event: dict[str, Any]) -> list[int]:
    """Adds a line to ``<dir>/ran-<first n>`` per attempt; a batch holding an item marked
    ``fail`` always fails, one marked ``die`` SIGKILLs its own process on its first attempt."""
    first = event["Items"][0]["n"]
    ran = Path(event["BatchInput"]["dir"], f"ran-{first}")
    with ran.open("a") as f:
        f.write("attempt\n")
    attempts = ran.read_text().count("attempt")
    for item in event["Items"]:
        if item.get("fail"):
            raise WorkerError("Marked.Failure", f"attempt {attempts} fails")
        if item.get("die") and attempts == 1:
            os.kill(os.getpid(), signal.SIGKILL)
    return [item["n"] for item in event["Items"]]


def timed(event: dict[str, Any]) -> list[int]:
    """Writes ``<dir>/start-<n>-<attempt>`` (time.time() on entry), sleeps the item's
    ``seconds``, fails the first attempt of an item marked ``flaky``, and writes
    ``<dir>/end-<n>-<attempt>`` as it returns."""
    folder = Path(event["BatchInput"]["dir"])
    item = event["Items"][0]
    attempt = 1 + len(list(folder.glob(f"start-{item['n']}-*")))
    (folder / f"start-{item['n']}-{attempt}").write_text(repr(time.time()))
    time.sleep(item["seconds"])
    (folder / f"end-{item['n']}-{attempt}").write_text(repr(time.time()))
    if item.get("flaky") and attempt == 1:
        raise WorkerError("Flaky.Failure", "the first attempt fails")
    return [item["n"]]


# -- fixtures and helpers --------------------------------------------------------------------------
@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest) -> Callable[[], Executor]:
    """A new executor per run: two workers each (inline runs in the driver's thread)."""
    return _executor(request, request.param)


@pytest.fixture(params=[name for name in EXECUTORS if name != "inline"])
def queueing_executor(request: pytest.FixtureRequest) -> Callable[[], Executor]:
    """The executors where batches can wait in a queue (inline runs each inside submit)."""
    return _executor(request, request.param)


def _executor(request: pytest.FixtureRequest, name: str) -> Callable[[], Executor]:
    if name == "dask":
        local, _ = request.getfixturevalue("cluster")  # a real LocalCluster, 2 workers
        return lambda: DaskExecutor(local.scheduler_address)
    if name == "inline":
        return lambda: LocalExecutor("inline")
    return lambda: LocalExecutor(name, max_workers=SLOTS)


def spec_for(tmp_path: Path, worker: str, items: list[dict[str, Any]], **fields: Any) -> MapSpec:
    source = tmp_path / "items.jsonl"
    source.write_text("".join(json.dumps(item) + "\n" for item in items))
    data = {
        "Name": "conformance",
        "Worker": f"{HERE}:{worker}",
        "Source": str(source),
        "ItemReader": {"ReaderConfig": {"InputType": "JSONL"}},
        "ResultWriter": {"Destination": str(tmp_path / "out")},
        **fields,
    }
    return MapSpec.from_dict(data)


def records(manifest_url: str) -> list[dict[str, Any]]:
    """Every result record (AWS's JSON), failed and succeeded, by its first item's index."""
    with open(manifest_url) as f:
        manifest = json.load(f)
    found = []
    base = Path(manifest_url).parent
    for entries in manifest["ResultFiles"].values():
        for entry in entries:
            found += json.loads((base / Path(entry["Key"]).name).read_text())
    return sorted(found, key=lambda r: json.loads(r["Input"])["Items"][0]["n"])


def first_n(record: dict[str, Any]) -> int:
    return json.loads(record["Input"])["Items"][0]["n"]


def unix(date: str) -> float:
    return datetime.fromisoformat(date).timestamp()


def stamp(folder: Path, name: str) -> float:
    return float((folder / name).read_text())


def attempts_of(state_dir: Path, run_id: str) -> dict[int, list[Any]]:
    with Journal.open(state_dir, run_id, readonly=True) as journal:
        rows = journal.attempts()
    by_batch: dict[int, list[Any]] = {}
    for row in rows:
        by_batch.setdefault(row.batch, []).append(row)
    return by_batch


# -- results ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inline_results(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Any, ...]]:
    tmp_path = tmp_path_factory.mktemp("inline")
    result = run(results_spec(tmp_path), executor=LocalExecutor("inline"))
    return comparable(result.manifest_url)


def results_spec(tmp_path: Path) -> MapSpec:
    items = [{"n": n, "fail": n % 37 == 5, "v": {"w": n}} for n in range(300)]
    return spec_for(
        tmp_path,
        "doubles",
        items,
        ItemSelector={"n.$": "$$.Map.Item.Value.n", "i.$": "$$.Map.Item.Index",
                      "fail.$": "$$.Map.Item.Value.fail"},
        ItemBatcher={"MaxItemsPerBatch": 7, "BatchInput": {"tag": "t"}},
        ToleratedFailurePercentage=50,
    )  # fmt: skip


def test_results_are_the_same_on_every_executor(
    executor: Callable[[], Executor], tmp_path: Path, inline_results: list[tuple[Any, ...]]
) -> None:
    """Dask reads its shards on the workers, the others on the driver: the same results."""
    result = run(results_spec(tmp_path), executor=executor())
    assert result.succeeded, (result.error, result.cause)
    failing_batches = {n // 7 for n in range(300) if n % 37 == 5}
    assert result.item_counts.failed == 7 * len(failing_batches)
    assert comparable(result.manifest_url) == inline_results


# -- Retry -----------------------------------------------------------------------------------------
def test_retry_reruns_a_failed_batch_exactly_max_attempts_times(
    executor: Callable[[], Executor], tmp_path: Path, state_dir: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    items = [{"n": n, "fail": n == 7} for n in range(20)]
    spec = spec_for(
        tmp_path,
        "counts_attempts",
        items,
        ItemBatcher={"MaxItemsPerBatch": 5, "BatchInput": {"dir": str(marks)}},
        Retry=[{"ErrorEquals": ["Marked.Failure"], "IntervalSeconds": 0, "MaxAttempts": 2}],
        ToleratedFailureCount=5,
    )
    result = run(spec, executor=executor(), shard_reading=False)
    assert result.succeeded, (result.error, result.cause)
    ran = {n: (marks / f"ran-{n}").read_text().count("attempt") for n in (0, 5, 10, 15)}
    assert ran == {0: 1, 5: 3, 10: 1, 15: 1}  # the first attempt and MaxAttempts retries
    journaled = attempts_of(state_dir, result.run_id)
    assert [a.status for a in journaled[1]] == ["FAILED"] * 3
    assert all(len(journaled[b]) == 1 for b in (0, 2, 3))
    failed = [r for r in records(result.manifest_url) if r["Status"] != "SUCCEEDED"]
    assert [(first_n(r), r["Status"], r["Error"]) for r in failed] == [
        (5, "FAILED", "Marked.Failure")
    ]


# -- a worker process SIGKILLed --------------------------------------------------------------------
@pytest.fixture(params=["processes", "dask", "dask-own-cluster"])
def killable(request: pytest.FixtureRequest) -> Callable[[], Executor]:
    """Executors whose batches run in processes that can die without the driver.

    ``dask``: a LocalCluster of the test's own (its worker gets killed) used as an existing
    scheduler, whose allowed-failures (3, Dask's default) would have Dask rerun the task;
    ``dask-own-cluster``: the executor's own LocalCluster (allowed-failures 0)."""
    if request.param == "processes":
        return lambda: LocalExecutor("processes", max_workers=SLOTS)
    if request.param == "dask":
        local, _ = request.getfixturevalue("own_cluster")
        return lambda: DaskExecutor(local.scheduler_address)
    return lambda: DaskExecutor(n_workers=SLOTS)


@pytest.mark.parametrize("retry", [False, True], ids=["no-retry", "retry"])
def test_a_batch_whose_worker_is_killed_fails_and_only_retry_reruns_it(
    killable: Callable[[], Executor], retry: bool, tmp_path: Path, state_dir: Path
) -> None:
    """Many short batches (on Dask several share a task); the one with ``die`` SIGKILLs its
    worker process. It fails with WorkerProcessDied, as on the process pool; without Retry it
    stays FAILED and never ran again; with Retry it runs exactly once more, and succeeds. No
    other batch fails or runs twice, those that waited on the dying worker included."""
    marks = tmp_path / "marks"
    marks.mkdir()
    items = [{"n": n, "die": n == 301} for n in range(400)]
    fields: dict[str, Any] = {"ToleratedFailureCount": 10}
    if retry:
        fields["Retry"] = [
            {"ErrorEquals": ["WorkerProcessDied"], "IntervalSeconds": 0, "MaxAttempts": 1}
        ]
    spec = spec_for(
        tmp_path,
        "counts_attempts",
        items,
        ItemBatcher={"MaxItemsPerBatch": 2, "BatchInput": {"dir": str(marks)}},
        **fields,
    )
    made = killable()
    result = run(spec, executor=made, shard_reading=False)
    assert result.succeeded, (result.error, result.cause)
    ran = {int(path.name.split("-")[1]): path.read_text().count("attempt")
           for path in marks.glob("ran-*")}  # fmt: skip
    assert sorted(ran) == list(range(0, 400, 2))  # every batch ran
    assert ran[300] == (2 if retry else 1)
    twice = {n for n, times in ran.items() if times > 1 and n != 300}
    assert all(times <= 2 for times in ran.values())
    if isinstance(made, DaskExecutor):
        # Batches that shared the dying batch's Dask task and finished before it, their
        # results lost with the worker, are sent again (at-least-once; results exactly once).
        assert all(300 - 2 * MAX_CHUNK < n < 300 for n in twice), twice
    else:
        assert twice == set()
    journaled = attempts_of(state_dir, result.run_id)
    assert [(a.status, a.error) for a in journaled[150]][:1] == [("FAILED", "WorkerProcessDied")]
    assert len(journaled[150]) == (2 if retry else 1)
    assert all(len(rows) == 1 for batch, rows in journaled.items() if batch != 150)
    failed = [r for r in records(result.manifest_url) if r["Status"] != "SUCCEEDED"]
    if retry:
        assert failed == []
        return
    assert [(first_n(r), r["Status"], r["Error"]) for r in failed] == [
        (300, "FAILED", "WorkerProcessDied")
    ]
    assert "died running this batch (killed by SIGKILL" in failed[0]["Cause"]
    assert len(load_results(result.manifest_url)) == 400  # every item, once


# -- TimeoutSeconds and StartDate ------------------------------------------------------------------
TIMEOUT = 1.0
MS = 0.001  # result records' dates are in milliseconds


def test_timeout_counts_from_the_start_never_the_time_queued(
    queueing_executor: Callable[[], Executor], tmp_path: Path
) -> None:
    """Two workers busy with 0.7 s batches, seven more queued behind them in the executor
    (MaxConcurrency 9): the quick batches wait about 2 s, twice TimeoutSeconds, and still
    succeed; the slow one times out TimeoutSeconds after it started, long after it was
    handed over."""
    executor = queueing_executor
    marks = tmp_path / "marks"
    marks.mkdir()
    seconds = [0.7] * 6 + [0.05, 4.0, 0.05]  # fillers, quick, slow, quick
    items = [{"n": n, "seconds": s} for n, s in enumerate(seconds)]
    spec = spec_for(
        tmp_path,
        "timed",
        items,
        ItemBatcher={"MaxItemsPerBatch": 1, "BatchInput": {"dir": str(marks)}},
        MaxConcurrency=len(items),
        TimeoutSeconds=TIMEOUT,
        ToleratedFailureCount=1,
    )
    handed_over = time.time()  # every batch is handed to the executor within moments of this
    result = run(spec, executor=executor(), shard_reading=False)
    assert result.succeeded, (result.error, result.cause)
    by_n = {first_n(r): r for r in records(result.manifest_url)}
    assert {n for n, r in by_n.items() if r["Status"] != "SUCCEEDED"} == {7}
    assert (by_n[7]["Status"], by_n[7]["Error"]) == ("TIMED_OUT", "States.Timeout")
    for quick in (6, 8):
        waited = stamp(marks, f"start-{quick}-1") - handed_over
        assert waited > 1.5 * TIMEOUT, (quick, waited)  # it waited longer than TimeoutSeconds
    slow_start = stamp(marks, "start-7-1")
    assert slow_start - handed_over > 1.5 * TIMEOUT  # it too was queued a long while
    # Measured from its start (when its worker took it, a moment before the function's
    # first line wrote start-7-1), not from its hand-over two seconds before.
    ran_for = unix(by_n[7]["StopDate"]) - slow_start
    assert TIMEOUT - 0.05 <= ran_for < TIMEOUT + 1.0, ran_for  # (its 4 s sleep not over)


def test_start_date_is_when_the_first_attempt_began_running(
    executor: Callable[[], Executor], tmp_path: Path
) -> None:
    """Six 0.4 s batches on two workers, all handed over at once: each record's StartDate is
    when its worker took it, at or before the worker function's first line and no earlier than
    a worker came free for it; a batch retried keeps its first attempt's start."""
    marks = tmp_path / "marks"
    marks.mkdir()
    items = [{"n": n, "seconds": 0.4, "flaky": n == 4} for n in range(6)]
    spec = spec_for(
        tmp_path,
        "timed",
        items,
        ItemBatcher={"MaxItemsPerBatch": 1, "BatchInput": {"dir": str(marks)}},
        MaxConcurrency=len(items),
        Retry=[{"ErrorEquals": ["Flaky.Failure"], "IntervalSeconds": 1, "MaxAttempts": 1}],
    )
    ex = executor()
    result = run(spec, executor=ex, shard_reading=False)
    assert result.succeeded, (result.error, result.cause)
    by_n = {first_n(r): r for r in records(result.manifest_url)}
    ends = {n: stamp(marks, f"end-{n}-1") for n in by_n}
    began = {n: stamp(marks, f"start-{n}-1") for n in by_n}
    order = sorted(by_n, key=began.__getitem__)
    for rank, n in enumerate(order):
        start_date = unix(by_n[n]["StartDate"])  # AWS's dates: milliseconds, cut
        assert start_date <= began[n], (n, start_date - began[n])  # not after its first line
        if rank >= ex.slots:  # it waited for a worker: it cannot have started before one was free
            assert start_date >= min(ends[m] for m in order[:rank]) - MS, (n, rank)
        stopped = unix(by_n[n]["StopDate"])
        assert stopped >= stamp(marks, f"end-{n}-{2 if n == 4 else 1}") - MS
    assert stamp(marks, "start-4-2") - unix(by_n[4]["StartDate"]) > 1.0  # its retry began later


@pytest.fixture(autouse=True)
def _no_dask_scheduler_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Executors here are built explicitly; a scheduler named in the environment must not
    change which cluster ``DaskExecutor(n_workers=...)`` starts."""
    monkeypatch.delenv("SHARDMAP_DASK_SCHEDULER", raising=False)
    yield
