"""Per-item overhead of shardmap on Dask against ``dask.bag`` doing the same map, same cluster.

Both read the same JSONL file of N items, apply the same trivial function to every item in
groups of ``--batch-size``, and write every result as JSON, on one LocalCluster of two
single-threaded worker processes. shardmap also journals, retries, and writes AWS's layout;
dask.bag reads the file in parallel blocks on the workers (a handful of tasks), while shardmap
hands each batch to the executor, which packs short batches several to a Dask task. Both
outputs are checked for every item. Prints the median time ratio.

    .venv/bin/python bench/dask_overhead.py --items 200000 --batch-size 100 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from _items import write_items

from runner import MapSpec, run
from workers.basic import echo


def bag_run(source: Path, dest: Path, batch_size: int) -> None:
    import dask.bag as db

    def per_batch(items: list) -> list:
        items = list(items)  # a partition arrives as a lazy iterator
        out = []
        for start in range(0, len(items), batch_size):
            out.extend(echo({"Items": items[start : start + batch_size]}))
        return out

    bag = db.read_text(str(source), blocksize="8MB").map(json.loads).map_partitions(per_batch)
    bag.map(json.dumps).to_textfiles(str(dest / "*.json"))


def count_lines(folder: Path) -> int:
    return sum(sum(1 for _ in path.open()) for path in folder.glob("*.json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shardmap-dask-"))
    source = write_items(work / "items.jsonl", args.items)
    spec = MapSpec.from_dict(
        {
            "Worker": "echo",
            "Source": str(source),
            "ItemBatcher": {"MaxItemsPerBatch": args.batch_size},
            "ResultWriter": {"Destination": str(work / "out")},
        }
    )
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster),
    ):
        import os

        os.environ["SHARDMAP_DASK_SCHEDULER"] = cluster.scheduler_address
        ours, bag = [], []
        for number in range(args.rounds):
            started = time.perf_counter()
            bag_run(source, work / f"bag-{number}", args.batch_size)
            bag.append(time.perf_counter() - started)
            started = time.perf_counter()
            result = run(spec, executor="dask", state_dir=str(work / "state"))
            ours.append(time.perf_counter() - started)
            assert result.succeeded, (result.status, result.error, result.cause)
            assert result.item_counts.succeeded == args.items, result.item_counts
            assert count_lines(work / f"bag-{number}") == args.items
    ratio = statistics.median(ours) / statistics.median(bag)
    print(f"items={args.items} batch_size={args.batch_size} rounds={args.rounds}")
    print(f"dask.bag      median {statistics.median(bag):.2f}s  {bag}")
    print(f"shardmap/dask median {statistics.median(ours):.2f}s  {ours}")
    print(f"ratio shardmap on Dask / dask.bag = {ratio:.2f}x")


if __name__ == "__main__":
    main()
