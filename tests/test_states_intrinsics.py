"""The ``States.*`` intrinsic functions (runner/states/intrinsics.py).

Sources: the developer guide's "Intrinsic functions for JSONPath states" page and the ASL
specification (states-language.net, "Intrinsic Functions" and Appendix B). An id starting
``doc-`` is an example from the guide, ``spec-`` one from the specification, with the input and
the output the page documents; where a page's output is wrong (two errata, noted at the case)
the case asserts what the function must return and says why. Every other case is ours: it tests
a rule those pages state in words, or AWS behaviour the module docstring lists as observed.

Error causes are asserted exactly. The path-miss cause is AWS's text; the others are ours, in
AWS's frame ("The function '...' had the following error: Invalid arguments in States.X").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest

from runner.errors import SpecError, StatesError
from runner.paths import PathNotFound, compile_path
from runner.states.intrinsics import (
    INTRINSIC_FAILURE,
    MAX_NESTING,
    compile_intrinsic,
    evaluate_intrinsic,
    is_intrinsic,
)

WHERE = "/States/Build/Parameters/value.$"
_VARIABLE = re.compile(r"\$([^\W\d]\w*)(.*)", re.DOTALL)


def resolver(
    state_input: Any,
    context: Any = None,
    variables: Mapping[str, Any] | None = None,
) -> Any:
    """A resolver as the interpreter gives one: ``$``/``$$`` paths and ``$name`` variables."""
    known = dict(variables or {})

    def resolve(path: str) -> Any:
        variable = _VARIABLE.fullmatch(path)
        if variable is None:
            return compile_path(path, "test")(state_input, context or {})
        name, steps = variable.groups()
        if name not in known:
            raise PathNotFound(path)
        return compile_path("$" + steps, "test")(known[name], None) if steps else known[name]

    return resolve


def run(text: str, state_input: Any = None, **resolver_args: Any) -> Any:
    return compile_intrinsic(text, WHERE).evaluate(resolver(state_input, **resolver_args))


def invalid(text: str, function: str, reason: str) -> str:
    """The cause of an argument a function refuses (our reason in AWS's frame)."""
    return (
        f"The function '{text}' had the following error: Invalid arguments in {function}: "
        f"{reason} (field 'value.$')"
    )


def missing(text: str, path: str, state_input: str) -> str:
    """AWS's cause for a path argument that selects nothing."""
    return (
        f"The function '{text}' had the following error: The JsonPath argument for the field "
        f"'{path}' could not be found in the input '{state_input}'"
    )


# --- documented examples -------------------------------------------------------------------------

NINE = [1, 2, 3, 4, 5, 6, 7, 8, 9]
IMAGE_ARN = "arn:aws:imagebuilder:us-east-1:123456789012:image-recipe/my-recipe/1.2.3"

DOCUMENTED = [
    ("doc-array", "States.Array($.Id)", {"Id": 123456}, [123456]),
    (
        "doc-array-partition",
        "States.ArrayPartition($.inputArray,4)",
        {"inputArray": NINE},
        [[1, 2, 3, 4], [5, 6, 7, 8], [9]],
    ),
    (
        "doc-array-contains",
        "States.ArrayContains($.inputArray, $.lookingFor)",
        {"inputArray": NINE, "lookingFor": 5},
        True,
    ),
    ("doc-array-range", "States.ArrayRange(1, 9, 2)", {}, [1, 3, 5, 7, 9]),
    (
        "doc-array-get-item",
        "States.ArrayGetItem($.inputArray, $.index)",
        {"inputArray": NINE, "index": 5},
        6,
    ),
    ("doc-array-length", "States.ArrayLength($.inputArray)", {"inputArray": NINE}, 9),
    (
        "doc-array-unique",
        "States.ArrayUnique($.inputArray)",
        {"inputArray": [1, 2, 3, 3, 3, 3, 3, 3, 4]},
        [1, 2, 3, 4],
    ),
    (
        "doc-base64-encode",
        "States.Base64Encode($.input)",
        {"input": "Data to encode"},
        "RGF0YSB0byBlbmNvZGU=",
    ),
    # Erratum: both pages print "Decoded data", but RGF0YSB0byBlbmNvZGU= is the Base64 of the
    # encode example's "Data to encode" ("Decoded data" would be RGVjb2RlZCBkYXRh).
    (
        "doc-base64-decode",
        "States.Base64Decode($.base64)",
        {"base64": "RGF0YSB0byBlbmNvZGU="},
        "Data to encode",
    ),
    # Erratum: both pages print aaff4a450a104cd177d28d18d7485e8cae074b7, 39 digits where SHA-1
    # has 40; the true digest of "input data" differs only by the "4" the pages dropped.
    (
        "doc-hash",
        "States.Hash($.Data, $.Algorithm)",
        {"Data": "input data", "Algorithm": "SHA-1"},
        "aaff4a450a104cd177d28d18d74485e8cae074b7",
    ),
    (
        "doc-json-merge",
        "States.JsonMerge($.json1, $.json2, false)",
        {
            "json1": {"a": {"a1": 1, "a2": 2}, "b": 2},
            "json2": {"a": {"a3": 1, "a4": 2}, "c": 3},
        },
        {"a": {"a3": 1, "a4": 2}, "b": 2, "c": 3},
    ),
    (
        "doc-string-to-json",
        "States.StringToJson($.escapedJsonString)",
        {"escapedJsonString": '{"foo": "bar"}'},
        {"foo": "bar"},
    ),
    # The guide prints {\"foo\": \"bar\"} with a space; the spec's example below shows the
    # compact form, which is what the function returns.
    (
        "doc-json-to-string",
        "States.JsonToString($.unescapedJson)",
        {"unescapedJson": {"foo": "bar"}},
        '{"foo":"bar"}',
    ),
    ("doc-math-add", "States.MathAdd($.value1, $.step)", {"value1": 111, "step": -1}, 110),
    (
        "doc-string-split-one-delimiter",
        "States.StringSplit($.inputString, $.splitter)",
        {"inputString": "1,2,3,4,5", "splitter": ","},
        ["1", "2", "3", "4", "5"],
    ),
    (
        "doc-string-split-several-delimiters",
        "States.StringSplit($.inputString, $.splitter)",
        {"inputString": "This.is+a,test=string", "splitter": ".+,="},
        ["This", "is", "a", "test", "string"],
    ),
    (
        "doc-format-literal-template",
        "States.Format('Hello, my name is {}.', $.name)",
        {"name": "Arnav", "template": "Hello, my name is {}."},
        "Hello, my name is Arnav.",
    ),
    (
        "doc-format-path-template",
        "States.Format($.template, $.name)",
        {"name": "Arnav", "template": "Hello, my name is {}."},
        "Hello, my name is Arnav.",
    ),
    (
        "spec-format-number-literal",
        "States.Format('Your name is {}, we are in the year {}', $.name, 2020)",
        {"name": "Foo", "zebra": "stripe"},
        "Your name is Foo, we are in the year 2020",
    ),
    (
        "spec-string-to-json",
        "States.StringToJson($.someString)",
        {"someString": '{"number": 20}', "zebra": "stripe"},
        {"number": 20},
    ),
    (
        "spec-json-to-string",
        "States.JsonToString($.someJson)",
        {"someJson": {"name": "Foo", "year": 2020}, "zebra": "stripe"},
        '{"name":"Foo","year":2020}',
    ),
    (
        "spec-array-mixed-arguments",
        "States.Array('Foo', 2020, $.someJson, null)",
        {"someJson": {"random": "abcdefg"}, "zebra": "stripe"},
        ["Foo", 2020, {"random": "abcdefg"}, None],
    ),
    # The spec's example template; it shows no input or output, so the names are ours.
    (
        "spec-format-escaped-apostrophe",
        r"States.Format('Welcome to {} {}\'s playlist.', $.firstName, $.lastName)",
        {"firstName": "Ada", "lastName": "Lovelace"},
        "Welcome to Ada Lovelace's playlist.",
    ),
]


@pytest.mark.parametrize(
    ("text", "state_input", "expected"),
    [case[1:] for case in DOCUMENTED],
    ids=[case[0] for case in DOCUMENTED],
)
def test_documented_example(text: str, state_input: Any, expected: Any) -> None:
    assert run(text, state_input) == expected


def test_doc_math_random_is_an_integer_from_start_up_to_but_excluding_end() -> None:
    values = {
        run("States.MathRandom($.start, $.end)", {"start": 1, "end": 999}) for _ in range(200)
    }
    assert all(isinstance(value, int) and 1 <= value < 999 for value in values)
    assert len(values) > 1  # random, not constant


def test_doc_uuid_is_a_version_4_uuid_and_fresh_each_time() -> None:
    first, second = run("States.UUID()"), run("States.UUID()")
    v4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
    assert v4.fullmatch(first) and v4.fullmatch(second) and first != second


# The guide's nine-function example: it shows no output, and its template has three {} for two
# values, so on any input it fails at run time; the nesting itself is accepted.
DOC_MY_ARN = (
    "States.Format('{}.{}.{}', States.ArrayGetItem(States.StringSplit(States.ArrayGetItem("
    "States.StringSplit($.ImageRecipe.Arn, '/'), 2), '.'), 0), States.ArrayGetItem("
    "States.StringSplit(States.ArrayGetItem(States.StringSplit($.ImageRecipe.Arn, '/'), 2), "
    "'.'), 1))"
)


def test_doc_nine_nested_functions_compile_and_fail_on_the_placeholder_count() -> None:
    with pytest.raises(StatesError) as failure:
        run(DOC_MY_ARN, {"ImageRecipe": {"Arn": IMAGE_ARN}})
    assert failure.value.error == INTRINSIC_FAILURE
    assert failure.value.cause == invalid(
        DOC_MY_ARN, "States.Format", "the template has 3 '{}' but 2 values were given"
    )


def test_doc_nine_nested_functions_with_two_placeholders() -> None:
    text = DOC_MY_ARN.replace("'{}.{}.{}'", "'{}.{}'")
    assert run(text, {"ImageRecipe": {"Arn": IMAGE_ARN}}) == "1.2"  # the recipe version's x.y


# --- behaviour the pages state in words, and observed AWS behaviour -------------------------------

BEHAVIOUR = [
    # literals and escapes
    (
        "literal-number-kinds",
        "States.Array(0, -7, 2.5, 1e3, -1.5E-2)",
        {},
        [0, -7, 2.5, 1000.0, -0.015],
    ),
    ("literal-true-false-null", "States.Array(true, false, null)", {}, [True, False, None]),
    ("literal-no-arguments", "States.Array()", {}, []),
    ("literal-spaces-around-arguments", "States.Array(  1 ,'a'  ,  $.x )", {"x": 2}, [1, "a", 2]),
    ("escape-apostrophe", r"States.Array('it\'s')", {}, ["it's"]),
    ("escape-braces-and-backslash", r"States.Array('\{\}\\')", {}, ["{}\\"]),
    ("escaped-braces-are-not-a-placeholder", r"States.Format('\{\}={}', $.x)", {"x": 1}, "{}=1"),
    ("format-escaped-backslash-before-placeholder", r"States.Format('\\{}', 'x')", {}, "\\x"),
    ("format-no-placeholder", "States.Format('plain')", {}, "plain"),
    ("string-with-comma-and-parens", "States.Array('a, b)', 'c')", {}, ["a, b)", "c"]),
    # States.Format renders values in their natural form
    (
        "format-scalars",
        "States.Format('{}|{}|{}|{}|{}', $.s, $.i, $.f, $.b, $.n)",
        {"s": "x", "i": -1, "f": 3.5, "b": False, "n": None},
        "x|-1|3.5|false|null",
    ),
    (
        "format-template-from-nested-call",
        "States.Format(States.Format('{}', '<{}>'), 7)",
        {},
        "<7>",
    ),
    # paths: the context object and variables
    ("path-whole-input", "States.JsonToString($)", {"a": [1, {"b": "é"}]}, '{"a":[1,{"b":"é"}]}'),
    ("path-array-index", "States.Array($.items[1])", {"items": [10, 20]}, [20]),
    ("path-bracket-name-with-space", "States.Array($['a b'])", {"a b": 1}, [1]),
    (
        "path-wildcard-selects-a-list",
        "States.ArrayLength($.items[*].id)",
        {"items": [{"id": 1}, {"id": 2}]},
        2,
    ),
    # nesting
    (
        "nested-split-and-get",
        "States.ArrayGetItem(States.StringSplit($.s, ','), 1)",
        {"s": "a,b"},
        "b",
    ),
    (
        "nested-merge-of-parsed-json",
        "States.JsonMerge(States.StringToJson($.a), $.b, false)",
        {"a": '{"x": 1}', "b": {"y": 2}},
        {"x": 1, "y": 2},
    ),
    (
        "nested-base64-round-trip",
        "States.Base64Decode(States.Base64Encode($.s))",
        {"s": "✓ ok"},
        "✓ ok",
    ),
    (
        "nested-hash-of-format",
        "States.Hash(States.Format('{}:{}', 'x', 'y'), 'SHA-256')",
        {},
        "1274e286686b54fe765ec40735665b4bf789cee2a5b22124c5e0491a88e15271",
    ),
    # arrays
    ("partition-empty-array", "States.ArrayPartition($.a, 3)", {"a": []}, []),
    (
        "partition-chunk-larger-than-array",
        "States.ArrayPartition($.a, 10)",
        {"a": [1, 2]},
        [[1, 2]],
    ),
    (
        "partition-fraction-dropped",
        "States.ArrayPartition($.a, 2.6)",
        {"a": [1, 2, 3, 4, 5]},
        [[1, 2], [3, 4], [5]],
    ),
    (
        "contains-object-ignores-key-order",
        "States.ArrayContains($.a, $.v)",
        {"a": [{"x": 1, "y": 2}], "v": {"y": 2, "x": 1}},
        True,
    ),
    ("contains-true-is-not-1", "States.ArrayContains($.a, true)", {"a": [1, 0]}, False),
    ("contains-absent", "States.ArrayContains($.a, 'z')", {"a": ["x"]}, False),
    ("range-descending", "States.ArrayRange(5, 1, -2)", {}, [5, 3, 1]),
    ("range-step-away-from-end-is-empty", "States.ArrayRange(5, 1, 1)", {}, []),
    ("range-one-item", "States.ArrayRange(3, 3, -1)", {}, [3]),
    ("range-fractions-dropped", "States.ArrayRange(5.4, -0.6, -2.4)", {}, [5, 3, 1]),
    ("get-item-fraction-dropped", "States.ArrayGetItem($.a, 1.7)", {"a": [10, 20, 30]}, 20),
    ("get-item-null-element", "States.ArrayGetItem($.a, 0)", {"a": [None]}, None),
    (
        "unique-keeps-first-and-json-equality",
        "States.ArrayUnique($.a)",
        {"a": [1, True, 1.0, "1", {"k": [1]}, {"k": [1]}, None, None, False, 0]},
        [1, True, "1", {"k": [1]}, None, False, 0],
    ),
    # encoding and hashing
    ("base64-encode-utf8", "States.Base64Encode('🚀')", {}, "8J+agA=="),
    ("base64-encode-empty", "States.Base64Encode('')", {}, ""),
    ("base64-decode-missing-padding", "States.Base64Decode('YWJj ZA')", {}, "abcd"),
    ("base64-decode-skips-non-alphabet", "States.Base64Decode(' YWJjZA== ')", {}, "abcd"),
    ("hash-md5", "States.Hash('hello', 'MD5')", {}, "5d41402abc4b2a76b9719d911017c592"),
    (
        "hash-sha256-empty",
        "States.Hash('', 'SHA-256')",
        {},
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ),
    (
        "hash-sha384",
        "States.Hash('hello', 'SHA-384')",
        {},
        "59e1748777448c69de6b800d7a33bbfb9ff1b463e44354c3553bcdb9c666fa90125a3c79f90397bdf5f6a13de828684f",
    ),
    (
        "hash-sha512",
        "States.Hash('hello', 'SHA-512')",
        {},
        "9b71d224bd62f3785d96d46ad3ea3d73319bfbc2890caadae2dff72519673ca72323c3d99ba5c11d7c7acc6e14b8c5da0c4663475c2e5c3adef46f73bcdec043",
    ),
    (
        "hash-number-hashes-its-json",
        "States.Hash(123, 'MD5')",
        {},
        "202cb962ac59075b964b07152d234b70",
    ),
    # JSON
    (
        "merge-second-wins-shallow",
        "States.JsonMerge($.a, $.b, false)",
        {"a": {"k": 1, "m": 1}, "b": {"k": 2}},
        {"k": 2, "m": 1},
    ),
    ("string-to-json-scalar", "States.StringToJson('[1, \"x\", null]')", {}, [1, "x", None]),
    ("json-to-string-string", "States.JsonToString($.s)", {"s": 'a"b'}, '"a\\"b"'),
    # math
    ("add-rounds-half-up", "States.MathAdd(2.5, -0.5)", {}, 3),
    ("add-int32-bounds", "States.MathAdd(2147483647, -2147483648)", {}, -1),
    ("random-one-possible-value", "States.MathRandom(7, 8)", {}, 7),
    # strings
    ("split-drops-empty-pieces", "States.StringSplit(',a,,b,', ',')", {}, ["a", "b"]),
    ("split-empty-delimiter", "States.StringSplit('abc', '')", {}, ["abc"]),
    (
        "split-regex-characters-are-literal",
        "States.StringSplit('a.b*c', '*.')",
        {},
        ["a", "b", "c"],
    ),
]


@pytest.mark.parametrize(
    ("text", "state_input", "expected"),
    [case[1:] for case in BEHAVIOUR],
    ids=[case[0] for case in BEHAVIOUR],
)
def test_behaviour(text: str, state_input: Any, expected: Any) -> None:
    result = run(text, state_input)
    assert result == expected
    assert type(result) is type(expected)  # True is not 1, 1.0 is not 1


def test_context_object_and_variable_paths() -> None:
    text = "States.Format('{}/{}/{}', $$.Execution.Name, $count, $cfg.region)"
    result = run(
        text,
        {},
        context={"Execution": {"Name": "run-1"}},
        variables={"count": 3, "cfg": {"region": "eu-west-1"}},
    )
    assert result == "run-1/3/eu-west-1"


def test_seeded_random_is_deterministic_for_a_seed() -> None:
    values = {run("States.MathRandom(1, 1000, 42)") for _ in range(5)}
    assert len(values) == 1
    assert 1 <= values.pop() < 1000
    # Different seeds give (here) different numbers; AWS's own numbers cannot be reproduced.
    seeded = {run(f"States.MathRandom(1, 1000000, {seed})") for seed in range(10)}
    assert len(seeded) > 1


def test_results_are_plain_json_values_and_fresh() -> None:
    state_input = {"a": [1, 2]}
    first = run("States.Array($.a, 1)", state_input)
    first.append("changed")
    assert run("States.Array($.a, 1)", state_input) == [[1, 2], 1]


def test_limits_at_the_boundary_are_accepted() -> None:
    assert len(run("States.ArrayRange(1, 1000, 1)")) == 1000
    assert len(run("States.ArrayRange(1000, 1, -1)")) == 1000
    assert run("States.Base64Encode($.s)", {"s": "a" * 10_000}).startswith("YWFh")
    assert len(run("States.Base64Decode($.s)", {"s": "QUFB" * 2_500})) == 7_500
    assert len(run("States.Hash($.s, 'SHA-1')", {"s": "a" * 10_000})) == 40


def test_evaluate_intrinsic_compiles_once() -> None:
    resolve = resolver({"a": 1})
    assert evaluate_intrinsic("States.MathAdd($.a, 1)", resolve, WHERE) == 2
    assert evaluate_intrinsic("States.MathAdd($.a, 1)", resolve, WHERE) == 2


# --- run-time failures ---------------------------------------------------------------------------

FAILURES = [
    # (id, text, input, function, reason): the cause is invalid(text, function, reason)
    # wrong argument counts are run-time failures on AWS, not CreateStateMachine refusals (observed)
    (
        "arity-format-none",
        "States.Format()",
        {},
        "States.Format",
        "takes at least 1 argument (got 0)",
    ),
    ("arity-hash-one", "States.Hash('a')", {}, "States.Hash", "takes 2 argument(s) (got 1)"),
    (
        "arity-length-two",
        "States.ArrayLength($.a, $.a)",
        {"a": []},
        "States.ArrayLength",
        "takes 1 argument(s) (got 2)",
    ),
    (
        "arity-random-four",
        "States.MathRandom(1, 2, 3, 4)",
        {},
        "States.MathRandom",
        "takes 2 to 3 arguments (got 4)",
    ),
    ("arity-uuid-one", "States.UUID(1)", {}, "States.UUID", "takes no arguments (got 1)"),
    (
        "arity-merge-two",
        "States.JsonMerge($.a, $.a)",
        {"a": {}},
        "States.JsonMerge",
        "takes 3 argument(s) (got 2)",
    ),
    # States.Format
    (
        "format-too-few-values",
        "States.Format('{} {}', 1)",
        {},
        "States.Format",
        "the template has 2 '{}' but 1 values were given",
    ),
    (
        "format-too-many-values",
        "States.Format('{}', 1, 2)",
        {},
        "States.Format",
        "the template has 1 '{}' but 2 values were given",
    ),
    (
        "format-lone-open-brace",
        "States.Format('Hello {', 1)",
        {},
        "States.Format",
        "the template has a '{' without a matching '}'",
    ),
    (
        "format-doubled-braces",
        "States.Format('Hello {{}}', 1)",
        {},
        "States.Format",
        "the template has a '{' without a matching '}'",
    ),
    (
        "format-lone-close-brace",
        "States.Format('}')",
        {},
        "States.Format",
        "the template has a '}' without a matching '{'",
    ),
    (
        "format-path-template-brace",
        "States.Format($.t)",
        {"t": "a}"},
        "States.Format",
        "the template has a '}' without a matching '{'",
    ),
    (
        "format-template-not-string",
        "States.Format($.t, 1)",
        {"t": 5},
        "States.Format",
        "the first argument must be a string (got 5)",
    ),
    (
        "format-object-value",
        "States.Format('{}', $.o)",
        {"o": {"a": 1}},
        "States.Format",
        'argument 2 is {"a":1}; only strings, numbers, booleans and null can be formatted',
    ),
    # arrays
    (
        "partition-not-array",
        "States.ArrayPartition('x', 2)",
        {},
        "States.ArrayPartition",
        'the first argument must be an array (got "x")',
    ),
    (
        "partition-zero",
        "States.ArrayPartition($.a, 0)",
        {"a": [1]},
        "States.ArrayPartition",
        "the chunk size must be a positive integer (got 0)",
    ),
    (
        "partition-fraction-below-one",
        "States.ArrayPartition($.a, 0.6)",
        {"a": [1]},
        "States.ArrayPartition",
        "the chunk size must be a positive integer (got 0.6)",
    ),
    (
        "partition-string-size",
        "States.ArrayPartition($.a, '2')",
        {"a": [1]},
        "States.ArrayPartition",
        'the chunk size must be a number (got "2")',
    ),
    (
        "contains-not-array",
        "States.ArrayContains($.a, 1)",
        {"a": {"k": 1}},
        "States.ArrayContains",
        'the first argument must be an array (got {"k":1})',
    ),
    (
        "range-zero-step",
        "States.ArrayRange(1, 10, 0)",
        {},
        "States.ArrayRange",
        "the step must not be zero (got 0)",
    ),
    (
        "range-step-fraction-to-zero",
        "States.ArrayRange(1, 10, 0.49)",
        {},
        "States.ArrayRange",
        "the step must not be zero (got 0.49)",
    ),
    (
        "range-1001-items",
        "States.ArrayRange(1, 1001, 1)",
        {},
        "States.ArrayRange",
        "the range has 1001 items; at most 1000 are allowed",
    ),
    (
        "range-boolean-start",
        "States.ArrayRange(true, 5, 1)",
        {},
        "States.ArrayRange",
        "the start must be a number (got true)",
    ),
    (
        "get-item-past-the-end",
        "States.ArrayGetItem($.a, 3)",
        {"a": [10, 20, 30]},
        "States.ArrayGetItem",
        "the index 3 is out of range for an array of 3 items",
    ),
    (
        "get-item-negative",
        "States.ArrayGetItem($.a, -1)",
        {"a": [10]},
        "States.ArrayGetItem",
        "the index -1 is out of range for an array of 1 items",
    ),
    (
        "get-item-string-index",
        "States.ArrayGetItem($.a, '1')",
        {"a": [10, 20]},
        "States.ArrayGetItem",
        'the index must be a number (got "1")',
    ),
    (
        "length-not-array",
        "States.ArrayLength($.s)",
        {"s": "abc"},
        "States.ArrayLength",
        'the first argument must be an array (got "abc")',
    ),
    (
        "unique-null",
        "States.ArrayUnique(null)",
        {},
        "States.ArrayUnique",
        "the first argument must be an array (got null)",
    ),
    # encoding and hashing
    (
        "base64-encode-number",
        "States.Base64Encode(123)",
        {},
        "States.Base64Encode",
        "the argument must be a string (got 123)",
    ),
    (
        "base64-encode-10001",
        "States.Base64Encode($.s)",
        {"s": "a" * 10_001},
        "States.Base64Encode",
        "the input has 10001 characters; at most 10000 are allowed",
    ),
    (
        "base64-decode-10001",
        "States.Base64Decode($.s)",
        {"s": "A" * 10_001},
        "States.Base64Decode",
        "the input has 10001 characters; at most 10000 are allowed",
    ),
    (
        "base64-decode-dangling-character",
        "States.Base64Decode('QUFBQ')",
        {},
        "States.Base64Decode",
        '"QUFBQ" is not Base64: its last group has one character',
    ),
    (
        "hash-unknown-algorithm",
        "States.Hash('a', 'sha-256')",
        {},
        "States.Hash",
        'the algorithm "sha-256" is not one of MD5, SHA-1, SHA-256, SHA-384, SHA-512',
    ),
    (
        "hash-algorithm-not-string",
        "States.Hash('a', 256)",
        {},
        "States.Hash",
        "the algorithm must be a string (got 256)",
    ),
    (
        "hash-10001",
        "States.Hash($.s, 'MD5')",
        {"s": "a" * 10_001},
        "States.Hash",
        "the input has 10001 characters; at most 10000 are allowed",
    ),
    # JSON
    (
        "merge-deep",
        "States.JsonMerge($.a, $.b, true)",
        {"a": {}, "b": {}},
        "States.JsonMerge",
        "deep merging is not supported: the third argument must be false",
    ),
    (
        "merge-not-object",
        "States.JsonMerge($.a, $.b, false)",
        {"a": {}, "b": [1]},
        "States.JsonMerge",
        "the second argument must be an object (got [1])",
    ),
    (
        "merge-mode-not-boolean",
        "States.JsonMerge($.a, $.a, 'false')",
        {"a": {}},
        "States.JsonMerge",
        'the third argument must be a boolean (got "false")',
    ),
    (
        "string-to-json-invalid",
        "States.StringToJson($.s)",
        {"s": "{oops"},
        "States.StringToJson",
        '"{oops" is not JSON text (Expecting property name enclosed in double quotes: '
        "line 1 column 2 (char 1))",
    ),
    (
        "string-to-json-nan",
        "States.StringToJson('NaN')",
        {},
        "States.StringToJson",
        '"NaN" is not JSON text (NaN is not a JSON value)',
    ),
    (
        "string-to-json-not-string",
        "States.StringToJson($.o)",
        {"o": {"a": 1}},
        "States.StringToJson",
        'the argument must be a string (got {"a":1})',
    ),
    # math
    (
        "add-not-number",
        "States.MathAdd($.a, 1)",
        {"a": "1"},
        "States.MathAdd",
        'the first argument must be a number (got "1")',
    ),
    (
        "add-beyond-int32",
        "States.MathAdd(1, 2147483648)",
        {},
        "States.MathAdd",
        "the second argument must be between -2147483648 and 2147483647 (got 2147483648)",
    ),
    (
        "add-below-int32",
        "States.MathAdd(-2147483649, 1)",
        {},
        "States.MathAdd",
        "the first argument must be between -2147483648 and 2147483647 (got -2147483649)",
    ),
    (
        "random-empty-range",
        "States.MathRandom(5, 5)",
        {},
        "States.MathRandom",
        "the start (5) must be less than the end (5)",
    ),
    (
        "random-fractions-collapse",
        "States.MathRandom(1.4, 1.6)",
        {},
        "States.MathRandom",
        "the start (1.4) must be less than the end (1.6)",
    ),
    (
        "random-null-seed",
        "States.MathRandom(1, 10, null)",
        {},
        "States.MathRandom",
        "the seed must be a number (got null)",
    ),
    # strings
    (
        "split-not-string",
        "States.StringSplit($.a, ',')",
        {"a": ["x"]},
        "States.StringSplit",
        'the first argument must be a string (got ["x"])',
    ),
]


@pytest.mark.parametrize(
    ("text", "state_input", "function", "reason"),
    [case[1:] for case in FAILURES],
    ids=[case[0] for case in FAILURES],
)
def test_run_time_failure(text: str, state_input: Any, function: str, reason: str) -> None:
    intrinsic = compile_intrinsic(text, WHERE)  # accepted at load time
    with pytest.raises(StatesError) as failure:
        intrinsic.evaluate(resolver(state_input))
    cause = invalid(text, function, reason)
    assert (failure.value.error, failure.value.cause) == (INTRINSIC_FAILURE, cause)


MISSING_PATHS = [
    # AWS's wording, captured from executions: the whole field value, then the path as written
    ("missing-format-argument", "States.Format('{}', $.nope)", "$.nope"),
    ("missing-later-argument", "States.Format('{} {}', $.other, $.a.b)", "$.a.b"),
    ("missing-template-path", "States.Format($.nope, 1)", "$.nope"),
    ("missing-inside-nested-call", "States.Format('{}', States.Format('{}', $.nope))", "$.nope"),
    ("missing-index-past-the-end", "States.Array($.items[5])", "$.items[5]"),
    ("missing-context-field", "States.Array($$.Nope.Deep)", "$$.Nope.Deep"),
    ("missing-variable", "States.Array($undeclared)", "$undeclared"),
    ("missing-variable-field", "States.Array($cfg.nope)", "$cfg.nope"),
]


@pytest.mark.parametrize(
    ("text", "path"),
    [case[1:] for case in MISSING_PATHS],
    ids=[case[0] for case in MISSING_PATHS],
)
def test_path_that_selects_nothing(text: str, path: str) -> None:
    state_input = {"other": 1, "items": [1, 2]}
    with pytest.raises(StatesError) as failure:
        run(text, state_input, variables={"cfg": {"region": "x"}})
    assert failure.value.error == INTRINSIC_FAILURE
    assert failure.value.cause == missing(text, path, '{"other":1,"items":[1,2]}')


def test_open_escape_is_a_run_time_failure() -> None:
    text = r"States.Format('a\nb {}', 1)"
    intrinsic = compile_intrinsic(text, WHERE)
    with pytest.raises(StatesError) as failure:
        intrinsic.evaluate(resolver({}))
    assert failure.value.cause == (
        f"The function '{text}' had the following error: the string 'a\\nb {{}}' has the open "
        "escape '\\n'; only \\', \\{, \\} and \\\\ are escapes (field 'value.$')"
    )


# --- load-time refusals --------------------------------------------------------------------------

REFUSED = [
    (
        "unknown-function",
        "States.Compare($.a, $.b)",
        "'States.Compare' is not an intrinsic function",
    ),
    (
        "unknown-nested-function",
        "States.Array(States.Nope())",
        "'States.Nope' is not an intrinsic function",
    ),
    ("name-case-matters", "States.format('x')", "'States.format' is not an intrinsic function"),
    (
        "space-before-parenthesis",
        "States.Array (1)",
        "it is not of the form States.Name(arguments)",
    ),
    ("not-a-call", "States.Array", "it is not of the form States.Name(arguments)"),
    (
        "unclosed-call",
        "States.Array(1, States.Array(2)",
        "expected ',' or ')' in States.Array(...), found the end of the text",
    ),
    ("empty-argument", "States.Array(1, )", "expected an argument, found ')'"),
    ("trailing-text", "States.Array(1) x", "it is not of the form States.Name(arguments)"),
    (
        "text-after-call",
        "States.Array(1)States.Array(2)",
        "unexpected 'States.Array(2)' after the call",
    ),
    (
        "unterminated-string",
        "States.Array('abc)",
        "a string argument is missing its closing apostrophe",
    ),
    ("double-quoted-string", 'States.Array("abc")', "expected an argument, found '\"'"),
    ("bad-number", "States.Array(1.)", "expected ',' or ')' in States.Array(...), found '.'"),
    (
        "path-with-space",
        "States.Array($.a b)",
        "expected ',' or ')' in States.Array(...), found 'b'",
    ),
    ("malformed-path", "States.Array($.)", "'$.': not a valid JSONPath"),
    ("malformed-variable", "States.Array($1x)", "'$1x' is not a JSONPath or a variable reference"),
    ("bare-word", "States.Array(yes)", "'yes' is not an intrinsic function"),
]


@pytest.mark.parametrize(
    ("text", "problem"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_refused_at_load_time(text: str, problem: str) -> None:
    with pytest.raises(SpecError) as refusal:
        compile_intrinsic(text, WHERE)
    assert refusal.value.path == WHERE
    prefix = (
        "The value for the field 'value.$' must be a valid JSONPath or a valid intrinsic "
        "function call: "
    )
    assert refusal.value.rule.startswith(prefix + problem)  # the known list follows some


def nested(depth: int) -> str:
    return "States.ArrayLength(" * (depth - 1) + "States.Array()" + ")" * (depth - 1)


def test_nesting_up_to_the_limit_is_accepted() -> None:
    # Ten levels of ArrayLength would fail at run time (the length of a number); what matters
    # here is that they compile.
    assert run(nested(2)) == 0
    compile_intrinsic(nested(MAX_NESTING), WHERE)


def test_nesting_beyond_the_limit_is_refused() -> None:
    with pytest.raises(SpecError) as refusal:
        compile_intrinsic(nested(MAX_NESTING + 1), WHERE)
    assert refusal.value.rule.endswith("intrinsic functions nest at most 10 deep")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("States.Format('x')", True),
        ("States.UUID()", True),
        ("States.Unknown(1)", True),  # shaped like a call; compile_intrinsic refuses the name
        ("$.a", False),
        ("States.Format", False),
        (" States.UUID()", False),
        ("MyOwn.Function()", False),
        (42, False),
    ],
    ids=[
        "call",
        "no-arguments",
        "unknown-name",
        "path",
        "no-parentheses",
        "leading-space",
        "not-states",
        "not-a-string",
    ],
)
def test_is_intrinsic(text: Any, expected: bool) -> None:
    assert is_intrinsic(text) is expected
