"""What readers do with hostile or unusual inputs: nesting limits, parser failures, exact values.

Issue 21's findings, each through the public API (``runner.run``, ``get_reader(...).iter_items``,
``runner.load_results``): a JSON document nested 100,000 deep must fail the run with the file and
byte named and memory bounded (it used to grow to 23 GB); a parser's ``RecursionError`` must come
out as a ``ReaderError`` naming the file and line; Parquet values JSON cannot hold exactly must
fail with the column and row named, never change silently; results holding integers beyond 64
bits must load back exactly. Anything that could exhaust memory runs in a child process capped
with ``RLIMIT_AS``, so a regression fails the test instead of the machine.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner import MapSpec, RunStatus, load_results, run
from runner.errors import ReaderError
from runner.readers.base import MAX_NESTING_DEPTH, ReaderConfig, get_reader
from runner.readers.json import JsonDepth
from runner.readers.ranges import range_error, resolve

REPO = Path(__file__).resolve().parents[1]
LIMIT = MAX_NESTING_DEPTH
AS_LIMIT = 1 << 30  # the child's address space: ~4x what reading these files needs


def read(url: str | Path, input_type: str, **config: Any) -> list[Any]:
    return list(get_reader(ReaderConfig(input_type=input_type, **config)).iter_items(str(url)))


def read_error(url: str | Path, input_type: str, **config: Any) -> tuple[list[Any], ReaderError]:
    """The items read before the failure, and the ReaderError (any other exception fails)."""
    produced: list[Any] = []
    with pytest.raises(ReaderError) as info:
        for item in get_reader(ReaderConfig(input_type=input_type, **config)).iter_items(str(url)):
            produced.append(item)
    return produced, info.value


def nested(depth: int) -> str:
    """A JSON array ``depth`` containers deep."""
    return "[" * depth + "]" * depth


def run_capped(code: str, timeout: float = 120) -> dict[str, Any]:
    """Run ``code`` in a child limited to AS_LIMIT bytes; it prints one JSON line to return."""
    prelude = textwrap.dedent(f"""
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({AS_LIMIT}, {AS_LIMIT}))
    """)
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- finding 1: nesting depth is bounded, with a clear error ------------------------------------


@pytest.mark.parametrize(
    ("name", "body", "reader", "where"),
    [
        ("deep.json", "[" + nested(100_000) + "]", {"InputType": "JSON"}, "item 0"),
        ("deep.json", '{"a": {"items": ' + nested(100_000) + "}}",
         {"InputType": "JSON", "ItemsPointer": "/a/items"}, "item 0"),
        ("deep.jsonl", '{"ok": 1}\n' + nested(100_000) + "\n", {"InputType": "JSONL"}, "line 2"),
    ],
)  # fmt: skip
def test_a_200kb_document_nested_100000_deep_fails_the_run_in_bounded_memory(
    tmp_path: Path, name: str, body: str, reader: dict[str, Any], where: str
) -> None:
    source = tmp_path / name
    source.write_text(body)
    assert 200_000 <= source.stat().st_size < 210_000
    spec = {
        "Name": "deep", "Worker": "workers.basic:echo", "Source": str(source),
        "ItemReader": {"ReaderConfig": reader}, "ItemBatcher": {"MaxItemsPerBatch": 10},
        "ResultWriter": {"Destination": str(tmp_path / "out")},
    }  # fmt: skip
    outcome = run_capped(f"""
        from runner import MapSpec, run
        result = run(MapSpec.from_dict({spec!r}), executor="inline")
        peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024
        print(json.dumps([result.status.value, result.error, result.cause, peak]))
    """)
    status, error, cause, peak_rss = outcome
    assert (status, error) == ("FAILED", "States.ItemReaderFailed")
    assert str(source) in cause and where in cause
    assert f"nested deeper than {LIMIT} levels" in cause
    assert peak_rss < 400 << 20  # an interpreter with pyarrow and pandas loaded: ~200 MB


def test_json_depth_limit_is_exact_at_the_boundary(tmp_path: Path) -> None:
    # The root array is level 1, so an item may nest LIMIT - 1 deep.
    fits = tmp_path / "fits.json"
    fits.write_text(f"[1, {nested(LIMIT - 1)}, 2]")
    assert read(fits, "JSON") == [1, json.loads(nested(LIMIT - 1)), 2]

    deep = tmp_path / "deep.json"
    deep.write_text(f'[1, "[[[[", {nested(LIMIT)}, 2]')
    produced, error = read_error(deep, "JSON")
    assert produced == [1, "[[[["]  # the items before the damage are still produced
    assert error.url == str(deep) and error.position == "item 2"
    offset = deep.read_text().index("[", 12) + LIMIT - 1  # the bracket opening level LIMIT + 1
    assert error.reason == f"JSON nested deeper than {LIMIT} levels at byte {offset}"


def test_jsonl_depth_limit_holds_whatever_the_recursion_limit(tmp_path: Path) -> None:
    """The limit is the reader's, not Python's: raising the recursion limit changes nothing."""
    path = tmp_path / "items.jsonl"
    path.write_text(f'{{"a": "é", "b": {nested(LIMIT - 1)}}}\n\n{{"c": {nested(LIMIT + 1)}}}\n')
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    try:
        produced, error = read_error(path, "JSONL")
    finally:
        sys.setrecursionlimit(old)
    assert len(produced) == 1
    assert error.position == "line 3"
    column = 6 + LIMIT  # the "{" is level 1, the first "[" (column 7) level 2
    assert error.reason == f"JSON nested deeper than {LIMIT} levels at column {column}"


def test_shard_reads_report_the_same_depth_error_as_the_whole_file_read(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    lines = [json.dumps({"n": n}) for n in range(200)]
    lines[150] = nested(LIMIT + 1)
    path.write_text("\n".join(lines) + "\n")
    _, driver = read_error(path, "JSONL")

    reader = get_reader(ReaderConfig(input_type="JSONL"))
    ranges = reader.plan_ranges(str(path), 700)
    assert ranges is not None and len(ranges) > 3
    chosen = resolve([reader.index_range(shard, 10) for shard in ranges])
    line, errors = 1, []
    for index in chosen:
        if (error := range_error(str(path), index, line)) is not None:
            errors.append(str(error))
        line += index.lines
    assert errors == [str(driver)]

    # Unvalidated indexes leave the line to the batch read, which words it the same.
    loose = [reader.index_range(shard, 10, validate=False)[0] for shard in ranges]
    line = 1
    with pytest.raises(ReaderError) as info:
        for shard, index in zip(ranges, loose, strict=True):
            for j, offset in enumerate(index.checkpoints):
                take = min(10, index.count - j * 10)
                reader.read_range(shard, offset, 0, take, line + index.checkpoint_lines[j])
            line += index.lines
    assert str(info.value) == str(driver)


def reference_overflow(data: bytes, limit: int) -> int | None:
    """The offset of the first container opened past ``limit``, walking byte by byte."""
    depth, in_string, escaped = 0, False, False
    for offset, byte in enumerate(data):
        if escaped:
            escaped = False
        elif in_string:
            escaped, in_string = byte == 0x5C, byte != 0x22
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            if depth > limit:
                return offset
        elif byte in b"]}":
            depth -= 1
    return None


json_values = st.recursive(
    st.none()
    | st.integers()
    | st.text(alphabet='ab[]{}"\\\n\u00e9', max_size=6)
    | st.text(alphabet='\\"[', max_size=90),  # many escapes: the bulk path
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet='k[{"\\', max_size=3), children, max_size=3)
    ),
    max_leaves=40,
)


@settings(max_examples=300, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(json_values, st.integers(1, 8), st.lists(st.integers(0, 400), max_size=5))
def test_json_depth_matches_a_byte_by_byte_walk_whatever_the_blocks(value, limit, cuts):
    data = json.dumps(value, ensure_ascii=False).encode()
    depth = JsonDepth(limit)
    found, start = None, 0
    for end in [*sorted(c for c in cuts if c < len(data)), len(data)]:
        if end > start:
            offset = depth.feed(data[start:end])
            if offset is not None:
                found = start + offset
                break
        start = max(start, end)
    assert found == reference_overflow(data, limit)


# -- finding 2: parser failures name the file and the position ----------------------------------


def test_a_recursion_error_in_the_jsonl_parser_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('1\n{"deep": ' + nested(300) + "}\n")
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(250)  # a deep stack, as in a worker thread: json.loads gives up first
    try:
        produced, error = read_error(path, "JSONL")
    finally:
        sys.setrecursionlimit(old)
    assert produced == [1]
    assert error.url == str(path) and error.position == "line 2"
    assert "RecursionError" in error.reason


def test_a_parser_exception_from_parquet_names_the_file_row_and_column(tmp_path: Path) -> None:
    path = tmp_path / "struct.parquet"
    twice = pa.StructArray.from_arrays([pa.array([1, 2]), pa.array([3, 4])], names=["a", "a"])
    pq.write_table(pa.table({"id": [1, 2], "s": twice}), path)
    _, error = read_error(path, "PARQUET")
    assert error.url == str(path) and error.position == "row group 0, row 0"
    assert "column 's'" in error.reason


def test_load_results_refuses_a_result_file_nested_too_deep(tmp_path: Path) -> None:
    source = tmp_path / "items.jsonl"
    source.write_text('{"n": 1}\n')
    spec = MapSpec.from_dict({
        "Name": "t", "Worker": "workers.basic:echo", "Source": str(source),
        "ItemReader": {"ReaderConfig": {"InputType": "JSONL"}},
        "ResultWriter": {"Destination": str(tmp_path / "out"),
                         "WriterConfig": {"Transformation": "COMPACT"}},
    })  # fmt: skip
    result = run(spec, executor="inline")
    assert result.manifest_url is not None
    results = Path(result.manifest_url).parent / "SUCCEEDED_0.json"
    results.write_text("[" + nested(100_000) + "]")
    outcome = run_capped(f"""
        from runner import ReaderError, load_results
        try:
            load_results({result.manifest_url!r})
            print(json.dumps(["loaded", None, None]))
        except Exception as exc:
            print(json.dumps([type(exc).__name__, getattr(exc, "url", None), str(exc)]))
    """)
    assert outcome[:2] == ["ReaderError", str(results)]
    assert f"nested deeper than {LIMIT} levels at byte {LIMIT}" in outcome[2]


# -- finding 3: Parquet values are exact, or the read fails naming the column -------------------


def parquet_file(tmp_path: Path, **columns: pa.Array) -> Path:
    path = tmp_path / "values.parquet"
    pq.write_table(pa.table(columns), path)
    return path


def test_a_map_holding_a_key_twice_fails_instead_of_keeping_one(tmp_path: Path) -> None:
    kind = pa.map_(pa.string(), pa.int64())
    path = parquet_file(
        tmp_path, tags=pa.array([[("a", 1)], [("b", 2), ("a", 3)], [("c", 1), ("c", 2)]], kind)
    )
    produced, error = read_error(path, "PARQUET")
    assert produced == [{"tags": {"a": 1}}, {"tags": {"b": 2, "a": 3}}]
    assert error.url == str(path) and error.position == "row group 0, row 2"
    assert error.reason.startswith("column 'tags'")
    assert "key 'c' more than once" in error.reason


def test_nanosecond_times_and_timestamps_keep_all_nine_digits(tmp_path: Path) -> None:
    path = parquet_file(
        tmp_path,
        time_ns=pa.array([45_296_123_456_789, 45_296_000_000_000, 1, None], pa.time64("ns")),
        time_us=pa.array([45_296_123_456, 45_296_000_000, 1, None], pa.time64("us")),
        stamp_ns=pa.array([1_700_000_000_123_456_789, 1_700_000_000_000_000_000,
                           1_700_000_000_000_000_500, None], pa.timestamp("ns", tz="UTC")),
        nested_ns=pa.array([[1], [2_000], [3_000_000_000], None], pa.list_(pa.time64("ns"))),
    )  # fmt: skip
    rows = read(path, "PARQUET")
    assert [row["time_ns"] for row in rows] == [
        "12:34:56.123456789", "12:34:56", "00:00:00.000000001", None,
    ]  # fmt: skip
    # microseconds as Python writes them: the ns column follows the same rule
    assert [row["time_us"] for row in rows] == ["12:34:56.123456", "12:34:56", "00:00:00.000001",
                                                None]  # fmt: skip
    assert [row["stamp_ns"] for row in rows] == [
        "2023-11-14T22:13:20.123456789+00:00", "2023-11-14T22:13:20+00:00",
        "2023-11-14T22:13:20.000000500+00:00", None,
    ]  # fmt: skip
    assert [row["nested_ns"] for row in rows] == [
        ["00:00:00.000000001"], ["00:00:00.000002"], ["00:00:03"], None,
    ]  # fmt: skip


def test_durations_are_exact_seconds_or_fail(tmp_path: Path) -> None:
    ok = parquet_file(
        tmp_path,
        ns=pa.array([123_456_789_123, 1, -1_500_000_000], pa.duration("ns")),
        s=pa.array([86_400, 0, -5], pa.duration("s")),
    )
    rows = read(ok, "PARQUET")
    assert [row["ns"] for row in rows] == [123.456789123, 1e-09, -1.5]
    assert [row["s"] for row in rows] == [86_400, 0, -5]

    # 200 days and 1 ns: a float keeps 17 digits, not the 18 this needs
    long = parquet_file(tmp_path, d=pa.array([5, 200 * 86_400 * 10**9 + 1], pa.duration("ns")))
    produced, error = read_error(long, "PARQUET")
    assert produced == [{"d": 5e-09}]
    assert error.position == "row group 0, row 1" and "column 'd'" in error.reason


@pytest.mark.parametrize(
    "column",
    [
        pa.array([0, 2**62], pa.timestamp("us")),  # year 146,140,482
        pa.array([0, 2**31 - 1], pa.date32()),
        pa.Array.from_buffers(pa.string(), 2, pa.array([b"ok", b"\xff\xfe"]).buffers()),
    ],
    ids=["timestamp-past-9999", "date-past-9999", "string-not-utf8"],
)
def test_values_python_cannot_hold_fail_naming_column_and_row(tmp_path: Path, column) -> None:
    path = parquet_file(tmp_path, c=column)
    produced, error = read_error(path, "PARQUET")
    assert len(produced) == 1
    assert error.url == str(path) and error.position == "row group 0, row 1"
    assert error.reason.startswith("column 'c'")


def test_int96_timestamps_outside_the_nanosecond_range_fail_instead_of_wrapping(tmp_path):
    path = tmp_path / "legacy.parquet"
    stamps = [dt.datetime(2020, 1, 1), dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31)]
    pq.write_table(pa.table({"when": pa.array(stamps, pa.timestamp("us"))}), path,
                   use_deprecated_int96_timestamps=True)  # fmt: skip
    _, error = read_error(path, "PARQUET")  # Arrow alone reads year 1 as 1754
    assert error.url == str(path) and error.position == "row group 0, row 1"
    assert "column 'when'" in error.reason and "INT96" in error.reason

    fine = tmp_path / "fine.parquet"
    pq.write_table(pa.table({"when": pa.array(stamps[:1], pa.timestamp("us"))}), fine,
                   use_deprecated_int96_timestamps=True)  # fmt: skip
    assert read(fine, "PARQUET") == [{"when": "2020-01-01T00:00:00"}]


def test_other_types_convert_exactly(tmp_path: Path) -> None:
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    path = parquet_file(
        tmp_path,
        big=pa.array([2**64 - 1], pa.uint64()),
        small=pa.array([-(2**63)], pa.int64()),
        price=pa.array([Decimal("0.000000100")], pa.decimal128(20, 9)),
        wide=pa.array([Decimal("9" * 76)], pa.decimal256(76, 0)),
        half=pa.array([0.1], pa.float16()),
        id=pa.array([ident.bytes], pa.uuid()),
        word=pa.array(["x"]).dictionary_encode(),
    )
    assert read(path, "PARQUET") == [{
        "big": 2**64 - 1, "small": -(2**63), "price": "0.000000100", "wide": "9" * 76,
        "half": 0.0999755859375,  # the half float's exact value, not 0.1
        "id": str(ident), "word": "x",
    }]  # fmt: skip


def test_schemas_nested_past_the_limit_fail_at_the_footer(tmp_path: Path) -> None:
    kind, value = pa.int64(), 1
    for _ in range(LIMIT + 1):
        kind, value = pa.list_(kind), [value]
    path = parquet_file(tmp_path, c=pa.array([value], kind))
    _, error = read_error(path, "PARQUET")
    assert error.url == str(path) and error.position == "footer"
    assert "nested" in error.reason


# -- finding 4: results holding integers beyond 64 bits load back exactly -----------------------

BIG = [2**64 - 1, -(2**63) - 1, 123456789012345678901234567890, 7]


@pytest.mark.parametrize("output_type", ["JSON", "JSONL"])
@pytest.mark.parametrize("transformation", ["NONE", "COMPACT", "FLATTEN"])
def test_integers_beyond_64_bits_load_back_exactly(
    tmp_path: Path, transformation: str, output_type: str
) -> None:
    source = tmp_path / "items.jsonl"
    source.write_text("".join(json.dumps({"n": n}) + "\n" for n in BIG))
    spec = MapSpec.from_dict({
        "Name": "big", "Worker": "workers.basic:echo", "Source": str(source),
        "ItemReader": {"ReaderConfig": {"InputType": "JSONL"}},
        "ItemBatcher": {"MaxItemsPerBatch": 3},
        "ResultWriter": {"Destination": str(tmp_path / "out"), "WriterConfig": {
            "Transformation": transformation, "OutputType": output_type}},
    })  # fmt: skip
    result = run(spec, executor="inline")
    assert result.status == RunStatus.SUCCEEDED and result.manifest_url
    frame = load_results(result.manifest_url)
    assert frame["output"].dtype == object
    outputs = list(frame["output"])
    if transformation == "COMPACT":  # one row per batch: the batch's list
        outputs = [item for batch in outputs for item in batch]
    assert outputs == [{"n": n} for n in BIG]
    assert all(type(o["n"]) is int for o in outputs)
