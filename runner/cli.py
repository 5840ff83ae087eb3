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
from runner.samples import SAMPLES
from runner.spec import MapSpec

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2
EXECUTORS = click.Choice(["local", "threads", "processes", "inline", "dask"])


class _Usage(click.ClickException):
    exit_code = EXIT_BAD_INPUT


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what the runner does.")
@click.option(
    "--state-dir",
    envvar="SHARDMAP_STATE_DIR",
    help="Where run journals live [.shardmap].",
    type=click.Path(file_okay=False),
)
def main(verbose: bool, state_dir: str | None) -> None:
    """shardmap: run one function over every item of a dataset, the Distributed Map way."""
    if state_dir:  # one place decides; the engine, status and report all read it from here
        os.environ["SHARDMAP_STATE_DIR"] = state_dir
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


def _journal_options(fn):
    fn = click.option(
        "--scheduler",
        envvar="SHARDMAP_DASK_SCHEDULER",
        help="With --executor dask: a scheduler address (default: a LocalCluster).",
        callback=_set_scheduler,
        expose_value=False,
    )(fn)
    fn = click.option("--run-id", help="Name the run (default: a new UUID).")(fn)
    fn = click.option(
        "--shard-reading/--driver-reading",
        default=None,
        help="Workers read their own shards of CSV, JSONL and Parquet sources, or the driver "
        "reads every item [shard reading with --executor dask].",
    )(fn)
    return click.option(
        "--no-journal", is_flag=True, help="Do not journal the run (then no resume or redrive)."
    )(fn)


def _set_scheduler(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:  # the Dask executor reads it; one source of truth for CLI and API
        os.environ["SHARDMAP_DASK_SCHEDULER"] = value


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
@_journal_options
@_guard
def run_command(
    pipeline: str,
    source: str | None,
    dest: str | None,
    run_input: str | None,
    worker: str | None,
    executor: str | None,
    resource: tuple[str, ...],
    run_id: str | None,
    no_journal: bool,
    shard_reading: bool | None,
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
        run_id=run_id,
        journal=not no_journal,
        shard_reading=shard_reading,
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
@_journal_options
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
    run_id: str | None,
    no_journal: bool,
    shard_reading: bool | None,
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
    _execute(
        MapSpec.from_dict(spec),
        dest=dest,
        executor=executor,
        run_id=run_id,
        journal=not no_journal,
        shard_reading=shard_reading,
    )


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
@click.argument("workload", type=click.Choice(sorted(SAMPLES)))
@click.argument("dest_url")
@click.option(
    "--count", "--rows", type=click.IntRange(1), help="How many (objects, images, leads, rows)."
)
@click.option("--months", help="Months to cover, e.g. 2022-01,2023-06,2025-02 (taxi).")
@click.option("--seed", type=int, default=7)
@_guard
def sample_command(
    workload: str, dest_url: str, count: int | None, months: str | None, seed: int
) -> None:
    """Write a seeded sample dataset for WORKLOAD under DEST_URL; print its summary."""
    from runner.samples import write_sample

    extra: dict[str, Any] = {}
    if months:
        extra["months"] = [month.strip() for month in months.split(",") if month.strip()]
    summary = write_sample(workload, dest_url, count=count, seed=seed, **extra)
    click.echo(f"wrote {summary['objects']} objects under {dest_url}")
    click.echo(json.dumps(summary, indent=2, default=str))


# ---------------------------------------------------------------------------------------------


def _execute(spec: MapSpec, **options: Any) -> None:
    for warning in spec.aws_warnings():
        click.echo(f"warning: {warning}", err=True)
    _follow(run, spec, **options)


def _follow(start: Any, *args: Any, **options: Any) -> None:
    """Run ``start`` (run, resume or redrive) with a progress display; exit by its outcome."""
    display = _Progress(sys.stderr.isatty())
    try:
        result = start(*args, on_progress=display.update, **options)
    finally:
        display.close()
    _summarise(result)
    if options.get("journal", True):
        _print_report(result.run_id)
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
    if result.reduce is not None:
        outcome = result.reduce
        if outcome.succeeded:
            click.echo(f"  reduce {outcome.name}: {json.dumps(outcome.output, default=str)}")
        else:
            click.echo(f"  reduce {outcome.name} FAILED: {outcome.error}: {outcome.cause}")


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


def _print_report(run_id: str) -> None:
    from runner.report import build_report, format_report

    click.echo(format_report(build_report(None, run_id)))


# -- durable runs ------------------------------------------------------------------------------


@main.command("runs")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def runs_command(as_json: bool) -> None:
    """List journaled runs, newest first."""
    from runner.journal import list_runs

    rows = list_runs()
    if as_json:
        click.echo(json.dumps([_run_summary(row) for row in rows], indent=2))
        return
    for row in rows:
        click.echo(f"{row.id}  {row.status:<9}  {row.total_items:>10} items  {row.start_date}")


@main.command("status")
@click.argument("run_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="DescribeMapRun-shaped JSON.")
@click.option("--watch", is_flag=True, help="Follow the run until it ends.")
@click.option("--interval", type=click.FloatRange(0.1), default=1.0, help="Seconds between looks.")
@_guard
def status_command(run_id: str | None, as_json: bool, watch: bool, interval: float) -> None:
    """The Map Run record of RUN_ID (default: the newest run), like DescribeMapRun."""
    from runner.journal import Journal, JournalError, default_state_dir, list_runs
    from runner.status import describe_map_run

    if run_id is None:
        rows = list_runs()
        if not rows:
            raise JournalError(f"no runs under {default_state_dir()}")
        run_id = rows[0].id
    while True:
        with Journal.open(default_state_dir(), run_id, readonly=True) as journal:
            described = describe_map_run(journal)
        click.echo(json.dumps(described, indent=2) if as_json else _status_line(described))
        if not watch or described["status"] != "RUNNING":
            return
        time.sleep(interval)


@main.command("resume")
@click.argument("run_id")
@click.option("--executor", type=EXECUTORS, default=None, help="Where batches run [as before].")
@_guard
def resume_command(run_id: str, executor: str | None) -> None:
    """Finish RUN_ID after its driver died; batches already done do not run again."""
    from runner.engine import resume

    _follow(resume, run_id, executor=executor)


@main.command("redrive")
@click.argument("run_id")
@click.option("--executor", type=EXECUTORS, default=None, help="Where batches run [as before].")
@_guard
def redrive_command(run_id: str, executor: str | None) -> None:
    """Rerun the failed, timed-out, aborted and pending batches of RUN_ID."""
    from runner.engine import redrive

    _follow(redrive, run_id, executor=executor)


@main.command("report")
@click.argument("run_id")
@click.option(
    "--memory-mb",
    type=click.IntRange(128, 10240),
    default=1024,
    help="Lambda memory size for the cost estimate.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_guard
def report_command(run_id: str, memory_mb: int, as_json: bool) -> None:
    """Wall time, items/s, batch durations, failures by error, and the AWS cost of RUN_ID."""
    from runner.report import build_report, format_report, report_to_dict

    report = build_report(None, run_id, memory_mb=memory_mb)
    click.echo(json.dumps(report_to_dict(report), indent=2) if as_json else format_report(report))


def _status_line(described: dict[str, Any]) -> str:
    items = described["itemCounts"]
    line = (
        f"{described['mapRunArn'].rsplit(':', 1)[1]} {described['status']}: "
        f"{items['succeeded']} succeeded, {items['failed'] + items['timedOut']} failed, "
        f"{items['running']} running, {items['pending']} pending, {items['aborted']} aborted "
        f"of {items['total']} items"
    )
    if described.get("error"):
        line += f"  ({described['error']})"
    return line


def _run_summary(row: Any) -> dict[str, Any]:
    return {
        "runId": row.id,
        "status": row.status,
        "totalItems": row.total_items,
        "startDate": row.start_date,
        "stopDate": row.stop_date,
        "redriveCount": row.redrive_count,
        "manifest": row.manifest_url,
    }
