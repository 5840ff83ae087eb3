"""The JSONata query language of a state: ``runner.states.jsonata``.

Sources, and how far each case can be trusted:

* "docs": an example of the developer guide's "Transforming data with JSONata in Step
  Functions" or "Passing data between states with variables" page, with its documented output.
* "intrinsic docs": the intrinsic-functions page documents the output of ``States.*``, which
  the transforming-data page says each added JSONata function is the equivalent of.
* "behaviour": what the docs state in words (truncating integer arguments, ``$random``'s seed,
  the v4 UUID, ``$eval`` being unavailable, ``States.QueryEvaluationError`` for every failure)
  tested on inputs of our own.
* "observed": not in AWS's docs; what AWS answers as real executions or third-party emulators
  record it (the undefined cause text, a one-element ``$range`` being a number, ``$partition``
  of an empty array being undefined). Each such case says so in its id.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest

from runner.errors import SpecError, StatesError
from runner.states.jsonata import (
    QUERY_EVALUATION_ERROR,
    compile_template,
    evaluate_expression,
    is_jsonata,
)

WHERE = "/States/Shape/Output"

FILTER_INPUT = {
    "products": [
        {"calories": 140, "flavour": "Cola", "name": "Product-1"},
        {"calories": 0, "flavour": "Cola", "name": "Product-2"},
        {"calories": 160, "flavour": "Orange", "name": "Product-3"},
        {"calories": 100, "flavour": "Orange", "name": "Product-4"},
        {"calories": 0, "flavour": "Lime", "name": "Product-5"},
    ]
}


def states(input: Any = None, **more: Any) -> dict[str, Any]:
    """``$states`` as the interpreter passes it: the state input and a context object."""
    context = {"Execution": {"Id": "arn:aws:states:us-east-1:123456789012:execution:sm:run-1"}}
    return {"input": {} if input is None else input, "context": context, **more}


# (id, field value, $states, variables, expected value)
EVALUATIONS: list[tuple[str, Any, dict[str, Any], dict[str, Any], Any]] = [
    (
        "docs: JSONPath to JSONata conversion sample",
        {
            "static": "Hello",
            "title": "{% $states.input.title %}",
            "name": "{% $customerName %}",
            "not-evaluated": "$customerName",
        },
        states({"title": "Doctor"}),
        {"customerName": "María"},
        {"static": "Hello", "title": "Doctor", "name": "María", "not-evaluated": "$customerName"},
    ),
    (
        "docs: example Input and Output",
        {
            "lastName": "{% 'Last=>' & $states.input.customer.lastName %}",
            "orderValue": "{% $states.input.order.total %}",
        },
        states(
            {
                "customer": {"firstName": "Martha", "lastName": "Rivera"},
                "order": {"items": 7, "total": 27.91},
            }
        ),
        {},
        {"lastName": "Last=>Rivera", "orderValue": 27.91},
    ),
    (
        "docs: example Filtering with JSONata",
        {"dietProducts": "{% $states.input.products[calories=0] %}"},
        states(FILTER_INPUT),
        {},
        {
            "dietProducts": [
                {"calories": 0, "flavour": "Cola", "name": "Product-2"},
                {"calories": 0, "flavour": "Lime", "name": "Product-5"},
            ]
        },
    ),
    ("docs: TimeoutSeconds from a variable", "{% $timeout %}", states(), {"timeout": 30}, 30),
    (
        "docs: Arguments field from a variable",
        {"field1": "{% $name %}"},
        states(),
        {"name": "María"},
        {"field1": "María"},
    ),
    ("docs: Items array element", [1, "{% $two %}", 3], states(), {"two": 2}, [1, 2, 3]),
    ("docs: Output accepts true", True, states(), {}, True),
    ("docs: Output accepts 42", 42, states(), {}, 42),
    (
        "docs: Assign literal values",
        {"productName": "product1", "count": 42, "available": True},
        states(),
        {},
        {"productName": "product1", "count": 42, "available": True},
    ),
    (
        "docs: Assign from input and result",
        {
            "product": "{% $states.input.order.product %}",
            "currentPrice": "{% $states.result.Payload.current_price %}",
        },
        states({"order": {"product": "kettle"}}, result={"Payload": {"current_price": 19.5}}),
        {},
        {"product": "kettle", "currentPrice": 19.5},
    ),
    (
        "behaviour: Assign reads variables as they were when the state started",
        {"x": "{% $a %}", "nextX": "{% $x %}"},
        states(),
        {"x": 3, "a": 6},
        {"x": 6, "nextX": 3},
    ),
    (
        "behaviour: Choice Condition compares a variable with the input",
        "{% $current_price <= $states.input.desired_price %}",
        states({"desired_price": 20}),
        {"current_price": 19.5},
        True,
    ),
    (
        "docs: $partition of a literal array by an input chunk size",
        {"arrayPartition": "{% $partition([1,2,3,4], $states.input.chunkSize) %}"},
        states({"chunkSize": 2}),
        {},
        {"arrayPartition": [[1, 2], [3, 4]]},
    ),
    (
        "intrinsic docs: $partition like States.ArrayPartition",
        "{% $partition([1,2,3,4,5,6,7,8,9], 4) %}",
        states(),
        {},
        [[1, 2, 3, 4], [5, 6, 7, 8], [9]],
    ),
    (
        "docs: $range(0, 10, 2)",
        {"arrayRange": "{% $range(0, 10, 2) %}"},
        states(),
        {},
        {"arrayRange": [0, 2, 4, 6, 8, 10]},
    ),
    (
        "intrinsic docs: $range like States.ArrayRange(1, 9, 2)",
        "{% $range(1, 9, 2) %}",
        states(),
        {},
        [1, 3, 5, 7, 9],
    ),
    (
        "behaviour: $range counts down by a negative delta",
        "{% $range(9, 1, -2) %}",
        states(),
        {},
        [9, 7, 5, 3, 1],
    ),
    (
        "behaviour: $range stops before passing the end",
        "{% $range(1, 8, 2) %}",
        states(),
        {},
        [1, 3, 5, 7],
    ),
    (
        "behaviour: $range drops the fraction of its arguments",
        "{% $range(-1.7, 2, 1) %}",
        states(),
        {},
        [-1, 0, 1, 2],
    ),
    ("observed: a one-element $range is the bare number", "{% $range(3, 3, 1) %}", states(), {}, 3),
    (
        "behaviour: $partition drops the fraction of the chunk size",
        "{% $partition([1,2,3,4,5], 2.9) %}",
        states(),
        {},
        [[1, 2], [3, 4], [5]],
    ),
    (
        "docs: $hash of the input with an algorithm variable",
        {"myHash": "{% $hash($states.input.content, $hashAlgorithmName) %}"},
        states({"content": "input data"}),
        {"hashAlgorithmName": "SHA-1"},
        {"myHash": "aaff4a450a104cd177d28d18d74485e8cae074b7"},
    ),
    (
        "behaviour: $hash MD5",
        "{% $hash('input data', 'MD5') %}",
        states(),
        {},
        "812f45842bc6d66ee14572ce20db8e86",
    ),
    (
        "behaviour: $hash SHA-256",
        "{% $hash('abc', 'SHA-256') %}",
        states(),
        {},
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    ),
    (
        "docs: $parse deserializes an input string",
        {"deserializedPayload": "{% $parse($states.input.json_string) %}"},
        states({"json_string": '{"foo": "bar", "n": [1, null, 2.5]}'}),
        {},
        {"deserializedPayload": {"foo": "bar", "n": [1, None, 2.5]}},
    ),
    (
        "behaviour: $parse of 'null' is null, not undefined",
        "{% $parse('null') %}",
        states(),
        {},
        None,
    ),
    (
        "templates nest expressions in objects and arrays at any depth",
        {"a": {"b": [1, {"c": "{% $states.input.n * 2 %}"}, "{% $v %}"]}, "d": "plain"},
        states({"n": 21}),
        {"v": [True, None]},
        {"a": {"b": [1, {"c": 42}, [True, None]]}, "d": "plain"},
    ),
    (
        "strings that are not {% %} expressions are literals",
        ["$customerName", "$.title", "States.Format('{}', $.a)", "100%}", "{ % 1 % }", "a {% b %}"],
        states(),
        {"customerName": "María"},
        ["$customerName", "$.title", "States.Format('{}', $.a)", "100%}", "{ % 1 % }", "a {% b %}"],
    ),
    (
        "$states.input is the whole input",
        "{% $states.input %}",
        states({"a": [1, {"b": None}]}),
        {},
        {"a": [1, {"b": None}]},
    ),
    (
        "$states.context is the context object",
        "{% $states.context.Execution.Id %}",
        states(),
        {},
        "arn:aws:states:us-east-1:123456789012:execution:sm:run-1",
    ),
    (
        "$states.errorOutput in a Catch",
        {"why": "{% $states.errorOutput.Error & ': ' & $states.errorOutput.Cause %}"},
        states(errorOutput={"Error": "Oops", "Cause": "bad"}),
        {},
        {"why": "Oops: bad"},
    ),
    (
        "a null input field is null, kept in place",
        {"v": "{% $states.input.bar %}"},
        states({"bar": None}),
        {},
        {"v": None},
    ),
    (
        "an integral float comes back as an int",
        "{% $states.input.f * 2 %}",
        states({"f": 1.5}),
        {},
        3,
    ),
    (
        "an integral input float comes back as an int",
        "{% $states.input.f %}",
        states({"f": 3.0}),
        {},
        3,
    ),
    ("a float past 1e21 stays a float", "{% $states.input.f %}", states({"f": 1e21}), {}, 1e21),
    (
        "JSONata sequences come back as lists",
        "{% $states.input.items.v %}",
        states({"items": [{"v": 1}, {"v": 2}]}),
        {},
        [1, 2],
    ),
    (
        "an object constructor leaves out undefined values",
        "{% {'k': $states.input.missing, 'n': 1} %}",
        states(),
        {},
        {"n": 1},
    ),
    (
        "names inside predicates, later steps and groupings read the items",
        "{% $states.input.items[v > 1].{'w': w} %}",
        states({"items": [{"v": 1, "w": "a"}, {"v": 2, "w": "b"}]}),
        {},
        {"w": "b"},
    ),
    (
        "higher-order functions with a lambda",
        "{% $map($states.input.items, function($x) { $x * 10 }) %}",
        states({"items": [1, 2]}),
        {},
        [10, 20],
    ),
    (
        "a block with a local variable",
        "{% ($y := $states.input.n; $y * $y) %}",
        states({"n": 7}),
        {},
        49,
    ),
    (
        "JSONata built-ins stay available",
        "{% $uppercase($join(['a', 'b'], '-')) %}",
        states(),
        {},
        "A-B",
    ),
]


@pytest.mark.parametrize(
    ("value", "state_data", "variables", "expected"),
    [case[1:] for case in EVALUATIONS],
    ids=[case[0] for case in EVALUATIONS],
)
def test_evaluates(value: Any, state_data: dict, variables: dict, expected: Any) -> None:
    result = compile_template(value, WHERE).evaluate(state_data, variables)
    assert result == expected
    assert _same_types(result, expected)


def _same_types(left: Any, right: Any) -> bool:
    """Equal values of equal JSON types: 3 is not 3.0, nor True 1."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return all(_same_types(left[key], right[key]) for key in left)
    if isinstance(left, list):
        return all(_same_types(a, b) for a, b in zip(left, right, strict=True))
    return True


def _undefined(expression: str, field: str) -> str:
    return (
        f"The JSONata expression '{expression}' specified for the field '{field}' "
        "returned nothing (undefined)."
    )


def _threw(expression: str, field: str, reason: str) -> str:
    return (
        f"The JSONata expression '{expression}' specified for the field '{field}' "
        f"threw an error during evaluation. {reason}"
    )


# (id, field value, where, $states, variables, cause). Every run-time failure is
# States.QueryEvaluationError (docs); the undefined cause is AWS's observed text, the others
# are ours (AWS documents none), so they are asserted whole to pin our wording.
FAILURES: list[tuple[str, Any, str, dict[str, Any], dict[str, Any], str]] = [
    (
        "docs+observed: a field that does not exist is undefined",
        "{% $data.thisFieldDoesNotExist %}",
        WHERE,
        states(),
        {"data": {}},
        _undefined("$data.thisFieldDoesNotExist", "Output"),
    ),
    (
        "observed: the cause names the field inside the template",
        {"Input": {"pushLocation": "{% $states.input.pushLocation %}"}},
        "/States/Run S3 Data Push/Arguments",
        states(),
        {},
        _undefined("$states.input.pushLocation", "Arguments/Input/pushLocation"),
    ),
    (
        "an array element is named by its index",
        {"a": [1, "{% $states.input.nope %}"]},
        WHERE,
        states(),
        {},
        _undefined("$states.input.nope", "Output/a[1]"),
    ),
    (
        "a field of a state inside a Map is named relative to that state",
        "{% $missing %}",
        "/States/Map/ItemProcessor/States/Inner/Assign/x",
        states(),
        {},
        _undefined("$missing", "Assign/x"),
    ),
    (
        "a Choice rule is named by its index",
        "{% $missing %}",
        "/States/Choose/Choices/1/Condition",
        states(),
        {},
        _undefined("$missing", "Choices[1]/Condition"),
    ),
    (
        "docs: a type error, $x + $y with a string",
        "{% $x + $y %}",
        "/States/Shape/TimeoutSeconds",
        states(),
        {"x": "a", "y": 1},
        _threw(
            "$x + $y",
            "TimeoutSeconds",
            "T2001: The left side of the + operator must evaluate to a number",
        ),
    ),
    (
        "docs: $eval is not available in Step Functions",
        "{% $eval('1 + 1') %}",
        WHERE,
        states(),
        {},
        _threw("$eval('1 + 1')", "Output", "T1006: Attempted to invoke a non-function"),
    ),
    (
        "a JSONata function error",
        "{% $sum('a') %}",
        WHERE,
        states(),
        {},
        _threw("$sum('a')", "Output", "T0412: Argument 1 of function sum must be an array of n"),
    ),
    (
        "a function is not a JSON value",
        "{% function($x) { $x } %}",
        WHERE,
        states(),
        {},
        "The JSONata expression 'function($x) { $x }' specified for the field 'Output' "
        "returned an unsupported result type (a function).",
    ),
    (
        "$range with a string argument",
        "{% $range('0', 4, 1) %}",
        WHERE,
        states(),
        {},
        _threw(
            "$range('0', 4, 1)",
            "Output",
            'T0410: Argument 1 of function "range" does not match function signature',
        ),
    ),
    (
        "$range with a fourth argument",
        "{% $range(0, 4, 1, 2) %}",
        WHERE,
        states(),
        {},
        _threw(
            "$range(0, 4, 1, 2)",
            "Output",
            'T0410: Argument 4 of function "range" does not match function signature',
        ),
    ),
    (
        "observed: $range without a step is undefined",
        "{% $range(1, 3) %}",
        WHERE,
        states(),
        {},
        _undefined("$range(1, 3)", "Output"),
    ),
    (
        "observed: $range stepping away from its end is undefined",
        "{% $range(3, 1, 1) %}",
        WHERE,
        states(),
        {},
        _undefined("$range(3, 1, 1)", "Output"),
    ),
    (
        "observed: $range with a step of zero is undefined",
        "{% $range(0, 4, 0.9) %}",
        WHERE,
        states(),
        {},
        _undefined("$range(0, 4, 0.9)", "Output"),
    ),
    (
        "observed: $partition of an empty array is undefined",
        "{% $partition([], 2) %}",
        WHERE,
        states(),
        {},
        _undefined("$partition([], 2)", "Output"),
    ),
    (
        "observed: $partition by zero is undefined",
        "{% $partition([1], 0) %}",
        WHERE,
        states(),
        {},
        _undefined("$partition([1], 0)", "Output"),
    ),
    (
        "$partition of something that is not an array",
        "{% $partition('abc', 2) %}",
        WHERE,
        states(),
        {},
        _threw(
            "$partition('abc', 2)",
            "Output",
            'T0410: Argument 1 of function "partition" does not match function signature',
        ),
    ),
    (
        "observed: $hash without an algorithm is undefined",
        "{% $hash('a') %}",
        WHERE,
        states(),
        {},
        _undefined("$hash('a')", "Output"),
    ),
    (
        "docs: $hash names its algorithms exactly",
        "{% $hash('a', 'sha1') %}",
        WHERE,
        states(),
        {},
        _threw(
            "$hash('a', 'sha1')",
            "Output",
            "The hashing algorithm 'sha1' is not supported: it must be one of "
            "MD5, SHA-1, SHA-256, SHA-384, SHA-512",
        ),
    ),
    (
        "$hash of a number",
        "{% $hash(1, 'MD5') %}",
        WHERE,
        states(),
        {},
        _threw(
            "$hash(1, 'MD5')",
            "Output",
            'T0410: Argument 1 of function "hash" does not match function signature',
        ),
    ),
    (
        "$parse of text that is not JSON",
        "{% $parse('{') %}",
        WHERE,
        states(),
        {},
        _threw(
            "$parse('{')",
            "Output",
            "The argument of $parse is not valid JSON: Expecting property name enclosed in "
            "double quotes: line 1 column 2 (char 1)",
        ),
    ),
    (
        "$uuid takes no argument",
        "{% $uuid(1) %}",
        WHERE,
        states(),
        {},
        _threw(
            "$uuid(1)",
            "Output",
            'T0410: Argument 1 of function "uuid" does not match function signature',
        ),
    ),
    (
        "$random takes a numeric seed",
        "{% $random('seed') %}",
        WHERE,
        states(),
        {},
        _threw(
            "$random('seed')",
            "Output",
            'T0410: Argument 1 of function "random" does not match function signature',
        ),
    ),
]


@pytest.mark.parametrize(
    ("value", "where", "state_data", "variables", "cause"),
    [case[1:] for case in FAILURES],
    ids=[case[0] for case in FAILURES],
)
def test_fails_at_run_time(
    value: Any, where: str, state_data: dict, variables: dict, cause: str
) -> None:
    template = compile_template(value, where)  # compiles: AWS refuses none of these up front
    with pytest.raises(StatesError) as raised:
        template.evaluate(state_data, variables)
    assert (raised.value.error, raised.value.cause) == (QUERY_EVALUATION_ERROR, cause)


# (id, field value, where, SpecError path, start of the rule)
REFUSED: list[tuple[str, Any, str, str, str]] = [
    (
        "docs: an expression that does not close",
        {"user": {"name": "{% $states.input.name"}},
        "/States/Shape/Arguments",
        "/States/Shape/Arguments/user/name",
        "a JSONata expression must start with '{%' and end with '%}'",
    ),
    (
        "docs: a leading space",
        " {% $states.input %}",
        WHERE,
        WHERE,
        "a JSONata expression must start with '{%' and end with '%}'",
    ),
    (
        "docs: a trailing space",
        ["{% $states.input %} "],
        WHERE,
        WHERE + "/0",
        "a JSONata expression must start with '{%' and end with '%}'",
    ),
    (
        "observed: a JSONata syntax error",
        {"v": "{% a[1,2) %}"},
        WHERE,
        WHERE + "/v",
        "invalid JSONata expression 'a[1,2)': S0202: Expected ], got ,",
    ),
    (
        "observed: an empty expression",
        "{%  %}",
        WHERE,
        WHERE,
        "invalid JSONata expression '': S0207: Unexpected end of expression",
    ),
    (
        "observed: $$ is not supported",
        "{% $$.Execution.Id %}",
        WHERE,
        WHERE,
        "unsupported JSONata expression '$$.Execution.Id': Reference to '$$' is not supported.",
    ),
    (
        "observed: a field name at the top level",
        {"v": "{% phone %}"},
        WHERE,
        WHERE + "/v",
        "unsupported JSONata expression 'phone': Reference to 'phone' at the top level is not "
        "supported.",
    ),
    (
        "observed: the context item $ at the top level",
        "{% $.a %}",
        WHERE,
        WHERE,
        "unsupported JSONata expression '$.a': Reference to '$' at the top level is not supported.",
    ),
    (
        "observed: a lambda body reads the top level",
        "{% $map([1], function($v) { b }) %}",
        WHERE,
        WHERE,
        "unsupported JSONata expression '$map([1], function($v) { b })': "
        "Reference to 'b' at the top level is not supported.",
    ),
]


@pytest.mark.parametrize(
    ("value", "where", "path", "rule"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_refused_at_load(value: Any, where: str, path: str, rule: str) -> None:
    with pytest.raises(SpecError) as raised:
        compile_template(value, where)
    assert raised.value.path == path
    assert raised.value.rule.startswith(rule), raised.value.rule


def test_states_field_unavailable_here_is_refused() -> None:
    """docs: reading $states.result where a field has no result is caught at creation."""
    with pytest.raises(SpecError) as raised:
        compile_template(
            {"p": "{% $states.result.Payload %}"},
            "/States/Shape/Arguments",
            available={"input", "context"},
        )
    assert raised.value.path == "/States/Shape/Arguments/p"
    assert raised.value.rule == (
        "unsupported JSONata expression '$states.result.Payload': "
        "$states.result is not available in this field"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{% $x %}", True),
        ("{%$x%}", True),
        ("{% %}", True),
        ("{%}", False),
        (" {% $x %}", False),
        ("{% $x %} ", False),
        ("$x", False),
        (42, False),
        (None, False),
        (["{% $x %}"], False),
    ],
    ids=repr,
)
def test_is_jsonata(text: Any, expected: bool) -> None:
    assert is_jsonata(text) is expected


def test_random_is_in_range_and_repeatable_with_a_seed() -> None:
    """docs: 0 <= n < 1; the same seed gives an identical number."""
    template = compile_template(
        {"randNoSeed": "{% $random() %}", "randSeeded": "{% $random($states.input.seed) %}"},
        "/States/Shape/Assign",
    )
    first = template.evaluate(states({"seed": 7}), {})
    second = template.evaluate(states({"seed": 7.9}), {})  # the fraction is dropped
    assert 0 <= first["randNoSeed"] < 1
    assert 0 <= first["randSeeded"] < 1
    assert first["randSeeded"] == second["randSeeded"]


def test_uuid_is_a_version_4_uuid() -> None:
    """docs: $uuid() returns a v4 UUID, a new one each time."""
    template = compile_template({"uniqueId": "{% $uuid() %}"}, "/States/Shape/Assign")
    first, second = (template.evaluate(states(), {})["uniqueId"] for _ in range(2))
    v4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
    assert v4.match(first) and v4.match(second) and first != second


def test_now_is_the_time_of_this_evaluation() -> None:
    """jsonata-python reads the clock of the thread's last-used expression: not ours to see."""
    millis = compile_template("{% $millis() %}", WHERE)
    compile_template("{% 1 %}", WHERE)  # another expression compiled after it
    time.sleep(0.01)
    before = time.time() * 1000
    assert millis.evaluate(states(), {}) >= before - 1


def test_results_are_fresh_objects() -> None:
    """Changing a result changes neither the template's literals nor the input."""
    data = {"a": {"b": 1}}
    literal = compile_template({"x": [1, 2]}, WHERE)
    mixed = compile_template({"x": [1, 2], "in": "{% $states.input %}"}, WHERE)
    first = literal.evaluate(states(data), {})
    first["x"].append(3)
    second = mixed.evaluate(states(data), {})
    second["in"]["a"]["b"] = 2
    assert literal.evaluate(states(data), {}) == {"x": [1, 2]}
    assert data == {"a": {"b": 1}}


def test_evaluate_expression_compiles_once_and_passes_literals() -> None:
    text = "{% $states.input.a + $b %}"
    assert evaluate_expression(text, states({"a": 1}), {"b": 2}) == 3
    assert evaluate_expression(text, states({"a": 10}), {"b": 2}) == 12
    assert evaluate_expression("$.a", states({"a": 1}), {}) == "$.a"
    with pytest.raises(StatesError) as raised:
        evaluate_expression("{% $nope %}", states(), {}, where="/States/W/Seconds")
    assert raised.value.cause == _undefined("$nope", "Seconds")


def test_one_template_evaluated_by_many_threads_at_once() -> None:
    """Each thread gets its own evaluation state: no result leaks into another's."""
    template = compile_template(
        {
            "n": "{% $states.input.n %}",
            "sum": "{% $sum($map([1..50], function($i) { $i * $states.input.n })) + $k %}",
        },
        WHERE,
    )
    failures: list[str] = []

    def work(n: int) -> None:
        for _ in range(40):
            got = template.evaluate(states({"n": n}), {"k": n})
            if got != {"n": n, "sum": 1275 * n + n}:
                failures.append(f"{n}: {got}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
