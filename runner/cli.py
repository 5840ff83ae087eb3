"""The ``shardmap`` command line. Thin: parse, build a MapSpec, call the public API, render.

Exit codes (:mod:`runner.errors` gives each error class its own): 0 the run succeeded, 1 the run
failed or was aborted, 2 bad usage or bad input (an invalid pipeline, an unknown worker, an item
source whose data cannot be read), 3 storage or a service could not be used (unreachable, access
denied, disk full).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import click

from runner.engine import MapRunResult, RunProgress, run
from runner.errors import (
    EXIT_BAD_INPUT,
    EXIT_RUN_FAILED,
    ReaderError,
    ShardmapError,
    SpecError,
)
from runner.readers.infer import infer_item_reader
from runner.registry import known_workers
from runner.samples import SAMPLES
from runner.settings import DEFAULT_STATE_DIR, env_var, settings
from runner.spec import MapSpec

EXIT_FAILED = EXIT_RUN_FAILED
EXECUTORS = click.Choice(["local", "threads", "processes", "inline", "dask"])
# `run` may also go to AWS: deploy, start, follow DescribeMapRun (runner.aws.stepfunctions)
RUN_EXECUTORS = click.Choice([*EXECUTORS.choices, "stepfunctions"])


class _Usage(click.ClickException):
    exit_code = EXIT_BAD_INPUT


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what the runner does.")
@click.option(
    "--state-dir",
    help=f"Where run journals live [${env_var('state_dir')}, else {DEFAULT_STATE_DIR}].",
    type=click.Path(file_okay=False),
)
def main(verbose: bool, state_dir: str | None) -> None:
    """shardmap: run one function over every item of a dataset, the Distributed Map way."""
    # --state-dir stays in this context's params: the commands pass it to every call that
    # takes a state_dir (_state_dir), never through the environment.
    # --worker module:function finds the user's own modules in the working directory without
    # putting it on sys.path, where a workers/ folder would shadow ours (runner.registry).
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _guard(fn):
    """Turn shardmap's own errors into ``TypeName: message`` and the error class's exit code
    (2 bad usage or input, 3 storage unavailable, ...); bugs keep their tracebacks."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ShardmapError as exc:
            click.echo(f"{type(exc).__name__}: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper


def _journal_options(fn):
    fn = click.option(
        "--scheduler",
        help="With --executor dask: a scheduler address "
        f"[${env_var('dask_scheduler')}, else a LocalCluster].",
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


def _state_dir() -> str:
    """``--state-dir``, else ``$SHARDMAP_STATE_DIR``, else ``.shardmap``: what every command
    passes as ``state_dir``."""
    given = click.get_current_context().find_root().params.get("state_dir")
    return given or settings().state_dir


def _executor_options(executor: str | None, scheduler: str | None) -> dict[str, Any]:
    """``--scheduler`` as the API's ``executor_options``; a usage error for an executor that is
    not Dask's (it would be ignored)."""
    if not scheduler:
        return {}
    chosen = executor or settings().executor
    if chosen != "dask":
        raise _Usage(f"--scheduler applies to --executor dask, not to {chosen!r}")
    return {"executor_options": {"scheduler": scheduler}}


@main.command("run")
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.option("--source", help="Item source URL (file, folder or s3:// prefix); overrides Source.")
@click.option("--dest", help="Results URL (local folder or s3://bucket/prefix).")
@click.option("--input", "run_input", help="Run input as JSON, or @file.json.")
@click.option("--worker", help="Worker name (or module:function); overrides Worker.")
@click.option(
    "--executor",
    type=RUN_EXECUTORS,
    default=None,
    help="Where batches run [local]; stepfunctions deploys and runs on AWS.",
)
@click.option("--name", help="With --executor stepfunctions: the state machine [Name].")
@click.option("--region", help="With --executor stepfunctions: the AWS region.")
@click.option(
    "--resource",
    multiple=True,
    metavar="ARN=WORKER",
    help="For ASL definitions: map a Lambda ARN to a worker.",
)
@click.option(
    "--allow-manifest-location",
    "allow_locations",
    multiple=True,
    metavar="URL",
    help="Let a MANIFEST name files here too (an s3:// prefix, a folder, a URL); repeatable.",
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
    name: str | None,
    region: str | None,
    resource: tuple[str, ...],
    allow_locations: tuple[str, ...],
    run_id: str | None,
    no_journal: bool,
    shard_reading: bool | None,
    scheduler: str | None,
) -> None:
    """Run a pipeline file (YAML) or an ASL state machine (.json)."""
    options = _executor_options(executor, scheduler)
    resources = dict(_pair(r, "--resource") for r in resource)
    spec = MapSpec.load(pipeline, resources=resources)
    if allow_locations:  # widens the pipeline's AllowedLocations (default: SAME_AS_MANIFEST)
        spec = spec.replace(allowed_locations=spec.allowed_locations + allow_locations)
    if executor == "stepfunctions":
        spec = _overridden(spec, source=source, dest=dest, worker=worker)
        _run_on_stepfunctions(spec, name=name, region=region, run_input=_parse_input(run_input))
        return
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
        **options,
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
    scheduler: str | None,
) -> None:
    """Ad-hoc run of WORKER over every item of SOURCE (an S3 prefix, a folder or a file)."""
    options = _executor_options(executor, scheduler)
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
        **options,
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


@main.command("asl")
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.option("--function-arn", help="The worker's Lambda function [a placeholder ARN].")
@click.option("--reduce-arn", help="The Reduce step's Lambda function [a placeholder ARN].")
@click.option(
    "--check", is_flag=True, help="Run asl-validator and the strict checks; exit 2 on errors."
)
@_guard
def asl_command(
    pipeline: str, function_arn: str | None, reduce_arn: str | None, check: bool
) -> None:
    """Print PIPELINE as an ASL state machine (an ASL .json is printed as it is).

    Problems found by --check go to stderr, one per line with its field path; warnings (what
    runs locally but needs s3:// locations on AWS) do not change the exit code.
    """
    if pipeline.endswith(".json"):
        if function_arn or reduce_arn:
            raise _Usage("--function-arn and --reduce-arn apply to pipeline files, not ASL")
        try:
            definition = _parse_json(Path(pipeline).read_text(), pipeline)
        except OSError as exc:
            raise _Usage(f"cannot read {pipeline}: {exc}") from None
    else:
        spec = MapSpec.load(pipeline)
        definition = spec.to_asl(function_arn=function_arn, reduce_arn=reduce_arn)
    click.echo(json.dumps(definition, indent=2))
    if not check:
        return
    from runner.aws.checks import asl_validator, check_asl, errors_only

    problems = check_asl(definition) + asl_validator(definition)
    for problem in problems:
        click.echo(f"{problem.severity}: {problem} [{problem.source}]", err=True)
    errors = errors_only(problems)
    if errors:
        click.echo(f"{pipeline}: {len(errors)} error(s)", err=True)
        sys.exit(EXIT_BAD_INPUT)
    click.echo(f"{pipeline}: asl-validator and strict checks passed", err=True)


@main.command("cost")
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.option("--items", type=click.IntRange(0), required=True, help="Items in the source.")
@click.option(
    "--memory-mb", type=click.IntRange(128, 10240), default=1024, help="Lambda memory [1024]."
)
@click.option(
    "--seconds-per-batch",
    type=click.FloatRange(0),
    default=1.0,
    help="Worker time of one batch (of one item without an ItemBatcher) [1.0].",
)
@click.option(
    "--items-per-batch",
    type=click.IntRange(1),
    help="Batch size, when the pipeline batches by bytes or a Path field.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_guard
def cost_command(
    pipeline: str,
    items: int,
    memory_mb: int,
    seconds_per_batch: float,
    items_per_batch: int | None,
    as_json: bool,
) -> None:
    """Estimate what running PIPELINE over --items items costs on Step Functions + Lambda.

    The run report's cost model (runner.report), before running: Standard and Express child
    workflows, each plus Lambda, us-east-1 list prices, nothing retried.
    """
    from dataclasses import asdict

    from runner.report import estimate_for_items

    spec = MapSpec.load(pipeline)
    reader = spec.item_reader
    if reader is not None and reader.reader_config.max_items is not None:
        items = min(items, reader.reader_config.max_items)
    try:
        cost = estimate_for_items(
            spec, items, seconds_per_batch, memory_mb, items_per_batch=items_per_batch
        )
    except ValueError as exc:
        raise _Usage(f"{exc} (--items-per-batch)") from None
    if as_json:
        inputs = {"pipeline": pipeline, "items": items, "seconds_per_batch": seconds_per_batch}
        data = {**inputs, "execution_type": spec.execution_type, "cost": asdict(cost)}
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(_cost_text(spec, items, seconds_per_batch, cost))


def _cost_text(spec: MapSpec, items: int, seconds: float, cost: Any) -> str:
    import math

    def usd(amount: float) -> str:  # three significant digits below $1, as the report
        if amount >= 1 or amount == 0:
            return f"${amount:,.2f}"
        return f"${amount:.{min(12, 2 - math.floor(math.log10(amount)))}f}"

    here = {spec.execution_type: "  <- this pipeline's ExecutionType"}
    return "\n".join(
        line.rstrip()
        for line in (
            f"{spec.name}: {items:,} items in {cost.children:,} child executions, "
            f"{seconds:g} s each",
            f"cost      us-east-1 list prices, no free tier; Lambda x86 {cost.memory_mb} MB",
            f"  Standard + Lambda  {usd(cost.standard_lambda_usd):<12}{here.get('STANDARD', '')}",
            f"  Express + Lambda   {usd(cost.express_lambda_usd):<12}{here.get('EXPRESS', '')}",
            f"  Standard children  {usd(cost.standard_usd):<12}  "
            f"{cost.state_transitions:,} state transitions",
            f"  Express children   {usd(cost.express_usd):<12}  {cost.express_requests:,} "
            f"requests, {cost.express_billed_seconds:,.1f} s at {cost.express_memory_mb} MB",
            f"  Map dispatch       {usd(cost.dispatch_usd):<12}  {cost.children:,} transitions "
            "(paid with Express children too)",
            f"  Lambda             {usd(cost.lambda_usd):<12}  {cost.lambda_requests:,} "
            f"requests, {cost.lambda_gb_seconds:,.1f} GB-s",
        )
    )


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
    _follow(run, spec, state_dir=_state_dir(), **options)


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
    if result.status == "ABORTED" and options.get("journal", True):
        click.echo(
            f"  the aborted and pending batches run with `shardmap redrive {result.run_id}`",
            err=True,
        )
    if result.error_exit_code is not None:
        sys.exit(result.error_exit_code)
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

    click.echo(format_report(build_report(_state_dir(), run_id)))


# -- Step Functions (runner.aws) ---------------------------------------------------------------


@main.command("deploy")
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.option("--name", help="State machine name (the other resources derive from it) [Name].")
@click.option("--region", help="AWS region [AWS_DEFAULT_REGION].")
@click.option(
    "--trigger",
    "trigger_config",
    type=click.Path(dir_okay=False),
    help="Trigger config: also create its EventBridge rules for PIPELINE (docs/triggers.md).",
)
@_guard
def deploy_command(
    pipeline: str, name: str | None, region: str | None, trigger_config: str | None
) -> None:
    """Create or update the Lambda, IAM roles and state machine of PIPELINE on AWS."""
    from runner.aws.deploy import deploy

    deployment = deploy(MapSpec.load(pipeline), name=name, region=region)
    for action in deployment.actions:
        click.echo(f"  {action}")
    state = "deployed" if deployment.changed else "up to date"
    click.echo(f"{state}: {deployment.state_machine_arn}")
    click.echo(f"  worker: {deployment.function_arn}")
    if trigger_config:
        from runner.triggers.aws import deploy_triggers
        from runner.triggers.config import load_config

        triggered = deploy_triggers(
            load_config(trigger_config),
            name=deployment.name,
            state_machine_arn=deployment.state_machine_arn,
            region=deployment.region,
            pipeline=pipeline,
        )
        for action in triggered.actions:
            click.echo(f"  {action}")
        for trigger, rule in triggered.rules.items():
            click.echo(f"  trigger {trigger}: {rule}")


def _overridden(
    spec: MapSpec, *, source: str | None, dest: str | None, worker: str | None
) -> MapSpec:
    changes: dict[str, Any] = {}
    if source:
        changes["source"] = source
    if worker:
        changes["worker"] = worker
    if dest:
        config = spec.result_writer.writer_config if spec.result_writer else None
        writer = {"WriterConfig": config.model_dump(by_alias=True)} if config else {}
        changes["result_writer"] = {**writer, "Destination": dest}
    return spec.replace(**changes) if changes else spec


def _run_on_stepfunctions(
    spec: MapSpec, *, name: str | None, region: str | None, run_input: Any
) -> None:
    """Deploy (create or update), start, follow DescribeMapRun, print the summary."""
    from runner.aws import stepfunctions
    from runner.aws.deploy import deploy

    for warning in spec.aws_warnings():
        click.echo(f"warning: {warning}", err=True)
    deployment = deploy(spec, name=name, region=region)
    for action in deployment.actions:
        click.echo(f"deploy: {action}", err=True)
    execution_arn = stepfunctions.start(deployment, run_input)
    click.echo(f"execution: {execution_arn}", err=True)
    _finish_on_stepfunctions(execution_arn, deployment.reduce)


def _finish_on_stepfunctions(execution_arn: str, reduce: str | None = None) -> None:
    from runner.aws import stepfunctions

    display = _Progress(sys.stderr.isatty())
    try:
        result = stepfunctions.wait(execution_arn, on_progress=display.update, reduce=reduce)
    finally:
        display.close()
    _summarise(result)
    if not result.succeeded:
        sys.exit(EXIT_FAILED)


# -- triggers (runner.triggers) ----------------------------------------------------------------


@main.group("trigger")
def trigger_group() -> None:
    """Start runs when data lands in S3, exactly once per object version (docs/triggers.md)."""


@trigger_group.command("serve")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--once", is_flag=True, help="Take one round of events, finish its runs, exit.")
@_guard
def trigger_serve_command(config: str, once: bool) -> None:
    """Map S3 "Object Created" events to the pipelines of CONFIG until SIGTERM."""
    from runner.triggers.service import serve

    if logging.getLogger().level > logging.INFO:  # a service says what it starts and refuses
        logging.getLogger("shardmap.triggers").setLevel(logging.INFO)
    # The config's own state_dir wins; else --state-dir, else $SHARDMAP_STATE_DIR.
    serve(config, once=once, state_dir=click.get_current_context().find_root().params["state_dir"])


# -- durable runs ------------------------------------------------------------------------------


@main.command("runs")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_guard
def runs_command(as_json: bool) -> None:
    """List journaled runs, newest first."""
    from runner.journal import list_runs

    rows = list_runs(_state_dir())
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
    from runner.journal import Journal, JournalError, list_runs
    from runner.status import describe_map_run

    state_dir = _state_dir()
    if run_id is None:
        rows = list_runs(state_dir)
        if not rows:
            raise JournalError(f"no runs under {state_dir}")
        run_id = rows[0].id
    while True:
        with Journal.open(state_dir, run_id, readonly=True) as journal:
            described = describe_map_run(journal)
        click.echo(json.dumps(described, indent=2) if as_json else _status_line(described))
        if not as_json and "shardmap" in described:
            click.echo(
                f"  ended {described['shardmap']['outcome']}, but its results are not written "
                f"yet; if its driver is gone, `shardmap export {run_id}` writes them",
                err=True,
            )
        if not watch or described["status"] != "RUNNING":
            return
        time.sleep(interval)


def _credential_options(fn):
    fn = click.option("--dest", help="The run's results URL again, when it holds user:password@.")(
        fn
    )
    return click.option(
        "--source",
        help="The run's item source URL again, when it holds user:password@ (the journal "
        "keeps such URLs masked).",
    )(fn)


@main.command("resume")
@click.argument("run_id")
@click.option("--executor", type=EXECUTORS, default=None, help="Where batches run [as before].")
@_credential_options
@_guard
def resume_command(run_id: str, executor: str | None, source: str | None, dest: str | None) -> None:
    """Finish RUN_ID after its driver died; batches already done do not run again."""
    from runner.engine import resume

    _follow(resume, run_id, state_dir=_state_dir(), executor=executor, source=source, dest=dest)


@main.command("export")
@click.argument("run_id")
@click.option("--dest", help="The run's results URL again, when it holds user:password@.")
@_guard
def export_command(run_id: str, dest: str | None) -> None:
    """Write the results of RUN_ID, which ended but whose driver died before its result files
    and manifest were written. Nothing runs again (`resume` does this too)."""
    from runner.engine import export

    state_dir = _state_dir()
    _follow(lambda **_: export(run_id, state_dir=state_dir, dest=dest))


@main.command("redrive")
@click.argument("run_id")
@click.option("--executor", type=EXECUTORS, default=None, help="Where batches run [as before].")
@_credential_options
@_guard
def redrive_command(
    run_id: str, executor: str | None, source: str | None, dest: str | None
) -> None:
    """Rerun the failed, timed-out, aborted and pending batches of RUN_ID.

    RUN_ID may be a Step Functions execution ARN: the execution is redriven on AWS
    (RedriveExecution) and followed to its end.
    """
    if run_id.startswith("arn:"):
        from runner.aws import stepfunctions

        stepfunctions.redrive(run_id)
        click.echo(f"redriven: {run_id}", err=True)
        _finish_on_stepfunctions(run_id)
        return
    from runner.engine import redrive

    _follow(redrive, run_id, state_dir=_state_dir(), executor=executor, source=source, dest=dest)


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

    report = build_report(_state_dir(), run_id, memory_mb=memory_mb)
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
