"""Start, follow and redrive Step Functions executions of a deployed pipeline.

::

    deploy() ──► start() ──► follow(): DescribeExecution + ListMapRuns ──► DescribeMapRun ... ──►
    result(): MapRunResult (manifest_url = s3://<Bucket>/<Key> of ResultWriterDetails) ──►
    load_results(result.manifest_url)

A run on AWS reports the same :class:`~runner.types.MapRunResult` and
:class:`~runner.types.RunProgress` as a local run, so the CLI summary and progress display
serve both. Where a service has no Map Run record (an emulator without map runs), following
falls back to DescribeExecution alone and the counts stay at zero.

boto3 is imported here only; clients honour the standard credential chain and
``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from runner.errors import ExecutorError
from runner.types import Counts, MapRunResult, ReduceOutcome, RunProgress, RunStatus

__all__ = [
    "MapRunSnapshot",
    "follow",
    "redrive",
    "result",
    "run",
    "start",
    "wait",
]

log = logging.getLogger("shardmap.aws")

EXECUTOR = "stepfunctions"
#: Execution statuses after which nothing changes any more (PENDING_REDRIVE moves on)
_DONE = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
_RUN_STATUS = {
    "RUNNING": RunStatus.RUNNING,
    "PENDING_REDRIVE": RunStatus.RUNNING,
    "SUCCEEDED": RunStatus.SUCCEEDED,
    "FAILED": RunStatus.FAILED,
    "TIMED_OUT": RunStatus.FAILED,
    "ABORTED": RunStatus.ABORTED,
}


def _client(service: str, arn_or_region: str | None = None) -> Any:
    import boto3
    import botocore.config

    region = arn_or_region
    if region and region.startswith("arn:"):
        region = region.split(":")[3] or None
    config = botocore.config.Config(retries={"mode": "standard", "max_attempts": 5})
    return boto3.session.Session().client(service, region_name=region, config=config)


@dataclass(frozen=True)
class MapRunSnapshot:
    """One look at a running execution: DescribeExecution's status plus DescribeMapRun."""

    execution_arn: str
    status: str  # the execution's: RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED, ...
    map_run: dict[str, Any] | None  # DescribeMapRun (None before the Map Run starts)
    elapsed: float

    @property
    def done(self) -> bool:
        return self.status in _DONE

    def progress(self) -> RunProgress:
        """The snapshot as the CLI progress display takes it (the local runs' shape)."""
        items = Counts.from_aws((self.map_run or {}).get("itemCounts"))
        executions = Counts.from_aws((self.map_run or {}).get("executionCounts"))
        run_id = str((self.map_run or {}).get("mapRunArn") or self.execution_arn)
        return RunProgress(
            run_id.rsplit(":", 1)[-1],
            items,
            executions,
            self.map_run is not None and items.total > 0,
            self.elapsed,
            EXECUTOR,
        )


def start(
    target: Any, run_input: Any = None, *, name: str | None = None, region: str | None = None
) -> str:
    """Start an execution of ``target`` (a :class:`~runner.aws.deploy.Deployment` or a state
    machine ARN); returns the execution ARN.

    ``run_input`` defaults to the deployed spec's ``Input`` (else ``{}``).

    >>> arn = start(deployment, {"date": "2025-02-01"})  # doctest: +SKIP
    """
    machine_arn = target if isinstance(target, str) else target.state_machine_arn
    if run_input is None and not isinstance(target, str):
        run_input = target.spec.input
    sfn = _client("stepfunctions", region or machine_arn)
    response = sfn.start_execution(
        stateMachineArn=machine_arn,
        name=name or str(uuid.uuid4()),
        input=json.dumps({} if run_input is None else run_input),
    )
    return str(response["executionArn"])


def follow(
    execution_arn: str, *, interval: float = 2.0, timeout: float | None = None
) -> Iterator[MapRunSnapshot]:
    """Yield a :class:`MapRunSnapshot` every ``interval`` seconds until the execution ends
    (the last one yielded is final). ListMapRuns then DescribeMapRun give the counts; a service
    without map runs is followed by DescribeExecution alone."""
    sfn = _client("stepfunctions", execution_arn)
    started = time.monotonic()
    map_runs = True
    map_run_arn: str | None = None
    while True:
        status = sfn.describe_execution(executionArn=execution_arn)["status"]
        described = None
        if map_runs:
            try:
                if map_run_arn is None:
                    runs = sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
                    map_run_arn = runs[0]["mapRunArn"] if runs else None
                if map_run_arn is not None:
                    described = _plain(sfn.describe_map_run(mapRunArn=map_run_arn))
            except Exception as exc:
                if not _unsupported(exc):
                    raise
                log.info("no Map Run records (%s); following DescribeExecution", exc)
                map_runs = False
        snapshot = MapRunSnapshot(execution_arn, status, described, time.monotonic() - started)
        yield snapshot
        if snapshot.done:
            return
        if timeout is not None and time.monotonic() - started > timeout:
            raise ExecutorError(f"{execution_arn} still {status} after {timeout:g}s")
        time.sleep(interval)


def _unsupported(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("UnknownOperationException", "NotImplemented", "InvalidAction") or (
        status in (404, 501)
    )


def _plain(response: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in response.items() if key != "ResponseMetadata"}


def wait(
    execution_arn: str,
    *,
    on_progress: Callable[[RunProgress], None] | None = None,
    interval: float = 2.0,
    timeout: float | None = None,
    reduce: str | None = None,
) -> MapRunResult:
    """Follow ``execution_arn`` to its end, reporting progress; then :func:`result`."""
    for snapshot in follow(execution_arn, interval=interval, timeout=timeout):
        if on_progress is not None:
            on_progress(snapshot.progress())
    return result(execution_arn, reduce=reduce)


def result(execution_arn: str, *, reduce: str | None = None) -> MapRunResult:
    """The finished (or running) execution as a :class:`MapRunResult`.

    ``manifest_url`` is ``s3://<Bucket>/<Key>`` of the Map state's ``ResultWriterDetails``,
    taken from the execution output or, when a state follows the Map (a reduce step), from the
    ``MapStateExited`` event; :func:`runner.load_results` reads it. ``reduce`` names the
    pipeline's reducer: the execution's output is then its output.
    """
    sfn = _client("stepfunctions", execution_arn)
    execution = sfn.describe_execution(executionArn=execution_arn)
    output = _json(execution.get("output"))
    map_output = output if _is_map_output(output) else _map_state_output(sfn, execution_arn)
    described: dict[str, Any] = {}
    try:
        runs = sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
        if runs:
            described = _plain(sfn.describe_map_run(mapRunArn=runs[0]["mapRunArn"]))
    except Exception as exc:
        if not _unsupported(exc):
            raise
    map_run_arn = str(
        described.get("mapRunArn") or (map_output or {}).get("MapRunArn") or execution_arn
    )
    details = (map_output or {}).get("ResultWriterDetails") or {}
    manifest_url = f"s3://{details['Bucket']}/{details['Key']}" if "Bucket" in details else None
    execution_status = str(execution["status"])
    status = _RUN_STATUS.get(str(described.get("status") or execution_status), RunStatus.FAILED)
    if (
        status == RunStatus.SUCCEEDED
        and reduce is None
        and execution_status in _DONE - {"SUCCEEDED"}
    ):
        status = RunStatus.FAILED  # the Map Run succeeded, a state after it failed
    outcome = None
    if reduce is not None and status == RunStatus.SUCCEEDED:
        if execution_status == "SUCCEEDED":
            outcome = ReduceOutcome(reduce, output=output)
        elif execution_status in _DONE:
            outcome = ReduceOutcome(
                reduce,
                error=execution.get("error") or "States.TaskFailed",
                cause=execution.get("cause") or "",
            )
    now = datetime.now(UTC)
    error, cause = described.get("error"), described.get("cause")
    if status != RunStatus.SUCCEEDED and not error:
        error, cause = execution.get("error"), execution.get("cause")
    return MapRunResult(
        run_id=map_run_arn.rsplit(":", 1)[-1],
        map_run_arn=map_run_arn,
        status=status,
        item_counts=Counts.from_aws(described.get("itemCounts")),
        execution_counts=Counts.from_aws(described.get("executionCounts")),
        manifest_url=manifest_url,
        output=map_output,
        start_date=described.get("startDate") or execution.get("startDate") or now,
        stop_date=described.get("stopDate") or execution.get("stopDate") or now,
        error=error,
        cause=cause,
        reduce=outcome,
    )


def _json(text: Any) -> Any:
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _is_map_output(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("ResultWriterDetails"), dict)


def _map_state_output(sfn: Any, execution_arn: str) -> dict[str, Any] | None:
    """The Distributed Map state's output, from the execution history (newest first)."""
    paginator = sfn.get_paginator("get_execution_history")
    for page in paginator.paginate(executionArn=execution_arn, reverseOrder=True):
        for event in page.get("events", []):
            if event.get("type") != "MapStateExited":
                continue
            output = _json(event.get("stateExitedEventDetails", {}).get("output"))
            if _is_map_output(output):
                return dict(output)
    return None


def redrive(execution_arn: str) -> datetime:
    """Redrive a FAILED, TIMED_OUT or ABORTED execution (RedriveExecution): its Map Run reruns
    the unsuccessful children and keeps the successes. Returns the redrive date.

    >>> redrive("arn:aws:states:us-east-1:123456789012:execution:demo:run-1")  # doctest: +SKIP
    """
    sfn = _client("stepfunctions", execution_arn)
    response = sfn.redrive_execution(executionArn=execution_arn)
    when = response.get("redriveDate")
    return when if isinstance(when, datetime) else datetime.now(UTC)


def run(
    spec: Any,
    *,
    name: str | None = None,
    region: str | None = None,
    run_input: Any = None,
    on_progress: Callable[[RunProgress], None] | None = None,
    interval: float = 2.0,
    **deploy_options: Any,
) -> MapRunResult:
    """Deploy ``spec`` (create or update), start an execution, follow it, return the result.

    >>> result = run(MapSpec.from_yaml("pipelines/demo.yaml"), name="demo")  # doctest: +SKIP
    """
    from runner.aws.deploy import deploy

    deployment = deploy(spec, name=name, region=region, **deploy_options)
    execution_arn = start(deployment, run_input)
    log.info("started %s", execution_arn)
    return wait(
        execution_arn,
        on_progress=on_progress,
        interval=interval,
        reduce=deployment.reduce,
    )
