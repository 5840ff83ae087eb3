"""Whole state machines through the interpreter, case by case from AWS's documentation.

Each case is a definition, an input and what Step Functions documents for it: the output, or
the error and cause. Tasks are Python functions behind made-up Lambda ARNs; time is a clock
that records waits instead of sleeping.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runner.errors import SpecError, StatesError
from runner.states.definition import load_definition
from runner.states.interpreter import Clock, ExecutionConfig, TaskCall, execute

FN = "arn:aws:lambda:us-east-1:123456789012:function:"


class FakeClock(Clock):
    """Starts at a fixed instant; sleeping only moves it forward and is recorded."""

    def __init__(self) -> None:
        self.at = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
        self.ticks = 0.0
        self.waits: list[float] = []

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return self.ticks

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.ticks += seconds
        self.at += timedelta(seconds=seconds)


class Flaky(Exception):
    pass


class Tasks:
    """Resources by ARN suffix; records every call."""

    def __init__(self, **functions: Any) -> None:
        self.functions = functions
        self.calls: list[tuple[str, Any]] = []

    def __call__(self, resource: str, payload: Any, call: TaskCall) -> Any:
        name = resource.rsplit(":", 1)[-1]
        self.calls.append((name, payload))
        return self.functions[name](payload, call)


def failing(times: int, error: type[Exception] = Flaky) -> Any:
    left = [times]

    def fn(payload: Any, call: TaskCall) -> Any:
        if left[0] > 0:
            left[0] -= 1
            raise error(f"attempt failed ({left[0]} more)")
        return {"ok": True}

    return fn


def run(definition: dict[str, Any], run_input: Any = None, tasks: Tasks | None = None, **kw: Any):
    clock = kw.pop("clock", None) or FakeClock()
    config = ExecutionConfig(tasks=tasks or Tasks(), clock=clock, execution_name="exec-1", **kw)
    return execute(load_definition(definition), {} if run_input is None else run_input, config)


def one(state: dict[str, Any], **machine: Any) -> dict[str, Any]:
    """A machine of one state ``S`` (ended, unless it ends by itself)."""
    ends_itself = "End" in state or state.get("Type") in ("Choice", "Succeed", "Fail")
    return {"StartAt": "S", "States": {"S": state if ends_itself else {**state, "End": True}},
            **machine}  # fmt: skip


# -- Pass, InputPath, Parameters, ResultPath, OutputPath (JSONPath) ------------------------

#: input-output-resultpath page, its four examples on one input.
RESULTPATH_INPUT = {
    "comment": "This is a test",
    "details": "Default example",
    "who": "Step Functions",
}
HELLO = "Hello, Step Functions!"

JSONPATH_CASES = [
    pytest.param(
        one(
            {
                "Type": "Pass",
                "Result": {"x-datum": 0.381018, "y-datum": 622.2269926397355},
                "ResultPath": "$.coords",
            }
        ),
        {"georefOf": "Home"},
        {"georefOf": "Home", "coords": {"x-datum": 0.381018, "y-datum": 622.2269926397355}},
        id="state-pass: Result placed by ResultPath",
    ),
    pytest.param(
        one({"Type": "Pass", "Result": HELLO}),
        RESULTPATH_INPUT,
        HELLO,
        id="resultpath: default $ replaces the input",
    ),
    pytest.param(
        one({"Type": "Pass", "Result": HELLO, "ResultPath": None}),
        RESULTPATH_INPUT,
        RESULTPATH_INPUT,
        id="resultpath: null keeps the input",
    ),
    pytest.param(
        one({"Type": "Pass", "Result": HELLO, "ResultPath": "$.taskresult"}),
        RESULTPATH_INPUT,
        {**RESULTPATH_INPUT, "taskresult": HELLO},
        id="resultpath: a path adds the result",
    ),
    pytest.param(
        one({"Type": "Pass", "Result": HELLO, "ResultPath": "$.strings.lambdaresult"}),
        {"strings": {"a": "x"}},
        {"strings": {"a": "x", "lambdaresult": HELLO}},
        id="resultpath: into an existing object",
    ),
    pytest.param(
        one({"Type": "Pass", "Result": 1, "ResultPath": "$.a.b.c"}),
        {},
        {"a": {"b": {"c": 1}}},
        id="resultpath: missing levels are created",
    ),
    pytest.param(
        one({"Type": "Pass", "InputPath": "$.dataset2"}),
        {
            "comment": "Example for InputPath.",
            "dataset1": {"val1": 1, "val2": 2, "val3": 3},
            "dataset2": {"val1": "a", "val2": "b", "val3": "c"},
        },
        {"val1": "a", "val2": "b", "val3": "c"},
        id="inputpath: selects the input",
    ),
    pytest.param(
        one({"Type": "Pass", "InputPath": None}),
        {"a": 1},
        {},
        id="inputpath: null is an empty object",
    ),
    pytest.param(
        one({"Type": "Pass", "OutputPath": None}),
        {"a": 1},
        {},
        id="outputpath: null is an empty object",
    ),
    pytest.param(
        one(
            {
                "Type": "Pass",
                "Parameters": {
                    "comment": "Selecting what I care about.",
                    "MyDetails": {
                        "size.$": "$.product.details.size",
                        "exists.$": "$.product.availability",
                        "StaticValue": "foo",
                    },
                },
            }
        ),
        {
            "comment": "Example for Parameters.",
            "product": {
                "details": {"color": "blue", "size": "small", "material": "cotton"},
                "availability": "in stock",
                "sku": "2317",
                "cost": "$23",
            },
        },
        {
            "comment": "Selecting what I care about.",
            "MyDetails": {"size": "small", "exists": "in stock", "StaticValue": "foo"},
        },
        id="input-output-inputpath-params: the Parameters example",
    ),
    pytest.param(
        one(
            {
                "Type": "Pass",
                "Parameters": {
                    "name.$": "$$.Execution.Name",
                    "state.$": "$$.State.Name",
                    "entered.$": "$$.State.EnteredTime",
                    "retries.$": "$$.State.RetryCount",
                    "machine.$": "$$.StateMachine.Name",
                },
            }
        ),
        {},
        {
            "name": "exec-1",
            "state": "S",
            "entered": "2026-01-02T03:04:05.678Z",
            "retries": 0,
            "machine": "local",
        },
        id="context object: Execution, State (EnteredTime), StateMachine",
    ),
    pytest.param(
        one({"Type": "Pass", "Parameters": {"input.$": "$$.Execution.Input"}}),
        {"k": [1, 2]},
        {"input": {"k": [1, 2]}},
        id="context object: Execution.Input",
    ),
    pytest.param(
        one(
            {
                "Type": "Pass",
                "Result": {"a": {"b": 1}, "c": 2},
                "ResultPath": "$.r",
                "OutputPath": "$.r.a",
            }
        ),
        {"x": 0},
        {"b": 1},
        id="outputpath after resultpath",
    ),
    pytest.param(
        one({"Type": "Pass", "Parameters": {"list.$": "$.items[*].id"}}),
        {"items": [{"id": 1}, {"id": 2}]},
        {"list": [1, 2]},
        id="parameters: a wildcard path selects a list",
    ),
    pytest.param(
        one({"Type": "Pass", "Parameters": {"first.$": "$.items[0]"}}),
        {"items": ["a", "b"]},
        {"first": "a"},
        id="parameters: an index",
    ),
    pytest.param(
        one({"Type": "Pass", "Parameters": {"nested": [{"v.$": "$.v"}, "lit"]}}),
        {"v": 3},
        {"nested": [{"v": 3}, "lit"]},
        id="parameters: templates inside arrays",
    ),
]


@pytest.mark.parametrize(("definition", "run_input", "expected"), JSONPATH_CASES)
def test_jsonpath_data_flow(definition, run_input, expected):
    outcome = run(definition, run_input)
    assert (outcome.status, outcome.error, outcome.output) == ("SUCCEEDED", None, expected)


# -- run-time errors, with AWS's causes ----------------------------------------------------


def _prefix(state: str = "S", event: int = 2) -> str:
    entered = f"(entered at the event id #{event})"
    return f"An error occurred while executing the state '{state}' {entered}. "


RUNTIME_CASES = [
    pytest.param(
        one({"Type": "Pass", "Parameters": {"userId.$": "$.detail.userId"}}),
        {"Error": "States.Timeout", "Cause": ""},
        _prefix() + "The JSONPath '$.detail.userId' specified for the field 'userId.$' could not "
        'be found in the input \'{"Error":"States.Timeout","Cause":""}\'',
        id="parameters: a path that selects nothing (AWS's cause)",
    ),
    pytest.param(
        one({"Type": "Pass", "InputPath": "$.missing"}),
        {"a": 1},
        _prefix() + "Invalid path '$.missing' : No results for path: $['missing']",
        id="inputpath: a path that selects nothing",
    ),
    pytest.param(
        one({"Type": "Pass", "OutputPath": "$.nope.deeper"}),
        {"a": 1},
        _prefix() + "Invalid path '$.nope.deeper' : No results for path: $['nope']['deeper']",
        id="outputpath: a path that selects nothing",
    ),
    pytest.param(
        one({"Type": "Pass", "Result": 1, "ResultPath": "$.a.b"}),
        {"a": "text"},
        _prefix() + 'Unable to apply ReferencePath $.a.b to input {"a":"text"}',
        id="resultpath: through a non-object",
    ),
    pytest.param(
        one({"Type": "Pass", "Result": 1, "ResultPath": "$.a"}),
        ["list"],
        _prefix() + 'Unable to apply ReferencePath $.a to input ["list"]',
        id="resultpath: on an array input",
    ),
]


@pytest.mark.parametrize(("definition", "run_input", "cause"), RUNTIME_CASES)
def test_runtime_errors_fail_the_execution_with_aws_causes(definition, run_input, cause):
    outcome = run(definition, run_input)
    assert (outcome.status, outcome.error, outcome.cause) == ("FAILED", "States.Runtime", cause)


def test_states_runtime_is_not_caught_even_by_states_all():
    definition = {
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": FN + "echo",
                "InputPath": "$.missing",
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
                "Retry": [{"ErrorEquals": ["States.ALL"]}],
                "End": True,
            },
            "Caught": {"Type": "Succeed"},
        },
    }
    tasks = Tasks(echo=lambda payload, call: payload)
    outcome = run(definition, {"a": 1}, tasks)
    assert (outcome.status, outcome.error) == ("FAILED", "States.Runtime")
    assert tasks.calls == []


# -- Task, Retry, Catch ---------------------------------------------------------------------


def task_machine(fn: str = "work", **task: Any) -> dict[str, Any]:
    return {
        "StartAt": "T",
        "States": {
            "T": {"Type": "Task", "Resource": FN + fn, "Next": "Done", **task},
            "Done": {"Type": "Succeed"},
            "Recover": {"Type": "Pass", "End": True},
        },
    }


def test_task_gets_parameters_and_its_result_is_selected_and_placed():
    tasks = Tasks(
        work=lambda payload, call: {
            "Payload": {"sum": payload["a"] + payload["b"]},
            "StatusCode": 200,
        }
    )
    definition = task_machine(
        Parameters={"a.$": "$.x", "b": 2},
        ResultSelector={"total.$": "$.Payload.sum"},
        ResultPath="$.result",
    )
    outcome = run(definition, {"x": 40}, tasks)
    assert outcome.output == {"x": 40, "result": {"total": 42}}
    assert tasks.calls == [("work", {"a": 40, "b": 2})]


def test_retry_backs_off_then_succeeds_and_counts_retries_in_the_context():
    clock = FakeClock()
    seen: list[int] = []

    def work(payload: Any, call: TaskCall) -> Any:
        seen.append(call.context["State"]["RetryCount"])
        if len(seen) < 3:
            raise Flaky("not yet")
        return "ok"

    definition = task_machine(
        Retry=[
            {"ErrorEquals": ["Flaky"], "IntervalSeconds": 3, "BackoffRate": 1.5, "MaxAttempts": 2}
        ],
    )
    outcome = run(definition, {}, Tasks(work=work), clock=clock)
    assert (outcome.status, outcome.output) == ("SUCCEEDED", "ok")
    assert clock.waits == [3, 4.5]
    assert seen == [0, 1, 2]


def test_retry_gives_up_after_max_attempts_with_the_tasks_error():
    definition = task_machine(Retry=[{"ErrorEquals": ["States.ALL"], "MaxAttempts": 2}])
    clock = FakeClock()
    outcome = run(definition, {}, Tasks(work=failing(5)), clock=clock)
    assert (outcome.status, outcome.error, outcome.cause) == (
        "FAILED",
        "Flaky",
        "attempt failed (2 more)",
    )
    assert clock.waits == [1, 2]


def test_max_delay_caps_the_backoff():
    definition = task_machine(
        Retry=[
            {
                "ErrorEquals": ["Flaky"],
                "IntervalSeconds": 10,
                "MaxAttempts": 4,
                "MaxDelaySeconds": 25,
            }
        ]
    )
    clock = FakeClock()
    run(definition, {}, Tasks(work=failing(4)), clock=clock)
    assert clock.waits == [10, 20, 25, 25]


def test_full_jitter_waits_no_longer_than_the_backoff():
    definition = task_machine(
        Retry=[
            {
                "ErrorEquals": ["Flaky"],
                "IntervalSeconds": 4,
                "MaxAttempts": 3,
                "JitterStrategy": "FULL",
            }
        ]
    )
    clock = FakeClock()
    run(definition, {}, Tasks(work=failing(3)), clock=clock)
    assert len(clock.waits) == 3
    assert all(0 <= wait <= limit for wait, limit in zip(clock.waits, [4, 8, 16], strict=True))


def test_max_attempts_zero_never_retries():
    definition = task_machine(Retry=[{"ErrorEquals": ["Flaky"], "MaxAttempts": 0}])
    tasks = Tasks(work=failing(1))
    outcome = run(definition, {}, tasks)
    assert (outcome.status, len(tasks.calls)) == ("FAILED", 1)


def test_the_first_matching_retrier_decides_even_when_spent():
    definition = task_machine(
        Retry=[
            {"ErrorEquals": ["Flaky"], "MaxAttempts": 1},
            {"ErrorEquals": ["States.ALL"], "MaxAttempts": 5},
        ]
    )
    tasks = Tasks(work=failing(3))
    outcome = run(definition, {}, tasks)
    assert (outcome.status, len(tasks.calls)) == ("FAILED", 2)


def test_catch_places_the_error_output_by_result_path():
    definition = task_machine(
        Catch=[{"ErrorEquals": ["Flaky"], "Next": "Recover", "ResultPath": "$.error"}]
    )
    outcome = run(definition, {"keep": 1}, Tasks(work=failing(1)))
    assert outcome.output == {
        "keep": 1,
        "error": {"Error": "Flaky", "Cause": "attempt failed (0 more)"},
    }


def test_catch_without_result_path_replaces_the_input_with_the_error_output():
    definition = task_machine(Catch=[{"ErrorEquals": ["States.ALL"], "Next": "Recover"}])
    outcome = run(definition, {"keep": 1}, Tasks(work=failing(1)))
    assert outcome.output == {"Error": "Flaky", "Cause": "attempt failed (0 more)"}


def test_retry_runs_before_catch():
    definition = task_machine(
        Retry=[{"ErrorEquals": ["Flaky"], "MaxAttempts": 1}],
        Catch=[{"ErrorEquals": ["Flaky"], "Next": "Recover"}],
    )
    tasks = Tasks(work=failing(5))
    outcome = run(definition, {}, tasks)
    assert (outcome.status, len(tasks.calls)) == ("SUCCEEDED", 2)
    assert outcome.output["Error"] == "Flaky"


def test_task_failed_matches_a_tasks_error_but_not_a_timeout():
    slow = task_machine(
        "slow", TimeoutSeconds=1, Catch=[{"ErrorEquals": ["States.TaskFailed"], "Next": "Recover"}]
    )

    def sleepy(payload: Any, call: TaskCall) -> Any:
        import time

        time.sleep(3)

    outcome = run(slow, {}, Tasks(slow=sleepy))
    assert (outcome.status, outcome.error) == ("FAILED", "States.Timeout")
    caught = run(
        task_machine(Catch=[{"ErrorEquals": ["States.TaskFailed"], "Next": "Recover"}]),
        {},
        Tasks(work=failing(1)),
    )
    assert caught.status == "SUCCEEDED"


def test_a_timeout_is_caught_by_name():
    definition = task_machine(
        "slow", TimeoutSeconds=1, Catch=[{"ErrorEquals": ["States.Timeout"], "Next": "Recover"}]
    )

    def sleepy(payload: Any, call: TaskCall) -> Any:
        import time

        time.sleep(3)

    outcome = run(definition, {}, Tasks(slow=sleepy))
    assert outcome.output == {"Error": "States.Timeout", "Cause": ""}


def test_timeout_seconds_path_reads_the_input():
    seen: list[Any] = []
    definition = task_machine(TimeoutSecondsPath="$.limit")
    run(definition, {"limit": 7}, Tasks(work=lambda p, call: seen.append(call.timeout_seconds)))
    assert seen == [7.0]


def test_a_state_error_from_a_task_is_its_own_name():
    def work(payload: Any, call: TaskCall) -> Any:
        raise StatesError("Lambda.TooManyRequestsException", "Rate exceeded")

    outcome = run(task_machine(), {}, Tasks(work=work))
    assert (outcome.error, outcome.cause) == ("Lambda.TooManyRequestsException", "Rate exceeded")


# -- Choice, Wait, Succeed, Fail --------------------------------------------------------------


CHOICE = {
    "StartAt": "Check",
    "States": {
        "Check": {
            "Type": "Choice",
            "Choices": [
                {"Not": {"Variable": "$.type", "StringEquals": "Private"}, "Next": "Public"},
                {
                    "And": [
                        {"Variable": "$.value", "NumericGreaterThanEquals": 20},
                        {"Variable": "$.value", "NumericLessThan": 30},
                    ],
                    "Next": "ValueInTwenties",
                },
            ],
            "Default": "DefaultState",
        },
        "Public": {"Type": "Pass", "Result": "Public", "End": True},
        "ValueInTwenties": {"Type": "Pass", "Result": "ValueInTwenties", "End": True},
        "DefaultState": {"Type": "Fail", "Error": "DefaultStateError", "Cause": "No Matches!"},
    },
}


@pytest.mark.parametrize(
    ("run_input", "status", "output", "error"),
    [
        ({"type": "Private", "value": 22}, "SUCCEEDED", "ValueInTwenties", None),
        ({"type": "Public", "value": 22}, "SUCCEEDED", "Public", None),
        ({"type": "Private", "value": 35}, "FAILED", None, "DefaultStateError"),
    ],
    ids=["state-choice example: twenties", "not private", "default to a Fail state"],
)
def test_choice_follows_the_documented_example(run_input, status, output, error):
    outcome = run(CHOICE, run_input)
    assert (outcome.status, outcome.output, outcome.error) == (status, output, error)


def test_choice_with_no_match_and_no_default_is_a_runtime_error():
    definition = {
        "StartAt": "C",
        "States": {
            "C": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.n", "NumericEquals": 1, "Next": "E"}],
            },
            "E": {"Type": "Succeed"},
        },
    }
    outcome = run(definition, {"n": 2})
    assert (outcome.error, outcome.cause) == (
        "States.Runtime",
        _prefix("C") + "Failed to transition out of the state. The state does not point to a "
        "next state.",
    )


def test_choice_assigns_the_variables_of_the_rule_it_takes():
    definition = {
        "StartAt": "C",
        "States": {
            "C": {
                "Type": "Choice",
                "Choices": [
                    {
                        "Variable": "$.n",
                        "NumericEquals": 1,
                        "Next": "E",
                        "Assign": {"picked.$": "$.n"},
                    }
                ],
            },
            "E": {"Type": "Pass", "Parameters": {"picked.$": "$picked"}, "End": True},
        },
    }
    assert run(definition, {"n": 1}).output == {"picked": 1}


@pytest.mark.parametrize(
    ("wait", "run_input", "waited"),
    [
        ({"Seconds": 10}, {}, [10]),
        ({"SecondsPath": "$.s"}, {"s": 4}, [4]),
        ({"Timestamp": "2026-01-02T03:05:05.678Z"}, {}, [60]),
        ({"TimestampPath": "$.t"}, {"t": "2026-01-02T04:04:05.678+01:00"}, [0]),
        ({"Timestamp": "2020-01-01T00:00:00Z"}, {}, [0]),
    ],
    ids=["Seconds", "SecondsPath", "Timestamp", "TimestampPath with offset", "past timestamp"],
)
def test_wait_waits_as_documented(wait, run_input, waited):
    clock = FakeClock()
    outcome = run(one({"Type": "Wait", **wait}), run_input, clock=clock)
    assert (outcome.status, outcome.output) == ("SUCCEEDED", run_input)
    assert [round(w, 3) for w in clock.waits] == waited


def test_wait_seconds_path_that_is_not_an_integer_fails_at_run_time():
    outcome = run(one({"Type": "Wait", "SecondsPath": "$.s"}), {"s": "ten"})
    assert outcome.error == "States.Runtime"
    assert "Seconds" in outcome.cause and '"ten"' in outcome.cause


def test_execution_timeout_stops_a_long_wait():
    definition = one({"Type": "Wait", "Seconds": 100}, TimeoutSeconds=5)
    clock = FakeClock()
    outcome = run(definition, {}, clock=clock)
    assert (outcome.status, outcome.error) == ("TIMED_OUT", "States.Timeout")
    assert sum(clock.waits) == 5


def test_succeed_applies_input_and_output_paths():
    outcome = run(
        one({"Type": "Succeed", "InputPath": "$.a", "OutputPath": "$.b"}), {"a": {"b": 5}}
    )
    assert outcome.output == 5


@pytest.mark.parametrize(
    ("fail", "run_input", "error", "cause"),
    [
        ({"Error": "ErrorA", "Cause": "Kaiju attack"}, {}, "ErrorA", "Kaiju attack"),
        ({"ErrorPath": "$.e", "CausePath": "$.c"}, {"e": "E1", "c": "C1"}, "E1", "C1"),
        (
            {"ErrorPath": "$.e", "CausePath": "States.Format('code {}', $.n)"},
            {"e": "E", "n": 7},
            "E",
            "code 7",
        ),
        ({}, {}, None, None),
    ],
    ids=["state-fail example", "ErrorPath and CausePath", "CausePath intrinsic", "bare"],
)
def test_fail_states(fail, run_input, error, cause):
    outcome = run(one({"Type": "Fail", **fail}), run_input)
    assert (outcome.status, outcome.error, outcome.cause) == ("FAILED", error, cause)


# -- Parallel and inline Map ------------------------------------------------------------------


def test_parallel_outputs_one_result_per_branch_in_order():
    definition = one(
        {
            "Type": "Parallel",
            "Branches": [
                {
                    "StartAt": "A",
                    "States": {"A": {"Type": "Pass", "Parameters": {"a.$": "$.x"}, "End": True}},
                },
                {
                    "StartAt": "B",
                    "States": {"B": {"Type": "Task", "Resource": FN + "double", "End": True}},
                },
            ],
            "ResultPath": "$.branches",
        }
    )
    tasks = Tasks(double=lambda payload, call: payload["x"] * 2)
    outcome = run(definition, {"x": 21}, tasks)
    assert outcome.output == {"x": 21, "branches": [{"a": 21}, 42]}


def test_a_failing_branch_fails_the_parallel_state_and_its_catch_takes_it():
    definition = {
        "StartAt": "P",
        "States": {
            "P": {
                "Type": "Parallel",
                "Branches": [
                    {
                        "StartAt": "A",
                        "States": {"A": {"Type": "Fail", "Error": "Boom", "Cause": "b"}},
                    },
                    {"StartAt": "B", "States": {"B": {"Type": "Pass", "End": True}}},
                ],
                "Catch": [{"ErrorEquals": ["Boom"], "Next": "Caught", "ResultPath": "$.err"}],
                "End": True,
            },
            "Caught": {"Type": "Pass", "End": True},
        },
    }
    outcome = run(definition, {"in": 1})
    assert outcome.output == {"in": 1, "err": {"Error": "Boom", "Cause": "b"}}


MAP_INPUT = {
    "ship-date": "2016-03-14T01:59:00Z",
    "detail": {
        "delivery-partner": "UQS",
        "shipped": [
            {"prod": "R31", "dest-code": 9511, "quantity": 1344},
            {"prod": "S39", "dest-code": 9511, "quantity": 40},
            {"prod": "R31", "dest-code": 9833, "quantity": 12},
            {"prod": "R40", "dest-code": 9860, "quantity": 887},
            {"prod": "R40", "dest-code": 9511, "quantity": 1220},
        ],
    },
}


def test_inline_map_with_item_selector_as_documented():
    definition = one(
        {
            "Type": "Map",
            "InputPath": "$.detail",
            "ItemsPath": "$.shipped",
            "MaxConcurrency": 0,
            "ItemSelector": {
                "parcel.$": "$$.Map.Item.Value",
                "courier.$": "$.delivery-partner",
                "index.$": "$$.Map.Item.Index",
            },
            "ItemProcessor": {
                "StartAt": "Validate",
                "States": {"Validate": {"Type": "Task", "Resource": FN + "ship-val", "End": True}},
            },
            "ResultPath": "$.detail.shipped",
        }
    )
    tasks = Tasks(**{"ship-val": lambda payload, call: payload})
    outcome = run(definition, MAP_INPUT, tasks)
    shipped = MAP_INPUT["detail"]["shipped"]
    assert outcome.output["detail"]["shipped"] == [
        {"parcel": parcel, "courier": "UQS", "index": i} for i, parcel in enumerate(shipped)
    ]
    assert outcome.output["ship-date"] == MAP_INPUT["ship-date"]


def test_legacy_iterator_and_parameters_still_run():
    definition = one(
        {
            "Type": "Map",
            "ItemsPath": "$.xs",
            "Parameters": {"v.$": "$$.Map.Item.Value"},
            "Iterator": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}},
        }
    )
    assert run(definition, {"xs": [1, 2]}).output == [{"v": 1}, {"v": 2}]


def test_inline_map_fails_with_the_first_failing_iteration():
    definition = one(
        {
            "Type": "Map",
            "MaxConcurrency": 1,
            "ItemProcessor": {
                "StartAt": "C",
                "States": {
                    "C": {
                        "Type": "Choice",
                        "Choices": [{"Variable": "$", "NumericEquals": 2, "Next": "F"}],
                        "Default": "OK",
                    },
                    "F": {"Type": "Fail", "Error": "Two", "Cause": "item 2"},
                    "OK": {"Type": "Succeed"},
                },
            },
        }
    )
    outcome = run(definition, [1, 2, 3])
    assert (outcome.error, outcome.cause) == ("Two", "item 2")


def test_items_path_that_is_not_an_array_is_a_runtime_error():
    definition = one(
        {
            "Type": "Map",
            "ItemsPath": "$.xs",
            "ItemProcessor": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}},
        }
    )
    outcome = run(definition, {"xs": {"a": 1}})
    assert outcome.error == "States.Runtime"
    assert outcome.cause.startswith(_prefix())


def test_nested_maps_and_parallel_inside_map_do_not_starve():
    inner = {
        "StartAt": "P",
        "States": {
            "P": {
                "Type": "Parallel",
                "Branches": [
                    {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}},
                    {"StartAt": "B", "States": {"B": {"Type": "Pass", "End": True}}},
                ],
                "End": True,
            }
        },
    }
    definition = one({"Type": "Map", "ItemProcessor": inner})
    outcome = run(definition, list(range(100)))
    assert outcome.output == [[i, i] for i in range(100)]


def test_distributed_map_over_its_input_batches_items():
    definition = one(
        {
            "Type": "Map",
            "ItemsPath": "$.xs",
            "ItemBatcher": {"MaxItemsPerBatch": 2, "BatchInput": {"tag.$": "$.tag"}},
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                "StartAt": "P",
                "States": {"P": {"Type": "Pass", "End": True}},
            },
        }
    )
    outcome = run(definition, {"xs": [1, 2, 3], "tag": "t"})
    assert outcome.output == [{"tag": "t", "Items": [1, 2]}, {"tag": "t", "Items": [3]}]


def test_distributed_map_with_an_item_reader_needs_the_engine():
    definition = one(
        {
            "Type": "Map",
            "ItemReader": {
                "Resource": "arn:aws:states:::s3:getObject",
                "Parameters": {"Bucket": "b", "Key": "k"},
            },
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "DISTRIBUTED"},
                "StartAt": "P",
                "States": {"P": {"Type": "Pass", "End": True}},
            },
        }
    )
    outcome = run(definition, {})
    assert outcome.error == "States.Runtime" and "engine" in outcome.cause


# -- variables ---------------------------------------------------------------------------------


def test_variables_take_effect_after_the_assigning_state():
    definition = {
        "StartAt": "A",
        "States": {
            "A": {"Type": "Pass", "Assign": {"x": 1}, "Next": "B"},
            "B": {"Type": "Pass", "Assign": {"x": 2, "old.$": "$x"}, "Next": "C"},
            "C": {"Type": "Pass", "Parameters": {"x.$": "$x", "old.$": "$old"}, "End": True},
        },
    }
    assert run(definition, {}).output == {"x": 2, "old": 1}


def test_branches_read_outer_variables_and_distributed_children_do_not():
    inline = {
        "StartAt": "A",
        "States": {
            "A": {"Type": "Pass", "Assign": {"v": "outer"}, "Next": "M"},
            "M": {
                "Type": "Map",
                "ItemProcessor": {
                    "StartAt": "P",
                    "States": {"P": {"Type": "Pass", "Parameters": {"v.$": "$v"}, "End": True}},
                },
                "End": True,
            },
        },
    }
    assert run(inline, [0]).output == [{"v": "outer"}]
    distributed = {
        "StartAt": "A",
        "States": {
            "A": {"Type": "Pass", "Assign": {"v": "outer"}, "Next": "M"},
            "M": {
                "Type": "Map",
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED"},
                    "StartAt": "P",
                    "States": {"P": {"Type": "Pass", "Parameters": {"v.$": "$v"}, "End": True}},
                },
                "End": True,
            },
        },
    }
    outcome = run(distributed, [0])
    assert outcome.error == "States.Runtime" and "'$v'" in outcome.cause


def test_jsonpath_assign_reads_the_result_and_catch_assign_the_error_output():
    definition = task_machine(
        Assign={"got.$": "$.value"},
        Catch=[{"ErrorEquals": ["States.ALL"], "Next": "Recover", "Assign": {"why.$": "$.Cause"}}],
    )
    definition["States"]["Done"] = {"Type": "Pass", "Parameters": {"got.$": "$got"}, "End": True}
    definition["States"]["Recover"] = {"Type": "Pass", "Parameters": {"why.$": "$why"}, "End": True}
    assert run(definition, {}, Tasks(work=lambda p, c: {"value": 5})).output == {"got": 5}
    assert run(definition, {}, Tasks(work=failing(1))).output == {"why": "attempt failed (0 more)"}


# -- load time: what CreateStateMachine refuses ------------------------------------------------


LOAD_ERRORS = [
    pytest.param({"States": {"A": {"Type": "Succeed"}}}, "/StartAt", id="no StartAt"),
    pytest.param(
        {"StartAt": "X", "States": {"A": {"Type": "Succeed"}}},
        "/StartAt",
        id="StartAt names no state",
    ),
    pytest.param(one({"Type": "Pass", "Bogus": 1}), "/States/S/Bogus", id="unknown field"),
    pytest.param(
        {"StartAt": "S", "States": {"S": {"Type": "Pass", "Next": "Nowhere"}}},
        "/States/S/Next",
        id="Next names no state",
    ),
    pytest.param(
        {"StartAt": "S", "States": {"S": {"Type": "Pass"}}}, "/States/S", id="neither Next nor End"
    ),
    pytest.param(one({"Type": "Sleep"}), "/States/S/Type", id="unknown Type"),
    pytest.param(
        one({"Type": "Pass", "Output": {}}),
        "/States/S/Output",
        id="a JSONata field in a JSONPath state",
    ),
    pytest.param(
        one({"Type": "Pass", "InputPath": "$.a"}, QueryLanguage="JSONata"),
        "/States/S/InputPath",
        id="a JSONPath field in a JSONata state",
    ),
    pytest.param(
        one({"Type": "Pass", "QueryLanguage": "JSONPath"}, QueryLanguage="JSONata"),
        "/States/S/QueryLanguage",
        id="JSONPath state in a JSONata machine",
    ),
    pytest.param(
        one({"Type": "Pass", "ResultPath": "$.a[?(@.b)]"}),
        "/States/S/ResultPath",
        id="ResultPath must be a reference path",
    ),
    pytest.param(
        one(
            {
                "Type": "Task",
                "Resource": FN + "x",
                "Retry": [{"ErrorEquals": ["States.ALL"]}, {"ErrorEquals": ["Flaky"]}],
            }
        ),
        "/States/S/Retry/0/ErrorEquals",
        id="States.ALL not last",
    ),
    pytest.param(
        one(
            {
                "Type": "Task",
                "Resource": FN + "x",
                "Retry": [{"ErrorEquals": ["Flaky"], "BackoffRate": 0.5}],
            }
        ),
        "/States/S/Retry/0/BackoffRate",
        id="BackoffRate below 1",
    ),
    pytest.param(
        one({"Type": "Task", "Resource": FN + "x", "TimeoutSeconds": 0}),
        "/States/S/TimeoutSeconds",
        id="TimeoutSeconds 0",
    ),
    pytest.param(
        one({"Type": "Wait", "Seconds": 1, "Timestamp": "2020-01-01T00:00:00Z"}),
        "/States/S",
        id="Wait with two durations",
    ),
    pytest.param(
        one(
            {
                "Type": "Map",
                "Label": "has space",
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED"},
                    "StartAt": "P",
                    "States": {"P": {"Type": "Pass", "End": True}},
                },
            }
        ),
        "/States/S/Label",
        id="Label with whitespace",
    ),
    pytest.param(
        one(
            {
                "Type": "Map",
                "Label": "x" * 41,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED"},
                    "StartAt": "P",
                    "States": {"P": {"Type": "Pass", "End": True}},
                },
            }
        ),
        "/States/S/Label",
        id="Label over 40 characters",
    ),
    pytest.param(
        one(
            {
                "Type": "Map",
                "ItemReader": {},
                "ItemProcessor": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}},
            }
        ),
        "/States/S/ItemReader",
        id="ItemReader on an inline Map",
    ),
    pytest.param(
        one(
            {
                "Type": "Map",
                "ItemProcessor": {"StartAt": "P", "States": {"P": {"Type": "Pass", "Next": "Q"}}},
            }
        ),
        "/States/S/ItemProcessor/States/P/Next",
        id="a child's Next names no state of the child",
    ),
    pytest.param(
        one({"Type": "Parallel", "Branches": []}),
        "/States/S/Branches",
        id="Parallel without branches",
    ),
    pytest.param(
        one({"Type": "Pass", "Parameters": {"a.$": "States.Nope($.x)"}}),
        "/States/S/Parameters/a.$",
        id="unknown intrinsic function",
    ),
]


@pytest.mark.parametrize(("definition", "where"), LOAD_ERRORS)
def test_load_refuses_what_create_state_machine_refuses(definition, where):
    with pytest.raises(SpecError) as refused:
        load_definition(definition)
    assert refused.value.path == where


def test_history_numbers_events_and_names_the_entered_event():
    outcome = run(
        {
            "StartAt": "A",
            "States": {
                "A": {"Type": "Pass", "Next": "B"},
                "B": {"Type": "Pass", "InputPath": "$.x", "End": True},
            },
        },
        {},
    )
    types = [event["type"] for event in outcome.events]
    assert types == [
        "ExecutionStarted",
        "PassStateEntered",
        "PassStateExited",
        "PassStateEntered",
        "ExecutionFailed",
    ]
    assert re.search(r"entered at the event id #4\)", outcome.cause)


# -- JSONata states ----------------------------------------------------------------------------


def jsonata_machine(states: dict[str, Any], start: str = "S") -> dict[str, Any]:
    return {"QueryLanguage": "JSONata", "StartAt": start, "States": states}


def test_jsonata_pass_output_reads_states_input():
    definition = jsonata_machine(
        {
            "S": {
                "Type": "Pass",
                "End": True,
                "Output": {
                    "sum": "{% $states.input.a + $states.input.b %}",
                    "literal": "a {% string",
                },
            }
        }
    )
    assert run(definition, {"a": 1, "b": 2}).output == {"sum": 3, "literal": "a {% string"}


def test_jsonata_pass_without_output_passes_its_input():
    definition = jsonata_machine({"S": {"Type": "Pass", "End": True}})
    assert run(definition, {"a": 1}).output == {"a": 1}


def test_jsonata_task_arguments_output_and_assign():
    tasks = Tasks(work=lambda payload, call: {"Payload": payload["n"] * 10})
    definition = jsonata_machine(
        {
            "S": {
                "Type": "Task",
                "Resource": FN + "work",
                "Arguments": {"n": "{% $states.input.n %}"},
                "Output": "{% $states.result.Payload %}",
                "Assign": {
                    "kept": "{% $states.result.Payload + 1 %}",
                    "before": "{% $states.input %}",
                },
                "Next": "T",
            },
            "T": {
                "Type": "Pass",
                "Output": {
                    "kept": "{% $kept %}",
                    "before": "{% $before %}",
                    "input": "{% $states.input %}",
                },
                "End": True,
            },
        }
    )
    outcome = run(definition, {"n": 4}, tasks)
    assert outcome.output == {"kept": 41, "before": {"n": 4}, "input": 40}
    assert tasks.calls == [("work", {"n": 4})]


def test_jsonata_task_without_output_outputs_its_result():
    tasks = Tasks(work=lambda payload, call: {"r": 1})
    definition = jsonata_machine({"S": {"Type": "Task", "Resource": FN + "work", "End": True}})
    outcome = run(definition, {"in": 0}, tasks)
    assert outcome.output == {"r": 1}
    assert tasks.calls == [("work", {"in": 0})]


def test_jsonata_assign_and_output_read_the_values_the_state_entered_with():
    definition = jsonata_machine(
        {
            "A": {"Type": "Pass", "Assign": {"x": 3}, "Next": "B"},
            "B": {
                "Type": "Pass",
                "Assign": {"x": 6, "nextX": "{% $x %}"},
                "Output": {"x": "{% $x %}"},
                "Next": "C",
            },
            "C": {
                "Type": "Pass",
                "Output": {"x": "{% $x %}", "nextX": "{% $nextX %}", "out": "{% $states.input %}"},
                "End": True,
            },
        },
        start="A",
    )
    assert run(definition, {}).output == {"x": 6, "nextX": 3, "out": {"x": 3}}


JSONATA_CHOICE = jsonata_machine(
    {
        "C": {
            "Type": "Choice",
            "Choices": [
                {
                    "Condition": "{% $states.input.n > 10 %}",
                    "Next": "Big",
                    "Output": {"size": "big", "n": "{% $states.input.n %}"},
                    "Assign": {"seen": "big"},
                },
                {"Condition": "{% $states.input.n > 0 %}", "Next": "Small"},
            ],
            "Default": "None",
        },
        "Big": {
            "Type": "Pass",
            "Output": {"in": "{% $states.input %}", "seen": "{% $seen %}"},
            "End": True,
        },
        "Small": {"Type": "Succeed"},
        "None": {
            "Type": "Fail",
            "Error": "{% 'Zero' & 'Error' %}",
            "Cause": "{% 'n was ' & $string($states.input.n) %}",
        },
    },
    start="C",
)


@pytest.mark.parametrize(
    ("n", "status", "output", "error", "cause"),
    [
        (11, "SUCCEEDED", {"in": {"size": "big", "n": 11}, "seen": "big"}, None, None),
        (3, "SUCCEEDED", {"n": 3}, None, None),
        (0, "FAILED", None, "ZeroError", "n was 0"),
    ],
    ids=["Condition with Output and Assign", "second rule, input passes", "Default to Fail"],
)
def test_jsonata_choice(n, status, output, error, cause):
    outcome = run(JSONATA_CHOICE, {"n": n})
    assert (outcome.status, outcome.output, outcome.error, outcome.cause) == (
        status,
        output,
        error,
        cause,
    )


def test_jsonata_condition_that_is_not_a_boolean_is_a_query_evaluation_error():
    definition = jsonata_machine(
        {
            "C": {
                "Type": "Choice",
                "Choices": [{"Condition": "{% $states.input.n %}", "Next": "E"}],
            },
            "E": {"Type": "Succeed"},
        },
        "C",
    )
    outcome = run(definition, {"n": 5})
    assert outcome.error == "States.QueryEvaluationError"
    assert outcome.cause.startswith(_prefix("C"))


def test_jsonata_map_items_and_item_selector_read_the_map_context():
    definition = jsonata_machine(
        {
            "M": {
                "Type": "Map",
                "Items": "{% $states.input.xs %}",
                "ItemSelector": {
                    "v": "{% $states.context.Map.Item.Value * 2 %}",
                    "i": "{% $states.context.Map.Item.Index %}",
                },
                "ItemProcessor": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}},
                "Output": {"all": "{% $states.result %}"},
                "End": True,
            }
        },
        "M",
    )
    assert run(definition, {"xs": [5, 6]}).output == {"all": [{"v": 10, "i": 0}, {"v": 12, "i": 1}]}


def test_jsonata_catch_output_reads_the_error_output():
    definition = jsonata_machine(
        {
            "T": {
                "Type": "Task",
                "Resource": FN + "work",
                "End": True,
                "Catch": [
                    {
                        "ErrorEquals": ["States.ALL"],
                        "Next": "R",
                        "Output": {
                            "err": "{% $states.errorOutput.Error %}",
                            "in": "{% $states.input %}",
                        },
                        "Assign": {"cause": "{% $states.errorOutput.Cause %}"},
                    }
                ],
            },
            "R": {
                "Type": "Pass",
                "Output": {"got": "{% $states.input %}", "cause": "{% $cause %}"},
                "End": True,
            },
        },
        "T",
    )
    outcome = run(definition, {"k": 1}, Tasks(work=failing(1)))
    assert outcome.output == {
        "got": {"err": "Flaky", "in": {"k": 1}},
        "cause": "attempt failed (0 more)",
    }


def test_jsonata_catch_without_output_outputs_the_error_output():
    definition = jsonata_machine(
        {
            "T": {
                "Type": "Task",
                "Resource": FN + "work",
                "End": True,
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "R"}],
            },
            "R": {"Type": "Succeed"},
        },
        "T",
    )
    outcome = run(definition, {"k": 1}, Tasks(work=failing(1)))
    assert outcome.output == {"Error": "Flaky", "Cause": "attempt failed (0 more)"}


def test_jsonata_wait_seconds_expression():
    clock = FakeClock()
    definition = jsonata_machine(
        {"W": {"Type": "Wait", "Seconds": "{% $states.input.s * 2 %}", "End": True}}, "W"
    )
    assert run(definition, {"s": 4}, clock=clock).status == "SUCCEEDED"
    assert clock.waits == [8]


def test_jsonata_parallel_arguments_feed_every_branch():
    branch = {
        "StartAt": "P",
        "States": {"P": {"Type": "Pass", "Output": "{% $states.input.v %}", "End": True}},
    }
    definition = jsonata_machine(
        {
            "P": {
                "Type": "Parallel",
                "Arguments": {"v": "{% $states.input.a %}"},
                "Branches": [branch, branch],
                "End": True,
            }
        },
        "P",
    )
    assert run(definition, {"a": "x"}).output == ["x", "x"]


def test_jsonata_state_in_a_jsonpath_machine():
    definition = {
        "StartAt": "A",
        "States": {
            "A": {"Type": "Pass", "Parameters": {"v.$": "$.v"}, "Next": "B"},
            "B": {
                "Type": "Pass",
                "QueryLanguage": "JSONata",
                "Output": "{% $states.input.v + 1 %}",
                "End": True,
            },
        },
    }
    assert run(definition, {"v": 1}).output == 2


def test_jsonata_context_execution_and_state():
    definition = jsonata_machine(
        {
            "S": {
                "Type": "Pass",
                "End": True,
                "Output": {
                    "name": "{% $states.context.Execution.Name %}",
                    "state": "{% $states.context.State.Name %}",
                    "entered": "{% $states.context.State.EnteredTime %}",
                },
            }
        }
    )
    assert run(definition, {}).output == {
        "name": "exec-1",
        "state": "S",
        "entered": "2026-01-02T03:04:05.678Z",
    }


def test_jsonata_expression_error_fails_with_query_evaluation_error():
    definition = jsonata_machine(
        {"S": {"Type": "Pass", "End": True, "Output": "{% $states.input.a + 'x' %}"}}
    )
    outcome = run(definition, {"a": 1})
    assert (outcome.status, outcome.error) == ("FAILED", "States.QueryEvaluationError")
    assert outcome.cause.startswith(_prefix())
