"""Durable runs: ``shardmap runs``, ``status``, ``resume``, ``export``, ``redrive`` and
``report``, all through the journal's read API."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from runner.cli.common import (
    EXECUTORS,
    credential_options,
    follow,
    guard,
    main,
    state_dir_of_run,
)
from runner.cli.stepfunctions import finish_on_stepfunctions


@main.command("runs")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@guard
def runs_command(as_json: bool) -> None:
    """List journaled runs, newest first."""
    from runner.journal import list_runs

    rows = list_runs(state_dir_of_run())
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
@guard
def status_command(run_id: str | None, as_json: bool, watch: bool, interval: float) -> None:
    """The Map Run record of RUN_ID (default: the newest run), like DescribeMapRun."""
    from runner.journal import Journal, JournalError, list_runs
    from runner.status import describe_map_run

    state_dir = state_dir_of_run()
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


@main.command("resume")
@click.argument("run_id")
@click.option("--executor", type=EXECUTORS, default=None, help="Where batches run [as before].")
@credential_options
@guard
def resume_command(run_id: str, executor: str | None, source: str | None, dest: str | None) -> None:
    """Finish RUN_ID after its driver died; batches already done do not run again."""
    from runner.engine import resume

    follow(
        resume, run_id, state_dir=state_dir_of_run(), executor=executor, source=source, dest=dest
    )


@main.command("export")
@click.argument("run_id")
@click.option("--dest", help="The run's results URL again, when it holds user:password@.")
@guard
def export_command(run_id: str, dest: str | None) -> None:
    """Write the results of RUN_ID, which ended but whose driver died before its result files
    and manifest were written. Nothing runs again (`resume` does this too)."""
    from runner.engine import export

    state_dir = state_dir_of_run()
    follow(lambda **_: export(run_id, state_dir=state_dir, dest=dest))


@main.command("redrive")
@click.argument("run_id")
@click.option("--executor", type=EXECUTORS, default=None, help="Where batches run [as before].")
@credential_options
@guard
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
        finish_on_stepfunctions(run_id)
        return
    from runner.engine import redrive

    follow(
        redrive, run_id, state_dir=state_dir_of_run(), executor=executor, source=source, dest=dest
    )


@main.command("report")
@click.argument("run_id")
@click.option(
    "--memory-mb",
    type=click.IntRange(128, 10240),
    default=1024,
    help="Lambda memory size for the cost estimate.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@guard
def report_command(run_id: str, memory_mb: int, as_json: bool) -> None:
    """Wall time, items/s, batch durations, failures by error, and the AWS cost of RUN_ID."""
    from runner.report import build_report, format_report, report_to_dict

    report = build_report(state_dir_of_run(), run_id, memory_mb=memory_mb)
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
