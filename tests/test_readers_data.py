"""The listing, Parquet and manifest readers, on a local folder and on a real S3 server."""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import gzip
import hashlib
import io
import json
import os
import pickle
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import botocore.config
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runner.errors import InputNotFound, ReaderError, SpecError
from runner.readers.base import ReaderConfig, get_reader
from tests.s3server import ACCESS_KEY, SECRET_KEY

pytestmark = pytest.mark.usefixtures("s3fs_clear_cache")

LISTING_KEYS = {"Etag", "Key", "LastModified", "Size", "StorageClass"}
Put = Callable[[str, bytes], str]


@pytest.fixture
def put(storage: str, request: pytest.FixtureRequest) -> Put:
    """``put(relative_key, data) -> url``: write one object or file under ``storage``."""
    if storage.startswith("s3://"):
        client = request.getfixturevalue("s3_client")
        bucket = storage[len("s3://") :]

        def put_s3(key: str, data: bytes) -> str:
            client.put_object(Bucket=bucket, Key=key, Body=data)
            return f"{storage}/{key}"

        return put_s3

    def put_local(key: str, data: bytes) -> str:
        path = os.path.join(storage, *key.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as stream:
            stream.write(data)
        return path

    return put_local


def _missing(storage: str) -> str:
    if storage.startswith("s3://"):
        return f"s3://missing-{uuid.uuid4().hex[:12]}"
    return os.path.join(storage, "missing")


def _items(reader, url: str) -> list:
    return [item for shard in reader.plan_shards(url) for item in reader.read_shard(shard)]


def _quoted_md5(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'


def _parquet_bytes(table: pa.Table, **options) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)
    return sink.getvalue()


def _jsonl(*rows: dict) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


# -- listing ---------------------------------------------------------------------------------
def test_listing_pages_past_1000_keys_in_aws_item_shape(s3_server, bucket):
    client = s3_server.client()
    uploader = _wide_client(s3_server.endpoint_url)  # a pool as wide as the thread pool
    bodies = {f"k/{i:05d}.txt": f"body {i}".encode() for i in range(2500)}
    bodies["dir/"] = b""  # a console "folder": zero bytes, key ending in /
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda kv: uploader.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]),
                      bodies.items()))  # fmt: skip

    reader = get_reader(ReaderConfig(input_type="LISTING"))
    url = f"s3://{bucket}"
    shards = list(reader.plan_shards(url))
    assert [shard.extra["count"] for shard in shards] == [1000, 1000, 501]
    items = [item for shard in shards for item in reader.read_shard(shard)]

    # Same keys, same order as S3's own listing; every item exactly AWS's shape.
    listed = [
        obj["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for obj in page["Contents"]
    ]
    assert [item["Key"] for item in items] == listed
    assert sorted(listed) == sorted(bodies)
    for item in items:
        assert set(item) == LISTING_KEYS
        assert item["Etag"] == _quoted_md5(bodies[item["Key"]])
        assert type(item["Size"]) is int and item["Size"] == len(bodies[item["Key"]])
        assert type(item["LastModified"]) is int
        assert item["StorageClass"] == "STANDARD"
    folder = next(item for item in items if item["Key"] == "dir/")
    assert folder["Size"] == 0
    head = client.head_object(Bucket=bucket, Key="k/00042.txt")
    http_date = email.utils.parsedate_to_datetime(head["ResponseMetadata"]["HTTPHeaders"]
                                                  ["last-modified"])  # fmt: skip
    by_key = {item["Key"]: item for item in items}
    assert by_key["k/00042.txt"]["LastModified"] == int(http_date.timestamp())

    # The streaming path gives the same items; a pickled shard re-reads alone elsewhere.
    assert list(reader.iter_items(url)) == items
    fresh = pickle.loads(pickle.dumps(reader))
    middle = pickle.loads(pickle.dumps(shards[1]))
    assert list(fresh.read_shard(middle)) == items[1000:2000]
    assert reader.source_name(f"s3://{bucket}/k/") == f"S3://{bucket}"


def _wide_client(endpoint_url: str):
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint_url, aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
        config=botocore.config.Config(max_pool_connections=32),
    )  # fmt: skip


def test_listing_under_a_prefix_on_both_storages(storage, put):
    bodies = {"data/a.json": b"[1]", "data/b/c.csv": b"x,y\n1,2\n", "data/d.txt": b"hello"}
    for key, body in bodies.items():
        put(key, body)
    put("other/e.txt", b"outside the prefix")
    reader = get_reader(ReaderConfig(input_type="LISTING"))
    reader.page_size = 2

    url = f"{storage}/data"
    shards = list(reader.plan_shards(url))
    items = [item for shard in shards for item in reader.read_shard(shard)]

    # S3 keys are full keys; a local directory plays the bucket, so keys are relative to it.
    strip = 0 if storage.startswith("s3://") else len("data/")
    assert [item["Key"] for item in items] == [key[strip:] for key in bodies]
    assert len(shards) == 2
    for item in items:
        body = bodies[("data/" if strip else "") + item["Key"]]
        assert set(item) == LISTING_KEYS
        assert (item["Etag"], item["Size"]) == (_quoted_md5(body), len(body))
        assert type(item["LastModified"]) is int


def test_local_listing_walks_in_s3_key_order(tmp_path):
    files = {"a-c": b"1", "a/b": b"22", "a0": b"333", "z/y/x": b"4444", "a/a/a": b""}
    for key, body in files.items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(body)
    (tmp_path / "empty-dir").mkdir()
    os.utime(tmp_path / "a0", (1_700_000_000.7, 1_700_000_000.7))

    reader = get_reader(ReaderConfig(input_type="LISTING"))
    reader.page_size = 2
    items = _items(reader, str(tmp_path))

    # UTF-8 byte order of the whole key, as S3 lists: '-' < '/' < '0'.
    assert [item["Key"] for item in items] == ["a-c", "a/a/a", "a/b", "a0", "z/y/x"]
    a0 = items[3]
    assert a0 == {"Etag": _quoted_md5(b"333"), "Key": "a0", "LastModified": 1_700_000_000,
                  "Size": 3, "StorageClass": "STANDARD"}  # fmt: skip
    assert list(reader.iter_items(str(tmp_path))) == items


def test_listing_shard_fails_when_the_listing_changed(tmp_path):
    for name in "abcd":
        (tmp_path / name).write_bytes(b"x")
    reader = get_reader(ReaderConfig(input_type="LISTING"))
    reader.page_size = 2
    shards = list(reader.plan_shards(str(tmp_path)))
    (tmp_path / "a0").write_bytes(b"new")  # lands inside the first page

    fresh = get_reader(ReaderConfig(input_type="LISTING"))
    fresh.page_size = 2
    with pytest.raises(ReaderError, match="listing changed") as info:
        list(fresh.read_shard(shards[0]))
    assert info.value.position == "page 0"


def test_listing_missing_bucket_or_directory(storage):
    reader = get_reader(ReaderConfig(input_type="LISTING"))
    url = _missing(storage)
    with pytest.raises(InputNotFound) as info:
        list(reader.iter_items(url))
    assert url in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_listing_an_empty_prefix_has_no_items(storage, put):
    put("data/a.txt", b"a")
    if not storage.startswith("s3://"):  # locally the directory must exist; it is just empty
        os.mkdir(os.path.join(storage, "nothing-here"))
    reader = get_reader(ReaderConfig(input_type="LISTING"))
    assert list(reader.plan_shards(f"{storage}/nothing-here/")) == []


# -- LOAD_AND_FLATTEN ------------------------------------------------------------------------
def test_load_and_flatten_jsonl_objects(storage, put):
    put("in/a.jsonl", _jsonl({"n": 1}, {"n": 2}))
    put("in/sub/b.jsonl.gz", gzip.compress(_jsonl({"n": 3})))
    put("other/c.jsonl", _jsonl({"n": 99}))
    if storage.startswith("s3://"):
        put("in/sub/", b"")  # a folder key: listed by S3, but not data to read
    config = ReaderConfig(
        input_type="LISTING", transformation="LOAD_AND_FLATTEN", inner_input_type="JSONL"
    )
    reader = get_reader(config)
    shards = list(reader.plan_shards(f"{storage}/in/"))
    assert [shard.url.rsplit("/", 1)[-1] for shard in shards] == ["a.jsonl", "b.jsonl.gz"]
    assert [item for shard in shards for item in reader.read_shard(shard)] == [
        {"n": 1}, {"n": 2}, {"n": 3},
    ]  # fmt: skip


def test_load_and_flatten_csv_objects_each_with_its_header(storage, put):
    put("in/1.csv", b"id,name\n1,ann\n2,bob\n")
    put("in/2.csv", b"id,name\n3,cy\n")
    config = ReaderConfig(
        input_type="LISTING", transformation="LOAD_AND_FLATTEN", inner_input_type="CSV"
    )
    items = list(get_reader(config).iter_items(f"{storage}/in"))
    assert items == [
        {"id": "1", "name": "ann"}, {"id": "2", "name": "bob"}, {"id": "3", "name": "cy"},
    ]  # fmt: skip


def test_load_and_flatten_needs_an_inner_input_type():
    with pytest.raises(SpecError, match="LOAD_AND_FLATTEN"):
        get_reader(ReaderConfig(input_type="LISTING", transformation="LOAD_AND_FLATTEN"))


# -- Parquet ---------------------------------------------------------------------------------
ROWS = 35
UTC = dt.UTC


def _typed_table() -> pa.Table:
    start = dt.datetime(2024, 1, 1, tzinfo=UTC)
    return pa.table({
        "id": pa.array(range(ROWS), pa.int64()),
        "name": [f"row {i}" for i in range(ROWS)],
        "ts": pa.array([start + dt.timedelta(hours=i) for i in range(ROWS)],
                       pa.timestamp("us", tz="UTC")),
        "naive": pa.array([dt.datetime(2024, 1, 1, 0, 0, 1, 500_000)] * ROWS, pa.timestamp("ms")),
        "ns": pa.array([1] * ROWS, pa.timestamp("ns")),
        "day": pa.array([dt.date(2024, 2, 29)] * ROWS, pa.date32()),
        "price": pa.array([Decimal("1.50")] * ROWS, pa.decimal128(9, 2)),
        "raw": pa.array([b"text", b"\xff\x00"] * (ROWS // 2) + [None], pa.binary()),
        "score": pa.array([float("nan"), 0.25] * (ROWS // 2) + [None], pa.float64()),
        "tags": pa.array([["a", "b"]] * ROWS, pa.list_(pa.string())),
        "nested": pa.array([{"when": start, "n": 7}] * ROWS,
                           pa.struct([("when", pa.timestamp("ms", tz="UTC")), ("n", pa.int32())])),
    })  # fmt: skip


def _expected_row(i: int) -> dict:
    start = dt.datetime(2024, 1, 1, tzinfo=UTC)
    raw = [None] if i == ROWS - 1 else ["text", base64.b64encode(b"\xff\x00").decode()]
    score = [None] if i == ROWS - 1 else [None, 0.25]
    return {
        "id": i,
        "name": f"row {i}",
        "ts": (start + dt.timedelta(hours=i)).isoformat(),
        "naive": "2024-01-01T00:00:01.500000",
        "ns": "1970-01-01T00:00:00.000000001",
        "day": "2024-02-29",
        "price": "1.50",
        "raw": raw[i % len(raw)],
        "score": score[i % len(score)],
        "tags": ["a", "b"],
        "nested": {"when": "2024-01-01T00:00:00+00:00", "n": 7},
    }


def test_parquet_one_shard_per_row_group_with_json_values(storage, put):
    table = _typed_table()
    data = _parquet_bytes(table, row_group_size=10)
    url = put("data/trips.parquet", data)
    assert pq.ParquetFile(io.BytesIO(data)).num_row_groups == 4

    reader = get_reader(ReaderConfig(input_type="PARQUET"))
    shards = list(reader.plan_shards(url))
    assert [(shard.start, shard.extra["count"]) for shard in shards] == [
        (0, 10), (1, 10), (2, 10), (3, 5),
    ]  # fmt: skip
    items = [item for shard in shards for item in reader.read_shard(shard)]

    assert items[0]["ts"] == "2024-01-01T00:00:00+00:00"
    assert items[25]["ts"] == "2024-01-02T01:00:00+00:00"
    assert items == [_expected_row(i) for i in range(ROWS)]
    json.dumps(items, allow_nan=False)  # every value is plain JSON

    batches = [batch for shard in shards for batch in reader.read_shard_arrow(shard)]
    assert all(isinstance(batch, pa.RecordBatch) for batch in batches)
    got = pa.Table.from_batches(batches)
    assert got.schema == table.schema
    assert got.drop_columns(["score"]).equals(table.drop_columns(["score"]))  # NaN != NaN
    assert repr(got["score"].to_pylist()) == repr(table["score"].to_pylist())


def test_parquet_directory_reads_every_parquet_file_in_order(storage, put):
    first = pa.table({"n": [1, 2, 3]})
    second = pa.table({"n": [4, 5]})
    put("pq/part-1.parquet", _parquet_bytes(second))
    put("pq/part-0.parquet", _parquet_bytes(first, row_group_size=2))
    put("pq/_SUCCESS", b"")
    reader = get_reader(ReaderConfig(input_type="PARQUET"))
    shards = list(reader.plan_shards(f"{storage}/pq"))
    assert [shard.url.rsplit("/", 1)[-1] for shard in shards] == [
        "part-0.parquet", "part-0.parquet", "part-1.parquet",
    ]  # fmt: skip
    assert [shard.number for shard in shards] == [0, 1, 2]
    assert [item["n"] for item in _items(reader, f"{storage}/pq/")] == [1, 2, 3, 4, 5]


def test_truncated_parquet_names_the_file_and_the_footer(storage, put):
    data = _parquet_bytes(_typed_table(), row_group_size=10)
    url = put("bad/half.parquet", data[: len(data) // 2])
    reader = get_reader(ReaderConfig(input_type="PARQUET"))
    with pytest.raises(ReaderError) as info:
        list(reader.plan_shards(url))
    assert info.value.url == url and url in str(info.value)
    assert info.value.position == "footer"
    assert "footer" in str(info.value)


def test_corrupt_row_group_names_its_number(tmp_path):
    table = pa.table({"id": range(40), "s": [f"value-{i}" * 4 for i in range(40)]})
    data = bytearray(_parquet_bytes(table, row_group_size=10, compression="NONE",
                                    write_page_checksum=True))  # fmt: skip
    chunk = pq.ParquetFile(io.BytesIO(bytes(data))).metadata.row_group(1).column(1)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    middle = start + chunk.total_compressed_size - 20  # inside the data, past the page headers
    data[middle : middle + 4] = b"XXXX"
    path = tmp_path / "corrupt.parquet"
    path.write_bytes(bytes(data))

    reader = get_reader(ReaderConfig(input_type="PARQUET"))
    shards = list(reader.plan_shards(str(path)))
    assert len(list(reader.read_shard(shards[0]))) == 10
    with pytest.raises(ReaderError) as info:
        list(reader.read_shard(shards[1]))
    assert info.value.position == "row group 1"
    assert str(path) in str(info.value)


def test_parquet_missing_file(storage):
    reader = get_reader(ReaderConfig(input_type="PARQUET"))
    url = _missing(storage) + "/x.parquet"
    with pytest.raises(InputNotFound) as info:
        list(reader.plan_shards(url))
    assert url in str(info.value)


# -- S3 inventory manifests -----------------------------------------------------------------
INVENTORY_ROWS = [
    ["src", "photos/a.jpg", "12", "2024-05-01T10:00:00.000Z"],
    ["src", "photos/b,c.jpg", "0", "2024-05-02T10:00:00.000Z"],
    ["src", "docs/readme.md", "345", "2024-05-03T10:00:00.000Z"],
]
SCHEMA = "Bucket, Key, Size, LastModifiedDate"


def _inventory_csv(rows: list[list[str]]) -> bytes:
    # Inventory CSV quotes every field and has no header row.
    text = "".join(",".join(f'"{value}"' for value in row) + "\n" for row in rows)
    return gzip.compress(text.encode())


def _inventory_manifest(destination: str, keys: list[str], **changes) -> bytes:
    manifest = {
        "sourceBucket": "src",
        "destinationBucket": f"arn:aws:s3:::{destination}",
        "version": "2016-11-30",
        "creationTimestamp": "1714557600000",
        "fileFormat": "CSV",
        "fileSchema": SCHEMA,
        "files": [{"key": key, "size": 100, "MD5checksum": "0" * 32} for key in keys],
    }
    manifest.update(changes)
    return json.dumps(manifest).encode()


def test_s3_inventory_manifest_with_two_gzip_csv_files(storage, put):
    # The layout S3 inventory writes: keys in the manifest are bucket keys.
    keys = ["inv/src/cfg/data/part-1.csv.gz", "inv/src/cfg/data/part-2.csv.gz"]
    put(keys[0], _inventory_csv(INVENTORY_ROWS[:2]))
    put(keys[1], _inventory_csv(INVENTORY_ROWS[2:]))
    destination = storage[len("s3://") :] if storage.startswith("s3://") else "elsewhere"
    url = put("inv/src/cfg/2024-05-04T01-00Z/manifest.json",
              _inventory_manifest(destination, keys))  # fmt: skip

    reader = get_reader(ReaderConfig(input_type="MANIFEST", manifest_type="S3_INVENTORY"))
    shards = list(reader.plan_shards(url))
    assert len(shards) == 2
    assert shards[0].url.endswith(keys[0]) and shards[1].url.endswith(keys[1])
    names = [name.strip() for name in SCHEMA.split(",")]
    assert [item for shard in shards for item in reader.read_shard(shard)] == [
        dict(zip(names, row, strict=True)) for row in INVENTORY_ROWS
    ]


def test_local_inventory_keys_resolve_next_to_the_manifest(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "1.csv.gz").write_bytes(_inventory_csv(INVENTORY_ROWS))
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes(_inventory_manifest("dest", ["data/1.csv.gz"]))
    reader = get_reader(ReaderConfig(input_type="MANIFEST", manifest_type="S3_INVENTORY"))
    items = list(reader.iter_items(str(manifest)))
    assert [item["Key"] for item in items] == ["photos/a.jpg", "photos/b,c.jpg", "docs/readme.md"]
    assert all(type(item["Size"]) is str for item in items)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (_inventory_manifest("dest", [], files=None), '"files"'),
        (_inventory_manifest("dest", ["a.orc"], fileFormat="ORC"), "ORC"),
        (_inventory_manifest("dest", ["a.csv.gz"], fileSchema=None), "fileSchema"),
        (b"[1, 2]", "not a JSON object"),
    ],
)
def test_bad_inventory_manifest(storage, put, body, reason):
    url = put("inv/manifest.json", body)
    reader = get_reader(ReaderConfig(input_type="MANIFEST", manifest_type="S3_INVENTORY"))
    with pytest.raises(ReaderError, match=reason) as info:
        list(reader.plan_shards(url))
    assert info.value.url == url


def test_inventory_missing_manifest_or_data_file(storage, put):
    reader = get_reader(ReaderConfig(input_type="MANIFEST", manifest_type="S3_INVENTORY"))
    missing = f"{storage}/inv/nope/manifest.json"
    with pytest.raises(InputNotFound) as info:
        list(reader.plan_shards(missing))
    assert missing in str(info.value)

    bucket = storage[len("s3://") :] if storage.startswith("s3://") else "dest"
    url = put("inv/manifest.json", _inventory_manifest(bucket, ["inv/data/gone.csv.gz"]))
    with pytest.raises(InputNotFound) as info:
        list(reader.iter_items(url))
    assert info.value.url.endswith("inv/data/gone.csv.gz")


# -- Athena UNLOAD manifests ----------------------------------------------------------------
ATHENA_ROWS = [{"id": 1, "name": "ann"}, {"id": 2, "name": "bob"}, {"id": 3, "name": "cy"}]


def _athena_data(input_type: str, rows: list[dict]) -> tuple[str, bytes]:
    """A (file suffix, bytes) pair shaped like what UNLOAD writes for ``input_type``."""
    name = uuid.uuid4().hex
    if input_type == "CSV":
        text = "".join(f"{row['id']},{row['name']}\n" for row in rows)  # no header row
        return f"{name}.gz", gzip.compress(text.encode())
    if input_type == "JSONL":
        return f"{name}.gz", gzip.compress(_jsonl(*rows))
    return name, _parquet_bytes(pa.Table.from_pylist(rows))  # UNLOAD names have no suffix


@pytest.mark.parametrize("input_type", ["CSV", "JSONL", "PARQUET"])
def test_athena_manifest(storage, put, input_type):
    parts = [_athena_data(input_type, ATHENA_ROWS[:2]), _athena_data(input_type, ATHENA_ROWS[2:])]
    urls = [put(f"unload/20240504_000000_00001_{name}", body) for name, body in parts]
    manifest = put("results/q-123-manifest.csv", "".join(u + "\n" for u in urls).encode())

    config = ReaderConfig(
        input_type="MANIFEST", manifest_type="ATHENA_DATA", inner_input_type=input_type,
        csv_headers=("id", "name") if input_type == "CSV" else None,
        # a local folder mirroring a bucket: the data sits beside the manifest's folder, not in it
        allowed_locations=("SAME_AS_MANIFEST", storage),
    )  # fmt: skip
    reader = get_reader(config)
    shards = list(reader.plan_shards(manifest))
    assert [shard.url for shard in shards] == urls
    items = [item for shard in shards for item in reader.read_shard(shard)]
    if input_type == "CSV":  # CSV values stay strings
        assert items == [{"id": str(row["id"]), "name": row["name"]} for row in ATHENA_ROWS]
    else:
        assert items == ATHENA_ROWS


def test_athena_manifest_relative_lines_resolve_next_to_it(tmp_path):
    (tmp_path / "part-0").write_bytes(_parquet_bytes(pa.Table.from_pylist(ATHENA_ROWS)))
    (tmp_path / "m-manifest.csv").write_text("part-0\n\n")
    config = ReaderConfig(
        input_type="MANIFEST", manifest_type="ATHENA_DATA", inner_input_type="PARQUET"
    )
    assert list(get_reader(config).iter_items(str(tmp_path / "m-manifest.csv"))) == ATHENA_ROWS


def test_athena_csv_needs_given_headers_and_a_known_type():
    with pytest.raises(SpecError, match="CSVHeaders"):
        get_reader(ReaderConfig(input_type="MANIFEST", manifest_type="ATHENA_DATA",
                                inner_input_type="CSV"))  # fmt: skip
    with pytest.raises(SpecError, match="ATHENA_DATA"):
        get_reader(ReaderConfig(input_type="MANIFEST", manifest_type="ATHENA_DATA",
                                inner_input_type="JSON"))  # fmt: skip
    with pytest.raises(SpecError, match="ManifestType"):
        get_reader(ReaderConfig(input_type="MANIFEST", manifest_type="ORC"))
