"""Stream a multi-GB CSV through shardmap's CsvReader and through pyarrow: time and peak memory.

Generates (or reuses) a CSV of ``--size-gb`` in ``--dir``, then reads it in fresh child
processes, one after the other, so each peak RSS is that process's own (``os.wait4``):

- ``shardmap``: ``CsvReader`` yielding one dict of strings per row (what a Map run consumes);
- ``pyarrow``: ``pyarrow.csv.open_csv`` streaming record batches (the speed baseline);
- ``pyarrow+pylist``: the same, turning each batch into Python dicts (``to_pylist``), which is
  the like-for-like comparison, although pyarrow cannot keep AWS's CSV rules (strict quoting,
  line numbers in errors, padding short rows);
- ``baseline``: an interpreter that loads CsvReader and reads nothing.

Fails (exit 1) if CsvReader's peak RSS reaches ``--max-rss-mb`` (300 MB) or if the readers
disagree on the number of items.

    .venv/bin/python bench/csv_stream.py --size-gb 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MB = 1_000_000
ROWS_PER_BLOCK = 20_000  # distinct rows, written again and again until the file is big enough
HEADER = "id,user,email,city,amount,created,active,note\n"


# -- the data ---------------------------------------------------------------------------------


def make_block(seed: int) -> str:
    """About 2.4 MB of rows; one in 10 quotes a comma and a doubled quote, one in 100 a newline."""
    rng = random.Random(seed)
    cities = ["Lisbon", "New York", "Sao Paulo", "Zurich", "Osaka", "Cape Town", "Oslo"]
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota"]
    rows = []
    for i in range(ROWS_PER_BLOCK):
        note = " ".join(rng.choices(words, k=rng.randint(2, 6)))
        if i % 100 == 0:
            note = f'"{note}\nsecond line"'
        elif i % 10 == 0:
            note = f'"{note}, said ""{rng.choice(words)}"""'
        rows.append(
            f"{seed * ROWS_PER_BLOCK + i},user{rng.randint(1, 10**6)},"
            f"u{i}@example.com,{rng.choice(cities)},{rng.random() * 1000:.2f},"
            f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T12:00:00Z,"
            f"{rng.choice(['true', 'false'])},{note}\n"
        )
    return "".join(rows)


def ensure_csv(directory: Path, size_gb: float) -> tuple[Path, int]:
    """The CSV file and its row count; generated only when not already there."""
    path = directory / f"stream-{size_gb:g}gb.csv"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        rows = json.loads(meta.read_text())["rows"]
        print(f"reusing {path} ({path.stat().st_size / MB:,.0f} MB, {rows:,} rows)")
        return path, rows
    directory.mkdir(parents=True, exist_ok=True)
    target = int(size_gb * 1e9)
    started, written, count = time.perf_counter(), 0, 0
    blocks = [make_block(seed).encode() for seed in range(8)]  # repeats vary a little
    partial = path.with_suffix(".partial")
    with partial.open("wb") as f:
        written += f.write(HEADER.encode())
        while written < target:
            written += f.write(blocks[count % len(blocks)])
            count += 1
    partial.rename(path)
    meta.write_text(json.dumps({"rows": count * ROWS_PER_BLOCK, "bytes": written}))
    took = time.perf_counter() - started
    print(f"generated {path} ({written / MB:,.0f} MB) in {took:.1f} s")
    return path, count * ROWS_PER_BLOCK


# -- the readers, each run in its own child process -------------------------------------------


def read_shardmap(path: str) -> int:
    from runner.readers.base import ReaderConfig, get_reader

    reader = get_reader(ReaderConfig(input_type="CSV"))
    count = 0
    for _ in reader.iter_items(path):
        count += 1
    return count


def _pyarrow_batches(path: str):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    with open(path, "rb") as f:
        names = f.readline().decode().strip().split(",")
    return pacsv.open_csv(
        path,
        # quoted line breaks occur in the data, so pyarrow must look for them too
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())),
    )


def read_pyarrow(path: str) -> int:
    return sum(batch.num_rows for batch in _pyarrow_batches(path))


def read_pyarrow_pylist(path: str) -> int:
    count = 0
    for batch in _pyarrow_batches(path):
        for _ in batch.to_pylist():
            count += 1
    return count


def read_nothing(path: str) -> int:
    """Load what ``read_shardmap`` loads, read nothing: the interpreter's own footprint."""
    from runner.readers.base import ReaderConfig, get_reader

    get_reader(ReaderConfig(input_type="CSV"))
    return 0


READERS = {
    "baseline": read_nothing,
    "shardmap": read_shardmap,
    "pyarrow": read_pyarrow,
    "pyarrow+pylist": read_pyarrow_pylist,
}


def child(name: str, path: str) -> None:
    sys.path.insert(0, str(REPO))
    started = time.perf_counter()
    items = READERS[name](path)
    print(json.dumps({"items": items, "seconds": time.perf_counter() - started}))


def run_child(name: str, path: Path) -> dict:
    """Run one reader in a fresh interpreter; its own peak RSS comes from ``wait4``."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name, str(path)]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=REPO)
    output = process.stdout.read() if process.stdout else b""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if process.returncode != 0:
        sys.exit(f"{name} reader failed with exit code {process.returncode}")
    result = json.loads(output)
    result["wall"] = time.perf_counter() - started
    result["peak_rss"] = usage.ru_maxrss * 1024  # KiB on Linux
    return result


# -- the report -------------------------------------------------------------------------------


def report(path: Path, rows: int, results: dict[str, dict], max_rss: float) -> int:
    size = path.stat().st_size
    print(f"\n{path}: {size / MB:,.0f} MB, {rows:,} rows\n")
    print(f"{'reader':<16}{'items':>14}{'read s':>9}{'MB/s':>8}{'process s':>11}{'peak RSS':>12}")
    for name, r in results.items():
        speed = size / r["seconds"] / MB if r["items"] else 0.0
        print(
            f"{name:<16}{r['items']:>14,}{r['seconds']:>9.1f}{speed:>8.1f}"
            f"{r['wall']:>11.1f}{r['peak_rss'] / MB:>9.0f} MB"
        )
    ours, arrow = results["shardmap"], results["pyarrow"]
    print(f"\nthroughput shardmap / pyarrow: {arrow['seconds'] / ours['seconds']:.3f}x")
    if "pyarrow+pylist" in results:
        pylist = results["pyarrow+pylist"]
        print(f"throughput shardmap / pyarrow+pylist: {pylist['seconds'] / ours['seconds']:.3f}x")
    over = (ours["peak_rss"] - results["baseline"]["peak_rss"]) / MB
    print(f"shardmap peak RSS over the baseline interpreter: {over:.0f} MB")
    failures = []
    if ours["peak_rss"] >= max_rss * MB:
        failures.append(f"shardmap peak RSS {ours['peak_rss'] / MB:.0f} MB >= {max_rss:g} MB")
    counts = {name: r["items"] for name, r in results.items() if name != "baseline"}
    if set(counts.values()) != {rows}:
        failures.append(f"item counts differ from the {rows:,} rows written: {counts}")
    for failure in failures:
        print(f"FAIL: {failure}")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0, help="file size to generate")
    parser.add_argument("--dir", type=Path, default=HERE / "data", help="where the file lives")
    parser.add_argument("--max-rss-mb", type=float, default=300.0, help="fail at this peak RSS")
    parser.add_argument("--skip-pylist", action="store_true", help="skip pyarrow+to_pylist")
    parser.add_argument("--child", nargs=2, metavar=("READER", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    path, rows = ensure_csv(args.dir, args.size_gb)
    names = ["baseline", "shardmap", "pyarrow"] + ([] if args.skip_pylist else ["pyarrow+pylist"])
    results = {}
    for name in names:
        print(f"reading with {name} ...", flush=True)
        results[name] = run_child(name, path)
    return report(path, rows, results, args.max_rss_mb)


if __name__ == "__main__":
    sys.exit(main())
