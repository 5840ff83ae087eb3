"""ResultWriter and the results loader: AWS's layout written, and read back (ours and AWS's)."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fsspec
import pandas as pd
import pytest

from runner.errors import InputNotFound, ReaderError, SpecError, WriterError
from runner.results import (
    ResultWriter,
    child_name,
    iter_result_records,
    load_results,
    parse_child_name,
)
from runner.types import BatchStatus, ChildRecord

RUN_ID = "4be1c5d2-7a9f-3e10-b6c8-0d2f4a6b8c1e"
ACCOUNT = "arn:aws:states:us-east-1:123456789012"
RUN_ARN = f"{ACCOUNT}:mapRun:thumbnails/Resize:{RUN_ID}"
SM_ARN = f"{ACCOUNT}:stateMachine:thumbnails/Resize"
BATCH_INPUT = {"size": 128}
T0 = datetime(2025, 2, 4, 1, 49, 50, 99000, tzinfo=UTC)
AWS_DATE = re.compile(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")
FIXTURE_RUN = "6f3c2b1a-8d4e-3f5a-9b7c-2e1d0a9f8b7c"
FIXTURE_DIR = Path(__file__).parent / "fixtures" / "aws_results" / FIXTURE_RUN


def item(i: int) -> dict:
    return {"key": f"images/{i:03d}.jpg", "bytes": 1000 + i}


def record(
    batch: int,
    first: int,
    count: int,
    status: BatchStatus = BatchStatus.SUCCEEDED,
    output: object = "per-item",
    **kw: object,
) -> ChildRecord:
    """A batched child over items first..first+count-1; by default returns one output per item."""
    name = child_name(RUN_ID, batch, first, count)
    items = [item(i) for i in range(first, first + count)]
    if output == "per-item":
        output = [{"thumb": f"thumbs/{i:03d}.jpg"} for i in range(first, first + count)]
    started = status is not BatchStatus.PENDING
    fields: dict = dict(
        name=name,
        execution_arn=f"{ACCOUNT}:execution:thumbnails/Resize:{name}",
        state_machine_arn=SM_ARN,
        status=status,
        input={"BatchInput": BATCH_INPUT, "Items": items},
        first_index=first,
        item_count=count,
        output=output if status is BatchStatus.SUCCEEDED else None,
        start_date=T0 + timedelta(seconds=batch) if started else None,
        stop_date=T0 + timedelta(seconds=batch, milliseconds=64) if started else None,
    )
    fields.update(kw)
    return ChildRecord(**fields)


def mixed_run() -> list[ChildRecord]:
    """14 items in 6 batches, written out of order: successes, every kind of failure, pending."""
    return [
        record(1, 3, 3),
        record(0, 0, 3),
        record(2, 6, 2, BatchStatus.FAILED, error="Images.Corrupt", cause="not a JPEG"),
        record(3, 8, 2, BatchStatus.TIMED_OUT, error="States.Timeout", cause="60 s"),
        record(4, 10, 2, output={"resized": 2}),  # one output for the whole batch
        record(5, 12, 1, BatchStatus.ABORTED, error="States.Runtime", cause="run failed"),
        record(6, 13, 1, BatchStatus.PENDING),
    ]


def write_all(dest: str, records: list[ChildRecord], **kw: object):
    with ResultWriter(dest, RUN_ID, RUN_ARN, **kw) as writer:
        for rec in records:
            writer.write(rec)
        return writer.close()


def manifest_of(details) -> dict:
    with fsspec.open(details.manifest_url, "rb") as fh:
        return json.load(fh)


def result_url(details, key: str) -> str:
    return details.manifest_url.rsplit("/", 1)[0] + "/" + key.rsplit("/", 1)[-1]


def read_json_file(url: str) -> list:
    with fsspec.open(url, "rt") as fh:
        return json.load(fh)


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("output_type", ["JSON", "JSONL"])
@pytest.mark.parametrize("transformation", ["NONE", "COMPACT", "FLATTEN"])
def test_round_trip(storage, transformation, output_type):
    details = write_all(
        f"{storage}/jobs", mixed_run(), transformation=transformation, output_type=output_type
    )
    df = load_results(details.manifest_url)

    # failed and pending children are always full records, so their items are always known
    unsuccessful = df[df.status != "SUCCEEDED"]
    assert unsuccessful["index"].tolist() == [6, 7, 8, 9, 12, 13]
    assert unsuccessful.item.tolist() == [item(i) for i in (6, 7, 8, 9, 12, 13)]
    assert unsuccessful.status.tolist() == ["FAILED"] * 2 + ["TIMED_OUT"] * 2 + [
        "ABORTED",
        "PENDING",
    ]
    assert unsuccessful.error.tolist()[:2] == ["Images.Corrupt"] * 2
    assert unsuccessful.output.isna().all()

    succeeded = df[df.status == "SUCCEEDED"]
    if transformation == "NONE":
        assert df["index"].tolist() == list(range(14))
        assert succeeded.item.tolist() == [item(i) for i in (0, 1, 2, 3, 4, 5, 10, 11)]
        assert succeeded.output.tolist()[:6] == [{"thumb": f"thumbs/{i:03d}.jpg"} for i in range(6)]
        assert succeeded.output.tolist()[6:] == [{"resized": 2}] * 2
        assert (succeeded.batch_input.tolist()) == [BATCH_INPUT] * 8
        assert succeeded.execution.tolist()[0] == child_name(RUN_ID, 0, 0, 3)
    else:
        assert succeeded["index"].isna().all() and succeeded.item.isna().all()
        assert len(df) == 6 + len(succeeded)  # successes come after the known indices
        outputs = succeeded.output.tolist()
        per_item = [[{"thumb": f"thumbs/{i:03d}.jpg"} for i in range(a, a + 3)] for a in (3, 0)]
        if transformation == "COMPACT":
            assert outputs == [*per_item, {"resized": 2}]
        else:
            assert outputs == [*per_item[0], *per_item[1], {"resized": 2}]


def test_round_trip_keeps_dates_and_names(tmp_path):
    details = write_all(str(tmp_path), mixed_run())
    df = load_results(details.manifest_url)
    first = df.iloc[0]
    assert first.start_date == pd.Timestamp("2025-02-04T01:49:50.099Z")
    assert first.stop_date == pd.Timestamp("2025-02-04T01:49:50.163Z")
    assert pd.isna(df.iloc[-1].start_date)  # pending: never started
    assert str(df["index"].dtype) == "Int64"


def test_unbatched_children_are_one_item_each(tmp_path):
    records = [
        ChildRecord(
            name=child_name(RUN_ID, i, i, 1),
            execution_arn=f"{ACCOUNT}:execution:thumbnails/Resize:c{i}",
            state_machine_arn=SM_ARN,
            status=BatchStatus.SUCCEEDED,
            input=item(i),
            first_index=i,
            item_count=1,
            output=[i, i],  # a list output of an unbatched child is its whole output
        )
        for i in (2, 0, 1)
    ]
    df = load_results(write_all(str(tmp_path), records).manifest_url)
    assert df["index"].tolist() == [0, 1, 2]
    assert df.item.tolist() == [item(0), item(1), item(2)]
    assert df.output.tolist() == [[0, 0], [1, 1], [2, 2]]
    assert df.batch_input.tolist() == [None, None, None]


# -- the file format -----------------------------------------------------------------------


def test_records_hold_input_and_output_as_json_strings(tmp_path):
    rec = record(0, 0, 2)
    details = write_all(str(tmp_path), [rec])
    (written,) = read_json_file(result_url(details, "SUCCEEDED_0.json"))
    assert isinstance(written["Input"], str) and isinstance(written["Output"], str)
    assert json.loads(written["Input"]) == rec.input
    assert json.loads(written["Output"]) == rec.output
    assert written["InputDetails"] == {"Included": True} == written["OutputDetails"]
    assert written["Name"] == rec.name and written["ExecutionArn"] == rec.execution_arn
    assert written["StateMachineArn"] == SM_ARN and written["Status"] == "SUCCEEDED"
    assert written["RedriveCount"] == 0 and written["RedriveStatus"] == "NOT_REDRIVABLE"
    assert written["StartDate"] == "2025-02-04T01:49:50.099Z"
    assert AWS_DATE.match(written["StopDate"])
    assert list(written) == sorted(written)  # AWS writes record keys alphabetically
    assert "Error" not in written and "Cause" not in written


def test_failed_records_carry_error_and_cause(tmp_path):
    details = write_all(str(tmp_path), mixed_run())
    failed = read_json_file(result_url(details, "FAILED_0.json"))
    assert [r["Status"] for r in failed] == ["FAILED", "TIMED_OUT", "ABORTED"]
    assert [(r["Error"], r["Cause"]) for r in failed] == [
        ("Images.Corrupt", "not a JPEG"),
        ("States.Timeout", "60 s"),
        ("States.Runtime", "run failed"),
    ]
    for rec in failed:
        assert "Output" not in rec
        assert json.loads(rec["Input"])["Items"]  # failed records keep their input
        # ChildRecord's success defaults must not leak into a failed record
        assert rec["RedriveStatus"] == "REDRIVABLE_BY_MAP_RUN"
        assert "RedriveStatusReason" not in rec


def test_failed_records_stay_none_under_compact(tmp_path):
    details = write_all(str(tmp_path), mixed_run(), transformation="COMPACT")
    succeeded = read_json_file(result_url(details, "SUCCEEDED_0.json"))
    failed = read_json_file(result_url(details, "FAILED_0.json"))
    assert {"resized": 2} in succeeded and all("Status" not in v for v in succeeded)
    assert [r["Error"] for r in failed] == ["Images.Corrupt", "States.Timeout", "States.Runtime"]


def test_pending_records(tmp_path):
    details = write_all(str(tmp_path), mixed_run())
    (pending,) = read_json_file(result_url(details, "PENDING_0.json"))
    assert pending["Status"] == "PENDING"
    assert pending["Name"] == child_name(RUN_ID, 6, 13, 1)
    assert json.loads(pending["Input"]) == {"BatchInput": BATCH_INPUT, "Items": [item(13)]}
    for absent in ("StartDate", "StopDate", "Output", "OutputDetails", "Error"):
        assert absent not in pending


def test_jsonl_files_hold_one_value_per_line(tmp_path):
    details = write_all(str(tmp_path), mixed_run(), output_type="JSONL")
    files = manifest_of(details)["ResultFiles"]
    assert [f["Key"].rsplit("/", 1)[-1] for f in files["SUCCEEDED"]] == ["SUCCEEDED_0.jsonl"]
    with fsspec.open(result_url(details, "SUCCEEDED_0.jsonl"), "rt") as fh:
        lines = fh.read().splitlines()
    assert len(lines) == 3
    assert [json.loads(line)["Status"] for line in lines] == ["SUCCEEDED"] * 3


def test_flatten_skips_empty_outputs_and_creates_no_empty_file(tmp_path):
    details = write_all(str(tmp_path), [record(0, 0, 2, output=[])], transformation="FLATTEN")
    assert manifest_of(details)["ResultFiles"] == {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
    assert not (tmp_path / RUN_ID / "SUCCEEDED_0.json").exists()


# -- the manifest --------------------------------------------------------------------------


def test_manifest_lists_only_non_empty_files_with_sizes(storage):
    details = write_all(f"{storage}/jobs", [record(0, 0, 3), record(1, 3, 3)])
    manifest = manifest_of(details)
    assert manifest["MapRunArn"] == RUN_ARN
    assert manifest["ResultFiles"]["FAILED"] == [] == manifest["ResultFiles"]["PENDING"]
    (entry,) = manifest["ResultFiles"]["SUCCEEDED"]
    fs, path = fsspec.core.url_to_fs(result_url(details, entry["Key"]))
    assert entry["Size"] == fs.size(path)
    assert sorted(fs.ls(path.rsplit("/", 1)[0], detail=False)) == sorted(
        [path, path.replace("SUCCEEDED_0.json", "manifest.json")]
    )
    if storage.startswith("s3://"):
        bucket = storage.removeprefix("s3://")
        assert manifest["DestinationBucket"] == bucket == details.bucket
        assert entry["Key"] == f"jobs/{RUN_ID}/SUCCEEDED_0.json"
        assert details.key == f"jobs/{RUN_ID}/manifest.json"
    else:
        assert manifest["DestinationBucket"] == f"{storage}/jobs" == details.bucket
        assert entry["Key"] == f"{RUN_ID}/SUCCEEDED_0.json"


def test_map_state_output_has_aws_shape(s3_server, bucket):
    details = write_all(f"s3://{bucket}/csvJobs", [record(0, 0, 1)])
    assert details.map_state_output(RUN_ARN) == {
        "MapRunArn": RUN_ARN,
        "ResultWriterDetails": {"Bucket": bucket, "Key": f"csvJobs/{RUN_ID}/manifest.json"},
    }
    assert details.map_state_output() == details.map_state_output(RUN_ARN)
    assert details.manifest_url == f"s3://{bucket}/csvJobs/{RUN_ID}/manifest.json"


class _SpyFile:
    """Delegates to a real file and logs when it is closed, however it is closed."""

    def __init__(self, handle, name: str, log: list) -> None:
        self._handle, self._name, self._log = handle, name, log

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if not self._handle.closed:
            self._log.append(("close", self._name))
        self._handle.close()


class _SpyFS:
    """Wraps a filesystem to log the order in which files are opened and closed."""

    def __init__(self, fs, log: list) -> None:
        self._fs, self._log = fs, log

    def __getattr__(self, name):
        return getattr(self._fs, name)

    def open(self, path, mode="rb", **kw):
        name = path.rsplit("/", 1)[-1]
        self._log.append(("open", name))
        return _SpyFile(self._fs.open(path, mode, **kw), name, self._log)


def test_manifest_is_written_last(tmp_path):
    log: list = []
    writer = ResultWriter(str(tmp_path), RUN_ID, RUN_ARN)
    writer._fs = _SpyFS(writer._fs, log)
    for rec in mixed_run():
        writer.write(rec)
    assert not (tmp_path / RUN_ID / "manifest.json").exists()
    writer.close()
    assert log[-2:] == [("open", "manifest.json"), ("close", "manifest.json")]
    closed = [name for event, name in log if event == "close"]
    assert sorted(closed[:-1]) == ["FAILED_0.json", "PENDING_0.json", "SUCCEEDED_0.json"]


def test_no_manifest_when_the_with_block_fails(tmp_path):
    with pytest.raises(RuntimeError), ResultWriter(str(tmp_path), RUN_ID, RUN_ARN) as writer:
        writer.write(record(0, 0, 1))
        raise RuntimeError("engine crashed")
    assert not (tmp_path / RUN_ID / "manifest.json").exists()


def test_close_is_idempotent_and_ends_writing(tmp_path):
    writer = ResultWriter(str(tmp_path), RUN_ID, RUN_ARN)
    writer.write(record(0, 0, 1))
    assert writer.close() is writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(record(1, 1, 1))


# -- rollover ------------------------------------------------------------------------------


@pytest.mark.parametrize("output_type", ["JSON", "JSONL"])
def test_rollover_splits_files_and_lists_them_all(storage, output_type):
    records = [record(b, b * 2, 2) for b in range(12)]
    details = write_all(f"{storage}/roll", records, output_type=output_type, rollover_bytes=2500)
    entries = manifest_of(details)["ResultFiles"]["SUCCEEDED"]
    suffix = ".jsonl" if output_type == "JSONL" else ".json"
    names = [e["Key"].rsplit("/", 1)[-1] for e in entries]
    assert len(names) >= 3
    assert names == [f"SUCCEEDED_{n}{suffix}" for n in range(len(names))]
    total = 0
    for entry in entries:
        fs, path = fsspec.core.url_to_fs(result_url(details, entry["Key"]))
        assert entry["Size"] == fs.size(path)
        values = list(iter_result_records_of_file(fs, path, output_type))
        assert entry["Size"] <= 2500 or len(values) == 1
        total += len(values)
    assert total == 12
    df = load_results(details.manifest_url)
    assert df["index"].tolist() == list(range(24))


def iter_result_records_of_file(fs, path: str, output_type: str) -> list:
    text = fs.cat_file(path).decode()
    if output_type == "JSON":
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines()]


def test_a_value_larger_than_rollover_gets_its_own_file(tmp_path):
    details = write_all(str(tmp_path), [record(0, 0, 3), record(1, 3, 3)], rollover_bytes=10)
    entries = manifest_of(details)["ResultFiles"]["SUCCEEDED"]
    assert [e["Key"] for e in entries] == [
        f"{RUN_ID}/SUCCEEDED_0.json",
        f"{RUN_ID}/SUCCEEDED_1.json",
    ]


# -- AWS-written results -------------------------------------------------------------------


def check_aws_fixture(df: pd.DataFrame) -> None:
    batch_input = {"runDate": "2025-02-04", "source": "s3://amzn-s3-demo-source-bucket/orders.csv"}
    assert df["index"].isna().all()  # UUID child names carry no item indices
    assert [i["order_id"] for i in df.item] == [
        "100000", "100001", "100002", "100005", "100006", "100003", "100004",
    ]  # fmt: skip
    assert df.batch_input.tolist() == [batch_input] * 7
    assert df.status.tolist() == ["SUCCEEDED"] * 5 + ["FAILED"] * 2
    # a list as long as the batch maps item by item; anything else belongs to every item
    assert df.output.tolist()[:3] == [
        {"order_id": "100000", "total": 12.5},
        {"order_id": "100001", "total": 7.25},
        {"order_id": "100002", "total": 30.0},
    ]
    assert df.output.tolist()[3:5] == [{"orders": 2, "status": "ok"}] * 2
    assert df.output.tolist()[5:] == [None, None]
    assert df.error.tolist()[5:] == ["Lambda.Unknown"] * 2
    assert df.cause.iloc[5].startswith("The cause could not be determined")
    assert df.error.iloc[:5].isna().all()
    assert df.execution.tolist()[0] == "da4e9fc7-abab-3b27-9a77-a277e463b709"
    assert df.execution.tolist()[5] == "0b5e7c21-4f7a-3d1e-8c2b-5a6f7e8d9c0b"
    assert df.start_date.iloc[0] == pd.Timestamp("2025-02-04T01:49:50.099Z")
    assert df.stop_date.iloc[6] == pd.Timestamp("2025-02-04T01:50:51.157Z")


def test_aws_fixture_sizes_match_its_manifest():
    manifest = json.loads((FIXTURE_DIR / "manifest.json").read_text())
    for entries in manifest["ResultFiles"].values():
        for entry in entries:
            name = entry["Key"].rsplit("/", 1)[-1]
            assert (FIXTURE_DIR / name).stat().st_size == entry["Size"]


def test_load_aws_fixture_from_a_local_copy(tmp_path):
    copy = tmp_path / "downloaded" / FIXTURE_RUN
    shutil.copytree(FIXTURE_DIR, copy)
    check_aws_fixture(load_results(str(copy / "manifest.json")))


def test_load_aws_fixture_from_s3(s3_client, bucket):
    prefix = f"orderJobs/{FIXTURE_RUN}"
    for path in FIXTURE_DIR.iterdir():
        s3_client.put_object(Bucket=bucket, Key=f"{prefix}/{path.name}", Body=path.read_bytes())
    # the manifest names another bucket: files are found next to it, not by its Keys
    check_aws_fixture(load_results(f"s3://{bucket}/{prefix}/manifest.json"))


def test_iter_result_records_yields_raw_records_with_their_type():
    pairs = list(iter_result_records(str(FIXTURE_DIR / "manifest.json")))
    assert [kind for kind, _ in pairs] == ["SUCCEEDED", "SUCCEEDED", "FAILED"]
    assert all(isinstance(rec["Input"], str) for _, rec in pairs)


def test_jsonl_stored_under_a_json_name_is_detected(tmp_path):
    # AWS documents only *.json names; JSON Lines content must load whatever the name
    details = write_all(str(tmp_path / "src"), mixed_run(), output_type="JSONL")
    run_dir = tmp_path / "src" / RUN_ID
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for entries in manifest["ResultFiles"].values():
        for entry in entries:
            old = run_dir / entry["Key"].rsplit("/", 1)[-1]
            old.rename(old.with_suffix(".json"))
            entry["Key"] = entry["Key"].removesuffix("l")
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    df = load_results(details.manifest_url)
    assert df["index"].tolist() == list(range(14))


def test_compact_jsonl_of_array_outputs_under_a_json_name(tmp_path):
    lines = "[1,2]\n[3]\n"
    (tmp_path / "SUCCEEDED_0.json").write_text(lines)
    manifest = {
        "DestinationBucket": "b",
        "MapRunArn": RUN_ARN,
        "ResultFiles": {"SUCCEEDED": [{"Key": "p/SUCCEEDED_0.json", "Size": len(lines)}]},
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    df = load_results(str(tmp_path / "manifest.json"))
    assert df.output.tolist() == [[1, 2], [3]]


def test_input_not_included_still_yields_indexed_rows(tmp_path):
    rec = {
        "ExecutionArn": f"{ACCOUNT}:execution:thumbnails/Resize:x",
        "Input": "",
        "InputDetails": {"Included": False},
        "Name": child_name(RUN_ID, 0, 40, 2),
        "Output": "",
        "OutputDetails": {"Included": False},
        "StateMachineArn": SM_ARN,
        "Status": "SUCCEEDED",
    }
    (tmp_path / "SUCCEEDED_0.json").write_text(json.dumps([rec]))
    manifest = {"ResultFiles": {"SUCCEEDED": [{"Key": "SUCCEEDED_0.json", "Size": 1}]}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    df = load_results(str(tmp_path / "manifest.json"))
    assert df["index"].tolist() == [40, 41]
    assert df.item.isna().all() and df.output.tolist() == [None, None]


# -- child names ---------------------------------------------------------------------------


def test_child_names_round_trip_and_fit_aws_limits():
    name = child_name(RUN_ID, 123456, 99_999_900, 100)
    assert len(name) <= 80 and re.fullmatch(r"[A-Za-z0-9_-]+", name)
    assert parse_child_name(name) == (99_999_900, 100)
    assert parse_child_name(child_name("arn:x/y z", 0, 0, 1)) == (0, 1)
    assert parse_child_name("da4e9fc7-abab-3b27-9a77-a277e463b709") is None
    assert parse_child_name(None) is None
    with pytest.raises(ValueError):
        child_name(RUN_ID, 0, -1, 1)


# -- errors --------------------------------------------------------------------------------


def test_storage_failure_is_a_writer_error_naming_the_url(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    writer = ResultWriter(str(blocker), RUN_ID, RUN_ARN)
    with pytest.raises(WriterError, match=re.escape(f"{blocker}/{RUN_ID}/SUCCEEDED_0.json")) as e:
        writer.write(record(0, 0, 1))
    assert isinstance(e.value.__cause__, OSError)
    assert e.value.error_name == "States.ResultWriterFailed"


def test_non_json_output_is_a_writer_error_naming_the_child(tmp_path):
    writer = ResultWriter(str(tmp_path), RUN_ID, RUN_ARN)
    rec = record(0, 0, 1, output=float("nan"))
    with pytest.raises(WriterError, match=rec.name):
        writer.write(rec)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"transformation": "SQUASH"}, SpecError),
        ({"output_type": "CSV"}, SpecError),
        ({"rollover_bytes": 0}, ValueError),
    ],
)
def test_bad_writer_config_is_rejected(tmp_path, kwargs, error):
    with pytest.raises(error):
        ResultWriter(str(tmp_path), RUN_ID, RUN_ARN, **kwargs)


@pytest.mark.parametrize("run_id", ["..", "a/b", ""])
def test_map_run_id_cannot_escape_the_destination(tmp_path, run_id):
    with pytest.raises(ValueError):
        ResultWriter(str(tmp_path), run_id, RUN_ARN)


def test_running_children_are_refused(tmp_path):
    writer = ResultWriter(str(tmp_path), RUN_ID, RUN_ARN)
    with pytest.raises(ValueError, match="RUNNING"):
        writer.write(record(0, 0, 1, BatchStatus.RUNNING))


def test_missing_manifest_is_input_not_found(tmp_path):
    with pytest.raises(InputNotFound):
        load_results(str(tmp_path / "manifest.json"))


def test_corrupt_result_file_is_a_reader_error(tmp_path):
    (tmp_path / "SUCCEEDED_0.jsonl").write_text('{"a": 1}\n{"b": \n')
    manifest = {"ResultFiles": {"SUCCEEDED": [{"Key": "SUCCEEDED_0.jsonl", "Size": 1}]}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ReaderError, match="line 2"):
        load_results(str(tmp_path / "manifest.json"))
