"""Index a CSV and a JSONL file by byte ranges and read them back in batches, against a plain read.

Generates (or reuses) a CSV of ``--size-mb`` (bench/csv_stream.py's rows: one in 10 quotes a
delimiter and a doubled quote, one in 100 a line break) and a JSONL file of about the same size
in ``--dir``, then times in this one process, for each file:

- ``plain``: ``sum(1 for _ in reader.iter_items(url))``, the read a Map run does today;
- ``index``: :func:`index_range` over every range of ``--shard-mb`` (H0 and H1), then
  :func:`resolve`: the work the driver and the workers add to split the file; for JSONL also
  with ``validate=False`` (non-blank lines counted, bad lines left to the batch reads);
- ``read``: :func:`read_range` of every item in batches of ``--batch`` items, checkpoints every
  ``--batch`` items, batches starting half a batch after a checkpoint (so ``skip`` averages
  half a batch): what the workers do instead of receiving the items from the driver. It is
  also compared with ``batches``, the plain read collected into lists of ``--batch`` items as
  the driver does today: keeping the items costs (the cyclic GC walks the young dicts) whoever
  reads them.

Times are CPU seconds of this process (user and system: the files are in the page cache, so
that is the work). The three passes run in turn ``--rounds`` times and each keeps its best time,
as ``timeit`` does, so another process on the machine skews the ratios less. Prints each time
as a ratio to ``plain``. Fails (exit 1) if the counts differ from the plain read, or if a sample
of batches differs from the items the plain read gives at those positions.

    .venv/bin/python bench/split_index.py --size-mb 200
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from csv_stream import HEADER, ROWS_PER_BLOCK, make_block

from runner.readers.base import ItemReader, RangeIndex, ReaderConfig, Shard, get_reader
from runner.readers.ranges import resolve

MB = 1_000_000


# -- the data ---------------------------------------------------------------------------------


def json_block(seed: int) -> str:
    """About as many rows as a CSV block, the same fields; one in 100 notes holds a line break."""
    rng = random.Random(seed)
    cities = ["Lisbon", "New York", "Sao Paulo", "Zurich", "Osaka", "Cape Town", "Oslo"]
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota"]
    lines = []
    for i in range(ROWS_PER_BLOCK):
        note = " ".join(rng.choices(words, k=rng.randint(2, 6)))
        if i % 100 == 0:
            note += "\nsecond line"
        row = {
            "id": seed * ROWS_PER_BLOCK + i,
            "user": f"user{rng.randint(1, 10**6)}",
            "email": f"u{i}@example.com",
            "city": rng.choice(cities),
            "amount": round(rng.random() * 1000, 2),
            "created": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T12:00:00Z",
            "active": rng.random() < 0.5,
            "note": note,
        }
        lines.append(json.dumps(row) + "\n")
    return "".join(lines)


def ensure_file(path: Path, size_mb: float, header: str, make) -> Path:
    """``path`` of about ``size_mb``, written from 8 distinct blocks; reused when there."""
    if path.exists() and abs(path.stat().st_size - size_mb * MB) < 5 * MB:
        print(f"reusing {path} ({path.stat().st_size / MB:,.0f} MB)")
        return path
    blocks = [make(seed).encode() for seed in range(8)]
    written, count = 0, 0
    with path.open("wb") as f:
        written += f.write(header.encode())
        while written < size_mb * MB:
            written += f.write(blocks[count % len(blocks)])
            count += 1
    print(f"generated {path} ({written / MB:,.0f} MB)")
    return path


# -- the three passes -------------------------------------------------------------------------


def timed(work, *args):
    started = time.process_time()
    result = work(*args)
    return result, time.process_time() - started


def plain(reader: ItemReader, url: str) -> int:
    return sum(1 for _ in reader.iter_items(url))


def plain_batches(reader: ItemReader, url: str, batch: int) -> int:
    items, count = iter(reader.iter_items(url)), 0
    while chunk := list(itertools.islice(items, batch)):
        count += len(chunk)
    return count


def index(reader: ItemReader, url: str, shard_bytes: int, spacing: int, validate: bool = True):
    shards = reader.plan_ranges(url, shard_bytes)
    assert shards is not None
    pairs = [reader.index_range(shard, spacing, validate=validate) for shard in shards]
    return shards, resolve(pairs)


class Ranges:
    """Where any item is: its range, the checkpoint before it, the line there."""

    def __init__(self, shards: list[Shard], chosen: list[RangeIndex], spacing: int) -> None:
        self.shards, self.chosen, self.spacing = shards, chosen, spacing
        self.starts, self.lines = [0], []
        line = shards[0].extra["first_line"] if shards else 1
        for item in chosen:
            self.starts.append(self.starts[-1] + item.count)
            self.lines.append(line)
            line += item.lines

    @property
    def total(self) -> int:
        return self.starts[-1]

    def read(self, reader: ItemReader, position: int, take: int) -> list:
        n = bisect.bisect_right(self.starts, position) - 1
        local = position - self.starts[n]
        j, skip = divmod(local, self.spacing)
        item = self.chosen[n]
        line = self.lines[n] + item.checkpoint_lines[j]
        return reader.read_range(self.shards[n], item.checkpoints[j], skip, take, line)


def batch_starts(total: int, batch: int) -> list[int]:
    """Batches of ``batch`` items, each starting half a batch after a checkpoint."""
    return [0, *range(batch // 2, total, batch)] if total else []


def read_all(reader: ItemReader, ranges: Ranges, batch: int) -> int:
    starts = batch_starts(ranges.total, batch)
    read = 0
    for start, end in zip(starts, [*starts[1:], ranges.total], strict=True):
        read += len(ranges.read(reader, start, end - start))
    return read


def sample_matches(reader: ItemReader, url: str, ranges: Ranges, batch: int, samples: int) -> bool:
    """A sample of batches read by range equals the items the plain read has there."""
    starts = batch_starts(ranges.total, batch)
    picked = sorted(random.Random(0).sample(range(len(starts)), min(samples, len(starts))))
    wanted = {starts[i]: ranges.read(reader, starts[i], batch) for i in picked}
    expected: dict[int, list] = {}
    for position, item in enumerate(reader.iter_items(url)):
        for start in wanted:
            if start <= position < start + len(wanted[start]):
                expected.setdefault(start, []).append(item)
    return expected == wanted


# -- the report -------------------------------------------------------------------------------


def bench(name: str, reader: ItemReader, url: str, args: argparse.Namespace) -> list[str]:
    print(f"\n{name}: {Path(url).stat().st_size / MB:,.0f} MB, ranges of {args.shard_mb:g} MB")
    plain_s = batches_s = index_s = read_s = counting_s = float("inf")
    shard_bytes = int(args.shard_mb * MB)
    for _ in range(args.rounds):
        count, seconds = timed(plain, reader, url)
        plain_s = min(plain_s, seconds)
        _, seconds = timed(plain_batches, reader, url, args.batch)
        batches_s = min(batches_s, seconds)
        (shards, chosen), seconds = timed(index, reader, url, shard_bytes, args.batch)
        index_s = min(index_s, seconds)
        if name == "JSONL":  # counting lines only, bad lines left to the batch reads
            _, seconds = timed(index, reader, url, shard_bytes, args.batch, False)
            counting_s = min(counting_s, seconds)
        ranges = Ranges(shards, chosen, args.batch)
        read, seconds = timed(read_all, reader, ranges, args.batch)
        read_s = min(read_s, seconds)
    print(f"  {count:,} items in {len(shards)} ranges, best of {args.rounds} rounds")
    print(f"  index / plain read: {index_s / plain_s:.3f}x  (H0+H1, all ranges, one process)")
    if name == "JSONL":
        print(f"  index / plain read: {counting_s / plain_s:.3f}x  (validate=False)")
    print(f"  read  / plain read: {read_s / plain_s:.3f}x  (batches of {args.batch}, skip ~50%)")
    print(f"  read  / plain read into batches: {read_s / batches_s:.3f}x")
    failures = []
    if ranges.total != count or read != count:
        failures.append(f"{name}: plain {count:,}, indexed {ranges.total:,}, read {read:,}")
    if not sample_matches(reader, url, ranges, args.batch, args.samples):
        failures.append(f"{name}: sampled batches differ from the plain read")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=200.0, help="size of each file")
    parser.add_argument("--shard-mb", type=float, default=16.0, help="size of each range")
    parser.add_argument("--batch", type=int, default=100, help="items per batch and checkpoint")
    parser.add_argument("--rounds", type=int, default=3, help="passes; the best time counts")
    parser.add_argument("--samples", type=int, default=200, help="batches checked item by item")
    parser.add_argument("--dir", type=Path, default=None, help="keep the files here (else temp)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.dir or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        size = f"{args.size_mb:g}mb"
        csv_path = ensure_file(directory / f"split-{size}.csv", args.size_mb, HEADER, make_block)
        jsonl_path = ensure_file(directory / f"split-{size}.jsonl", args.size_mb, "", json_block)
        failures = bench("CSV", get_reader(ReaderConfig(input_type="CSV")), str(csv_path), args)
        jsonl = get_reader(ReaderConfig(input_type="JSONL"))
        failures += bench("JSONL", jsonl, str(jsonl_path), args)
    for failure in failures:
        print(f"FAIL: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
