"""Genomics wall time: the per-sample steps fanned out by shardmap against Snakemake's own
per-sample rules, on the same samples, pinned to two cores.

One dataset (``shardmap sample genomics``, ``--count`` samples splitting the 10,000 lambda read
pairs) goes through the five steps (qc, map, sort, index, call) on each side:

- **snakemake per-sample** (the baseline): ``bench/genomics.smk`` with ``-c2``, one job per sample
  and step ({sample} wildcard rules), each job a fresh Python process calling the same step
  function as the shardmap workers (``bench/genomics.py --step STEP --sample NAME``);
- **snakemake + shardmap steps**: the top-level ``Snakefile`` with ``-c2``, up to the call
  step's manifest: five shardmap runs in order, each fanning every sample out (``--executor``);
- **shardmap steps**: the same five ``shardmap run --worker genomics-STEP`` commands, no
  Snakemake;
- **shardmap all-in-one**: one ``shardmap run pipelines/genomics.yaml`` (``genomics-sample``:
  the five steps in one batch per sample).

Every side runs as fresh processes (interpreter start included), into fresh folders, alternating,
``--rounds`` times; the script prints each side's median wall time and its ratio to the
baseline (below 1: faster than Snakemake's own per-sample rules).

    .venv/bin/python bench/genomics.py --count 4 --rounds 3
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent
PIPELINE = ROOT / "pipelines" / "genomics.yaml"
BIN = Path(sys.executable).parent
STEPS = ("qc", "map", "sort", "index", "call")


def step(name: str, sample: str, data: str, dest: str) -> None:
    """One step for one sample, as a shardmap worker would run it in a batch of one."""
    from runner import MapSpec
    from workers import genomics

    spec = MapSpec.from_yaml(PIPELINE)
    assert spec.item_batcher is not None
    batch_input = {
        key: value
        for key, value in (spec.item_batcher.batch_input or {}).items()
        if not key.endswith(".$")
    }
    batch_input |= {"Dest": dest, "Base": f"{data}/samples.csv"}
    with open(f"{data}/samples.csv", newline="") as f:
        [row] = [row for row in csv.DictReader(f) if row["sample"] == sample]
    worker = {"map": genomics.map_reads}.get(name) or getattr(genomics, name)
    worker({"BatchInput": batch_input, "Items": [row]})


def run(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{command[:4]} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return seconds


def sides(data: Path, executor: str) -> dict[str, Any]:
    """Side name -> ``fn(folder) -> seconds``; each fn works in its own fresh folder."""
    snakemake, shardmap = str(BIN / "snakemake"), str(BIN / "shardmap")
    samples = str(data / "samples.csv")

    def per_sample(folder: Path) -> float:
        config = [f"data={data}", f"dest={folder / 'out'}"]
        smk = str(ROOT / "bench" / "genomics.smk")
        return run([snakemake, "-s", smk, "-c2", "--config", *config], folder, _env(folder))

    def with_shardmap(folder: Path) -> float:
        target = folder / "out/results/smk-genomics-call/manifest.json"
        config = [f"base={folder / 'out'}", f"executor={executor}"]
        config.append(f"genomics={{source: {samples}}}")
        command = [snakemake, "-s", str(ROOT / "Snakefile"), "-c2", "--config", *config]
        return run([*command, "--", str(target)], folder, _env(folder))

    def steps(folder: Path) -> float:
        total = 0.0
        for name in STEPS:
            command = [shardmap, "run", str(PIPELINE), "--worker", f"genomics-{name}"]
            command += ["--source", samples, "--dest", str(folder / "out")]
            total += run([*command, "--executor", executor], folder, _env(folder))
        return total

    def all_in_one(folder: Path) -> float:
        command = [shardmap, "run", str(PIPELINE), "--source", samples]
        command += ["--dest", str(folder / "out"), "--executor", executor]
        return run(command, folder, _env(folder))

    return {
        "snakemake per-sample": per_sample,
        "snakemake + shardmap steps": with_shardmap,
        "shardmap steps": steps,
        "shardmap all-in-one": all_in_one,
    }


def _env(folder: Path) -> dict[str, str]:
    return {**os.environ, "SHARDMAP_STATE_DIR": str(folder / "state")}


def check(folder: Path, names: list[str]) -> None:
    """Every side must have called every sample."""
    for name in names:
        found = [  # the top-level Snakefile's --dest is {base}/results
            folder / "out" / results / "genomics" / name / "calls.vcf.gz"
            for results in (".", "results")
        ]
        if not any(calls.exists() for calls in found):
            raise SystemExit(f"{found[0]} is missing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4, help="samples (1-20)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--executor", default="processes", help="shardmap's executor [processes]")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # a baseline job
    parser.add_argument("--sample", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--dest", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        step(args.step, args.sample, args.data, args.dest)
        return
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 2:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])  # children inherit

    from workers.genomics_sample import genomics_sample

    work = Path(tempfile.mkdtemp(prefix="shardmap-genomics-"))
    try:
        data = work / "data"
        names = genomics_sample(str(data), count=args.count)["samples"]
        candidates = sides(data, args.executor)
        times: dict[str, list[float]] = {name: [] for name in candidates}
        for number in range(args.rounds + 1):  # round 0 warms the OS file cache
            for name, fn in candidates.items():
                folder = work / f"{name.replace(' ', '-').replace('+', 'and')}-{number}"
                folder.mkdir()
                seconds = fn(folder)
                check(folder, names)
                if number:
                    times[name].append(seconds)
                shutil.rmtree(folder)
        print(
            f"{args.count} samples, 10,000 read pairs, 5 steps, 2 cores, "
            f"shardmap --executor {args.executor}, median of {args.rounds} rounds"
        )
        baseline = statistics.median(times["snakemake per-sample"])
        for name, values in times.items():
            median = statistics.median(values)
            spread = ", ".join(f"{value:.1f}" for value in values)
            print(f"  {name:<28} {median:6.1f} s  ({spread})  {median / baseline:.2f}x baseline")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
