"""Shard-parallel CSV reading against driver-side reading of the same file, same Dask cluster.

One LocalCluster (two single-threaded worker processes) runs the same pipeline over the same
CSV (quoted fields, some holding delimiters and line breaks) twice per round:

- ``driver``: the driver parses every row and ships the items to the workers in batches;
- ``shards``: the driver reads only the header; workers index their byte ranges, then read the
  items of their own batches from the file.

Prints, per round and as medians, the wall-time ratio shards/driver and the ratio of CPU time
spent in the driver process (its threads, the in-process scheduler included), which is what
shard reading takes off the driver. The two runs must agree on every item count.

    .venv/bin/python bench/shard_read.py --rows 1000000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from runner import MapSpec, run


def write_csv(path: Path, rows: int, seed: int = 7) -> Path:
    rng = random.Random(seed)
    with path.open("w", newline="") as out:
        out.write("id,name,city,amount,note\n")
        for n in range(rows):
            note = rng.choice(['"likes ""quotes"""', '"two\nlines"', "plain", '"a, b"', ""])
            city = rng.choice(["Lisbon", "Porto", '"Braga, PT"', "Faro"])
            out.write(f"{n},user-{n:08d},{city},{rng.randint(1, 99999) / 100},{note}\n")
    return path


def timed(spec: MapSpec, dest: Path, shard_reading: bool) -> tuple[float, float, int]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = run(spec, dest=str(dest), executor="dask", shard_reading=shard_reading)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert result.succeeded, (result.error, result.cause)
    return wall, cpu, result.item_counts.total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--shard-mb", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shardmap-shards-"))
    source = write_csv(work / "rows.csv", args.rows)
    size_mb = source.stat().st_size / 1e6
    os.environ["SHARDMAP_SHARD_BYTES"] = str(args.shard_mb << 20)
    spec = MapSpec.from_dict(
        {
            "Worker": "echo",
            "Source": str(source),
            "ItemBatcher": {"MaxItemsPerBatch": args.batch_size},
        }
    )
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster),
    ):
        os.environ["SHARDMAP_DASK_SCHEDULER"] = cluster.scheduler_address
        print(f"{args.rows} rows, {size_mb:.0f} MB CSV, batches of {args.batch_size}, "
              f"{args.shard_mb} MiB shards, 2 Dask workers")  # fmt: skip
        walls, cpus = [], []
        for round_ in range(args.rounds):
            d_wall, d_cpu, d_items = timed(spec, work / f"driver{round_}", shard_reading=False)
            s_wall, s_cpu, s_items = timed(spec, work / f"shards{round_}", shard_reading=True)
            assert d_items == s_items == args.rows, (d_items, s_items)
            walls.append(s_wall / d_wall)
            cpus.append(s_cpu / d_cpu)
            print(f"round {round_ + 1}: wall shards/driver {walls[-1]:.2f}x, "
                  f"driver CPU shards/driver {cpus[-1]:.2f}x")  # fmt: skip
    print(f"median: wall {statistics.median(walls):.2f}x, "
          f"driver CPU {statistics.median(cpus):.2f}x (lower is better for shards)")  # fmt: skip


if __name__ == "__main__":
    main()
