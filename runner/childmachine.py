"""A child workflow that is a whole state machine, run as a worker; and how Task states reach
shardmap's workers.

A Distributed Map whose ItemProcessor is more than one Lambda Task (a Pass building the
payload, a Choice, two Tasks, a Catch to a Fail ...) runs each child input through the
interpreter (:mod:`runner.states`), wherever the engine sends it: inline, a pool process, a
Dask worker. The worker is named by a self-contained reference, ``asl:`` followed by the
child's definition and resource map as JSON, so it pickles as a string, survives the journal
(resume, redrive) and is compiled once per process. The registry resolves ``asl:`` references
here by name (a lazy entry, as fsspec's registry does), which keeps this module above it.

:class:`LocalTasks` is the Task runner both levels use: a ``Resource`` (or a ``lambda:invoke``
``FunctionName``) mapped by ``--resource ARN=WORKER`` calls that worker, with Lambda's result
shape for ``lambda:invoke``; a worker's failure becomes the Task's error as Lambda reports it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from runner import jsontext
from runner.constants import LAMBDA_INVOKE
from runner.errors import SpecError, StatesError, WorkerError, lambda_error_cause
from runner.registry import resolve_worker
from runner.states.definition import load_definition
from runner.states.interpreter import ExecutionConfig, TaskCall, execute

__all__ = [
    "CHILD_PREFIX",
    "ChildMachine",
    "LocalTasks",
    "child_machine",
    "child_reference",
    "mapped_worker",
    "unmapped_tasks",
]

CHILD_PREFIX = "asl:"


def mapped_worker(task: Mapping[str, Any], resources: Mapping[str, str]) -> str | None:
    """The worker a Task state's Resource, or its ``lambda:invoke`` FunctionName, is mapped to
    (a qualified ARN, ``...:function:f:$LATEST`` or ``...:f:alias``, maps like its function)."""
    params = task.get("Parameters") or task.get("Arguments") or {}
    function = params.get("FunctionName") if isinstance(params, Mapping) else None
    for candidate in (task.get("Resource", ""), function or ""):
        if not isinstance(candidate, str) or not candidate:
            continue
        if candidate in resources:
            return resources[candidate]
        base = candidate.split(":$")[0]
        if base in resources:
            return resources[base]
        if ":function:" in candidate:
            unqualified = ":".join(candidate.split(":")[:7])
            if unqualified in resources:
                return resources[unqualified]
    return None


def unmapped_tasks(definition: Mapping[str, Any], resources: Mapping[str, str]) -> list[str]:
    """The Task states (their AWS paths) no worker runs: refused before a run starts, since
    shardmap cannot call AWS services it was not given a worker for."""
    from runner.asl import walk_states

    missing = []
    for path, state in walk_states(definition):
        if state.get("Type") == "Task" and mapped_worker(state, resources) is None:
            missing.append(f"{path}.Resource")
    return missing


class LocalTasks:
    """A Task runner over shardmap's workers (see the module docstring)."""

    def __init__(self, resources: Mapping[str, str]) -> None:
        self.resources = dict(resources)
        self._workers: dict[str, Any] = {}

    def __call__(self, resource: str, payload: Any, call: TaskCall) -> Any:
        task = {"Resource": resource, "Parameters": payload if isinstance(payload, Mapping) else {}}
        name = mapped_worker(task, self.resources)
        if name is None:  # checked before the run; a FunctionName from a path may still miss
            raise StatesError(
                "States.Runtime",
                f"no worker is mapped to {resource!r}; map it with --resource ARN=WORKER",
            )
        fn = self._workers.get(name)
        if fn is None:
            fn = self._workers[name] = resolve_worker(name)
        invoke = resource.startswith(LAMBDA_INVOKE)
        argument = payload.get("Payload") if invoke and isinstance(payload, Mapping) else payload
        try:
            output = fn(argument)
        except WorkerError as exc:
            raise StatesError(exc.error, exc.cause or lambda_error_cause(exc)) from exc
        except Exception as exc:  # as Lambda reports a function's exception
            raise StatesError(type(exc).__name__, lambda_error_cause(exc)) from exc
        if invoke:  # lambda:invoke's result (the optimized integration's response)
            return {
                "ExecutedVersion": "$LATEST",
                "Payload": output,
                "SdkHttpMetadata": {"HttpStatusCode": 200},
                "SdkResponseMetadata": {"RequestId": ""},
                "StatusCode": 200,
            }
        return output


class ChildMachine:
    """A worker that runs one child input through a child state machine."""

    def __init__(self, definition: Mapping[str, Any], resources: Mapping[str, str]) -> None:
        # A distributed child is a machine of its own (its own variables and context).
        self.machine = load_definition(
            {k: v for k, v in definition.items() if k != "ProcessorConfig"}
        )
        self.config = ExecutionConfig(tasks=LocalTasks(resources), execution_name="child")

    def __call__(self, child_input: Any) -> Any:
        outcome = execute(self.machine, child_input, self.config)
        if outcome.status == "SUCCEEDED":
            return outcome.output
        raise WorkerError(outcome.error or "States.Runtime", outcome.cause or "")


def child_reference(definition: Mapping[str, Any], resources: Mapping[str, str]) -> str:
    """The worker reference of a child machine (what a MapSpec's ``Worker`` holds)."""
    doc = {"Definition": definition, "Resources": dict(sorted(resources.items()))}
    return CHILD_PREFIX + jsontext.dumps(doc)


@lru_cache(maxsize=64)
def child_machine(reference: str) -> ChildMachine:
    """The worker an ``asl:`` reference names, compiled once per process."""
    try:
        doc = json.loads(reference[len(CHILD_PREFIX) :])
        return ChildMachine(doc["Definition"], doc["Resources"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SpecError("Worker", f"not a child state machine reference ({exc})") from None
