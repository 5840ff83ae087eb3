"""Small jobs of the top-level Snakefile that the ``shardmap`` CLI does not do itself.

    python workflow/tasks.py sample WORKLOAD DATA_URL SUMMARY_URL [--count N] [--corrupt]
    python workflow/tasks.py fresh STATE_DIR RUN_ID DEST_URL

``sample`` writes a workload's seeded sample data under ``DATA_URL`` (after emptying it, so a
smaller dataset leaves no stale objects behind) and its summary, ground truth included, to
``SUMMARY_URL``, outside the data, where no listing picks it up. ``fresh`` clears what an earlier
run under ``RUN_ID`` left, its journal and ``DEST_URL/RUN_ID/``, so that when snakemake reruns a
rule the new Map Run can take the same id and the rule's output stays
``DEST_URL/RUN_ID/manifest.json``. Every URL may be a local path or ``s3://bucket/key``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import fsspec


def sample(args: argparse.Namespace) -> None:
    from runner.samples import write_sample

    fs, root = fsspec.core.url_to_fs(args.data_url)
    if fs.exists(root):
        fs.rm(root, recursive=True)
    options = {"corrupt": True} if args.corrupt else {}
    if args.months:
        options["months"] = [month.strip() for month in args.months.split(",") if month.strip()]
    summary = write_sample(
        args.workload, args.data_url, count=args.count, seed=args.seed, **options
    )
    with fsspec.open(args.summary_url, "w") as f:  # last: snakemake's marker that data is whole
        json.dump(summary, f, indent=1, default=str)
    print(f"wrote {summary['objects']} objects under {args.data_url}")


def fresh(args: argparse.Namespace) -> None:
    from runner.journal import JournalError, delete_run

    try:
        delete_run(args.state_dir, args.run_id)  # refuses while the run's driver is alive
    except JournalError as exc:
        sys.exit(f"{exc} (state directory {args.state_dir})")
    fs, root = fsspec.core.url_to_fs(args.dest_url)
    results = f"{root.rstrip('/')}/{args.run_id}"
    if fs.exists(results):
        fs.rm(results, recursive=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True)
    made = commands.add_parser("sample", help="Write a workload's sample data and summary.")
    made.add_argument("workload")
    made.add_argument("data_url")
    made.add_argument("summary_url")
    made.add_argument("--count", type=int)
    made.add_argument("--seed", type=int, default=7)
    made.add_argument("--corrupt", action="store_true", help="genomics: add a broken sample")
    made.add_argument("--months", help="taxi: months to cover, e.g. 2022-03,2023-06")
    made.set_defaults(handler=sample)
    cleared = commands.add_parser("fresh", help="Clear an earlier run's journal and results.")
    cleared.add_argument("state_dir", type=Path)
    cleared.add_argument("run_id")
    cleared.add_argument("dest_url")
    cleared.set_defaults(handler=fresh)
    args = parser.parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    main()
