"""The ``shardmap`` command line: the group, its shared options and how a run is followed.

The commands live beside this module (``run``, ``durable``, ``stepfunctions``, ``triggers``);
:mod:`runner.cli` imports them all so that ``main`` has every command. Thin: parse, build a
MapSpec, call the public API, render.

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
from runner.settings import DEFAULT_STATE_DIR, env_var, settings
from runner.spec import MapSpec

EXIT_FAILED = EXIT_RUN_FAILED


EXECUTORS = click.Choice(["local", "threads", "processes", "inline", "dask"])


# `run` may also go to AWS: deploy, start, follow DescribeMapRun (runner.aws.stepfunctions)
RUN_EXECUTORS = click.Choice([*EXECUTORS.choices, "stepfunctions"])


class Usage(click.ClickException):
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
    # takes a state_dir (state_dir_of_run), never through the environment.
    # --worker module:function finds the user's own modules in the working directory without
    # putting it on sys.path, where a workers/ folder would shadow ours (runner.registry).
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def guard(fn):
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


def journal_options(fn):
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


def state_dir_of_run() -> str:
    """``--state-dir``, else ``$SHARDMAP_STATE_DIR``, else ``.shardmap``: what every command
    passes as ``state_dir``."""
    given = click.get_current_context().find_root().params.get("state_dir")
    return given or settings().state_dir


def executor_options(executor: str | None, scheduler: str | None) -> dict[str, Any]:
    """``--scheduler`` as the API's ``executor_options``; a usage error for an executor that is
    not Dask's (it would be ignored)."""
    if not scheduler:
        return {}
    chosen = executor or settings().executor
    if chosen != "dask":
        raise Usage(f"--scheduler applies to --executor dask, not to {chosen!r}")
    return {"executor_options": {"scheduler": scheduler}}


def credential_options(fn):
    fn = click.option("--dest", help="The run's results URL again, when it holds user:password@.")(
        fn
    )
    return click.option(
        "--source",
        help="The run's item source URL again, when it holds user:password@ (the journal "
        "keeps such URLs masked).",
    )(fn)


def execute(spec: MapSpec, **options: Any) -> None:
    for warning in spec.aws_warnings():
        click.echo(f"warning: {warning}", err=True)
    follow(run, spec, state_dir=state_dir_of_run(), **options)


def follow(start: Any, *args: Any, **options: Any) -> None:
    """Run ``start`` (run, resume or redrive) with a progress display; exit by its outcome."""
    display = Progress(sys.stderr.isatty())
    try:
        result = start(*args, on_progress=display.update, **options)
    finally:
        display.close()
    summarise(result)
    if options.get("journal", True):
        print_report(result.run_id)
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


def summarise(result: MapRunResult) -> None:
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


class Progress:
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


def listing_source(url: str) -> str:
    if url.startswith("s3://"):
        return "S3://" + url[5:].split("/", 1)[0]
    return str(Path(url).resolve())


def parse_input(text: str | None) -> Any:
    if text is None:
        return None
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise Usage(f"--input: cannot read {text[1:]}: {exc}") from None
    return parse_json(text, "--input")


def parse_json(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(option, f"not valid JSON: {exc}") from None


def pair(text: str, option: str) -> tuple[str, str]:
    key, sep, value = text.rpartition("=")
    if not sep or not key or not value:
        raise Usage(f"{option} takes ARN=WORKER, got {text!r}")
    return key, value


def print_report(run_id: str) -> None:
    from runner.report import build_report, format_report

    click.echo(format_report(build_report(state_dir_of_run(), run_id)))
