"""MapSpec <-> Amazon States Language: one Distributed Map state, its child Task and ResultWriter.

shardmap's own fields travel as follows: ``Worker`` becomes the Lambda ARN of the child Task
(``resources`` maps ARNs back to workers on load), ``Source`` becomes ItemReader.Parameters
(``Bucket``/``Key`` or ``Bucket``/``Prefix``), ``Destination`` ResultWriter.Parameters, and
``Retry``/``TimeoutSeconds`` sit on the child Task, where Step Functions applies them per batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runner.errors import SpecError
from runner.spec import GET_OBJECT, LIST_OBJECTS, PUT_OBJECT, MapSpec

__all__ = ["from_asl", "lambda_arn", "to_asl"]

LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
_MAP_FIELDS = (
    "Label",
    "ItemReader",
    "ItemsPath",
    "ItemSelector",
    "ItemBatcher",
    "MaxConcurrency",
    "MaxConcurrencyPath",
    "ToleratedFailurePercentage",
    "ToleratedFailurePercentagePath",
    "ToleratedFailureCount",
    "ToleratedFailureCountPath",
    "ResultWriter",
)


def lambda_arn(worker: str, region: str = "us-east-1", account: str = "123456789012") -> str:
    """The placeholder Lambda ARN a worker gets when none is given."""
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in worker)
    return f"arn:aws:lambda:{region}:{account}:function:shardmap-{safe}"[:140]


def to_asl(
    spec: MapSpec, *, function_arn: str | None = None, state_name: str = "Map"
) -> dict[str, Any]:
    """A complete state machine whose only state is the Distributed Map of ``spec``."""
    data = spec.to_dict()
    state: dict[str, Any] = {"Type": "Map"}
    for key in _MAP_FIELDS:
        if key in data:
            state[key] = data[key]
    source = spec.source_url()
    # Items taken from the run input (ItemsPath) need no reader; a source then only reaches
    # the workers (through $$.Shardmap.Source), and AWS rejects ItemsPath beside ItemReader.
    if "ItemReader" in state or (source and spec.items_path is None):
        state["ItemReader"] = _reader_with_parameters(state.get("ItemReader", {}), source)
    task: dict[str, Any] = {
        "Type": "Task",
        "Resource": LAMBDA_INVOKE,
        "Parameters": {
            "FunctionName": function_arn or lambda_arn(spec.worker or "worker"),
            "Payload.$": "$",
        },
        "OutputPath": "$.Payload",
        "End": True,
    }
    if "Retry" in data:
        task["Retry"] = data["Retry"]
    if spec.timeout_seconds:
        task["TimeoutSeconds"] = int(spec.timeout_seconds)
    state["ItemProcessor"] = {
        "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": spec.execution_type},
        "StartAt": "Worker",
        "States": {"Worker": task},
    }
    if spec.result_writer is not None:
        state["ResultWriter"] = _writer_with_parameters(spec)
    state["End"] = True
    machine: dict[str, Any] = {"StartAt": state_name, "States": {state_name: state}}
    if spec.comment:
        machine = {"Comment": spec.comment, **machine}
    return machine


def _reader_with_parameters(reader: dict[str, Any], source: str | None) -> dict[str, Any]:
    reader = dict(reader)
    if source and source.startswith("s3://") and "Parameters" not in reader:
        bucket, _, rest = source[5:].partition("/")
        listing = reader.get("Resource") == LIST_OBJECTS
        reader["Parameters"] = {"Bucket": bucket, ("Prefix" if listing else "Key"): rest}
    reader.setdefault("Resource", GET_OBJECT)
    return reader


def _writer_with_parameters(spec: MapSpec) -> dict[str, Any]:
    assert spec.result_writer is not None
    writer = spec.result_writer
    url = writer.destination_url() or ""
    params = writer.parameters
    if params is None and url.startswith("s3://"):
        bucket, _, prefix = url[5:].partition("/")
        params = {"Bucket": bucket, "Prefix": prefix}
    out: dict[str, Any] = {"Resource": PUT_OBJECT}
    if params:
        out["Parameters"] = params
    out["WriterConfig"] = writer.writer_config.model_dump(by_alias=True)
    return out


def from_asl(
    definition: Mapping[str, Any],
    *,
    resources: Mapping[str, str] | None = None,
    worker: str | None = None,
) -> MapSpec:
    """The MapSpec of the one Distributed Map state in ``definition``.

    ``resources`` maps the child Task's Lambda ARN (or function name) to a worker name.
    """
    states = definition.get("States")
    if not isinstance(states, Mapping):
        raise SpecError("States", "an ASL state machine needs a States object")
    name, state = _distributed_map(states)
    path = f"States.{name}"
    data: dict[str, Any] = {key: state[key] for key in _MAP_FIELDS if key in state}
    data["Name"] = str(definition.get("Name") or name)
    if definition.get("Comment"):
        data["Comment"] = definition["Comment"]
    processor = state.get("ItemProcessor") or state.get("Iterator") or {}
    config = processor.get("ProcessorConfig", {})
    data["ExecutionType"] = config.get("ExecutionType", "STANDARD")
    task = _child_task(processor, f"{path}.ItemProcessor")
    if "Retry" in task:
        data["Retry"] = task["Retry"]
    if "TimeoutSeconds" in task:
        data["TimeoutSeconds"] = task["TimeoutSeconds"]
    data["Worker"] = worker or _worker_for(task, resources or {}, f"{path}.ItemProcessor")
    writer = data.get("ResultWriter")
    if writer is not None:
        data["ResultWriter"] = {k: v for k, v in writer.items() if k != "Resource"}
    try:
        return MapSpec.from_dict(data)
    except SpecError as exc:
        raise SpecError(f"{path}.{exc.path}" if exc.path else path, exc.rule) from None


def _distributed_map(states: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    found = [
        (name, state)
        for name, state in states.items()
        if isinstance(state, Mapping)
        and state.get("Type") == "Map"
        and (state.get("ItemProcessor") or {}).get("ProcessorConfig", {}).get("Mode")
        == "DISTRIBUTED"
    ]
    if len(found) != 1:
        raise SpecError("States", f"needs exactly one Distributed Map state, found {len(found)}")
    return found[0]


def _child_task(processor: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    states = processor.get("States") or {}
    start = processor.get("StartAt")
    task = states.get(start) if isinstance(states, Mapping) else None
    if not isinstance(task, Mapping) or task.get("Type") != "Task":
        raise SpecError(
            f"{path}.StartAt", "local runs need the child workflow to start with a Task"
        )
    return task


def _worker_for(task: Mapping[str, Any], resources: Mapping[str, str], path: str) -> str:
    resource = task.get("Resource", "")
    params = task.get("Parameters") or task.get("Arguments") or {}
    candidates = [resource, params.get("FunctionName", "")]
    for candidate in candidates:
        if candidate in resources:
            return resources[candidate]
        base = str(candidate).split(":$")[0]  # a qualified ARN maps like its function
        if base in resources:
            return resources[base]
    shown = params.get("FunctionName") or resource
    raise SpecError(
        f"{path}.Resource", f"no worker for {shown!r}; map it with --resource ARN=WORKER"
    )
