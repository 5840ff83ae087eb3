"""Fuzz every reader over random bytes and random damage to valid files (issue 21).

Every outcome must be a list of items or a :class:`ReaderError` whose message names the file and
a position; never another exception, a hang, a crash of the process or unbounded memory. For CSV
and JSONL the shard-parallel path (:mod:`runner.readers.ranges`: byte ranges, range indexes,
batch reads) must give the same items, or the same error, as the whole-file read.

Each case runs in a long-lived child process (``python -m tests.test_reader_fuzz``) whose address
space is capped (``RLIMIT_AS``): a reader that crashes the interpreter, hangs past
``CASE_SECONDS`` or runs out of memory fails the case it was given, and the child is started
again for the next. Hypothesis runs derandomized and without a database, so CI repeats exactly
the same cases.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import resource
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
CASE_SECONDS = 20.0  # a case past this is a hang (the slowest sane case takes well under 1 s)
AS_LIMIT = 3 << 30  # the child's address space; reading these small files needs ~1 GiB
# manifest.py names no position for errors in the manifest itself (its JSON, its lines): while so,
# those errors need only name the manifest. Flip to True once it says where (issue 21).
MANIFEST_ERRORS_PLACED = True
EXAMPLES = int(os.environ.get("SHARDMAP_FUZZ_EXAMPLES", "300"))  # ~45 s in all on 2 cores
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ_MORE = settings(FUZZ, max_examples=3 * EXAMPLES)  # Parquet and manifest cases are quicker


# -- the child: read one case, report its outcome ---------------------------------------------


class Case:
    """Files to write in a fresh folder, and how to read ``source`` (one of them).

    A plain class, not a dataclass: Hypothesis prints a dataclass field by field, whole files
    included, and this ``repr`` cuts them short.
    """

    def __init__(
        self,
        input_type: str,
        config: dict[str, Any],
        files: dict[str, bytes],
        source: str,
        shard_bytes: int = 0,  # > 0: also read by byte ranges of this size (CSV/JSONL)
        spacing: int = 3,
    ) -> None:
        self.input_type = input_type
        self.config = config
        self.files = files
        self.source = source
        self.shard_bytes = shard_bytes
        self.spacing = spacing

    def __repr__(self) -> str:  # files cut short: Hypothesis prints failing cases
        files = {name: data[:300] + (b"..." if len(data) > 300 else b"") for name, data in
                 self.files.items()}  # fmt: skip
        return (
            f"Case({self.input_type!r}, {self.config!r}, files={files!r}, "
            f"source={self.source!r}, shard_bytes={self.shard_bytes}, spacing={self.spacing})"
        )


def outcome_of(case: Case, folder: Path) -> tuple[Any, ...]:
    """``("items", items)``, ``("error", ...)`` or ``("bad", reason)``: what the test judges."""
    from runner.errors import InputNotFound, ReaderError
    from runner.readers.base import ReaderConfig, get_reader

    for name, data in case.files.items():
        (folder / name).write_bytes(data)
    url = str(folder / case.source)
    config = ReaderConfig(input_type=case.input_type, **case.config)
    driver: tuple[Any, ...]  # SELFTEST is no reader: only the harness's self-test uses it
    try:
        if case.input_type == "SELFTEST":
            _misbehave(case.files[case.source])
        driver = ("items", list(get_reader(config).iter_items(url)))
    except ReaderError as exc:
        if _out_of_memory(exc):
            return ("bad", f"ran out of memory: {exc}\n{_trace(exc)}")
        if str(folder) not in (exc.url or ""):
            return ("bad", f"error names no file of the case: {exc}")
        unplaced_manifest = not MANIFEST_ERRORS_PLACED and exc.url == url and "manifest" in url
        if exc.position is None and not isinstance(exc, InputNotFound) and not unplaced_manifest:
            return ("bad", f"error names no position: {exc}\n{_trace(exc)}")
        driver = ("error", str(exc))
    except BaseException as exc:  # what the fuzzing is here to find
        return ("bad", f"{type(exc).__name__} escaped the reader: {exc}\n{_trace(exc)}")
    if case.shard_bytes:
        try:
            sharded = _sharded(get_reader(config), url, case.shard_bytes, case.spacing)
        except BaseException as exc:
            return ("bad", f"split path raised {type(exc).__name__}: {exc}\n{_trace(exc)}")
        if sharded != driver:
            return ("bad", f"split path gave {_short(sharded)}, whole-file read {_short(driver)}")
    return driver


def _misbehave(how: bytes) -> None:
    """Stand-ins for broken readers, to show the harness catches them."""
    if how == b"hang":
        import time

        time.sleep(3600)
    elif how == b"crash":
        os.abort()
    raise KeyError("a reader bug")


def _sharded(reader: Any, url: str, shard_bytes: int, spacing: int) -> tuple[Any, ...]:
    """What the Dask path reads: ranges indexed and resolved in order, then read in batches."""
    from runner.errors import ReaderError
    from runner.readers.ranges import choose, range_error

    try:
        ranges = reader.plan_ranges(url, shard_bytes)
        assert ranges is not None
        items: list[Any] = []
        line = ranges[0].extra.get("first_line", 1) if ranges else 1
        chosen = None
        located = []
        for shard in ranges:  # shards.py raises the first range's error, in order
            chosen = choose(chosen, reader.index_range(shard, spacing))
            error = range_error(url, chosen, line)
            if error is not None:
                raise error
            located.append((shard, chosen, line))
            line += chosen.lines
        for shard, index, first in located:
            for j, offset in enumerate(index.checkpoints):
                take = min(spacing, index.count - j * spacing)
                batch = reader.read_range(shard, offset, 0, take, first + index.checkpoint_lines[j])
                if len(batch) != take:
                    return ("bad-count", j, take, len(batch))
                items.extend(batch)
        return ("items", items)
    except ReaderError as exc:
        return ("error", str(exc))


def _out_of_memory(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MemoryError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _trace(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))[-4000:]


def _short(outcome: tuple[Any, ...]) -> str:
    return repr(outcome)[:600]


def serve() -> None:
    """The child's loop: length-prefixed pickles in on stdin, out on stdout."""
    import runner.readers.csv
    import runner.readers.json
    import runner.readers.jsonl
    import runner.readers.manifest
    import runner.readers.parquet
    import runner.readers.ranges  # noqa: F401

    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while header := stdin.read(8):
        case = pickle.loads(stdin.read(struct.unpack("<Q", header)[0]))
        folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
        try:
            reply = outcome_of(case, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        try:
            body = pickle.dumps(reply)
        except Exception as exc:
            body = pickle.dumps(("bad", f"outcome does not pickle: {exc}"))
        stdout.write(struct.pack("<Q", len(body)) + body)
        stdout.flush()


# -- the parent: one child for the whole module ------------------------------------------------


class Child:
    """The reader process; started again after it dies or hangs."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def run(self, case: Case, timeout: float = CASE_SECONDS) -> tuple[Any, ...]:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.test_reader_fuzz"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO,
            )  # fmt: skip
        process = self.process
        assert process.stdin is not None and process.stdout is not None
        body = pickle.dumps(case)
        try:
            process.stdin.write(struct.pack("<Q", len(body)) + body)
            process.stdin.flush()
            header = self._read(8, timeout)
            return pickle.loads(self._read(struct.unpack("<Q", header)[0], timeout))
        except _Hang:
            self.stop()
            return ("bad", f"no answer within {timeout} s: a hang")
        except (EOFError, BrokenPipeError):
            code = process.wait()
            self.process = None
            return ("bad", f"the reader process died (exit {code}): a crash")

    def _read(self, size: int, timeout: float) -> bytes:
        assert self.process is not None and self.process.stdout is not None
        chunks, left = [], size
        fd = self.process.stdout.fileno()
        while left:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise _Hang
            chunk = os.read(fd, left)
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class _Hang(Exception):
    pass


@pytest.fixture(scope="module")
def child():
    started = Child()
    yield started
    started.stop()


def check(child: Child, case: Case) -> tuple[Any, ...]:
    outcome = child.run(case)
    assert outcome[0] in ("items", "error"), f"{outcome[1]}\ncase: {case!r}"
    return outcome


# -- damage ------------------------------------------------------------------------------------

DEEP = [b"[" * 100_000, b'{"a":' * 2_000, b"[" * 600 + b"]" * 600, b'"' + b"[" * 700]
ODD = [b"\x00", b"\xff", b"\xc3", b"\xef\xbb\xbf", b"\r", b"\r\n", b"\n", b'"', b",", b"\\",
       b"\xed\xa0\x80", b"{", b"]", b"NaN", b"1e400", b"12345678901234567890123"]  # fmt: skip


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` after a few random edits: truncation, flips, splices, duplicates, odd bytes."""
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(
            ["truncate", "flip", "splice", "duplicate", "insert", "deep", "huge", "crlf", "bom"]
        ))  # fmt: skip
        at = draw(st.integers(0, len(data)))
        if kind == "truncate":
            del data[at:]
        elif kind == "flip" and data:
            data[min(at, len(data) - 1)] ^= draw(st.integers(1, 255))
        elif kind == "splice" and data:
            start = draw(st.integers(0, len(data)))
            data[at:at] = data[start : start + draw(st.integers(1, 64))]
        elif kind == "duplicate":
            data += data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from(ODD)) * draw(st.integers(1, 3))
        elif kind == "deep":
            data[at:at] = draw(st.sampled_from(DEEP))
        elif kind == "huge":
            data[at:at] = draw(st.sampled_from([b"x", b'"', b"\\", b"["])) * 200_000
        elif kind == "crlf":
            data = bytearray(data.replace(b"\n", draw(st.sampled_from([b"\r\n", b"\r", b"\n\n"]))))
        elif kind == "bom":
            data[0:0] = b"\xef\xbb\xbf"
    return bytes(data)


def compressed(draw: st.DrawFn, name: str, data: bytes) -> tuple[str, bytes]:
    """Maybe wrap ``data`` in gzip or zstd (``name`` gets the suffix), maybe damage that too."""
    import zstandard

    wrapper = draw(st.sampled_from([None, None, "gz", "zst"]))
    if wrapper is None:
        return name, data
    packed = gzip.compress(data) if wrapper == "gz" else zstandard.ZstdCompressor().compress(data)
    if draw(st.booleans()):
        packed = draw(damaged(packed))
    return f"{name}.{wrapper}", packed


# -- valid files to start from -----------------------------------------------------------------

texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False,
    allow_infinity=False) | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=20,
)  # fmt: skip
DELIMITERS = {"COMMA": ",", "PIPE": "|", "SEMICOLON": ";", "SPACE": " ", "TAB": "\t"}


@st.composite
def csv_cases(draw: st.DrawFn) -> Case:
    import csv

    delimiter = draw(st.sampled_from(sorted(DELIMITERS)))
    width = draw(st.integers(1, 4))
    headers = draw(st.lists(st.text("abcxyz", min_size=1, max_size=3), min_size=width,
                            max_size=width, unique=True))  # fmt: skip
    rows = draw(st.lists(st.lists(texts, min_size=0, max_size=width + 1), max_size=12))
    given = draw(st.booleans())
    out = io.StringIO()
    writer = csv.writer(out, delimiter=DELIMITERS[delimiter], lineterminator="\n")
    if not given:
        writer.writerow(headers)
    writer.writerows(rows)
    data = draw(st.one_of(st.just(out.getvalue().encode()), st.binary(max_size=300)))
    name, data = compressed(draw, "items.csv", draw(damaged(data)))
    config: dict[str, Any] = {"csv_delimiter": delimiter}
    if given:
        config.update(csv_header_location="GIVEN", csv_headers=tuple(headers))
    shard = 0 if "." in name[len("items.csv") :] else draw(st.integers(1, 200))
    return Case("CSV", config, {name: data}, name, shard, draw(st.integers(1, 4)))


@st.composite
def jsonl_cases(draw: st.DrawFn) -> Case:
    values = draw(st.lists(json_values, max_size=10))
    data = "".join(json.dumps(v, ensure_ascii=draw(st.booleans())) + "\n" for v in values)
    data = draw(st.one_of(st.just(data.encode()), st.binary(max_size=300)))
    name, data = compressed(draw, "items.jsonl", draw(damaged(data)))
    shard = 0 if name != "items.jsonl" else draw(st.integers(1, 200))
    return Case("JSONL", {}, {name: data}, name, shard, draw(st.integers(1, 4)))


POINTERS = [None, None, "/items", "/a/0", "/a~1b", "/0", "/items/-", "/"]


@st.composite
def json_cases(draw: st.DrawFn) -> Case:
    pointer = draw(st.sampled_from(POINTERS))
    value: Any = draw(st.lists(json_values, max_size=8) | st.dictionaries(texts, json_values,
                                                                         max_size=6))  # fmt: skip
    if pointer == "/items":
        value = {"before": draw(json_values), "items": value, "after": 1}
    elif pointer == "/a/0":
        value = {"a": [value]}
    data = draw(st.one_of(st.just(json.dumps(value).encode()), st.binary(max_size=300)))
    name, data = compressed(draw, "items.json", draw(damaged(data)))
    config = {"items_pointer": pointer} if pointer else {}
    return Case("JSON", config, {name: data}, name)


def parquet_seeds() -> list[bytes]:
    """A few valid files: many types, several row groups, dictionary pages, page checksums."""
    import datetime as dt
    from decimal import Decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 30
    table = pa.table({
        "id": pa.array(range(n), pa.int64()),
        "name": [f"row {i}" for i in range(n)],
        "ts": pa.array([dt.datetime(2024, 1, 1) + dt.timedelta(seconds=i) for i in range(n)],
                       pa.timestamp("us", tz="UTC")),
        "ns": pa.array([i * 1001 for i in range(n)], pa.timestamp("ns")),
        "t": pa.array([i * 1_000_000_001 for i in range(n)], pa.time64("ns")),
        "d": pa.array([i * 7 for i in range(n)], pa.duration("ms")),
        "price": pa.array([Decimal(i) / 100 for i in range(n)], pa.decimal128(9, 2)),
        "raw": pa.array([bytes([i, 255 - i]) for i in range(n)], pa.binary()),
        "tags": pa.array([[f"t{i}"] * (i % 3) for i in range(n)], pa.list_(pa.string())),
        "m": pa.array([[("k", i)] for i in range(n)], pa.map_(pa.string(), pa.int64())),
        "s": pa.array([{"x": i, "y": [1.5, None]} for i in range(n)],
                      pa.struct([("x", pa.int32()), ("y", pa.list_(pa.float64()))])),
        "cat": pa.array(["a", "b", "c"] * (n // 3)).dictionary_encode(),
    })  # fmt: skip
    seeds = []
    for options in (
        {"row_group_size": 7, "compression": "NONE", "write_page_checksum": True},
        {"row_group_size": 30, "compression": "snappy"},
        {"row_group_size": 11, "compression": "zstd", "use_dictionary": False},
    ):
        out = io.BytesIO()
        pq.write_table(table, out, **options)
        seeds.append(out.getvalue())
    legacy = io.BytesIO()
    pq.write_table(table.select(["id", "ts"]), legacy, use_deprecated_int96_timestamps=True)
    seeds.append(legacy.getvalue())
    return seeds


PARQUET_SEEDS = parquet_seeds()


@st.composite
def parquet_cases(draw: st.DrawFn) -> Case:
    data = draw(st.one_of(st.sampled_from(PARQUET_SEEDS), st.binary(max_size=300)))
    if draw(st.booleans()):  # damage near the footer, where the metadata lives, as often as not
        tail = len(data) - draw(st.integers(0, min(len(data), 400)))
        data = data[:tail] + draw(damaged(data[tail:]))
    else:
        data = draw(damaged(data))
    return Case("PARQUET", {}, {"items.parquet": data}, "items.parquet")


@st.composite
def inventory_cases(draw: st.DrawFn) -> Case:
    import csv

    files, entries = {}, []
    for number in range(draw(st.integers(0, 3))):
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(
            draw(st.lists(st.lists(texts, min_size=1, max_size=4), max_size=5))
        )
        data = gzip.compress(out.getvalue().encode())
        if draw(st.booleans()):
            data = draw(damaged(data))
        key = f"data/{number}.csv.gz"
        files[key.replace("/", "_")] = data
        entries.append({"key": key.replace("/", "_"), "size": len(data)})
    manifest = {"sourceBucket": "src", "fileFormat": "CSV",
                "fileSchema": "Bucket, Key, Size, LastModifiedDate", "files": entries}  # fmt: skip
    text = json.dumps(manifest).encode()
    files["manifest.json"] = draw(st.one_of(damaged(text), st.binary(max_size=200)))
    return Case("MANIFEST", {"manifest_type": "S3_INVENTORY"}, files, "manifest.json")


@st.composite
def athena_cases(draw: st.DrawFn) -> Case:
    inner = draw(st.sampled_from(["CSV", "JSONL", "PARQUET"]))
    files, lines = {}, []
    for number in range(draw(st.integers(0, 3))):
        if inner == "PARQUET":
            data = draw(st.sampled_from(PARQUET_SEEDS))
        elif inner == "CSV":
            data = b"a,b\n1,2\n" * draw(st.integers(0, 3))
        else:
            data = b'{"a": 1}\n' * draw(st.integers(0, 3))
        name = f"part-{number}"
        files[name] = draw(damaged(data)) if draw(st.booleans()) else data
        lines.append(name)
    text = "\n".join(lines).encode()
    files["q-manifest.csv"] = draw(damaged(text))
    config: dict[str, Any] = {"manifest_type": "ATHENA_DATA", "inner_input_type": inner}
    if inner == "CSV":
        config["csv_headers"] = ("x", "y")
    return Case("MANIFEST", config, files, "q-manifest.csv")


# -- the tests ---------------------------------------------------------------------------------


@pytest.mark.slow
@FUZZ
@given(case=csv_cases())
def test_csv_reader_survives_damage(child: Child, case: Case) -> None:
    check(child, case)


@pytest.mark.slow
@FUZZ
@given(case=jsonl_cases())
def test_jsonl_reader_survives_damage(child: Child, case: Case) -> None:
    check(child, case)


@pytest.mark.slow
@FUZZ
@given(case=json_cases())
def test_json_reader_survives_damage(child: Child, case: Case) -> None:
    check(child, case)


@pytest.mark.slow
@FUZZ_MORE
@given(case=parquet_cases())
def test_parquet_reader_survives_damage(child: Child, case: Case) -> None:
    outcome = check(child, case)
    if outcome[0] == "items":
        json.dumps(outcome[1], allow_nan=False)  # every value plain JSON


@pytest.mark.slow
@FUZZ_MORE
@given(case=st.one_of(inventory_cases(), athena_cases()))
def test_manifest_readers_survive_damage(child: Child, case: Case) -> None:
    check(child, case)


def test_the_harness_reports_a_hang_a_crash_and_an_escaped_exception(child: Child) -> None:
    """The checks above can fail: a reader that hangs, kills the process or lets an exception
    escape is reported as such (shown with stand-in readers registered in the child)."""
    for behaviour, expected in (("hang", "a hang"), ("crash", "a crash"), ("raise", "escaped")):
        outcome = child.run(Case("SELFTEST", {}, {"x": behaviour.encode()}, "x"), timeout=2)
        assert outcome[0] == "bad" and expected in outcome[1], outcome


if __name__ == "__main__":
    serve()
