"""``shardmap deploy`` and ``run --executor stepfunctions``: the pipeline as a real Step Functions
state machine (:mod:`runner.aws`)."""

from __future__ import annotations

import sys
from typing import Any

import click

from runner.cli.common import (
    EXIT_FAILED,
    Progress,
    guard,
    main,
    summarise,
)
from runner.spec import MapSpec


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
@guard
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


def overridden(
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


def run_on_stepfunctions(
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
    finish_on_stepfunctions(execution_arn, deployment.reduce)


def finish_on_stepfunctions(execution_arn: str, reduce: str | None = None) -> None:
    from runner.aws import stepfunctions

    display = Progress(sys.stderr.isatty())
    try:
        result = stepfunctions.wait(execution_arn, on_progress=display.update, reduce=reduce)
    finally:
        display.close()
    summarise(result)
    if not result.succeeded:
        sys.exit(EXIT_FAILED)
