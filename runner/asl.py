"""MapSpec <-> Amazon States Language: the Distributed Map state, its child Task, its
ResultWriter and, for a pipeline with a ``Reduce`` step, the Lambda Task that follows it.

::

    StartAt: Map ──► Map (Distributed) ──Next──► Reduce (Task, lambda:invoke) ──► End
                      │ ItemReader, ItemSelector, ItemBatcher, MaxConcurrency, thresholds
                      │ ItemProcessor: Worker (Task, lambda:invoke; Retry, TimeoutSeconds)
                      └ ResultWriter (s3:putObject + WriterConfig)
                        output: {"MapRunArn", "ResultWriterDetails": {"Bucket", "Key"}}

shardmap's own fields travel as follows: ``Worker`` becomes the Lambda ARN of the child Task
and ``Reduce`` the Lambda ARN of the Task after the Map (``resources`` maps ARNs back to names
on load), ``Source`` becomes ItemReader.Parameters (``Bucket``/``Key`` or ``Bucket``/``Prefix``),
``Destination`` ResultWriter.Parameters, and ``Retry``/``TimeoutSeconds`` sit on the child Task,
where Step Functions applies them per batch. The reduce Task gets the Map state's whole output,
which with a ResultWriter is the manifest's location (``ResultWriterDetails``), never the results
themselves (they may be far over the 256 KiB state payload limit).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from runner.errors import SpecError
from runner.spec import GET_OBJECT, LIST_OBJECTS, PUT_OBJECT, MapSpec

__all__ = ["LAMBDA_INVOKE", "REDUCE_STATE", "from_asl", "lambda_arn", "to_asl"]

log = logging.getLogger(__name__)

LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
#: The name of the Task state that runs a pipeline's ``Reduce`` step after the Map state.
REDUCE_STATE = "Reduce"
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
    spec: MapSpec,
    *,
    function_arn: str | None = None,
    reduce_arn: str | None = None,
    state_name: str = "Map",
) -> dict[str, Any]:
    """A complete state machine running the Distributed Map of ``spec``.

    Parameters
    ----------
    spec
        The pipeline.
    function_arn
        The worker's Lambda function (default: the placeholder :func:`lambda_arn` of
        ``Worker``).
    reduce_arn
        With a ``Reduce`` step: its Lambda function (default: the placeholder
        :func:`lambda_arn` of ``Reduce``). The Task ``Reduce`` then follows the Map state and
        gets its output, ``{"MapRunArn", "ResultWriterDetails": {"Bucket", "Key"}}``.
    state_name
        The Map state's name.

    Raises
    ------
    SpecError
        ``reduce_arn`` was given for a pipeline without a ``Reduce`` step.

    Examples
    --------
    >>> spec = MapSpec.from_dict({"Worker": "echo", "Reduce": "total",
    ...     "ItemBatcher": {"MaxItemsPerBatch": 10}, "ResultWriter": {"Destination": "s3://b/out"}})
    >>> machine = to_asl(spec)
    >>> machine["States"]["Map"]["Next"], machine["States"]["Reduce"]["Type"]
    ('Reduce', 'Task')
    """
    if reduce_arn is not None and not spec.reduce:
        raise SpecError("Reduce", "a reduce function ARN was given but the pipeline has no Reduce")
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
    states: dict[str, Any] = {state_name: state}
    if spec.reduce:
        reduce_name = REDUCE_STATE if state_name != REDUCE_STATE else f"{REDUCE_STATE}Step"
        state["Next"] = reduce_name
        states[reduce_name] = {
            "Type": "Task",
            "Comment": f"Reduce step {spec.reduce} over the Map Run's results",
            "Resource": LAMBDA_INVOKE,
            # The Map state's output: {"MapRunArn", "ResultWriterDetails": {"Bucket", "Key"}}.
            "Parameters": {
                "FunctionName": reduce_arn or lambda_arn(spec.reduce),
                "Payload.$": "$",
            },
            "OutputPath": "$.Payload",
            "End": True,
        }
    else:
        state["End"] = True
    machine: dict[str, Any] = {"StartAt": state_name, "States": states}
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

    ``resources`` maps Lambda ARNs (or function names) to worker names: the child Task's
    function becomes ``Worker``, and the function of a Lambda Task that follows the Map state
    becomes ``Reduce``. A following Task whose function is not mapped is left out (logged):
    the local run then ends with the Map Run, as the state machine's first part does.

    Examples
    --------
    >>> spec = MapSpec.from_dict({"Worker": "echo", "Reduce": "total"})
    >>> back = from_asl(to_asl(spec), resources={lambda_arn("echo"): "echo",
    ...                                          lambda_arn("total"): "total"})
    >>> back.worker, back.reduce
    ('echo', 'total')
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
    reducer = _reducer_for(states, state.get("Next"), resources or {})
    if reducer:
        data["Reduce"] = reducer
    writer = data.get("ResultWriter")
    if writer is not None:
        data["ResultWriter"] = {k: v for k, v in writer.items() if k != "Resource"}
    try:
        return MapSpec.from_dict(data)
    except SpecError as exc:
        raise SpecError(f"{path}.{exc.path}" if exc.path else path, exc.rule) from None


def _reducer_for(
    states: Mapping[str, Any], next_name: Any, resources: Mapping[str, str]
) -> str | None:
    """The reducer of the Lambda Task the Map state hands its output to, if it is mapped."""
    task = states.get(next_name) if isinstance(next_name, str) else None
    if not isinstance(task, Mapping) or task.get("Type") != "Task":
        return None
    if not _is_lambda(task):
        return None
    name = _mapped(task, resources)
    if name is None:
        log.warning(
            "States.%s: no reducer for %r, so it does not run locally; "
            "map it with --resource ARN=REDUCER",
            next_name,
            _function_of(task),
        )
    return name


def _is_lambda(task: Mapping[str, Any]) -> bool:
    resource = str(task.get("Resource", ""))
    return resource.startswith(LAMBDA_INVOKE) or resource.startswith("arn:aws:lambda:")


def _function_of(task: Mapping[str, Any]) -> str:
    params = task.get("Parameters") or task.get("Arguments") or {}
    return str(params.get("FunctionName") or task.get("Resource", ""))


def _mapped(task: Mapping[str, Any], resources: Mapping[str, str]) -> str | None:
    params = task.get("Parameters") or task.get("Arguments") or {}
    for candidate in (task.get("Resource", ""), params.get("FunctionName", "")):
        if candidate in resources:
            return resources[candidate]
        base = str(candidate).split(":$")[0]  # a qualified ARN maps like its function
        if base in resources:
            return resources[base]
    return None


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
    name = _mapped(task, resources)
    if name is None:
        raise SpecError(
            f"{path}.Resource",
            f"no worker for {_function_of(task)!r}; map it with --resource ARN=WORKER",
        )
    return name
