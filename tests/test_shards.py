"""Shard-parallel reading gives exactly what driver-side reading gives.

These run the shard-reading path on local executors (``shard_reading=True``), where it is quick
to test every edge; tests/test_dask.py runs it on a real LocalCluster.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runner import MapSpec, load_results, run
from runner.engine import infer_item_reader, redrive
from runner.shards import why_not_sharded
from tests.comparing import comparable

W = "tests.workers_for_tests"


def tricky_csv(path: Path, rows: int) -> str:
    """Quoted delimiters, quoted newlines (LF and CRLF), doubled quotes and blank lines."""
    lines = ['id,text,"note, quoted"\r\n']
    for n in range(rows):
        text = {0: f"plain {n}", 1: f'"has\nnewline {n}"', 2: f'"say ""hi"" {n}"',
                3: f'"comma, {n}"', 4: f'"crlf\r\ninside {n}"'}[n % 5]  # fmt: skip
        lines.append(f"{n},{text},x{n}\r\n")
        if n % 7 == 3:
            lines.append("\r\n")  # a blank line: not an item
    path.write_bytes("".join(lines).encode())
    return str(path)


def write_jsonl(path: Path, items: list[Any]) -> str:
    path.write_text("".join(json.dumps(item) + ("\n\n" if i % 9 == 4 else "\n")
                            for i, item in enumerate(items)))  # fmt: skip
    return str(path)


def write_parquet(path: Path, rows: int, group: int) -> str:
    table = pa.table({"n": list(range(rows)), "name": [f"row-{n}" for n in range(rows)]})
    pq.write_table(table, path, row_group_size=group)
    return str(path)


def both_ways(spec: MapSpec, tmp_path: Path, executor: str = "inline") -> tuple[Any, Any]:
    driver = run(spec, dest=str(tmp_path / "driver"), executor=executor, shard_reading=False)
    shards = run(spec, dest=str(tmp_path / "shards"), executor=executor, shard_reading=True)
    return driver, shards


def assert_same(driver: Any, shards: Any) -> None:
    assert shards.shard_reading and not driver.shard_reading
    assert shards.status == driver.status
    assert shards.item_counts == driver.item_counts
    assert shards.execution_counts == driver.execution_counts
    assert comparable(shards.manifest_url) == comparable(driver.manifest_url)


@pytest.fixture
def tiny_shards(monkeypatch):
    """Ranges of a few dozen bytes, so every boundary case lands on a shard edge."""
    monkeypatch.setenv("SHARDMAP_SHARD_BYTES", "37")


@pytest.mark.parametrize("batch", [None, 1, 4, 25])
def test_csv_with_quoted_newlines_in_tiny_shards(tmp_path, tiny_shards, batch) -> None:
    source = tricky_csv(tmp_path / "rows.csv", 61)
    data: dict[str, Any] = {"Worker": "echo", "Source": source}
    if batch:
        data["ItemBatcher"] = {"MaxItemsPerBatch": batch, "BatchInput": {"b": batch}}
    driver, shards = both_ways(MapSpec.from_dict(data), tmp_path)
    assert driver.item_counts.total == 61
    assert_same(driver, shards)


def test_jsonl_with_selector_max_items_and_failures(tmp_path, tiny_shards) -> None:
    items = [{"n": n, "fail": n % 13 == 5, "v": {"w": n * 2}} for n in range(90)]
    spec = MapSpec.from_dict({
        "Worker": f"{W}:fail_marked", "Source": write_jsonl(tmp_path / "items.jsonl", items),
        "ItemReader": {"ReaderConfig": {"InputType": "JSONL", "MaxItems": 77}},
        "ItemSelector": {"i.$": "$$.Map.Item.Index", "n.$": "$$.Map.Item.Value.n",
                         "fail.$": "$$.Map.Item.Value.fail", "src.$": "$$.Map.Item.Source"},
        "ItemBatcher": {"MaxItemsPerBatch": 6}, "ToleratedFailurePercentage": 50,
    })  # fmt: skip
    driver, shards = both_ways(spec, tmp_path, executor="threads")
    assert driver.item_counts.total == 77 and driver.item_counts.failed > 0
    assert_same(driver, shards)
    frame = load_results(shards.manifest_url)
    assert [item["i"] for item in frame["item"]] == list(range(77))  # exact global indices


def test_parquet_row_groups_batches_spanning_groups(tmp_path) -> None:
    spec = MapSpec.from_dict({
        "Worker": "echo", "Source": write_parquet(tmp_path / "t.parquet", 53, group=7),
        "ItemSelector": {"i.$": "$$.Map.Item.Index", "name.$": "$$.Map.Item.Value.name"},
        "ItemBatcher": {"MaxItemsPerBatch": 5},
    })  # fmt: skip
    driver, shards = both_ways(spec, tmp_path)
    assert driver.item_counts.total == 53
    assert_same(driver, shards)


def test_listing_pages_batches_spanning_pages(tmp_path, monkeypatch) -> None:
    from runner.readers.listing import ListingReader

    monkeypatch.setattr(ListingReader, "page_size", 7)  # 45 files: 7 pages, batches span them
    folder = tmp_path / "objects"
    for n in range(45):
        sub = folder / f"d{n % 4}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{n:03d}.bin").write_bytes(bytes([n]) * n)
    spec = MapSpec.from_dict({
        "Worker": "echo", "Source": str(folder),
        "ItemReader": {"Resource": "arn:aws:states:::s3:listObjectsV2",
                       "ReaderConfig": {"MaxItems": 40}},
        "ItemSelector": {"i.$": "$$.Map.Item.Index", "key.$": "$$.Map.Item.Value.Key",
                         "etag.$": "$$.Map.Item.Value.Etag", "size.$": "$$.Map.Item.Value.Size"},
        "ItemBatcher": {"MaxItemsPerBatch": 3},
    })  # fmt: skip
    driver, shards = both_ways(spec, tmp_path, executor="threads")
    assert driver.item_counts.total == 40
    assert_same(driver, shards)
    frame = load_results(shards.manifest_url)
    assert [item["i"] for item in frame["item"]] == list(range(40))


def test_selector_that_selects_nothing_fails_the_same_batch(tmp_path, tiny_shards) -> None:
    items = [{"n": n, "x": n} if n != 8 else {"n": n} for n in range(20)]
    spec = MapSpec.from_dict({
        "Worker": "echo", "Source": write_jsonl(tmp_path / "items.jsonl", items),
        "ItemSelector": {"x.$": "$$.Map.Item.Value.x"}, "ItemBatcher": {"MaxItemsPerBatch": 3},
        "ToleratedFailureCount": 3,
    })  # fmt: skip
    driver, shards = both_ways(spec, tmp_path)
    assert driver.succeeded and driver.item_counts.failed == 3
    assert_same(driver, shards)


def test_malformed_csv_fails_the_run_at_the_same_line(tmp_path, tiny_shards) -> None:
    path = tmp_path / "bad.csv"
    good = "".join(f'{n},"ok {n}"\n' for n in range(30))
    path.write_text("n,t\n" + good + '31,"closed" then text\n' + good)
    spec = MapSpec.from_dict({"Worker": "echo", "Source": str(path),
                              "ItemBatcher": {"MaxItemsPerBatch": 4}})  # fmt: skip
    driver, shards = both_ways(spec, tmp_path)
    assert driver.error == shards.error == "States.ItemReaderFailed"
    assert "line 32" in driver.cause
    assert shards.cause == driver.cause


def test_fail_fast_pending_records_carry_their_inputs(tmp_path, tiny_shards) -> None:
    items = [{"n": n, "fail": n == 2} for n in range(40)]
    spec = MapSpec.from_dict({
        "Worker": f"{W}:fail_marked", "Source": write_jsonl(tmp_path / "items.jsonl", items),
        "ItemBatcher": {"MaxItemsPerBatch": 2}, "MaxConcurrency": 1,
    })  # fmt: skip
    driver, shards = both_ways(spec, tmp_path)
    assert shards.status.value == "FAILED" and shards.item_counts.pending > 0
    assert_same(driver, shards)


@pytest.fixture
def threads_read_shards(monkeypatch):
    """Make the local executor read shards, as Dask does, so resume/redrive pick it by default."""
    from runner.executors.local import LocalExecutor

    monkeypatch.setattr(LocalExecutor, "reads_shards", True, raising=False)


def failed_run(tmp_path: Path) -> tuple[Any, Path, Path]:
    source, fixed = tmp_path / "items.jsonl", tmp_path / "fixed"
    write_jsonl(source, [{"n": n, "fail": n == 11} for n in range(30)])
    spec = MapSpec.from_dict({"Worker": f"{W}:fixable", "Source": str(source),
                              "ItemBatcher": {"MaxItemsPerBatch": 5,
                                              "BatchInput": {"fixed": str(fixed)}}})  # fmt: skip
    first = run(spec, dest=str(tmp_path / "out"), executor="threads")
    assert first.status.value == "FAILED" and first.item_counts.failed == 5
    return first, source, fixed


def test_redrive_reads_shards_on_the_workers_too(tmp_path, tiny_shards, threads_read_shards):
    first, _, fixed = failed_run(tmp_path)
    fixed.touch()
    again = redrive(first.run_id, executor="threads")
    assert again.succeeded, (again.error, again.cause)
    frame = load_results(again.manifest_url)
    assert list(frame["index"]) == list(range(30)) and set(frame["status"]) == {"SUCCEEDED"}


def test_redrive_of_a_changed_source_is_refused(tmp_path, tiny_shards, threads_read_shards):
    first, source, fixed = failed_run(tmp_path)
    fixed.touch()
    write_jsonl(source, [{"n": n + 100, "fail": False} for n in range(30)])
    again = redrive(first.run_id, executor="threads")
    assert again.status.value == "FAILED" and "source changed" in (again.cause or "")


def test_what_stays_on_the_driver_and_why(tmp_path, caplog) -> None:
    def spec(**data: Any) -> MapSpec:
        if "Source" in data:  # as run() does
            data["ItemReader"] = infer_item_reader(data["Source"])
        return MapSpec.from_dict({"Worker": "echo", **data})

    assert why_not_sharded(spec(Source="x.jsonl")) is None
    assert why_not_sharded(spec(Source="x.parquet")) is None
    assert why_not_sharded(spec(Source="s3://bucket/prefix/")) is None
    assert "read on the driver" in (why_not_sharded(spec(Source="x.json")) or "")
    assert "run input" in (why_not_sharded(spec(ItemsPath="$.items")) or "")
    limited = spec(Source="x.csv", ItemBatcher={"MaxInputBytesPerBatch": 1000})
    assert "MaxInputBytesPerBatch" in (why_not_sharded(limited) or "")
    import gzip

    path = tmp_path / "items.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"n": 1}\n{"n": 2}\n'))
    with caplog.at_level(logging.INFO, logger="shardmap"):
        result = run(spec(Source=str(path)), dest=str(tmp_path / "o"), executor="inline",
                     shard_reading=True)  # fmt: skip
    assert result.succeeded and result.item_counts.total == 2
    assert "compressed files cannot be split" in caplog.text
