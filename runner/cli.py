"""The ``shardmap`` command line. Thin: parse, build a MapSpec, call the public API, render.

Exit codes: 0 the run succeeded, 1 the run failed, 2 bad usage or bad input (an invalid
pipeline, an unknown worker, an item source that cannot be read).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from runner.engine import MapRunResult, RunProgress, infer_item_reader, run
from runner.errors import ReaderError, ShardmapError, SpecError
from runner.registry import known_workers
from runner.spec import MapSpec

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2
EXECUTORS = click.Choice(["local", "threads", "processes", "inline"])


class _Usage(click.ClickException):
    exit_code = EXIT_BAD_INPUT


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what the runner does.")
def main(verbose: bool) -> None:
    """shardmap: run one function over every item of a dataset, the Distributed Map way."""
    # --worker module:function should find the user's own modules, as `python -m` would.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _guard(fn):
    """Turn shardmap's own errors into ``TypeName: message`` and exit 2; bugs keep tracebacks."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ShardmapError as exc:
            click.echo(f"{type(exc).__name__}: {exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)

    return wrapper


@main.command("run")
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.option("--source", help="Item source URL (file, folder or s3:// prefix); overrides Source.")
@click.option("--dest", help="Results URL (local folder or s3://bucket/prefix).")
@click.option("--input", "run_input", help="Run input as JSON, or @file.json.")
@click.option("--worker", help="Worker name (or module:function); overrides Worker.")
@click.option("--executor", type=EXECUTORS, default=None, help="Where batches run [local].")
@click.option(
    "--resource",
    multiple=True,
    metavar="ARN=WORKER",
    help="For ASL definitions: map a Lambda ARN to a worker.",
)
@_guard
def run_command(
    pipeline: str,
    source: str | None,
    dest: str | None,
    run_input: str | None,
    worker: str | None,
    executor: str | None,
    resource: tuple[str, ...],
) -> None:
    """Run a pipeline file (YAML) or an ASL state machine (.json)."""
    resources = dict(_pair(r, "--resource") for r in resource)
    spec = MapSpec.load(pipeline, resources=resources)
    _execute(
        spec,
        source=source,
        dest=dest,
        run_input=_parse_input(run_input),
        worker=worker,
        executor=executor,
    )


@main.command("map")
@click.argument("source")
@click.option("--worker", required=True, help="Registered worker name, or module:function.")
@click.option("--dest", required=True, help="Results URL (local folder or s3://bucket/prefix).")
@click.option(
    "--input-type",
    type=click.Choice(["LISTING", "CSV", "JSON", "JSONL", "PARQUET"]),
    help="How to read SOURCE (default: a folder/prefix is listed, a file read by suffix).",
)
@click.option("--batch-size", type=click.IntRange(1), help="MaxItemsPerBatch.")
@click.option("--max-batch-bytes", type=click.IntRange(1), help="MaxInputBytesPerBatch.")
@click.option(
    "--concurrency", type=click.IntRange(0), default=0, help="MaxConcurrency (0: no limit)."
)
@click.option("--tolerate", type=click.FloatRange(0, 100), help="ToleratedFailurePercentage.")
@click.option("--tolerate-count", type=click.IntRange(0), help="ToleratedFailureCount.")
@click.option("--retries", type=click.IntRange(0), default=0, help="Retry every error this often.")
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), help="TimeoutSeconds per batch."
)
@click.option("--max-items", type=click.IntRange(1), help="MaxItems.")
@click.option("--selector", help="ItemSelector as JSON.")
@click.option("--executor", type=EXECUTORS, default=None, help="Where batches run [local].")
@_guard
def map_command(
    source: str,
    worker: str,
    dest: str,
    input_type: str | None,
    batch_size: int | None,
    max_batch_bytes: int | None,
    concurrency: int,
    tolerate: float | None,
    tolerate_count: int | None,
    retries: int,
    timeout: float | None,
    max_items: int | None,
    selector: str | None,
    executor: str | None,
) -> None:
    """Ad-hoc run of WORKER over every item of SOURCE (an S3 prefix, a folder or a file)."""
    reader = infer_item_reader(source, input_type)
    if max_items:
        reader.setdefault("ReaderConfig", {})["MaxItems"] = max_items
    spec: dict[str, Any] = {
        "Name": "shardmap-map",
        "Worker": worker,
        "Source": source,
        "ItemReader": reader,
        "MaxConcurrency": concurrency,
    }
    batcher: dict[str, Any] = {}
    if batch_size:
        batcher["MaxItemsPerBatch"] = batch_size
    if max_batch_bytes:
        batcher["MaxInputBytesPerBatch"] = max_batch_bytes
    if reader["Resource"].endswith("listObjectsV2"):
        # Listing items carry keys only; tell the worker where the objects live.
        batcher["BatchInput"] = {"Source": _listing_source(source)}
        batcher.setdefault("MaxItemsPerBatch", 1)
    if batcher:
        spec["ItemBatcher"] = batcher
    if tolerate is not None:
        spec["ToleratedFailurePercentage"] = tolerate
    if tolerate_count is not None:
        spec["ToleratedFailureCount"] = tolerate_count
    if retries:
        spec["Retry"] = [{"ErrorEquals": ["States.ALL"], "MaxAttempts": retries}]
    if timeout:
        spec["TimeoutSeconds"] = timeout
    if selector:
        spec["ItemSelector"] = _parse_json(selector, "--selector")
    _execute(MapSpec.from_dict(spec), dest=dest, executor=executor)


@main.command("workers")
def workers_command() -> None:
    """List registered workers with their one-line docs."""
    for name, doc in known_workers().items():
        click.echo(f"{name:<20} {doc}")


@main.command("validate")
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.option("--asl", "show_asl", is_flag=True, help="Also print the pipeline as ASL.")
@_guard
def validate_command(pipeline: str, show_asl: bool) -> None:
    """Check a pipeline; print AWS-limit warnings."""
    spec = MapSpec.load(pipeline)
    for warning in spec.aws_warnings():
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"{pipeline}: valid")
    if show_asl:
        click.echo(json.dumps(spec.to_asl(), indent=2))


@main.command("sample")
@click.argument("workload", type=click.Choice(["demo"]))
@click.argument("dest_url")
@click.option("--count", type=click.IntRange(1), default=2000, help="How many objects.")
@click.option("--seed", type=int, default=7)
@_guard
def sample_command(workload: str, dest_url: str, count: int, seed: int) -> None:
    """Write a seeded sample dataset for WORKLOAD under DEST_URL."""
    from runner.samples import write_demo

    written = write_demo(dest_url, count=count, seed=seed)
    click.echo(f"wrote {written} objects under {dest_url}")


# ---------------------------------------------------------------------------------------------


def _execute(spec: MapSpec, **options: Any) -> None:
    for warning in spec.aws_warnings():
        click.echo(f"warning: {warning}", err=True)
    display = _Progress(sys.stderr.isatty())
    try:
        result = run(spec, on_progress=display.update, **options)
    finally:
        display.close()
    _summarise(result)
    if result.succeeded:
        return
    bad_input = result.error in (ReaderError.error_name, "States.Runtime")
    sys.exit(EXIT_BAD_INPUT if bad_input else EXIT_FAILED)


def _summarise(result: MapRunResult) -> None:
    items = result.item_counts
    seconds = (result.stop_date - result.start_date).total_seconds()
    click.echo(f"Map Run {result.status}: {result.map_run_arn}")
    click.echo(
        f"  items: {items.succeeded} succeeded, {items.failed} failed, "
        f"{items.timed_out} timed out, {items.aborted} aborted, {items.pending} pending "
        f"of {items.total} in {seconds:.1f}s"
    )
    if result.error:
        click.echo(f"  error: {result.error}: {result.cause}")
    for warning in result.warnings:
        click.echo(f"  warning: {warning}")
    click.echo(f"  manifest: {result.manifest_url}")


class _Progress:
    """A live rich display on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, live: bool) -> None:
        self.live = None
        self.last_line = time.monotonic()
        if live:
            from rich.console import Console
            from rich.live import Live

            self.live = Live(console=Console(stderr=True), refresh_per_second=4, transient=True)
            self.live.start()

    def update(self, progress: RunProgress) -> None:
        line = self._line(progress)
        if self.live is not None:
            from rich.text import Text

            self.live.update(Text(line))  # plain text: "[local ...]" is not rich markup
        elif time.monotonic() - self.last_line > 5:
            self.last_line = time.monotonic()
            click.echo(line, err=True)

    @staticmethod
    def _line(progress: RunProgress) -> str:
        items = progress.items
        done = items.succeeded + items.failed + items.timed_out
        rate = progress.items_per_second
        total = items.total if progress.total_known else None
        eta = ""
        if total and rate > 0:
            eta = f"  ETA {max(0.0, (total - done) / rate):.0f}s"
        of_total = f"/{total}" if total else f"/{items.total}+"
        return (
            f"[{progress.executor}] {done}{of_total} items: {items.succeeded} succeeded, "
            f"{items.failed + items.timed_out} failed, {items.running} running, "
            f"{items.pending} pending  {rate:,.0f} items/s{eta}"
        )

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


def _listing_source(url: str) -> str:
    if url.startswith("s3://"):
        return "S3://" + url[5:].split("/", 1)[0]
    return str(Path(url).resolve())


def _parse_input(text: str | None) -> Any:
    if text is None:
        return None
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise _Usage(f"--input: cannot read {text[1:]}: {exc}") from None
    return _parse_json(text, "--input")


def _parse_json(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(option, f"not valid JSON: {exc}") from None


def _pair(text: str, option: str) -> tuple[str, str]:
    key, sep, value = text.rpartition("=")
    if not sep or not key or not value:
        raise _Usage(f"{option} takes ARN=WORKER, got {text!r}")
    return key, value
