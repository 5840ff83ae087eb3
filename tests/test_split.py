"""Shard-parallel CSV and JSONL reading (the readers' range hooks) against the whole-file readers.

The property tests plan ranges, index every range under both hypotheses, resolve them and read
every item back in batches that start anywhere: counts, items, errors and their line numbers
must be exactly what ``reader.iter_items(url)`` gives, whatever the range size, checkpoint
spacing and block size. Files are random (seeded), some of them broken on purpose.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import io
import json
import random
from typing import Any

import pytest

from runner.errors import ReaderError
from runner.readers import csvtext, jsonltext, ranges
from runner.readers._io import BOM
from runner.readers.base import RangeIndex, ReaderConfig, Shard, get_reader
from runner.readers.ranges import choose, range_error, resolve

SHARD_BYTES = (1, 2, 3, 7, 50, 1 << 20)
SPACINGS = (1, 3, 10)
DELIMITERS = {"COMMA": ",", "PIPE": "|", "SEMICOLON": ";", "SPACE": " ", "TAB": "\t"}


# -- the whole pipeline, as the driver and workers run it -------------------------------------


def whole_file(reader, url: str) -> tuple[list[Any], ReaderError | None]:
    """What the plain reader gives: the items, and the error that stopped it, if any."""
    items: list[Any] = []
    try:
        for item in reader.iter_items(url):
            items.append(item)
    except ReaderError as exc:
        return items, exc
    return items, None


def by_ranges(reader, url: str, shard_bytes: int, spacing: int, rng: random.Random):
    """The items read back range by range, and the error the driver would raise, if any."""
    try:
        shards = reader.plan_ranges(url, shard_bytes)
    except ReaderError as exc:  # a bad header record fails the plan, before any item
        return [], exc
    assert shards is not None
    chosen = resolve([reader.index_range(shard, spacing) for shard in shards])
    firsts = first_lines(shards, chosen)
    error = None
    for n, index in enumerate(chosen):
        if index.error is not None:  # the driver stops at the first error of a true index
            error = range_error(url, index, firsts[n])
            shards, chosen = shards[: n + 1], chosen[: n + 1]
            break
    for index in chosen:
        assert len(index.checkpoints) == len(index.checkpoint_lines) == -(-index.count // spacing)
    items, read_error = read_in_batches(reader, shards, chosen, firsts, spacing, rng)
    assert read_error is None  # the index has seen every error before the items it counted
    return items, error


def first_lines(shards, chosen) -> list[int]:
    """The absolute line at the start of each range: first_line plus the lines before."""
    line = shards[0].extra["first_line"] if shards else 1
    lines = []
    for index in chosen:
        lines.append(line)
        line += index.lines
    return lines


def read_in_batches(reader, shards, chosen, firsts, spacing, rng):
    """Every counted item, in batches of random size that start anywhere (skip < spacing),
    and the error that stopped the reads, if any."""
    starts = [0]
    for index in chosen:
        starts.append(starts[-1] + index.count)
    total, items = starts[-1], []
    while len(items) < total:
        position = len(items)
        n = bisect.bisect_right(starts, position) - 1
        local = position - starts[n]
        index, j = chosen[n], local // spacing
        size = min(rng.randint(1, 2 * spacing + 3), total - position)
        line = firsts[n] + index.checkpoint_lines[j]
        try:
            batch = reader.read_range(shards[n], index.checkpoints[j], local % spacing, size, line)
        except ReaderError as exc:  # the items before it in the batch are in a retry's hands
            return items, exc
        assert len(batch) == size
        items += batch
    return items, None


def check_same(reader, url: str, rng: random.Random, sizes=SHARD_BYTES) -> None:
    """Every range size (each with a random spacing) gives what the plain reader gives."""
    expected, expected_error = whole_file(reader, url)
    for shard_bytes in sizes:
        spacing = rng.choice(SPACINGS)
        items, error = by_ranges(reader, url, shard_bytes, spacing, rng)
        where = f"shard_bytes={shard_bytes} spacing={spacing}"
        assert items == expected, where
        assert str(error) == str(expected_error), where


@pytest.fixture(params=["default blocks", "tiny blocks"])
def blocks(request, monkeypatch):
    """Run once with 1 MiB blocks and once with blocks of a few bytes, so that records, quoted
    tails and lines straddle block edges everywhere."""
    if request.param == "tiny blocks":
        monkeypatch.setattr(ranges, "BLOCK", 7)
        monkeypatch.setattr(ranges, "FIRST_READ", 5)
        monkeypatch.setattr(ranges, "_BATCH_READ", 3)
    return request.param


def write(tmp_path, name: str, data: bytes | str) -> str:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


# -- random files -----------------------------------------------------------------------------


def random_field(rng: random.Random, delimiter: str) -> str:
    parts = ["a", "bc", "é", "€", "7", " ", delimiter, '"', '""', "\n", "\r\n", "\r", ""]
    return "".join(rng.choice(parts) for _ in range(rng.randint(0, 5)))


def random_csv(rng: random.Random, broken: bool) -> tuple[bytes, dict[str, Any]]:
    """A CSV with quoted delimiters, quotes and line breaks, blank lines, ragged rows."""
    name = rng.choice(list(DELIMITERS))
    delimiter = DELIMITERS[name]
    newline = rng.choice(["\n", "\n", "\r\n", "\r"])
    width = rng.randint(1, 4)
    headers = [f"h{i}" for i in range(width)]
    config: dict[str, Any] = {"csv_delimiter": name}
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator=newline)
    if rng.random() < 0.5:
        config.update(csv_header_location="GIVEN", csv_headers=tuple(headers))
    else:
        out.write(newline * rng.randint(0, 2))
        writer.writerow(headers)
    for _ in range(rng.randint(0, 40)):
        roll = rng.random()
        if roll < 0.12:
            out.write(newline)  # a blank line
        elif roll < 0.18:
            out.write(f'x"y{delimiter}z{newline}')  # a quote inside an unquoted field is text
        else:
            writer.writerow(random_field(rng, delimiter) for _ in range(rng.randint(1, width + 2)))
    text = out.getvalue()
    if rng.random() < 0.3:
        text = text.rstrip("\r\n")  # no line break after the last row
    data = text.encode()
    if broken:
        data = break_somewhere(rng, data, [b'"bad"x\n', b'"never closed\n', b"caf\xe9\n"])
    if rng.random() < 0.2:
        data = BOM + data
    return data, config


def random_jsonl(rng: random.Random, broken: bool) -> bytes:
    """JSON Lines with blank and whitespace lines, CRLF, escaped line breaks, unicode."""
    values = [{"a": 1, "b": [1, 2.5, None]}, "x\ny", [], {}, 3, -0.5, True, None, "é€", {"k": "\r"}]
    blanks = ["", " ", "\r", "\t", "\x0b", " \x0c "]
    lines = []
    for _ in range(rng.randint(0, 40)):
        if rng.random() < 0.15:
            lines.append(rng.choice(blanks))
        else:
            value = json.dumps(rng.choice(values), ensure_ascii=rng.random() < 0.5)
            lines.append(rng.choice(["", " "]) + value + rng.choice(["", " ", "\r", " \r"]))
    data = "\n".join(lines).encode() + rng.choice([b"", b"\n"])
    if broken:
        data = break_somewhere(rng, data, [b'{"a": }\n', b"NaN\n", b"1 2\n", b'"caf\xe9"\n'])
    if rng.random() < 0.2:
        data = BOM + data
    return data


def break_somewhere(rng: random.Random, data: bytes, bad: list[bytes]) -> bytes:
    """``data`` with a bad line put in after some line break."""
    breaks = [i + 1 for i, byte in enumerate(data) if byte == ord("\n")] or [len(data)]
    cut = rng.choice(breaks)
    return data[:cut] + rng.choice(bad) + data[cut:]


# -- properties -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(30))
def test_csv_ranges_give_the_items_of_a_plain_read(tmp_path, blocks, seed):
    rng = random.Random(seed)
    data, config = random_csv(rng, broken=seed % 3 == 0)
    url = write(tmp_path, "random.csv", data)
    check_same(get_reader(ReaderConfig(input_type="CSV", **config)), url, rng)


@pytest.mark.parametrize("seed", range(20))
def test_jsonl_ranges_give_the_items_of_a_plain_read(tmp_path, blocks, seed):
    rng = random.Random(1000 + seed)
    url = write(tmp_path, "random.jsonl", random_jsonl(rng, broken=seed % 3 == 0))
    check_same(get_reader(ReaderConfig(input_type="JSONL")), url, rng)


@pytest.mark.parametrize("seed", range(10))
def test_jsonl_unvalidated_index_leaves_errors_to_the_batch_reads(tmp_path, blocks, seed):
    rng = random.Random(2000 + seed)
    url = write(tmp_path, "random.jsonl", random_jsonl(rng, broken=seed % 2 == 0))
    reader = get_reader(ReaderConfig(input_type="JSONL"))
    expected, expected_error = whole_file(reader, url)
    for shard_bytes in (1, 7, 1 << 20):
        spacing = rng.choice(SPACINGS)
        shards = reader.plan_ranges(url, shard_bytes)
        pairs = [reader.index_range(s, spacing, validate=False) for s in shards]
        chosen = resolve(pairs)
        assert all(index.error is None for index in chosen)
        firsts = first_lines(shards, chosen)
        items, error = read_in_batches(reader, shards, chosen, firsts, spacing, rng)
        # A batch that meets the bad line fails whole: its earlier items are not returned.
        assert items == expected[: len(items)] and len(expected) - len(items) < 3 * spacing + 3
        assert str(error) == str(expected_error)


@pytest.mark.parametrize("spacing", SPACINGS)
def test_quoted_line_breaks_across_many_ranges(tmp_path, blocks, spacing):
    """Long quoted fields span several ranges; quoted lines look like records of their own."""
    rng = random.Random(spacing)
    rows = [["id", "note"]]
    for i in range(60):
        note = "".join(rng.choice(["a,b\n", '"x",y\n', "\r\n", "\n\n", "z"]) for _ in range(8))
        rows.append([str(i), note if i % 4 else "plain"])
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    url = write(tmp_path, "notes.csv", out.getvalue())
    reader = get_reader(ReaderConfig(input_type="CSV"))
    expected = list(reader.iter_items(url))
    for shard_bytes in (5, 13, 64, 200):
        items, error = by_ranges(reader, url, shard_bytes, spacing, rng)
        assert error is None and items == expected


# -- hypotheses -------------------------------------------------------------------------------


def test_a_wrong_hypothesis_keeps_its_error_to_itself(tmp_path):
    # Line 3 starts with ""quoted"" inside a quoted field: read as a record (H0), it is
    # malformed; the ranges that start there must take H1 and never report it.
    text = 'id,text\n1,"first\n""quoted""tail"\n2,x\n3,"y"\n'
    url = write(tmp_path, "tricky.csv", text)
    reader = get_reader(ReaderConfig(input_type="CSV"))
    wrong_errors = 0
    for shard_bytes in range(1, len(text)):
        shards = reader.plan_ranges(url, shard_bytes)
        pairs = [reader.index_range(shard, 1) for shard in shards]
        chosen = resolve(pairs)
        assert all(index.error is None for index in chosen)
        assert sum(index.count for index in chosen) == 3
        wrong_errors += sum(
            h0.error is not None for (h0, _), c in zip(pairs, chosen, strict=True) if c is not h0
        )
    assert wrong_errors  # the malformed wrong reading did happen


def test_h1_is_absent_where_it_cannot_be_true(tmp_path):
    url = write(tmp_path, "x.csv", "a\n1\n2\n")
    csv_items = get_reader(ReaderConfig(input_type="CSV"))
    first, *rest = csv_items.plan_ranges(url, 2)
    assert csv_items.index_range(first, 1)[1] is None
    assert all(csv_items.index_range(shard, 1)[1] is not None for shard in rest)
    url = write(tmp_path, "x.jsonl", "1\n2\n")
    jsonl_items = get_reader(ReaderConfig(input_type="JSONL"))
    for shard in jsonl_items.plan_ranges(url, 1):
        assert jsonl_items.index_range(shard, 1)[1] is None


def test_resolve_refuses_a_range_without_the_hypothesis_it_needs():
    inside = RangeIndex(1, (0,), (0,), 2, True, None)
    plain = RangeIndex(1, (5,), (0,), 1, False, None)
    assert resolve([(plain, None), (plain, inside)]) == [plain, plain]
    assert choose(inside, (plain, inside)) is inside
    with pytest.raises(AssertionError, match="no H1 index"):
        resolve([(inside, None), (plain, None)])


# -- errors -----------------------------------------------------------------------------------

BAD_FILES = [
    ("text after a closing quote", 'a,b\n\n1,"x\ny"\n\n2,"bad"z\n3,4\n', "CSV"),
    ("quote never closed", 'a,b\n1,2\n3,"never closed\n4,5\n6,7\n', "CSV"),
    ("bad UTF-8 in a quoted field", b'a,b\n1,2\n3,"x\ncaf\xe9"\n4,5\n', "CSV"),
    ("invalid JSON line", '{"a": 1}\n\n{"a": 2}\n{"a": }\n{"a": 4}\n', "JSONL"),
    ("NaN", "1\r\n2\r\nNaN\r\n3\r\n", "JSONL"),
]


@pytest.mark.parametrize(
    ("data", "input_type"), [f[1:] for f in BAD_FILES], ids=[f[0] for f in BAD_FILES]
)
def test_errors_name_the_line_the_plain_reader_names(tmp_path, data, input_type):
    url = write(tmp_path, "bad.txt", data)
    reader = get_reader(ReaderConfig(input_type=input_type))
    expected, expected_error = whole_file(reader, url)
    assert expected_error is not None
    for shard_bytes in (1, 2, 3, 7, 50, 1000):
        items, error = by_ranges(reader, url, shard_bytes, 2, random.Random(shard_bytes))
        assert items == expected
        assert error is not None and str(error) == str(expected_error)
        assert (error.reason, error.position) == (expected_error.reason, expected_error.position)


def test_a_batch_over_a_bad_record_raises_what_the_plain_reader_raises(tmp_path):
    url = write(tmp_path, "bad.csv", 'a,b\n1,2\n3,4\n5,"x\n"y\n7,8\n')
    reader = get_reader(ReaderConfig(input_type="CSV"))
    expected_error = whole_file(reader, url)[1]
    (shard,) = reader.plan_ranges(url, 1 << 20)
    index, _ = reader.index_range(shard, 1)
    assert index.count == 2 and index.error is not None and index.error_span == 1
    assert str(range_error(url, index, 2)) == str(expected_error)
    with pytest.raises(ReaderError) as info:
        reader.read_range(shard, index.checkpoints[1], 0, 10, 2 + index.checkpoint_lines[1])
    assert str(info.value) == str(expected_error)


def test_lines_longer_than_the_limit_fail_as_in_the_plain_reader(tmp_path, monkeypatch):
    monkeypatch.setattr(csvtext, "_BLOCK", 16)
    monkeypatch.setattr(csvtext, "MAX_LINE", 100)
    monkeypatch.setattr(ranges, "BLOCK", 16)
    monkeypatch.setattr(ranges, "FIRST_READ", 16)
    monkeypatch.setattr(ranges, "_BATCH_READ", 16)
    url = write(tmp_path, "one-line.csv", "a,b\n1,2\n" + "x" * 1000)
    reader = get_reader(ReaderConfig(input_type="CSV"))
    expected_error = whole_file(reader, url)[1]
    for shard_bytes in (3, 50, 1 << 20):
        assert str(by_ranges(reader, url, shard_bytes, 1, random.Random(0))[1]) == str(
            expected_error
        )


def test_jsonl_lines_longer_than_the_limit_fail_as_in_the_plain_reader(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonltext, "_BLOCK", 16)
    monkeypatch.setattr(jsonltext, "MAX_LINE", 100)
    monkeypatch.setattr(ranges, "BLOCK", 16)
    monkeypatch.setattr(ranges, "FIRST_READ", 16)
    monkeypatch.setattr(ranges, "_BATCH_READ", 16)
    url = write(tmp_path, "array.jsonl", "1\n[" + ", ".join(["1"] * 500) + "]")
    reader = get_reader(ReaderConfig(input_type="JSONL"))
    expected, expected_error = whole_file(reader, url)
    for shard_bytes in (1, 50, 1 << 20):
        items, error = by_ranges(reader, url, shard_bytes, 1, random.Random(0))
        assert items == expected and str(error) == str(expected_error)
    (shard,) = reader.plan_ranges(url, 1 << 20)
    with pytest.raises(ReaderError) as info:
        reader.read_range(shard, 0, 0, 5, 1)
    assert str(info.value) == str(expected_error)


@pytest.fixture
def field_limit():
    """A field size limit of 20 characters, put back after the test (it is process-wide)."""
    saved = csv.field_size_limit(20)
    yield 20
    csv.field_size_limit(saved)


def test_fields_over_the_size_limit_fail_as_in_the_plain_reader(tmp_path, blocks, field_limit):
    short_fields = ",".join(["abc"] * 10)  # a long line of short fields is fine
    long_field = "x" * 30  # no quote, so only the line length tells it apart
    reader = get_reader(ReaderConfig(input_type="CSV"))
    for bad in (long_field, f'"{long_field}"', f'"a\n{long_field}"'):
        text = f"a,b\n1,2\n{short_fields}\n3,{bad}\n4,5\n"
        url = write(tmp_path, "limit.csv", text)
        check_same(reader, url, random.Random(0), sizes=(1, 5, 1 << 20))
        assert "field larger than field limit (20)" in str(whole_file(reader, url)[1])


def test_a_batch_over_an_invalid_jsonl_line_raises_what_the_plain_reader_raises(tmp_path):
    url = write(tmp_path, "bad.jsonl", "1\n\n2\n{]\n3\n")
    reader = get_reader(ReaderConfig(input_type="JSONL"))
    expected_error = whole_file(reader, url)[1]
    (shard,) = reader.plan_ranges(url, 1 << 20)
    index, _ = reader.index_range(shard, 1)
    assert index.count == 2 and index.error == (expected_error.reason, 3)
    with pytest.raises(ReaderError) as info:
        reader.read_range(shard, index.checkpoints[1], 0, 2, 1 + index.checkpoint_lines[1])
    assert str(info.value) == str(expected_error)
    assert reader.read_range(shard, 0, 0, 0, 1) == []


@pytest.mark.parametrize(
    ("name", "text", "input_type", "second"),
    [("x.csv", 'a\n1\n"2"\n', "CSV", {"a": "2"}), ("x.jsonl", "1\n\n2", "JSONL", 2)],
)
def test_reads_return_fewer_items_only_at_the_end_of_the_file(
    tmp_path, name, text, input_type, second
):
    reader = get_reader(ReaderConfig(input_type=input_type))
    (shard,) = reader.plan_ranges(write(tmp_path, name, text), 1 << 20)
    line = shard.extra["first_line"]
    assert reader.read_range(shard, shard.start, 1, 10, line) == [second]
    assert reader.read_range(shard, shard.start, 5, 10, line) == []
    with pytest.raises(ValueError, match="spacing"):
        reader.index_range(shard, 0)
    with pytest.raises(ValueError, match="shard_bytes"):
        reader.plan_ranges(shard.url, 0)


# -- planning ---------------------------------------------------------------------------------


def test_ranges_cover_the_data_after_bom_and_header(tmp_path):
    data = b'\xef\xbb\xbf\n"multi\nline",b\r\n1,2\n3,4\n'
    url = write(tmp_path, "h.csv", data)
    shards = get_reader(ReaderConfig(input_type="CSV")).plan_ranges(url, 4)
    data_start = data.index(b"1,2")
    assert [(s.number, s.start, s.end) for s in shards] == [
        (0, data_start, data_start + 4),
        (1, data_start + 4, data_start + 8),
    ]
    assert shards[0].extra == {
        "headers": ("multi\nline", "b"),
        "first_line": 4,
        "data_start": data_start,
    }


def test_csv_without_header_or_data_plans_no_ranges(tmp_path):
    reader = get_reader(ReaderConfig(input_type="CSV"))
    for text in ("", "\n\n", "a,b\n", "a,b"):
        assert reader.plan_ranges(write(tmp_path, "e.csv", text), 10) == []
    jsonl = get_reader(ReaderConfig(input_type="JSONL"))
    assert jsonl.plan_ranges(write(tmp_path, "e.jsonl", ""), 10) == []


def test_duplicate_headers_fail_as_in_the_plain_reader(tmp_path):
    url = write(tmp_path, "dup.csv", "\na,b,a\n1,2,3\n")
    for config in ({}, {"csv_header_location": "GIVEN", "csv_headers": ("x", "x")}):
        reader = get_reader(ReaderConfig(input_type="CSV", **config))
        expected_error = whole_file(reader, url)[1]
        with pytest.raises(ReaderError) as info:
            reader.plan_ranges(url, 10)
        assert str(info.value) == str(expected_error)
        assert info.value.position == expected_error.position


def test_compressed_files_and_other_readers_do_not_split(tmp_path):
    csv_items = get_reader(ReaderConfig(input_type="CSV"))
    url = write(tmp_path, "x.csv.gz", gzip.compress(b"a\n1\n"))
    assert csv_items.plan_ranges(url, 1) is None
    assert csv_items.plan_ranges(url.upper(), 1) is None
    json_items = get_reader(ReaderConfig(input_type="JSON"))
    assert json_items.plan_ranges(url, 1) is None
    shard = csv_items.plan_ranges(write(tmp_path, "x.csv", "a\n1\n"), 1)[0]
    with pytest.raises(ValueError, match="cannot be indexed"):
        json_items.index_range(shard, 1)
    with pytest.raises(ValueError, match="not a planned byte range"):
        csv_items.index_range(Shard(url), 1)


# -- S3 ---------------------------------------------------------------------------------------


def test_ranges_read_the_same_from_s3(s3_server, bucket, s3fs_clear_cache):
    import fsspec

    rng = random.Random(5)
    data, config = random_csv(rng, broken=False)
    url = f"s3://{bucket}/random.csv"
    with fsspec.open(url, "wb") as f:
        f.write(data)
    reader = get_reader(ReaderConfig(input_type="CSV", **config))
    check_same(reader, url, rng, sizes=(7, 64))
    url = f"s3://{bucket}/random.jsonl"
    with fsspec.open(url, "wb") as f:
        f.write(random_jsonl(rng, broken=True))
    check_same(get_reader(ReaderConfig(input_type="JSONL")), url, rng, sizes=(5, 64))
