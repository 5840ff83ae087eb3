"""What each state type does, in each query language.

A handler takes the running state (its frame) and the state's input and returns its output,
the next state's name (None: the machine ends) and the variables it assigns. Data flow is the
developer guide's: in JSONPath, InputPath -> Parameters -> the work -> ResultSelector ->
ResultPath -> OutputPath; in JSONata, Arguments -> the work -> Output, with ``Assign`` and
``Output`` both reading the values the state entered with.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runner.errors import StatesError
from runner.paths import PathNotFound
from runner.states.choice import no_choice_matched
from runner.states.jsonpath import RUNTIME, apply_result_path, compact_json, select
from runner.states.mapstate import run_map_state
from runner.states.runtime import call_task, run_concurrently, seconds_until, wait_for

if TYPE_CHECKING:
    from runner.states.runtime import StateFrame

__all__ = ["HANDLERS"]

Outcome = tuple[Any, str | None, dict[str, Any]]
Handler = Callable[["StateFrame", Any], Outcome]
QUERY_ERROR = "States.QueryEvaluationError"


# -- shared steps -------------------------------------------------------------------------


def effective_input(frame: StateFrame, state_input: Any) -> Any:
    """JSONPath: InputPath, then Parameters. JSONata: Arguments (default: the input)."""
    state = frame.state
    if state.language == "JSONata":
        if state.arguments is None:
            return state_input
        return state.arguments.evaluate(frame.states(state_input), frame.env.variables.flat())
    value = state_input
    if state.input_path != "$":
        value = select(state.input_path, frame.scope(state_input), "InputPath")
    if state.parameters is not None:
        value = state.parameters.evaluate(frame.scope(value))
    return value


def finish(frame: StateFrame, state_input: Any, result: Any) -> tuple[Any, dict[str, Any]]:
    """A state's result turned into its output, and what it assigns."""
    state = frame.state
    if state.language == "JSONata":
        states = frame.states(state_input, result=result)
        variables = frame.env.variables.flat()
        assigned = (
            state.assign_template.evaluate(states, variables) if state.assign_template else {}
        )
        output = state.output.evaluate(states, variables) if state.output else result
        return output, assigned
    if state.result_selector is not None:
        result = state.result_selector.evaluate(frame.scope(result))
    assigned = state.assign_payload.evaluate(frame.scope(result)) if state.assign_payload else {}
    output = apply_result_path(state.result_path, state_input, result)
    return output_path(frame, output), assigned


def output_path(frame: StateFrame, value: Any) -> Any:
    path = frame.state.output_path
    return value if path == "$" else select(path, frame.scope(value), "OutputPath")


def pass_through(frame: StateFrame, state_input: Any, effective: Any) -> tuple[Any, dict]:
    """Choice, Wait, Succeed: no result; the output is the (filtered) input."""
    state = frame.state
    if state.language == "JSONata":
        states = frame.states(state_input)
        variables = frame.env.variables.flat()
        assigned = (
            state.assign_template.evaluate(states, variables) if state.assign_template else {}
        )
        output = state.output.evaluate(states, variables) if state.output else state_input
        return output, assigned
    assigned = state.assign_payload.evaluate(frame.scope(effective)) if state.assign_payload else {}
    return output_path(frame, effective), assigned


def jsonpath_input_only(frame: StateFrame, state_input: Any) -> Any:
    path = frame.state.input_path
    return state_input if path == "$" else select(path, frame.scope(state_input), "InputPath")


def template_value(frame: StateFrame, key: str, state_input: Any) -> Any:
    """A field that may be a JSONata expression (compiled into ``templates``) or a literal."""
    template = frame.state.templates.get(key)
    if template is None:
        return frame.state.raw.get(key)
    return template.evaluate(frame.states(state_input), frame.env.variables.flat())


def reference(frame: StateFrame, path: str, data: Any, field: str) -> Any:
    try:
        return frame.scope(data)(path)
    except PathNotFound:
        raise StatesError(RUNTIME, f"Invalid path '{path}' : No results for path: {path}") from None


# -- the states ---------------------------------------------------------------------------


def run_pass(frame: StateFrame, state_input: Any) -> Outcome:
    state = frame.state
    if state.language == "JSONata":
        output, assigned = pass_through(frame, state_input, state_input)
        return output, state.next, assigned
    effective = effective_input(frame, state_input)
    result = state.templates.get("Result", effective)
    output, assigned = finish(frame, state_input, result)
    return output, state.next, assigned


def run_task(frame: StateFrame, state_input: Any) -> Outcome:
    state = frame.state
    payload = effective_input(frame, state_input)
    timeout = _seconds_field(frame, "TimeoutSeconds", state_input)
    heartbeat = _seconds_field(frame, "HeartbeatSeconds", state_input)
    result = call_task(frame, state.raw["Resource"], payload, timeout, heartbeat)
    output, assigned = finish(frame, state_input, result)
    return output, state.next, assigned


def _seconds_field(frame: StateFrame, key: str, state_input: Any) -> float | None:
    raw = frame.state.raw
    if f"{key}Path" in raw:
        value = reference(frame, raw[f"{key}Path"], state_input, f"{key}Path")
    elif key in raw:
        value = template_value(frame, key, state_input)
    else:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise StatesError(
            RUNTIME, f"The value of {key} must be a positive integer (got {compact_json(value)})"
        )
    return float(value)


def run_choice(frame: StateFrame, state_input: Any) -> Outcome:
    state = frame.state
    if state.language == "JSONata":
        return _choose_jsonata(frame, state_input)
    effective = jsonpath_input_only(frame, state_input)
    scope = frame.scope(effective)
    for index, rule in enumerate(state.rules):
        if rule.matches(scope):
            output, assigned = pass_through(frame, state_input, effective)
            rule_assign = state.templates.get(f"Choices/{index}/Assign")
            if rule_assign is not None:
                assigned = {**assigned, **rule_assign.evaluate(scope)}
            return output, rule.next, assigned
    if state.default is None:
        raise _no_match(frame)
    output, assigned = pass_through(frame, state_input, effective)
    return output, state.default, assigned


def _choose_jsonata(frame: StateFrame, state_input: Any) -> Outcome:
    state = frame.state
    states = frame.states(state_input)
    variables = frame.env.variables.flat()
    for index, (condition, next_name, assign, output) in enumerate(state.conditions):
        verdict = condition.evaluate(states, variables)
        if not isinstance(verdict, bool):
            raise StatesError(
                QUERY_ERROR,
                f"The Condition of Choices[{index}] must be a boolean "
                f"(got {compact_json(verdict)})",
            )
        if verdict:
            default_output, assigned = pass_through(frame, state_input, state_input)
            if assign is not None:
                assigned = assign.evaluate(states, variables)
            value = output.evaluate(states, variables) if output is not None else default_output
            return value, next_name, assigned
    if state.default is None:
        raise _no_match(frame)
    output_value, assigned = pass_through(frame, state_input, state_input)
    return output_value, state.default, assigned


def run_wait(frame: StateFrame, state_input: Any) -> Outcome:
    state = frame.state
    effective = (
        state_input if state.language == "JSONata" else jsonpath_input_only(frame, state_input)
    )
    raw = state.raw
    if "SecondsPath" in raw or "TimestampPath" in raw:
        key = "SecondsPath" if "SecondsPath" in raw else "TimestampPath"
        value = reference(frame, raw[key], effective, key)
        key = key.removesuffix("Path")
    else:
        key = "Seconds" if "Seconds" in raw else "Timestamp"
        value = template_value(frame, key, state_input)
    if key == "Seconds":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise StatesError(
                RUNTIME,
                f"The Seconds of a Wait state must be a non-negative integer "
                f"(got {compact_json(value)})",
            )
        wait_for(frame, float(value))
    else:
        wait_for(frame, seconds_until(frame, parse_timestamp(value, key)))
    output, assigned = pass_through(frame, state_input, effective)
    return output, state.next, assigned


def parse_timestamp(value: Any, field: str) -> datetime:
    """An RFC 3339 timestamp as Step Functions takes it (``2016-03-14T01:59:00Z``)."""
    try:
        if not isinstance(value, str) or "T" not in value:
            raise ValueError
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError
        return moment
    except ValueError:
        raise StatesError(
            RUNTIME,
            f"The {field} of a Wait state is not an RFC 3339 timestamp: {compact_json(value)}",
        ) from None


def run_succeed(frame: StateFrame, state_input: Any) -> Outcome:
    effective = (
        state_input
        if frame.state.language == "JSONata"
        else jsonpath_input_only(frame, state_input)
    )
    output, _ = pass_through(frame, state_input, effective)
    return output, None, {}


def run_fail(frame: StateFrame, state_input: Any) -> Outcome:
    error = _fail_field(frame, "Error", state_input)
    cause = _fail_field(frame, "Cause", state_input)
    failure = StatesError(error or "", cause or "")
    failure.prefixed = True  # type: ignore[attr-defined]  # a Fail state's cause is its own
    failure.from_task = False  # type: ignore[attr-defined]
    raise failure


def _fail_field(frame: StateFrame, name: str, state_input: Any) -> str | None:
    payload = frame.state.templates.get(f"{name}Path")
    if payload is not None:
        value = payload.evaluate(frame.scope(state_input))["v"]
    else:
        value = template_value(frame, name, state_input)
    if value is not None and not isinstance(value, str):
        raise StatesError(
            RUNTIME, f"The {name} of a Fail state must be a string (got {compact_json(value)})"
        )
    return value


def run_parallel(frame: StateFrame, state_input: Any) -> Outcome:
    state = frame.state
    branch_input = effective_input(frame, state_input)
    history = frame.env.run.history
    history.add("ParallelStateStarted", name=state.name)
    calls = [_branch_call(branch, branch_input, frame) for branch in state.branches]
    try:
        results = run_concurrently(calls, 0)
    except StatesError:
        history.add("ParallelStateFailed", name=state.name)
        raise
    history.add("ParallelStateSucceeded", name=state.name)
    output, assigned = finish(frame, state_input, results)
    return output, state.next, assigned


def _branch_call(branch: Any, value: Any, frame: StateFrame) -> Any:
    env = frame.env.child()
    return lambda: frame.env.run.run_machine(branch, value, env)


def run_map(frame: StateFrame, state_input: Any) -> Outcome:
    result = run_map_state(frame, state_input)
    output, assigned = finish(frame, state_input, result)
    return output, frame.state.next, assigned


HANDLERS: dict[str, Handler] = {
    "Pass": run_pass,
    "Task": run_task,
    "Choice": run_choice,
    "Wait": run_wait,
    "Succeed": run_succeed,
    "Fail": run_fail,
    "Parallel": run_parallel,
    "Map": run_map,
}


def _no_match(frame: StateFrame) -> StatesError:
    error = no_choice_matched(frame.state.name, frame.entered)
    error.prefixed = True  # type: ignore[attr-defined]
    return error
