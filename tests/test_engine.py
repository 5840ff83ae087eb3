"""The scheduling loop: batching, concurrency, retries, timeouts and thresholds."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
import pytest

from runner import MapSpec, RunStatus, load_results, run
from runner.errors import SpecError, WorkerNotFound
from runner.spec import Retrier

EXECUTORS = ["inline", "threads", "processes"]
W = "tests.workers_for_tests"


def write_jsonl(url: str, items: list[Any]) -> str:
    with fsspec.open(url, "w") as f:
        for item in items:
            f.write(json.dumps(item) + "\n")
    return url


def spec_for(source: str, dest: str, worker: str, **fields: Any) -> MapSpec:
    data = {
        "Name": "test",
        "Worker": worker,
        "Source": source,
        "ItemReader": {"ReaderConfig": {"InputType": "JSONL"}},
        "ResultWriter": {"Destination": dest},
    }
    data.update(fields)
    return MapSpec.from_dict(data)


def result_records(manifest_url: str, kind: str) -> list[dict[str, Any]]:
    with fsspec.open(manifest_url) as f:
        manifest = json.load(f)
    base = manifest_url.rsplit("/", 1)[0]
    records = []
    for entry in manifest["ResultFiles"][kind]:
        with fsspec.open(f"{base}/{entry['Key'].rsplit('/', 1)[1]}") as f:
            records.extend(json.load(f))
    return records


@pytest.fixture
def items_1130(tmp_path: Path) -> str:
    return write_jsonl(str(tmp_path / "items.jsonl"), [{"n": n} for n in range(1130)])


@pytest.mark.parametrize("executor", EXECUTORS)
def test_1130_items_in_batches_of_100(executor: str, items_1130: str, tmp_path: Path) -> None:
    spec = spec_for(
        items_1130, str(tmp_path / "out"), f"{W}:double", ItemBatcher={"MaxItemsPerBatch": 100}
    )
    result = run(spec, executor=executor)
    assert result.status == RunStatus.SUCCEEDED
    records = result_records(result.manifest_url, "SUCCEEDED")
    sizes = sorted((len(json.loads(r["Input"])["Items"]) for r in records), reverse=True)
    assert sizes == [100] * 11 + [30]
    assert result.execution_counts.succeeded == 12
    assert result.item_counts.succeeded == result.item_counts.total == 1130
    frame = load_results(result.manifest_url)
    assert list(frame["index"]) == list(range(1130))
    assert [o["double"] for o in frame["output"]] == [2 * n for n in range(1130)]
    assert (frame["status"] == "SUCCEEDED").all()


def test_max_input_bytes_per_batch_is_never_exceeded(tmp_path: Path) -> None:
    items = [{"n": n, "pad": "x" * (n * 7 % 300)} for n in range(800)]
    source = write_jsonl(str(tmp_path / "items.jsonl"), items)
    spec = spec_for(
        source,
        str(tmp_path / "out"),
        f"{W}:double",
        ItemBatcher={"MaxInputBytesPerBatch": 2048, "BatchInput": {"k": "v"}},
    )
    result = run(spec, executor="threads")
    assert result.succeeded
    records = result_records(result.manifest_url, "SUCCEEDED")
    assert len(records) > 1
    for record in records:
        assert len(record["Input"].encode()) <= 2048
        assert json.loads(record["Input"])["BatchInput"] == {"k": "v"}
    assert sorted(o["n"] for o in load_results(result.manifest_url)["output"]) == list(range(800))


def test_an_item_too_big_for_any_batch_fails_alone(tmp_path: Path) -> None:
    items = [{"n": 0}, {"n": 1, "pad": "y" * 5000}, {"n": 2}]
    source = write_jsonl(str(tmp_path / "items.jsonl"), items)
    spec = spec_for(
        source,
        str(tmp_path / "out"),
        f"{W}:double",
        ItemBatcher={"MaxInputBytesPerBatch": 1000},
        ToleratedFailureCount=1,
    )
    result = run(spec, executor="inline")
    assert result.succeeded
    failed = result_records(result.manifest_url, "FAILED")
    assert [r["Error"] for r in failed] == ["States.DataLimitExceeded"]
    assert "item 1" in failed[0]["Cause"]
    frame = load_results(result.manifest_url).set_index("index")
    assert frame.loc[1, "status"] == "FAILED" and frame.loc[0, "status"] == "SUCCEEDED"


def _five_percent_failing(tmp_path: Path) -> str:
    # 1,000 items in batches of 10: every 20th batch holds a failing item -> 5% of items fail.
    items = [{"n": n, "fail": (n // 10) % 20 == 7 and n % 10 == 0} for n in range(1000)]
    return write_jsonl(str(tmp_path / "items.jsonl"), items)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_failures_within_tolerated_percentage(executor: str, tmp_path: Path) -> None:
    spec = spec_for(
        _five_percent_failing(tmp_path),
        str(tmp_path / "out"),
        f"{W}:fail_marked",
        ItemBatcher={"MaxItemsPerBatch": 10},
        ToleratedFailurePercentage=10,
    )
    result = run(spec, executor=executor)
    assert result.status == RunStatus.SUCCEEDED
    assert result.item_counts.failed == 50 and result.item_counts.succeeded == 950
    manifest = json.loads(Path(result.manifest_url).read_text())
    assert [f["Key"].rsplit("/", 1)[1] for f in manifest["ResultFiles"]["FAILED"]] == [
        "FAILED_0.json"
    ]
    failed = result_records(result.manifest_url, "FAILED")
    assert len(failed) == 5
    for record in failed:
        assert record["Status"] == "FAILED"
        assert record["Error"] == "ValueError"
        cause = json.loads(record["Cause"])
        assert "marked to fail" in cause["errorMessage"] and cause["errorType"] == "ValueError"
        assert "Output" not in record


def test_exceeding_tolerated_percentage_fails_fast_with_pending(tmp_path: Path) -> None:
    spec = spec_for(
        _five_percent_failing(tmp_path),
        str(tmp_path / "out"),
        f"{W}:fail_marked",
        ItemBatcher={"MaxItemsPerBatch": 10},
        ToleratedFailurePercentage=1,
        MaxConcurrency=2,
    )
    result = run(spec, executor="threads")
    assert result.status == RunStatus.FAILED
    assert result.error == "States.ExceedToleratedFailureThreshold"
    assert result.cause == "The specified tolerated failure threshold was exceeded"
    pending = result_records(result.manifest_url, "PENDING")
    assert pending, "unstarted batches must be written as PENDING"
    assert all(r["Status"] == "PENDING" for r in pending)
    frame = load_results(result.manifest_url)
    # Nothing is lost: every item is somewhere in the results, exactly once.
    assert sorted(frame["index"]) == list(range(1000))
    assert set(frame["status"]) <= {"SUCCEEDED", "FAILED", "ABORTED", "PENDING"}
    assert result.item_counts.pending == (frame["status"] == "PENDING").sum()


def test_default_tolerance_is_zero(tmp_path: Path) -> None:
    items = [{"n": n, "fail": n == 3} for n in range(50)]
    source = write_jsonl(str(tmp_path / "items.jsonl"), items)
    spec = spec_for(
        source,
        str(tmp_path / "out"),
        f"{W}:fail_marked",
        ItemBatcher={"MaxItemsPerBatch": 5},
        MaxConcurrency=1,
    )
    result = run(spec, executor="threads")
    assert result.error == "States.ExceedToleratedFailureThreshold"


def test_tolerated_failure_count(tmp_path: Path) -> None:
    items = [{"n": n, "fail": n in (3, 17)} for n in range(40)]
    source = write_jsonl(str(tmp_path / "items.jsonl"), items)
    base = {"ItemBatcher": {"MaxItemsPerBatch": 1}}
    ok = run(
        spec_for(source, str(tmp_path / "a"), f"{W}:fail_marked", ToleratedFailureCount=2, **base)
    )
    assert ok.succeeded and ok.item_counts.failed == 2
    bad = run(
        spec_for(source, str(tmp_path / "b"), f"{W}:fail_marked", ToleratedFailureCount=1, **base),
        executor="inline",
    )
    assert bad.error == "States.ExceedToleratedFailureThreshold"


@pytest.mark.parametrize("executor", EXECUTORS)
def test_retry_recovers_a_flaky_batch(executor: str, tmp_path: Path) -> None:
    source = write_jsonl(str(tmp_path / "items.jsonl"), [{"n": n} for n in range(30)])
    markers = tmp_path / "markers"
    markers.mkdir()
    spec = spec_for(
        source,
        str(tmp_path / "out"),
        f"{W}:flaky",
        ItemBatcher={"MaxItemsPerBatch": 10, "BatchInput": {"dir": str(markers), "failures": 2}},
        Retry=[
            {
                "ErrorEquals": ["Flaky.Error"],
                "IntervalSeconds": 0.01,
                "MaxAttempts": 2,
                "BackoffRate": 1.5,
            }
        ],
    )
    result = run(spec, executor=executor)
    assert result.succeeded
    assert sorted(int(p.read_text()) for p in markers.iterdir()) == [3, 3, 3]


def test_retry_exhausted_or_not_matching_fails(tmp_path: Path) -> None:
    source = write_jsonl(str(tmp_path / "items.jsonl"), [{"n": n} for n in range(10)])
    for name, retry, attempts in [
        ("exhausted", [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 0, "MaxAttempts": 1}], 2),
        ("other-error", [{"ErrorEquals": ["Other.Error"], "IntervalSeconds": 0}], 1),
        (
            "task-failed",
            [{"ErrorEquals": ["States.TaskFailed"], "IntervalSeconds": 0, "MaxAttempts": 3}],
            4,
        ),
    ]:
        markers = tmp_path / name
        markers.mkdir()
        spec = spec_for(
            source,
            str(tmp_path / f"out-{name}"),
            f"{W}:flaky",
            ItemBatcher={
                "MaxItemsPerBatch": 10,
                "BatchInput": {"dir": str(markers), "failures": 5},
            },
            Retry=retry,
        )
        result = run(spec, executor="threads")
        assert result.status == RunStatus.FAILED, name
        assert int((markers / "batch-0").read_text()) == attempts, name
        failed = result_records(result.manifest_url, "FAILED")
        assert failed[0]["Error"] == "Flaky.Error"


def test_retrier_delays_follow_aws_fields() -> None:
    retrier = Retrier.model_validate(
        {"ErrorEquals": ["X"], "IntervalSeconds": 2, "BackoffRate": 3, "MaxDelaySeconds": 10}
    )
    assert [retrier.delay(n) for n in (1, 2, 3)] == [2, 6, 10]
    full = Retrier.model_validate(
        {"ErrorEquals": ["X"], "IntervalSeconds": 4, "JitterStrategy": "FULL"}
    )
    assert full.delay(1, rand=0.25) == 1.0
    assert Retrier.model_validate({"ErrorEquals": ["States.ALL"]}).matches("States.Timeout")
    assert not Retrier.model_validate({"ErrorEquals": ["States.ALL"]}).matches("States.Runtime")
    assert not Retrier.model_validate({"ErrorEquals": ["States.TaskFailed"]}).matches(
        "States.Timeout"
    )


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_timeout_marks_batch_timed_out(executor: str, tmp_path: Path) -> None:
    items = [{"n": n, "slow": n == 4} for n in range(8)]
    source = write_jsonl(str(tmp_path / "items.jsonl"), items)
    spec = spec_for(
        source,
        str(tmp_path / "out"),
        f"{W}:sleepy",
        ItemBatcher={"MaxItemsPerBatch": 2, "BatchInput": {"seconds": 3}},
        TimeoutSeconds=0.5,
        ToleratedFailureCount=2,
    )
    result = run(spec, executor=executor)
    assert result.succeeded
    assert result.item_counts.timed_out == 2 and result.execution_counts.timed_out == 1
    failed = result_records(result.manifest_url, "FAILED")
    assert [(r["Status"], r["Error"]) for r in failed] == [("TIMED_OUT", "States.Timeout")]


def test_timeout_counts_toward_threshold_and_can_be_retried(tmp_path: Path) -> None:
    items = [{"n": n, "slow": n == 0} for n in range(4)]
    source = write_jsonl(str(tmp_path / "items.jsonl"), items)
    spec = spec_for(
        source,
        str(tmp_path / "out"),
        f"{W}:sleepy",
        ItemBatcher={"MaxItemsPerBatch": 2, "BatchInput": {"seconds": 2}},
        TimeoutSeconds=0.3,
        Retry=[{"ErrorEquals": ["States.Timeout"], "IntervalSeconds": 0, "MaxAttempts": 1}],
    )
    result = run(spec, executor="threads")
    assert result.error == "States.ExceedToleratedFailureThreshold"
    assert result.item_counts.timed_out == 2


def test_max_concurrency_is_respected(tmp_path: Path) -> None:
    import tests.workers_for_tests as workers

    workers.peak_running = 0
    source = write_jsonl(str(tmp_path / "items.jsonl"), [{"n": n} for n in range(60)])
    spec = spec_for(
        source,
        str(tmp_path / "out"),
        f"{W}:count_concurrency",
        ItemBatcher={"MaxItemsPerBatch": 2},
        MaxConcurrency=3,
    )
    result = run(spec, executor="threads")
    assert result.succeeded
    assert workers.peak_running == 3


def test_unbatched_children_get_the_lone_item(tmp_path: Path) -> None:
    source = write_jsonl(
        str(tmp_path / "items.jsonl"), [{"n": n, "fail": n == 2} for n in range(5)]
    )
    spec = spec_for(source, str(tmp_path / "out"), f"{W}:single", ToleratedFailureCount=1)
    result = run(spec, executor="threads")
    assert result.succeeded and result.execution_counts.total == 5
    records = result_records(result.manifest_url, "SUCCEEDED")
    assert {json.loads(r["Input"])["n"] for r in records} == {0, 1, 3, 4}
    failed = result_records(result.manifest_url, "FAILED")
    assert failed[0]["Error"] == "Custom.Failure" and "item 2" in failed[0]["Cause"]


def test_item_selector_context_object_and_run_input(tmp_path: Path) -> None:
    source = write_jsonl(
        str(tmp_path / "items.jsonl"), [{"n": n, "v": {"w": n * 10}} for n in range(7)]
    )
    spec = spec_for(
        source,
        str(tmp_path / "out"),
        "echo",
        ItemSelector={
            "index.$": "$$.Map.Item.Index",
            "w.$": "$$.Map.Item.Value.v.w",
            "source.$": "$$.Map.Item.Source",
            "run.$": "$.tag",
            "literal": {"a": [1, 2]},
        },
        ItemBatcher={"MaxItemsPerBatch": 3},
    )
    result = run(spec, run_input={"tag": "t1"}, executor="inline")
    outputs = list(load_results(result.manifest_url)["output"])
    assert outputs[5] == {
        "index": 5,
        "w": 50,
        "source": source,
        "run": "t1",
        "literal": {"a": [1, 2]},
    }


def test_item_selector_path_missing_fails_its_batch_not_the_data(tmp_path: Path) -> None:
    items = [{"n": 0, "x": 1}, {"n": 1}, {"n": 2, "x": 3}, {"n": 3, "x": 4}]
    source = write_jsonl(str(tmp_path / "items.jsonl"), items)
    spec = spec_for(
        source,
        str(tmp_path / "out"),
        "echo",
        ItemSelector={"x.$": "$$.Map.Item.Value.x"},
        ItemBatcher={"MaxItemsPerBatch": 2},
        ToleratedFailureCount=2,
    )
    result = run(spec, executor="inline")
    assert result.succeeded
    failed = result_records(result.manifest_url, "FAILED")
    assert len(failed) == 1 and failed[0]["Error"] == "States.Runtime"
    assert "item 1" in failed[0]["Cause"]
    assert json.loads(failed[0]["Input"]) == {"Items": [{"x": 1}, None]}  # never run
    frame = load_results(result.manifest_url).set_index("index")
    assert frame.loc[2, "output"] == {"x": 3} and frame.loc[3, "output"] == {"x": 4}
    assert frame.loc[0, "status"] == frame.loc[1, "status"] == "FAILED"


def test_items_path_and_object_items(tmp_path: Path) -> None:
    spec = MapSpec.from_dict(
        {
            "Worker": "echo",
            "ItemsPath": "$.things",
            "ItemSelector": {
                "k.$": "$$.Map.Item.Key",
                "v.$": "$$.Map.Item.Value",
                "src.$": "$$.Map.Item.Source",
            },
            "ResultWriter": {"Destination": str(tmp_path / "out")},
        }
    )
    result = run(spec, run_input={"things": {"a": 1, "b": 2}}, executor="inline")
    outputs = list(load_results(result.manifest_url)["output"])
    assert outputs == [
        {"k": "a", "v": 1, "src": "STATE_DATA"},
        {"k": "b", "v": 2, "src": "STATE_DATA"},
    ]
    plain = MapSpec.from_dict(
        {
            "Worker": "echo",
            "ItemsPath": "$.list",
            "ResultWriter": {"Destination": str(tmp_path / "out2")},
        }
    )
    result = run(plain, run_input={"list": [3, 4, 5]}, executor="inline")
    assert list(load_results(result.manifest_url)["output"]) == [3, 4, 5]


def test_max_items_and_path_fields_from_run_input(tmp_path: Path) -> None:
    source = write_jsonl(str(tmp_path / "items.jsonl"), [{"n": n} for n in range(100)])
    spec = spec_for(
        source,
        str(tmp_path / "out"),
        f"{W}:double",
        ItemReader={"ReaderConfig": {"InputType": "JSONL", "MaxItemsPath": "$.limit"}},
        ItemBatcher={"MaxItemsPerBatchPath": "$.size"},
    )
    result = run(spec, run_input={"limit": 25, "size": 10}, executor="inline")
    assert result.item_counts.total == 25 and result.execution_counts.total == 3
    with pytest.raises(SpecError, match="MaxItemsPerBatchPath"):
        run(spec, run_input={"limit": 25}, executor="inline")


def test_columnar_worker_gets_a_table(tmp_path: Path) -> None:
    source = write_jsonl(str(tmp_path / "items.jsonl"), [{"n": n} for n in range(25)])
    spec = spec_for(
        source,
        str(tmp_path / "out"),
        f"{W}:column_sum",
        ItemBatcher={"MaxItemsPerBatch": 10, "BatchInput": {"b": 1}},
    )
    result = run(spec, executor="processes")
    outputs = [json.loads(r["Output"]) for r in result_records(result.manifest_url, "SUCCEEDED")]
    assert sorted(o["sum"] for o in outputs) == [45, 110, 145]
    assert {o["batch_input"]["b"] for o in outputs} == {1}


def test_output_that_is_not_json_fails_the_batch(tmp_path: Path) -> None:
    source = write_jsonl(str(tmp_path / "items.jsonl"), [{"n": 1}])
    spec = spec_for(
        source, str(tmp_path / "out"), f"{W}:not_json", ItemBatcher={"MaxItemsPerBatch": 1}
    )
    result = run(spec, executor="inline")
    assert result_records(result.manifest_url, "FAILED")[0]["Error"] == "Runtime.MarshalError"


def test_reader_error_midway_keeps_what_was_done(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    lines = [json.dumps({"n": n}) for n in range(300)]
    lines[250] = '{"n": 250,'  # a broken line
    path.write_text("\n".join(lines) + "\n")
    spec = spec_for(
        str(path),
        str(tmp_path / "out"),
        f"{W}:double",
        ItemBatcher={"MaxItemsPerBatch": 10},
        MaxConcurrency=1,
    )
    result = run(spec, executor="inline", read_ahead_items=10)
    assert result.status == RunStatus.FAILED
    assert result.error == "States.ItemReaderFailed"
    assert str(path) in result.cause and "line 251" in result.cause
    frame = load_results(result.manifest_url)
    done = frame[frame["status"] == "SUCCEEDED"]
    assert len(done) >= 10 and set(done["index"]) <= set(range(250))
    assert sorted(frame["index"]) == list(range(len(frame)))  # no gaps among what was read


def test_unknown_worker_is_reported_before_reading(tmp_path: Path) -> None:
    spec = spec_for(str(tmp_path / "missing.jsonl"), str(tmp_path / "out"), "no-such-worker")
    with pytest.raises(WorkerNotFound, match=r"registered workers: .*echo"):
        run(spec)


def test_s3_source_and_s3_destination(s3_server, bucket: str) -> None:
    source = write_jsonl(f"s3://{bucket}/in/items.jsonl", [{"n": n} for n in range(250)])
    spec = spec_for(
        source, f"s3://{bucket}/results", f"{W}:double", ItemBatcher={"MaxItemsPerBatch": 50}
    )
    result = run(spec, executor="threads")
    assert result.succeeded
    assert result.manifest_url == f"s3://{bucket}/results/{result.run_id}/manifest.json"
    assert result.output["ResultWriterDetails"] == {
        "Bucket": bucket,
        "Key": f"results/{result.run_id}/manifest.json",
    }
    frame = load_results(result.manifest_url)
    assert list(frame["index"]) == list(range(250))


def test_a_hung_process_batch_times_out_and_the_run_ends(tmp_path: Path) -> None:
    source = write_jsonl(
        str(tmp_path / "items.jsonl"), [{"n": n, "hang": n == 1} for n in range(6)]
    )
    spec = spec_for(
        source,
        str(tmp_path / "out"),
        f"{W}:hang",
        ItemBatcher={"MaxItemsPerBatch": 1},
        TimeoutSeconds=1,
        ToleratedFailureCount=1,
    )
    result = run(spec, executor="processes")  # would wait an hour if the pool waited for it
    assert result.succeeded and result.item_counts.timed_out == 1
    assert (result.stop_date - result.start_date).total_seconds() < 60


@pytest.mark.parametrize(
    "case", ["csv-quote", "json-scalar", "parquet-truncated", "gzip-truncated"]
)
def test_bad_input_fails_the_run_naming_file_and_position(case: str, tmp_path: Path) -> None:
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    if case == "csv-quote":
        path = tmp_path / "rows.csv"
        path.write_text("n,name\n" + "".join(f"{n},x{n}\n" for n in range(50)) + '51,"bad"x\n')
        position = "line 52"
    elif case == "json-scalar":
        path = tmp_path / "items.json"
        path.write_text("42")
        position = "number"
    elif case == "parquet-truncated":
        path = tmp_path / "items.parquet"
        pq.write_table(pa.table({"n": list(range(100))}), path)
        path.write_bytes(path.read_bytes()[:-20])
        position = "footer"
    else:
        path = tmp_path / "items.jsonl.gz"
        body = "".join(json.dumps({"n": n}) + "\n" for n in range(20000)).encode()
        path.write_bytes(gzip.compress(body)[:3000])
        position = "truncated"
    spec = MapSpec.from_dict(
        {
            "Worker": "echo",
            "Source": str(path),
            "ItemBatcher": {"MaxItemsPerBatch": 10},
            "ResultWriter": {"Destination": str(tmp_path / "out")},
        }
    )
    result = run(spec, executor="threads")
    assert result.status == RunStatus.FAILED and result.error == "States.ItemReaderFailed"
    assert str(path) in result.cause and position in result.cause, result.cause
    frame = load_results(result.manifest_url)  # the manifest exists; what was read is kept
    if case == "csv-quote":
        assert sorted(frame["index"]) == list(range(50))
        assert set(frame["status"]) <= {"SUCCEEDED", "ABORTED", "PENDING"}


def test_missing_key_and_bucket_on_s3(s3_server, bucket: str, tmp_path: Path) -> None:
    for url in (f"s3://{bucket}/nope.jsonl", "s3://no-such-bucket-here/items.jsonl"):
        spec = spec_for(url, str(tmp_path / "out"), "echo", ItemBatcher={"MaxItemsPerBatch": 5})
        result = run(spec, executor="threads")
        assert result.error == "States.ItemReaderFailed" and url in result.cause


def test_child_input_over_aws_limit_is_a_warning(tmp_path: Path) -> None:
    source = write_jsonl(
        str(tmp_path / "items.jsonl"), [{"n": n, "pad": "z" * 3000} for n in range(200)]
    )
    spec = spec_for(
        source,
        str(tmp_path / "out"),
        "echo",
        ItemBatcher={"MaxItemsPerBatch": 100},
        OversizedOutput="WARN",  # echo's output is as big as its input
    )
    result = run(spec, executor="inline")
    assert result.succeeded
    assert any("child input is" in warning for warning in result.warnings)
    assert any("2 child output(s) over" in warning for warning in result.warnings)


def test_a_killed_worker_process_fails_only_its_batch_and_is_retried(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    items = [{"n": n, "die": n == 13} for n in range(40)]
    source = write_jsonl(str(tmp_path / "items.jsonl"), items)
    spec = spec_for(
        source,
        str(tmp_path / "out"),
        f"{W}:die_once",
        ItemBatcher={"MaxItemsPerBatch": 5, "BatchInput": {"dir": str(markers)}},
        Retry=[{"ErrorEquals": ["WorkerProcessDied"], "IntervalSeconds": 0, "MaxAttempts": 2}],
    )
    result = run(spec, executor="processes")
    assert result.succeeded, result.cause
    assert (markers / "died-13").exists()  # the process really was SIGKILLed mid-batch
    frame = load_results(result.manifest_url)
    assert list(frame["index"]) == list(range(40)) and (frame["status"] == "SUCCEEDED").all()


def test_a_killed_worker_process_without_retry_is_a_clear_failure(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    items = [{"n": n, "die": n == 2} for n in range(10)]
    source = write_jsonl(str(tmp_path / "items.jsonl"), items)
    spec = spec_for(
        source,
        str(tmp_path / "out"),
        f"{W}:die_once",
        ItemBatcher={"MaxItemsPerBatch": 5, "BatchInput": {"dir": str(markers)}},
        ToleratedFailureCount=5,
    )
    result = run(spec, executor="processes")
    assert result.succeeded and result.item_counts.failed == 5
    failed = result_records(result.manifest_url, "FAILED")
    assert failed[0]["Error"] == "WorkerProcessDied" and "SIGKILL" in failed[0]["Cause"]


def test_reduce_runs_once_over_every_succeeded_output(tmp_path: Path) -> None:
    source = write_jsonl(str(tmp_path / "items.jsonl"), [{"n": n} for n in range(250)])
    spec = spec_for(source, str(tmp_path / "out"), f"{W}:fail_marked",
                    Reduce=f"{W}:total_of_outputs",
                    ItemBatcher={"MaxItemsPerBatch": 40, "BatchInput": {"k": 1}})  # fmt: skip
    result = run(spec, executor="threads")
    assert result.succeeded and result.reduce is not None and result.reduce.succeeded
    dest = str(tmp_path / "out")
    expected = {"sum": sum(range(250)), "count": 250, "dest": dest, "batch_input": {"k": 1}}
    assert result.reduce.output == expected


def test_reduce_is_skipped_for_a_failed_run_and_its_failure_fails_the_result(
    tmp_path: Path,
) -> None:
    items = [{"n": n, "fail": n == 3} for n in range(20)]
    source = write_jsonl(str(tmp_path / "items.jsonl"), items)
    batcher = {"MaxItemsPerBatch": 4}
    failed = run(spec_for(source, str(tmp_path / "a"), f"{W}:fail_marked", ItemBatcher=batcher,
                          Reduce=f"{W}:total_of_outputs"), executor="inline")  # fmt: skip
    assert failed.status == RunStatus.FAILED and failed.reduce is None
    clean = write_jsonl(str(tmp_path / "clean.jsonl"), [{"n": n} for n in range(5)])
    broken = run(spec_for(clean, str(tmp_path / "b"), f"{W}:fail_marked", ItemBatcher=batcher,
                          Reduce=f"{W}:failing_reducer"), executor="inline")  # fmt: skip
    assert broken.status == RunStatus.SUCCEEDED and not broken.succeeded
    assert broken.reduce is not None and broken.reduce.error == "RuntimeError"
    assert broken.run_id in (broken.reduce.cause or "")


def test_batch_input_reads_the_run_context(tmp_path: Path) -> None:
    source = write_jsonl(str(tmp_path / "items.jsonl"), [{"n": n} for n in range(3)])
    spec = spec_for(source, str(tmp_path / "ignored"), f"{W}:where_to_write", ItemBatcher={
        "MaxItemsPerBatch": 10,
        "BatchInput": {"to.$": "$$.Shardmap.Destination", "from.$": "$$.Shardmap.Source",
                       "run.$": "$$.Execution.Name", "size.$": "$.size",
                       "started.$": "$$.Execution.StartTime"},
    })  # fmt: skip
    dest = str(tmp_path / "moved")
    before = datetime.now(UTC).replace(microsecond=0)  # StartTime has milliseconds
    result = run(spec, dest=dest, run_input={"size": 64}, run_id="r-1", executor="inline")
    assert result.succeeded
    told = load_results(result.manifest_url)["output"][0]
    started = told.pop("started")
    assert told == {"to": dest, "from": source, "run": "r-1", "size": 64}
    assert started.endswith("Z") and before <= datetime.fromisoformat(started) <= datetime.now(UTC)
    with pytest.raises(SpecError, match="BatchInput"):
        run(spec, dest=dest, run_input={}, executor="inline")
