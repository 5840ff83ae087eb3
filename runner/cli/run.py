"""``shardmap run``, ``map``, ``validate``, ``asl``, ``cost``, ``workers`` and ``sample``: a
pipeline or an ad-hoc map, run on the embedded default or a named executor."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from runner.cli.common import (
    EXECUTORS,
    RUN_EXECUTORS,
    Usage,
    execute,
    executor_options,
    guard,
    journal_options,
    listing_source,
    main,
    pair,
    parse_input,
    parse_json,
    state_dir_of_run,
    summarise,
)
from runner.cli.stepfunctions import overridden, run_on_stepfunctions
from runner.errors import EXIT_BAD_INPUT, EXIT_RUN_FAILED
from runner.readers.infer import infer_item_reader
from runner.registry import known_workers
from runner.samples import SAMPLES
from runner.spec import MapSpec


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
@journal_options
@guard
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
    options = executor_options(executor, scheduler)
    resources = dict(pair(r, "--resource") for r in resource)
    pipeline_flags = source or dest or worker or allow_locations or run_id
    if pipeline.endswith(".json") and executor != "stepfunctions" and not pipeline_flags:
        execute_machine(
            json.loads(Path(pipeline).read_text()),
            parse_input(run_input),
            resources=resources,
            executor=executor,
            journal=not no_journal,
            shard_reading=shard_reading,
            **options,
        )
        return
    spec = MapSpec.load(pipeline, resources=resources)
    if allow_locations:  # widens the pipeline's AllowedLocations (default: SAME_AS_MANIFEST)
        spec = spec.replace(allowed_locations=spec.allowed_locations + allow_locations)
    if executor == "stepfunctions":
        spec = overridden(spec, source=source, dest=dest, worker=worker)
        run_on_stepfunctions(spec, name=name, region=region, run_input=parse_input(run_input))
        return
    execute(
        spec,
        source=source,
        dest=dest,
        run_input=parse_input(run_input),
        worker=worker,
        executor=executor,
        run_id=run_id,
        journal=not no_journal,
        shard_reading=shard_reading,
        **options,
    )


def execute_machine(definition: Any, run_input: Any, **options: Any) -> None:
    """A whole state machine: each Map Run summarised as ``run`` does, then the execution's
    output (its final JSON) on stdout; exit 1 when the execution fails."""
    from runner.workflow import run_state_machine

    outcome = run_state_machine(definition, run_input, state_dir=state_dir_of_run(), **options)
    for map_run in outcome.map_runs:
        summarise(map_run)
    execution = outcome.execution
    if execution.status != "SUCCEEDED":
        click.echo(f"Execution {execution.status}: {execution.error}: {execution.cause}", err=True)
        sys.exit(EXIT_RUN_FAILED)
    click.echo(json.dumps(execution.output, indent=2))


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
@journal_options
@guard
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
    options = executor_options(executor, scheduler)
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
        batcher["BatchInput"] = {"Source": listing_source(source)}
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
        spec["ItemSelector"] = parse_json(selector, "--selector")
    execute(
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
@guard
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
@guard
def asl_command(
    pipeline: str, function_arn: str | None, reduce_arn: str | None, check: bool
) -> None:
    """Print PIPELINE as an ASL state machine (an ASL .json is printed as it is).

    Problems found by --check go to stderr, one per line with its field path; warnings (what
    runs locally but needs s3:// locations on AWS) do not change the exit code.
    """
    if pipeline.endswith(".json"):
        if function_arn or reduce_arn:
            raise Usage("--function-arn and --reduce-arn apply to pipeline files, not ASL")
        try:
            definition = parse_json(Path(pipeline).read_text(), pipeline)
        except OSError as exc:
            raise Usage(f"cannot read {pipeline}: {exc}") from None
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
@guard
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
        raise Usage(f"{exc} (--items-per-batch)") from None
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
@guard
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
