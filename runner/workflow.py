"""Run a whole Step Functions state machine locally: ``shardmap run STATEMACHINE.json``.

The interpreter (:mod:`runner.states`) runs every state; each Distributed Map that reads or
writes through the engine (an ItemReader, a ResultWriter, tolerated failures) becomes a Map
Run of the engine (journal, executors, AWS-layout results), with its ItemReader and
ResultWriter Parameters evaluated from the Map state's input at run time, as AWS does. A Map
whose child is one Lambda Task mapped to a worker runs that worker directly (the pipelines'
path, no interpreter per item); any other child runs through the interpreter in the worker
(:mod:`runner.childmachine`). Task states run mapped workers (``--resource ARN=WORKER``).

What cannot run here is refused before the run starts, naming the state and the field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runner import asl
from runner.childmachine import LocalTasks, child_reference, mapped_worker, unmapped_tasks
from runner.engine.api import run as run_map
from runner.errors import SpecError, StatesError
from runner.results import iter_result_records, parse_child_name
from runner.spec import MapSpec
from runner.states.definition import load_definition
from runner.states.interpreter import Execution, ExecutionConfig, execute
from runner.states.jsonpath import compile_payload, select
from runner.types import MapRunResult, RunProgress

__all__ = ["StateMachineRun", "check_runnable", "run_state_machine"]

#: The child Task fields the direct worker path carries (anything else needs the interpreter).
_SIMPLE_TASK_FIELDS = frozenset(
    {"Type", "Resource", "Parameters", "OutputPath", "Retry", "TimeoutSeconds", "End", "Comment"}
)
_CALLBACK_SUFFIXES = (".waitForTaskToken", ".sync", ".sync:2")


@dataclass
class StateMachineRun:
    """An execution (DescribeExecution's fields and history) and the Map Runs it started."""

    execution: Execution
    map_runs: list[MapRunResult] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.execution.status == "SUCCEEDED"


def check_runnable(definition: Mapping[str, Any], resources: Mapping[str, str]) -> None:
    """Refuse, before any state runs, what shardmap cannot run as AWS would."""
    missing = unmapped_tasks(definition, resources)
    if missing:
        raise SpecError(
            missing[0],
            "no worker runs this Task; map its Resource or FunctionName with "
            "--resource ARN=WORKER" + (f" ({len(missing) - 1} more)" if len(missing) > 1 else ""),
        )
    for path, state in asl.walk_states(definition):
        resource = str(state.get("Resource", ""))
        if state.get("Type") == "Task" and resource.endswith(_CALLBACK_SUFFIXES):
            raise SpecError(
                f"{path}.Resource",
                f"{resource!r} waits for a callback or a job, which local runs cannot do yet",
            )
        if _is_engine_map(state) and _uses_jsonata(state, definition):
            raise SpecError(
                f"{path}.QueryLanguage",
                "a distributed Map reading an ItemReader or writing a ResultWriter runs on the "
                "engine, which takes JSONPath fields only for now",
            )


def run_state_machine(
    definition: Mapping[str, Any],
    run_input: Any = None,
    *,
    resources: Mapping[str, str] | None = None,
    name: str | None = None,
    on_progress: Callable[[RunProgress], None] | None = None,
    **map_options: Any,
) -> StateMachineRun:
    """Run ``definition`` on ``run_input``; ``map_options`` go to each Map Run (executor,
    state_dir, journal, shard_reading, executor_options, ...)."""
    resources = dict(resources or {})
    machine = load_definition(definition)
    check_runnable(definition, resources)
    outcome = StateMachineRun(Execution("RUNNING"))

    def distributed_map(frame: Any, state_input: Any) -> Any:
        result = _map_run(frame, state_input, resources, on_progress, map_options)
        outcome.map_runs.append(result)
        return _map_output(frame.state, result)

    config = ExecutionConfig(
        tasks=LocalTasks(resources),
        distributed_map=distributed_map,
        execution_name=name or "",
    )
    outcome.execution = execute(machine, {} if run_input is None else run_input, config)
    return outcome


def _is_engine_map(state: Mapping[str, Any]) -> bool:
    return state.get("Type") == "Map" and any(
        key in state for key in ("ItemReader", "ResultWriter", "ToleratedFailureCount",
                                 "ToleratedFailurePercentage", "ToleratedFailureCountPath",
                                 "ToleratedFailurePercentagePath")
    )  # fmt: skip


def _uses_jsonata(state: Mapping[str, Any], definition: Mapping[str, Any]) -> bool:
    return state.get("QueryLanguage", definition.get("QueryLanguage")) == "JSONata"


def _map_run(
    frame: Any,
    state_input: Any,
    resources: Mapping[str, str],
    on_progress: Callable[[RunProgress], None] | None,
    options: Mapping[str, Any],
) -> MapRunResult:
    state = frame.state
    effective = state_input
    if state.input_path != "$":
        effective = select(state.input_path, frame.scope(state_input), "InputPath")
    raw = _evaluated(state.raw, frame.scope(effective), state.where)
    if "Iterator" in raw:  # the legacy name; the engine's pipelines know ItemProcessor
        raw["ItemProcessor"] = raw.pop("Iterator")
    processor = raw.get("ItemProcessor") or {}
    child = None if _simple_child(processor, resources) else child_reference(processor, resources)
    single = {"StartAt": state.name, "States": {state.name: {**raw, "End": True}}}
    single["States"][state.name].pop("Next", None)
    pipeline, path = asl.pipeline_of(single, resources=resources, child_worker=child)
    try:
        spec = MapSpec.from_dict(pipeline)
    except SpecError as exc:
        raise SpecError(f"{path}.{exc.path}" if exc.path else path, exc.rule) from None
    result = run_map(spec, run_input=effective, on_progress=on_progress, **options)
    if not result.succeeded:
        raise StatesError(result.error or "States.MapRunFailed", result.cause or "")
    return result


def _evaluated(raw: Mapping[str, Any], scope: Any, where: str) -> dict[str, Any]:
    """The Map state with its ItemReader and ResultWriter Parameters evaluated from its input
    (``Bucket.$``, ``Key.$``, intrinsics), as AWS evaluates them when the state starts."""
    out = dict(raw)
    for key in ("ItemReader", "ResultWriter"):
        block = raw.get(key)
        if isinstance(block, Mapping) and isinstance(block.get("Parameters"), Mapping):
            payload = compile_payload(block["Parameters"], f"{where}/{key}/Parameters")
            out[key] = {**block, "Parameters": payload.evaluate(scope)}
    return out


def _simple_child(processor: Mapping[str, Any], resources: Mapping[str, str]) -> bool:
    """A child of one Lambda Task mapped to a worker, passing its input as the payload: the
    engine calls the worker directly, as it does for a pipeline."""
    states = processor.get("States") or {}
    if len(states) != 1 or processor.get("QueryLanguage") == "JSONata":
        return False
    task = states.get(processor.get("StartAt"))
    if not isinstance(task, Mapping) or task.get("Type") != "Task":
        return False
    if set(task) - _SIMPLE_TASK_FIELDS or mapped_worker(task, resources) is None:
        return False
    params = task.get("Parameters")
    if str(task.get("Resource", "")).startswith(asl.LAMBDA_INVOKE):
        if not isinstance(params, Mapping):
            return False
        return (
            params.get("Payload.$") == "$"
            and set(params) <= {"FunctionName", "Payload.$"}
            and (task.get("OutputPath") == "$.Payload")
        )
    return params is None and "OutputPath" not in task


def _map_output(state: Any, result: MapRunResult) -> Any:
    """The Map state's result: the ResultWriter's details with one, the children's outputs in
    item order without one (AWS's array of child outputs)."""
    if "ResultWriter" in state.raw:
        return {"MapRunArn": result.map_run_arn, **(result.output or {})}
    outputs: list[tuple[int, Any]] = []
    if result.manifest_url:
        for kind, record in iter_result_records(result.manifest_url):
            if kind != "SUCCEEDED" or not isinstance(record, Mapping):
                continue
            parsed = parse_child_name(str(record.get("Name", "")))
            index = parsed[0] if parsed else len(outputs)
            outputs.append((index, _decoded(record.get("Output"))))
    return [output for _, output in sorted(outputs, key=lambda pair: pair[0])]


def _decoded(text: Any) -> Any:
    import json

    return json.loads(text) if isinstance(text, str) else text
