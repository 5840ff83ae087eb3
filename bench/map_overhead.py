"""Per-item overhead of ``shardmap map`` against a hand-written concurrent.futures baseline.

Both sides do the same work in the same run: read a JSONL file of N items, group them in
batches, call the same trivial worker on each batch in a thread pool of the same size, and write
every batch's input and output as JSON. Both run as fresh processes (interpreter start included),
alternating, several rounds; the script prints the median time ratio shardmap / baseline.

    .venv/bin/python bench/map_overhead.py --items 200000 --batch-size 100 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _items import write_items

HERE = Path(__file__).parent
BASELINE = HERE / "_baseline_map.py"


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"command failed: {' '.join(command)}\n{done.stdout}\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shardmap-bench-"))
    items = work / "items.jsonl"
    write_items(items, args.items)
    shardmap = Path(sys.executable).parent / "shardmap"
    ours_cmd = [
        str(shardmap),
        "map",
        str(items),
        "--worker",
        "echo",
        "--dest",
        str(work / "ours"),
        "--batch-size",
        str(args.batch_size),
        "--concurrency",
        str(args.threads),
        "--executor",
        "threads",
    ]
    base_cmd = [
        sys.executable,
        str(BASELINE),
        str(items),
        str(work / "baseline"),
        str(args.batch_size),
        str(args.threads),
    ]
    ours, base = [], []
    for _ in range(args.rounds):
        base.append(timed(base_cmd))
        ours.append(timed(ours_cmd))
    ratio = statistics.median(ours) / statistics.median(base)
    print(f"items={args.items} batch_size={args.batch_size} threads={args.threads}", end=" ")
    print(f"rounds={args.rounds}")
    print(f"baseline (concurrent.futures) median {statistics.median(base):.2f}s  runs {base}")
    print(f"shardmap map                  median {statistics.median(ours):.2f}s  runs {ours}")
    print(f"ratio shardmap / baseline = {ratio:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
