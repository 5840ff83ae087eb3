"""Leads curation: the pipeline against the same work in one plain loop, and its memory.

Generates N leads once (six Parquet exports, ``shardmap sample leads``), then alternates, for
several rounds, two fresh processes over a fresh copy of the exports: ``shardmap run
pipelines/leads.yaml`` (threads; staging, commit marker and archiving included) and a baseline
that reads each export, applies ``workers.leads.curate_table``, deduplicates with
``workers.leads.deduplicate`` and writes one curated Parquet, with no framework and no staging.
Prints the median time ratio pipeline / baseline, and the baseline's peak Arrow memory per kept
lead (all kept rows held and sorted at once, as the reduce step does; the reduce step also holds
the rejects and so peaks higher, about 0.9 KB per lead).

    .venv/bin/python bench/leads.py --leads 60000 --rounds 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
PIPELINE = HERE.parent / "pipelines" / "leads.yaml"


def baseline(source: Path, out: Path) -> None:
    """The curation without shardmap: every export in turn, one dedup, one write."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from workers.leads import Settings, curate_table, deduplicate
    from workers.leads_sample import BLACKLIST

    settings = Settings(dest=str(out), blacklist=frozenset(BLACKLIST))
    kept = [
        curate_table(pq.read_table(path), settings).kept
        for path in sorted(source.rglob("*.parquet"))
    ]
    leads = pa.concat_tables(kept)
    winners, _ = deduplicate(leads)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(winners, out / "curated.parquet")
    peak = pa.default_memory_pool().max_memory()
    print(f"{winners.num_rows} curated, peak Arrow memory {peak / leads.num_rows:.0f} bytes/lead")


def timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"command failed: {' '.join(command)}\n{done.stdout}\n{done.stderr}")
    return elapsed, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", nargs=2, metavar=("SOURCE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        baseline(Path(args.baseline[0]), Path(args.baseline[1]))
        return
    from workers.leads_sample import leads_sample

    work = Path(tempfile.mkdtemp(prefix="shardmap-bench-leads-"))
    leads_sample(str(work / "exports"), count=args.leads)
    shardmap = Path(sys.executable).parent / "shardmap"
    ratios, memory = [], ""
    for number in range(args.rounds):
        source = work / f"in-{number}"  # the pipeline archives its sources: a fresh copy each
        shutil.copytree(work / "exports", source)
        pipeline = [str(shardmap), "run", str(PIPELINE), "--executor", "threads"]
        ours, _ = timed([*pipeline, "--source", str(source), "--dest", str(work / f"out-{number}")])
        plain = [sys.executable, __file__, "--baseline", str(work / "exports")]
        theirs, memory = timed([*plain, str(work / f"base-{number}")])
        ratios.append(ours / theirs)
        print(f"round {number + 1}: pipeline {ours:.2f} s, baseline {theirs:.2f} s")
    print(f"{args.leads} leads: pipeline / baseline = {statistics.median(ratios):.2f}x (median)")
    print(f"baseline: {memory.strip()}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
