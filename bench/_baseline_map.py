"""The hand-written baseline for bench/map_overhead.py: JSONL -> batches -> thread pool -> JSON.

It does the work shardmap does for the same run, without the framework: parse each line,
batch, call the worker (the same ``echo``), and write one JSON record per batch with its input
and output as JSON strings.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from workers.basic import echo


def batches(path: Path, size: int):
    batch = []
    with path.open() as f:
        for line in f:
            batch.append(json.loads(line))
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def main() -> None:
    source, dest, size, threads = (
        Path(sys.argv[1]),
        Path(sys.argv[2]),
        int(sys.argv[3]),
        int(sys.argv[4]),
    )
    dest.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(threads) as pool, (dest / "results.json").open("w") as out:
        out.write("[")
        results = pool.map(lambda b: (b, echo({"Items": b})), batches(source, size))
        for number, (items, output) in enumerate(results):
            record = {
                "Input": json.dumps({"Items": items}),
                "Output": json.dumps(output),
                "Status": "SUCCEEDED",
            }
            out.write(("," if number else "") + json.dumps(record))
        out.write("]")


if __name__ == "__main__":
    main()
