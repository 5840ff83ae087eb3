"""Amazon States Language documents <-> pipeline mappings: the Distributed Map state, its child
Task, its ResultWriter and, for a pipeline with a ``Reduce`` step, the Lambda Task that follows it.

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

This module translates documents only: it reads and writes pipeline-file mappings (AWS field
names, :meth:`MapSpec.to_dict` form) and knows nothing of :class:`~runner.spec.MapSpec`, which
validates them. Use :meth:`MapSpec.to_asl`, :meth:`MapSpec.from_asl` and :meth:`MapSpec.load`;
keeping the spec above this module is what keeps the two free of an import cycle.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from runner.constants import GET_OBJECT, LAMBDA_INVOKE, LIST_OBJECTS, PUT_OBJECT
from runner.errors import SpecError

__all__ = [
    "LAMBDA_INVOKE",
    "REDUCE_STATE",
    "definition_of",
    "lambda_arn",
    "pipeline_of",
    "walk_states",
]

log = logging.getLogger(__name__)

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


def walk_states(machine: Any, path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every state of ``machine`` with its field path, depth first: each state, then the
    states of its ``ItemProcessor`` (or ``Iterator``) and of each of its ``Branches``.

    ``machine`` is a definition or any mapping shaped like one (a Map's ItemProcessor, a
    Parallel branch), whose own path is ``path`` (``""`` for a definition). List positions are
    path segments (``States.P.Branches.0.States.M``), the spelling of every field path in
    :func:`runner.aws.checks.check_asl` problems. Anything that is not an object where a state
    machine or a state should be is passed over: saying so is the validator's job.

    >>> pass_state = {"Type": "Pass", "End": True}
    >>> branch = {"StartAt": "A", "States": {"A": pass_state}}
    >>> machine = {"StartAt": "P", "States": {"P": {"Type": "Parallel", "Branches": [branch]}}}
    >>> [path for path, _ in walk_states(machine)]
    ['States.P', 'States.P.Branches.0.States.A']
    """
    states = machine.get("States") if isinstance(machine, Mapping) else None
    if not isinstance(states, Mapping):
        return
    base = f"{path}.States" if path else "States"
    for name, state in states.items():
        if not isinstance(state, Mapping):
            continue
        here = f"{base}.{name}"
        yield here, state
        for key in ("ItemProcessor", "Iterator"):
            yield from walk_states(state.get(key), f"{here}.{key}")
        branches = state.get("Branches")
        if isinstance(branches, list | tuple):
            for number, branch in enumerate(branches):
                yield from walk_states(branch, f"{here}.Branches.{number}")


def lambda_arn(worker: str, region: str = "us-east-1", account: str = "123456789012") -> str:
    """The placeholder Lambda ARN a worker gets when none is given."""
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in worker)
    return f"arn:aws:lambda:{region}:{account}:function:shardmap-{safe}"[:140]


def definition_of(
    pipeline: Mapping[str, Any],
    *,
    function_arn: str | None = None,
    reduce_arn: str | None = None,
    state_name: str = "Map",
) -> dict[str, Any]:
    """A complete state machine running the Distributed Map of ``pipeline``.

    ``pipeline`` is a validated pipeline in :meth:`MapSpec.to_dict` form, its
    ``ResultWriter.WriterConfig`` spelled out (what :meth:`MapSpec.to_asl` passes). The other
    parameters are :meth:`MapSpec.to_asl`'s.

    Raises
    ------
    SpecError
        ``reduce_arn`` was given for a pipeline without a ``Reduce`` step.

    Examples
    --------
    >>> machine = definition_of({"Worker": "echo", "ItemBatcher": {"MaxItemsPerBatch": 10}})
    >>> machine["States"]["Map"]["ItemProcessor"]["States"]["Worker"]["Resource"]
    'arn:aws:states:::lambda:invoke'
    """
    reduce = pipeline.get("Reduce")
    if reduce_arn is not None and not reduce:
        raise SpecError("Reduce", "a reduce function ARN was given but the pipeline has no Reduce")
    state: dict[str, Any] = {"Type": "Map"}
    for key in _MAP_FIELDS:
        if key in pipeline:
            state[key] = pipeline[key]
    # An ItemReader's Parameters, when given, already name the source: Source is what adds them.
    source = pipeline.get("Source")
    # Items taken from the run input (ItemsPath) need no reader; a source then only reaches
    # the workers (through $$.Shardmap.Source), and AWS rejects ItemsPath beside ItemReader.
    if "ItemReader" in state or (source and pipeline.get("ItemsPath") is None):
        state["ItemReader"] = _reader_with_parameters(state.get("ItemReader", {}), source)
    task: dict[str, Any] = {
        "Type": "Task",
        "Resource": LAMBDA_INVOKE,
        "Parameters": {
            "FunctionName": function_arn or lambda_arn(pipeline.get("Worker") or "worker"),
            "Payload.$": "$",
        },
        "OutputPath": "$.Payload",
        "End": True,
    }
    if "Retry" in pipeline:
        task["Retry"] = pipeline["Retry"]
    if pipeline.get("TimeoutSeconds"):
        task["TimeoutSeconds"] = int(pipeline["TimeoutSeconds"])
    state["ItemProcessor"] = {
        "ProcessorConfig": {
            "Mode": "DISTRIBUTED",
            "ExecutionType": pipeline.get("ExecutionType", "STANDARD"),
        },
        "StartAt": "Worker",
        "States": {"Worker": task},
    }
    if "ResultWriter" in pipeline:
        state["ResultWriter"] = _writer_with_parameters(pipeline["ResultWriter"])
    states: dict[str, Any] = {state_name: state}
    if reduce:
        reduce_name = REDUCE_STATE if state_name != REDUCE_STATE else f"{REDUCE_STATE}Step"
        state["Next"] = reduce_name
        states[reduce_name] = {
            "Type": "Task",
            "Comment": f"Reduce step {reduce} over the Map Run's results",
            "Resource": LAMBDA_INVOKE,
            # The Map state's output: {"MapRunArn", "ResultWriterDetails": {"Bucket", "Key"}}.
            "Parameters": {
                "FunctionName": reduce_arn or lambda_arn(reduce),
                "Payload.$": "$",
            },
            "OutputPath": "$.Payload",
            "End": True,
        }
    else:
        state["End"] = True
    machine: dict[str, Any] = {"StartAt": state_name, "States": states}
    if pipeline.get("Comment"):
        machine = {"Comment": pipeline["Comment"], **machine}
    return machine


def _reader_with_parameters(reader: dict[str, Any], source: str | None) -> dict[str, Any]:
    reader = dict(reader)
    if source and source.startswith("s3://") and "Parameters" not in reader:
        bucket, _, rest = source[5:].partition("/")
        listing = reader.get("Resource") == LIST_OBJECTS
        reader["Parameters"] = {"Bucket": bucket, ("Prefix" if listing else "Key"): rest}
    reader.setdefault("Resource", GET_OBJECT)
    return reader


def _writer_with_parameters(writer: Mapping[str, Any]) -> dict[str, Any]:
    # Parameters, when given, already name the destination: Destination is what adds them.
    url = str(writer.get("Destination") or "")
    params = writer.get("Parameters")
    if params is None and url.startswith("s3://"):
        bucket, _, prefix = url[5:].partition("/")
        params = {"Bucket": bucket, "Prefix": prefix}
    out: dict[str, Any] = {"Resource": PUT_OBJECT}
    if params:
        out["Parameters"] = params
    if "WriterConfig" in writer:
        out["WriterConfig"] = writer["WriterConfig"]
    return out


def pipeline_of(
    definition: Mapping[str, Any],
    *,
    resources: Mapping[str, str] | None = None,
    worker: str | None = None,
    child_worker: str | None = None,
) -> tuple[dict[str, Any], str]:
    """The pipeline mapping of the one Distributed Map state in ``definition``, and that
    state's path (``States.<name>``), which :meth:`MapSpec.from_asl` puts before the field of
    a validation error. ``resources`` and ``worker`` are :meth:`MapSpec.from_asl`'s;
    ``child_worker`` runs the whole child workflow (whatever its states, their own Retry and
    TimeoutSeconds included), as :mod:`runner.workflow` runs an interpreted child.

    Examples
    --------
    >>> machine = definition_of({"Worker": "echo"})
    >>> pipeline_of(machine, resources={lambda_arn("echo"): "echo"})[0]["Worker"]
    'echo'
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
    if child_worker is not None:
        data["Worker"] = child_worker
    else:
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
    return data, path


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
