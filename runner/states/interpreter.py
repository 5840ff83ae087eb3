"""Run a compiled state machine: one loop over states, Retry and Catch around each state.

``execute(machine, input, config)`` runs to the end and returns an
:class:`~runner.states.runtime.Execution` with AWS's status, output, error and cause, and an
event history in GetExecutionHistory's terms (causes name the event id a state was entered at,
as AWS's do). Tasks are called through the config's
:class:`~runner.states.runtime.TaskRunner`; a distributed Map that reads or writes through the
engine goes to the config's ``distributed_map`` hook, so this package stays below the engine.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from runner.errors import StatesError
from runner.states.definition import Machine, State
from runner.states.handlers import HANDLERS
from runner.states.jsonpath import Scope, apply_result_path
from runner.states.retry import matches
from runner.states.runtime import (
    Clock,
    Env,
    Execution,
    ExecutionConfig,
    Run,
    StateFrame,
    TaskCall,
    TaskRunner,
    Variables,
    check_deadline,
    iso,
)

__all__ = [
    "Clock",
    "Execution",
    "ExecutionConfig",
    "TaskCall",
    "TaskRunner",
    "execute",
    "run_machine",
]

#: Errors whose causes AWS prefixes with the state and the event it was entered at.
_PREFIXED = frozenset({"States.Runtime", "States.QueryEvaluationError"})


def execute(
    machine: Machine,
    run_input: Any,
    config: ExecutionConfig,
    *,
    variables: Mapping[str, Any] | None = None,
    extra_context: Mapping[str, Any] | None = None,
) -> Execution:
    """Run ``machine`` on ``run_input`` to its end."""
    start = config.clock.now()
    name = config.execution_name or str(uuid.uuid4())
    arn = _execution_arn(config.state_machine_arn, name)
    context = {
        "Execution": {
            "Id": arn,
            "Input": run_input,
            "Name": name,
            "RoleArn": config.role_arn,
            "StartTime": iso(start),
            "RedriveCount": 0,
        },
        "StateMachine": {
            "Id": config.state_machine_arn,
            "Name": config.state_machine_arn.rsplit(":", 1)[-1],
        },
    }
    deadline = (
        config.clock.monotonic() + machine.timeout_seconds if machine.timeout_seconds else None
    )
    run = Run(config, context, deadline, run_machine)
    run.history.add("ExecutionStarted", input=run_input)
    env = Env(run, Variables(None, dict(variables or {})), extra_context or {})
    outcome = Execution("RUNNING", arn=arn, start=start)
    try:
        outcome.output = run_machine(machine, run_input, env)
        outcome.status = "SUCCEEDED"
        run.history.add("ExecutionSucceeded", output=outcome.output)
    except StatesError as exc:
        timed_out = exc.error == "States.Timeout" and getattr(exc, "execution_timeout", False)
        outcome.status = "TIMED_OUT" if timed_out else "FAILED"
        outcome.error, outcome.cause = exc.error or None, exc.cause or None
        kind = "ExecutionTimedOut" if timed_out else "ExecutionFailed"
        run.history.add(kind, error=outcome.error, cause=outcome.cause)
    outcome.stop = config.clock.now()
    outcome.events = run.history.events
    return outcome


def _execution_arn(state_machine_arn: str, name: str) -> str:
    head, _, machine_name = state_machine_arn.rpartition(":stateMachine:")
    return f"{head}:execution:{machine_name}:{name}" if head else f"execution:{name}"


def run_machine(machine: Machine, state_input: Any, env: Env) -> Any:
    """Run states from StartAt until one ends the machine; its output is the machine's."""
    name: str | None = machine.start_at
    value = state_input
    while name is not None:
        check_deadline(env.run)
        state = machine.states[name]
        value, name = run_state(state, value, env)
    return value


def run_state(state: State, state_input: Any, env: Env) -> tuple[Any, str | None]:
    """One state, with its retriers and catchers: its output and the next state (None: end)."""
    history = env.run.history
    entered = history.add(f"{state.type}StateEntered", name=state.name, input=state_input)
    frame = StateFrame(state, env, entered, env.run.clock.now())
    handler = HANDLERS[state.type]
    retries: dict[int, int] = {}
    while True:
        try:
            output, next_name, assigned = handler(frame, state_input)
            break
        except StatesError as exc:
            _prefix_cause(exc, state, entered)
            from_task = getattr(exc, "from_task", state.type == "Task")
            if _retry(frame, exc, retries, from_task):
                continue
            caught = _catch(frame, state_input, exc, from_task)
            if caught is None:
                raise
            output, next_name, assigned = caught
            break
    env.variables.assign(assigned)
    history.add(f"{state.type}StateExited", name=state.name, output=output)
    return output, next_name


def _prefix_cause(exc: StatesError, state: State, entered: int) -> None:
    if exc.error in _PREFIXED and not getattr(exc, "prefixed", False):
        exc.cause = (
            f"An error occurred while executing the state '{state.name}' "
            f"(entered at the event id #{entered}). {exc.cause}"
        )
        exc.prefixed = True  # type: ignore[attr-defined]
        exc.args = (f"{exc.error}: {exc.cause}",)


def _retry(frame: StateFrame, exc: StatesError, retries: dict[int, int], from_task: bool) -> bool:
    for index, retrier in enumerate(frame.state.retriers):
        if not matches(retrier.errors, exc.error, from_task=from_task):
            continue
        done = retries.get(index, 0)
        if done >= retrier.max_attempts:
            return False  # the first matching retrier decides, even when it is spent
        retries[index] = done + 1
        frame.env.run.clock.sleep(retrier.delay(done + 1))
        frame.context["State"]["RetryCount"] = sum(retries.values())
        return True
    return False


def _catch(
    frame: StateFrame, state_input: Any, exc: StatesError, from_task: bool
) -> tuple[Any, str, dict[str, Any]] | None:
    for catcher in frame.state.catchers:
        if not matches(catcher.errors, exc.error, from_task=from_task):
            continue
        error_output = {"Error": exc.error, "Cause": exc.cause}
        variables = frame.env.variables.flat()
        if frame.state.language == "JSONPath":
            output = apply_result_path(catcher.result_path, state_input, error_output)
            assigned = (
                catcher.assign.evaluate(Scope(error_output, frame.context, variables))
                if catcher.assign is not None
                else {}
            )
        else:
            states = frame.states(state_input, errorOutput=error_output)
            output = (
                catcher.output.evaluate(states, variables)
                if catcher.output is not None
                else error_output
            )
            assigned = catcher.assign.evaluate(states, variables) if catcher.assign else {}
        return output, catcher.next, assigned
    return None
