"""The five taxi aggregations by shardmap (local and on Dask), PySpark and DuckDB, same data.

Generates once (``workers.taxi_sample.taxi_sample``, seed 7, its three schema eras) ``--rows``
trips into ``bench/data/taxi-<rows>/`` (files of 2M rows at most), then times, per round and in
an order that rotates each round, the five results of ``workers/taxi_results.py`` by:

- ``shardmap``: ``workers.taxi.compute_stats`` with the ``processes`` executor (2 worker
  processes, started by each run): list, map every file to its partials, reduce, load;
- ``shardmap/dask``: the same on one LocalCluster of two single-threaded worker processes,
  started once before the rounds;
- ``pyspark``: ``tests.taxi_reference.spark_results`` on local[2], the session started once
  before the rounds (JVM start not counted; reading the files is);
- ``duckdb``: ``tests.taxi_reference.duckdb_results`` with 2 threads.

Every engine's results of every round must agree with PySpark's first ones
(``differences(..., rel=1e-6)`` empty) before anything is printed; then each engine's median
time as a ratio to PySpark's and to DuckDB's medians.

    .venv/bin/python bench/taxi.py --rows 20000000 --rounds 3
    .venv/bin/python bench/taxi.py --rows 2000000 --rounds 3     # a quick run
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # tests.taxi_reference: the tests' references, not installed

from tests.taxi_reference import duckdb_results, spark_results, spark_session  # noqa: E402
from workers.taxi import compute_stats  # noqa: E402
from workers.taxi_results import TaxiResults, differences  # noqa: E402
from workers.taxi_sample import taxi_sample  # noqa: E402


def ensure_data(directory: Path, rows: int) -> tuple[Path, dict[str, Any]]:
    """The folder of ``rows`` trips and the sample's summary; generated only when missing."""
    folder = directory / f"taxi-{rows}"
    meta = directory / f"taxi-{rows}.json"
    if folder.is_dir() and meta.exists():
        summary = json.loads(meta.read_text())
        print(f"reusing {folder} ({summary['objects']} files, {summary['rows']:,} rows)")
        return folder, summary
    partial = directory / f"taxi-{rows}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    started = time.perf_counter()
    summary = taxi_sample(str(partial), count=rows)
    partial.rename(folder)  # whole or not at all: an interrupted run generates again
    meta.write_text(json.dumps(summary, indent=2))
    print(f"generated {folder} ({summary['objects']} files, {rows:,} rows) "
          f"in {time.perf_counter() - started:.0f} s")  # fmt: skip
    return folder, summary


def engines(folder: Path, work: Path, spark: Any) -> dict[str, Callable[[], TaxiResults]]:
    """Each engine as a call computing the five results over ``folder``."""
    paths = sorted(str(path) for path in folder.glob("*.parquet"))
    runs = iter(range(1_000_000))

    def shardmap(executor: str) -> TaxiResults:
        # A fresh destination per run: the stats come from this run's partials only.
        dest = work / f"{executor}-{next(runs)}"
        return compute_stats(str(folder), str(dest), executor=executor,
                             state_dir=str(work / "state"))  # fmt: skip

    return {
        "shardmap": lambda: shardmap("processes"),
        "shardmap/dask": lambda: shardmap("dask"),
        "pyspark": lambda: spark_results(paths, spark),
        "duckdb": lambda: duckdb_results(paths, threads=2),
    }


def timed_rounds(
    calls: dict[str, Callable[[], TaxiResults]], rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[TaxiResults]]]:
    """Seconds and results per engine; the order rotates so no engine always goes first."""
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    results: dict[str, list[TaxiResults]] = {name: [] for name in calls}
    names = list(calls)
    for number in range(rounds):
        order = names[number % len(names) :] + names[: number % len(names)]
        for name in order:
            started = time.perf_counter()
            results[name].append(calls[name]())
            seconds[name].append(time.perf_counter() - started)
        print(f"round {number + 1}: " + ", ".join(f"{n} {seconds[n][-1]:.1f} s" for n in order))
    return seconds, results


def disagreements(results: dict[str, list[TaxiResults]], rows: int) -> list[str]:
    """Every difference from PySpark's first results, and a wrong row count."""
    reference = results["pyspark"][0]
    found = []
    if reference.identity["rows"] != rows:
        found.append(f"pyspark counted {reference.identity['rows']} rows, not {rows}")
    for name, runs in results.items():
        for number, result in enumerate(runs):
            found += [f"{name} round {number + 1}: {line}"
                      for line in differences(reference, result, rel=1e-6)]  # fmt: skip
    return found


def report(seconds: dict[str, list[float]]) -> None:
    median = {name: statistics.median(times) for name, times in seconds.items()}
    print(f"\n{'engine':<14} {'median':>8} {'/ pyspark':>10} {'/ duckdb':>9}   rounds")
    for name, times in seconds.items():
        print(f"{name:<14} {median[name]:>7.1f}s {median[name] / median['pyspark']:>9.2f}x "
              f"{median[name] / median['duckdb']:>8.2f}x   "
              + " ".join(f"{t:.1f}" for t in times))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=HERE / "data", help="where the data goes")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    folder, summary = ensure_data(args.dir, args.rows)
    size_mb = sum(path.stat().st_size for path in folder.glob("*.parquet")) / 1e6
    print(f"{args.rows:,} trips in {summary['objects']} Parquet files ({size_mb:,.0f} MB), "
          f"months {', '.join(summary['months'])}; 2 cores, {args.rounds} rounds")  # fmt: skip
    from distributed import Client, LocalCluster

    work = Path(tempfile.mkdtemp(prefix="shardmap-taxi-"))
    spark = spark_session()
    try:
        with (
            # Workers log an error when their heartbeat meets the closed scheduler at shutdown;
            # a failing batch still fails its run, so nothing the bench needs goes unseen.
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                         dashboard_address=":0", silence_logs=logging.CRITICAL) as cluster,
            Client(cluster),
        ):  # fmt: skip
            os.environ["SHARDMAP_DASK_SCHEDULER"] = cluster.scheduler_address
            seconds, results = timed_rounds(engines(folder, work, spark), args.rounds)
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)
    found = disagreements(results, args.rows)
    if found:
        print(f"\nthe engines disagree ({len(found)} differences):", *found[:40], sep="\n  ")
        sys.exit(1)
    print(f"all {len(results)} engines agree in every round (rel 1e-6)")
    report(seconds)


if __name__ == "__main__":
    main()
