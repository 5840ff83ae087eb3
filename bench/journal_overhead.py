"""Cost of the run journal: the same run with and without it, in one process, alternating.

Both runs read the same JSONL file, batch it, run the trivial ``echo`` worker on threads and
write AWS-layout results; the journaled one also records every batch in SQLite and exports the
results from it at the end. Prints the median ratio journal / no journal.

    .venv/bin/python bench/journal_overhead.py --items 200000 --batch-size 100 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _items import write_items

from runner import MapSpec, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shardmap-journal-"))
    source = write_items(work / "items.jsonl", args.items)
    spec = MapSpec.from_dict(
        {
            "Worker": "echo",
            "Source": str(source),
            "ItemBatcher": {"MaxItemsPerBatch": args.batch_size},
            "MaxConcurrency": 4,
            "ResultWriter": {"Destination": str(work / "out")},
        }
    )
    times: dict[bool, list[float]] = {True: [], False: []}
    run(spec, executor="threads", journal=False, state_dir=str(work / "state"))  # warm caches
    for _ in range(args.rounds):
        for journal in (False, True):
            started = time.perf_counter()
            result = run(spec, executor="threads", journal=journal, state_dir=str(work / "state"))
            times[journal].append(time.perf_counter() - started)
            assert result.succeeded
    ratio = statistics.median(times[True]) / statistics.median(times[False])
    print(f"items={args.items} batch_size={args.batch_size} rounds={args.rounds}")
    print(f"no journal  median {statistics.median(times[False]):.2f}s  {times[False]}")
    print(f"journal     median {statistics.median(times[True]):.2f}s  {times[True]}")
    print(f"ratio journal / no journal = {ratio:.2f}x (target <= 1.1x)")


if __name__ == "__main__":
    main()
