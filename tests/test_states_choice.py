"""Choice rules in JSONPath mode (runner/states/choice.py).

Sources: the developer guide's Choice page (state-choice, "Choice Rules (JSONPath)"; the older
amazon-states-language-choice-state page for its ChoiceStateX example with a documented input),
the guide's Amazon States Language page (concepts-awl), and the ASL specification
(states-language.net/spec.html, "JSONPath Choice Rules"). An id starting ``doc-`` marks a rule or
pattern quoted from those pages, with the input and outcome the page documents where it gives
one (ChoiceStateX, DispatchEvent, the StringMatches examples); where a page shows only the rule
(the guide's one-rule examples, concepts-awl) the inputs are ours. Every other case is ours and
tests a rule those pages state in words.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest

from runner.errors import SpecError, StatesError
from runner.paths import PathNotFound, compile_path
from runner.states.choice import (
    NO_CHOICE_MATCHED,
    compile_choice_rules,
    no_choice_matched,
    parse_timestamp,
)

WHERE = "/States/Check/Choices"
DEFAULT = "DefaultState"


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


def choose(choices: list[dict[str, Any]], state_input: Any, **resolver_args: Any) -> str:
    """The state a Choice state goes to: the first matching rule's Next, else the Default."""
    resolve = resolver(state_input, **resolver_args)
    for rule in compile_choice_rules(choices, WHERE):
        if rule.matches(resolve):
            return rule.next
    return DEFAULT


def holds(rule: dict[str, Any], state_input: Any, **resolver_args: Any) -> bool:
    """Whether one rule (given without Next) matches."""
    [compiled] = compile_choice_rules([{**rule, "Next": "Yes"}], WHERE)
    return compiled.matches(resolver(state_input, **resolver_args))


# --- documented examples -------------------------------------------------------------------------

GUIDE_CHOICE_STATE_X = [  # amazon-states-language-choice-state.md, "Choice State Example"
    {"Not": {"Variable": "$.type", "StringEquals": "Private"}, "Next": "Public"},
    {"Variable": "$.value", "NumericEquals": 0, "Next": "ValueIsZero"},
    {
        "And": [
            {"Variable": "$.value", "NumericGreaterThanEquals": 20},
            {"Variable": "$.value", "NumericLessThan": 30},
        ],
        "Next": "ValueInTwenties",
    },
]

AWL_CHOICE_STATE = [  # concepts-awl's example (the page gives no input)
    {"Variable": "$.foo", "NumericEquals": 1, "Next": "FirstMatchState"},
    {"Variable": "$.foo", "NumericEquals": 2, "Next": "SecondMatchState"},
]

SPEC_DISPATCH_EVENT = [  # ASL spec, "JSONPath Choice Rules"
    {"Not": {"Variable": "$.type", "StringEquals": "Private"}, "Next": "Public"},
    {
        "And": [
            {"Variable": "$.value", "IsPresent": True},
            {"Variable": "$.value", "IsNumeric": True},
            {"Variable": "$.value", "NumericGreaterThanEquals": 20},
            {"Variable": "$.value", "NumericLessThan": 30},
        ],
        "Assign": {"range": "twenties"},
        "Next": "ValueInTwenties",
    },
    {"Variable": "$.rating", "NumericGreaterThanPath": "$.auditThreshold", "Next": "StartAudit"},
]

CHOOSE_CASES = [
    # The guide: input {"type": "Private", "value": 22} goes to ValueInTwenties.
    pytest.param(
        GUIDE_CHOICE_STATE_X,
        {"type": "Private", "value": 22},
        "ValueInTwenties",
        id="doc-guide-choicestatex-twenties",
    ),
    pytest.param(
        GUIDE_CHOICE_STATE_X,
        {"type": "Public", "value": 22},
        "Public",
        id="guide-choicestatex-not-private",
    ),
    pytest.param(
        GUIDE_CHOICE_STATE_X,
        {"type": "Private", "value": 0},
        "ValueIsZero",
        id="guide-choicestatex-zero",
    ),
    pytest.param(
        GUIDE_CHOICE_STATE_X,
        {"type": "Private", "value": 30},
        DEFAULT,
        id="guide-choicestatex-default",
    ),
    pytest.param(AWL_CHOICE_STATE, {"foo": 1}, "FirstMatchState", id="awl-foo-1"),
    pytest.param(AWL_CHOICE_STATE, {"foo": 2}, "SecondMatchState", id="awl-foo-2"),
    pytest.param(AWL_CHOICE_STATE, {"foo": 3}, DEFAULT, id="awl-foo-3-default"),
    # The spec: input {"type": "Private", "value": 22} goes to ValueInTwenties.
    pytest.param(
        SPEC_DISPATCH_EVENT,
        {"type": "Private", "value": 22},
        "ValueInTwenties",
        id="doc-spec-dispatchevent-twenties",
    ),
    # The IsPresent guard keeps the Numeric tests from failing on a missing value.
    pytest.param(
        SPEC_DISPATCH_EVENT,
        {"type": "Private", "rating": 9, "auditThreshold": 5},
        "StartAudit",
        id="spec-dispatchevent-audit",
    ),
    pytest.param(
        SPEC_DISPATCH_EVENT,
        {"type": "Private", "value": "22", "rating": 1, "auditThreshold": 5},
        DEFAULT,
        id="spec-dispatchevent-string-value-default",
    ),
]


@pytest.mark.parametrize(("choices", "state_input", "expected"), CHOOSE_CASES)
def test_choice_state_goes_to(choices: list[dict[str, Any]], state_input: Any, expected: str):
    assert choose(choices, state_input) == expected


def test_spec_dispatch_event_exposes_the_chosen_rules_assign():
    # The spec: the interpreter assigns "twenties" to range before going to ValueInTwenties.
    rules = compile_choice_rules(SPEC_DISPATCH_EVENT, WHERE)
    resolve = resolver({"type": "Private", "value": 22})
    chosen = next(rule for rule in rules if rule.matches(resolve))
    assert (chosen.next, chosen.assign) == ("ValueInTwenties", {"range": "twenties"})
    assert [rule.assign for rule in rules] == [None, {"range": "twenties"}, None]


# --- every operator, true and false --------------------------------------------------------------

TS = "2001-01-01T12:00:00Z"
OPERATOR_CASES = [
    # The guide's rule examples (their inputs are ours).
    ("doc-guide-numeric-equals-1", {"Variable": "$.foo", "NumericEquals": 1}, {"foo": 1}, True),
    (
        "doc-guide-string-equals",
        {"Variable": "$.foo", "StringEquals": "MyString"},
        {"foo": "MyString"},
        True,
    ),
    (
        "doc-guide-string-greater-than",
        {"Variable": "$.foo", "StringGreaterThan": "MyStringABC"},
        {"foo": "MyStringABD"},
        True,
    ),
    (
        "doc-guide-is-null",
        {"Variable": "$.possiblyNullValue", "IsNull": True},
        {"possiblyNullValue": None},
        True,
    ),
    (
        "doc-guide-string-matches",
        {"Variable": "$.foo", "StringMatches": "log-*.txt"},
        {"foo": "log-2024-01.txt"},
        True,
    ),
    ("doc-guide-timestamp-equals", {"Variable": "$.foo", "TimestampEquals": TS}, {"foo": TS}, True),
    (
        "doc-guide-string-equals-path",
        {"Variable": "$.foo", "StringEqualsPath": "$.bar"},
        {"foo": "x", "bar": "x"},
        True,
    ),
    ("string-equals-false", {"Variable": "$.s", "StringEquals": "a"}, {"s": "A"}, False),
    ("string-less-than-true", {"Variable": "$.s", "StringLessThan": "b"}, {"s": "a"}, True),
    ("string-less-than-false", {"Variable": "$.s", "StringLessThan": "b"}, {"s": "b"}, False),
    ("string-greater-than-false", {"Variable": "$.s", "StringGreaterThan": "b"}, {"s": "a"}, False),
    (
        "string-less-than-equals-true",
        {"Variable": "$.s", "StringLessThanEquals": "b"},
        {"s": "b"},
        True,
    ),
    (
        "string-less-than-equals-false",
        {"Variable": "$.s", "StringLessThanEquals": "b"},
        {"s": "ba"},
        False,
    ),
    (
        "string-greater-than-equals-true",
        {"Variable": "$.s", "StringGreaterThanEquals": "b"},
        {"s": "ba"},
        True,
    ),
    (
        "string-greater-than-equals-false",
        {"Variable": "$.s", "StringGreaterThanEquals": "b"},
        {"s": "a"},
        False,
    ),
    # Java compareTo orders by UTF-16 code unit: U+10000 (a surrogate pair, 0xD800...) sorts
    # below U+FFFD, the other way round from code point order.
    (
        "string-order-is-utf16",
        {"Variable": "$.s", "StringLessThan": "\ufffd"},
        {"s": "\U00010000"},
        True,
    ),
    (
        "string-order-is-case-sensitive",
        {"Variable": "$.s", "StringLessThan": "a"},
        {"s": "Z"},
        True,
    ),
    ("numeric-equals-int-float", {"Variable": "$.n", "NumericEquals": 1}, {"n": 1.0}, True),
    ("numeric-equals-false", {"Variable": "$.n", "NumericEquals": 1}, {"n": 2}, False),
    ("numeric-less-than-true", {"Variable": "$.n", "NumericLessThan": 1}, {"n": 0.5}, True),
    ("numeric-less-than-false", {"Variable": "$.n", "NumericLessThan": 1}, {"n": 1}, False),
    ("numeric-greater-than-true", {"Variable": "$.n", "NumericGreaterThan": -1}, {"n": 0}, True),
    ("numeric-greater-than-false", {"Variable": "$.n", "NumericGreaterThan": 0}, {"n": 0}, False),
    (
        "numeric-less-than-equals-true",
        {"Variable": "$.n", "NumericLessThanEquals": 1},
        {"n": 1},
        True,
    ),
    (
        "numeric-less-than-equals-false",
        {"Variable": "$.n", "NumericLessThanEquals": 1},
        {"n": 1.01},
        False,
    ),
    (
        "numeric-greater-than-equals-true",
        {"Variable": "$.n", "NumericGreaterThanEquals": 1.5},
        {"n": 1.5},
        True,
    ),
    (
        "numeric-greater-than-equals-false",
        {"Variable": "$.n", "NumericGreaterThanEquals": 1.5},
        {"n": 1},
        False,
    ),
    ("boolean-equals-true", {"Variable": "$.b", "BooleanEquals": False}, {"b": False}, True),
    ("boolean-equals-false", {"Variable": "$.b", "BooleanEquals": True}, {"b": False}, False),
    (
        "timestamp-equals-false",
        {"Variable": "$.t", "TimestampEquals": TS},
        {"t": "2001-01-01T12:00:01Z"},
        False,
    ),
    (
        "timestamp-less-than-true",
        {"Variable": "$.t", "TimestampLessThan": TS},
        {"t": "2000-12-31T23:59:59Z"},
        True,
    ),
    ("timestamp-less-than-false", {"Variable": "$.t", "TimestampLessThan": TS}, {"t": TS}, False),
    (
        "timestamp-greater-than-true",
        {"Variable": "$.t", "TimestampGreaterThan": TS},
        {"t": "2001-01-01T12:00:00.001Z"},
        True,
    ),
    (
        "timestamp-greater-than-false",
        {"Variable": "$.t", "TimestampGreaterThan": TS},
        {"t": "2001-01-01T11:00:00Z"},
        False,
    ),
    (
        "timestamp-less-than-equals-true",
        {"Variable": "$.t", "TimestampLessThanEquals": TS},
        {"t": TS},
        True,
    ),
    (
        "timestamp-less-than-equals-false",
        {"Variable": "$.t", "TimestampLessThanEquals": TS},
        {"t": "2002-01-01T00:00:00Z"},
        False,
    ),
    (
        "timestamp-greater-than-equals-true",
        {"Variable": "$.t", "TimestampGreaterThanEquals": TS},
        {"t": TS},
        True,
    ),
    (
        "timestamp-greater-than-equals-false",
        {"Variable": "$.t", "TimestampGreaterThanEquals": TS},
        {"t": "1999-01-01T00:00:00Z"},
        False,
    ),
    # Timestamps compare as instants, not as strings.
    (
        "timestamp-offset-same-instant",
        {"Variable": "$.t", "TimestampEquals": TS},
        {"t": "2001-01-01T13:30:00+01:30"},
        True,
    ),
    (
        "timestamp-negative-offset",
        {"Variable": "$.t", "TimestampEquals": TS},
        {"t": "2001-01-01T07:00:00-05:00"},
        True,
    ),
    (
        "timestamp-fraction-zeros-equal",
        {"Variable": "$.t", "TimestampEquals": TS},
        {"t": "2001-01-01T12:00:00.000Z"},
        True,
    ),
    (
        "timestamp-fraction-nanoseconds",
        {"Variable": "$.t", "TimestampLessThan": "2001-01-01T12:00:00.0000000002Z"},
        {"t": "2001-01-01T12:00:00.0000000001Z"},
        True,
    ),
    (
        "timestamp-string-order-would-differ",
        {"Variable": "$.t", "TimestampLessThan": "2001-01-01T12:00:00+05:00"},
        {"t": "2001-01-01T10:00:00Z"},
        False,
    ),
    # Lowercase t or z is not a timestamp AWS accepts: the comparison is false, no error.
    (
        "timestamp-lowercase-t-is-no-timestamp",
        {"Variable": "$.t", "TimestampEquals": TS},
        {"t": "2001-01-01t12:00:00Z"},
        False,
    ),
    (
        "timestamp-lowercase-z-is-no-timestamp",
        {"Variable": "$.t", "TimestampEquals": TS},
        {"t": "2001-01-01T12:00:00z"},
        False,
    ),
    (
        "timestamp-no-zone-is-no-timestamp",
        {"Variable": "$.t", "TimestampEquals": TS},
        {"t": "2001-01-01T12:00:00"},
        False,
    ),
    (
        "timestamp-bad-date-is-no-timestamp",
        {"Variable": "$.t", "TimestampLessThan": TS},
        {"t": "2001-02-30T12:00:00Z"},
        False,
    ),
    # Is* tests, true and false, and their false-valued forms.
    ("is-null-false-on-value", {"Variable": "$.v", "IsNull": True}, {"v": 0}, False),
    ("is-null-false-flag", {"Variable": "$.v", "IsNull": False}, {"v": "x"}, True),
    ("is-numeric-true", {"Variable": "$.v", "IsNumeric": True}, {"v": 1.5}, True),
    ("is-numeric-false-on-string", {"Variable": "$.v", "IsNumeric": True}, {"v": "1"}, False),
    ("is-numeric-false-on-boolean", {"Variable": "$.v", "IsNumeric": True}, {"v": True}, False),
    ("is-string-true", {"Variable": "$.v", "IsString": True}, {"v": ""}, True),
    ("is-string-false-flag", {"Variable": "$.v", "IsString": False}, {"v": None}, True),
    ("is-boolean-true", {"Variable": "$.v", "IsBoolean": True}, {"v": False}, True),
    ("is-boolean-false-on-number", {"Variable": "$.v", "IsBoolean": True}, {"v": 0}, False),
    (
        "is-timestamp-true",
        {"Variable": "$.v", "IsTimestamp": True},
        {"v": "2016-08-18T17:33:00Z"},
        True,
    ),
    (
        "is-timestamp-with-fraction-and-offset",
        {"Variable": "$.v", "IsTimestamp": True},
        {"v": "2016-08-18T17:33:00.123456+02:00"},
        True,
    ),
    (
        "is-timestamp-false-on-date-only",
        {"Variable": "$.v", "IsTimestamp": True},
        {"v": "2016-08-18"},
        False,
    ),
    ("is-timestamp-false-on-number", {"Variable": "$.v", "IsTimestamp": True}, {"v": 1}, False),
    # IsPresent on missing vs null: null is present; IsNull is true only for a present null.
    ("is-present-true-on-null", {"Variable": "$.v", "IsPresent": True}, {"v": None}, True),
    ("is-present-true-on-missing", {"Variable": "$.v", "IsPresent": True}, {}, False),
    ("is-present-false-on-missing", {"Variable": "$.v", "IsPresent": False}, {}, True),
    ("is-present-false-on-null", {"Variable": "$.v", "IsPresent": False}, {"v": None}, False),
    ("is-present-deep-missing", {"Variable": "$.a.b.c", "IsPresent": True}, {"a": 1}, False),
    (
        "is-present-index-missing",
        {"Variable": "$.list[3]", "IsPresent": True},
        {"list": [1]},
        False,
    ),
    ("is-present-whole-input", {"Variable": "$", "IsPresent": True}, "text", True),
]


@pytest.mark.parametrize(
    ("rule", "state_input", "expected"),
    [
        pytest.param(rule, state_input, expected, id=case_id)
        for case_id, rule, state_input, expected in OPERATOR_CASES
    ],
)
def test_operator(rule: dict[str, Any], state_input: Any, expected: bool):
    assert holds(rule, state_input) is expected


# --- mismatched types are false, not errors ------------------------------------------------------

MISMATCH_CASES = [
    ("numeric-equals-on-string", {"Variable": "$.v", "NumericEquals": 42}, "42"),
    ("numeric-equals-on-boolean", {"Variable": "$.v", "NumericEquals": 1}, True),
    ("numeric-less-than-on-null", {"Variable": "$.v", "NumericLessThan": 1}, None),
    ("string-equals-on-number", {"Variable": "$.v", "StringEquals": "1"}, 1),
    ("string-less-than-on-array", {"Variable": "$.v", "StringLessThan": "z"}, ["a"]),
    ("string-matches-on-number", {"Variable": "$.v", "StringMatches": "*"}, 5),
    ("boolean-equals-on-number", {"Variable": "$.v", "BooleanEquals": True}, 1),
    ("boolean-equals-on-string", {"Variable": "$.v", "BooleanEquals": False}, "false"),
    ("timestamp-equals-on-number", {"Variable": "$.v", "TimestampEquals": TS}, 978350400),
    ("timestamp-equals-on-plain-string", {"Variable": "$.v", "TimestampEquals": TS}, "yesterday"),
    ("numeric-equals-path-on-string-operand", {"Variable": "$.v", "NumericEqualsPath": "$.w"}, 3),
]


@pytest.mark.parametrize(
    ("rule", "value"),
    [pytest.param(rule, value, id=case_id) for case_id, rule, value in MISMATCH_CASES],
)
def test_mismatched_types_are_false(rule: dict[str, Any], value: Any):
    assert holds(rule, {"v": value, "w": "3"}) is False


def test_timestamp_is_also_a_string_for_string_equals():
    # The guide: "a field considered to be a timestamp can be matched by a StringEquals".
    assert holds({"Variable": "$.t", "StringEquals": TS}, {"t": TS}) is True


# --- StringMatches: wildcards and escapes --------------------------------------------------------

MATCHES_CASES = [
    # The spec's three examples.
    ("doc-spec-foo-star-log", "foo*.log", "foo23.log", True),
    ("doc-spec-star-log", "*.log", "zebra.log", True),
    ("doc-spec-foo-star-dot-star", "foo*.*", "foobar.zebra", True),
    ("star-matches-empty", "foo*.log", "foo.log", True),
    ("star-alone-matches-anything", "*", "", True),
    ("anchored-at-start", "foo*", "afoo", False),
    ("anchored-at-end", "*.log", "zebra.log.gz", False),
    ("no-star-is-exact", "abc", "abcd", False),
    ("question-mark-is-literal", "a?c", "abc", False),
    ("regex-chars-are-literal", "a.c", "abc", False),
    ("brackets-are-literal", "[ab]*", "[ab]x", True),
    ("head-and-tail-must-not-overlap", "ab*ba", "aba", False),
    ("middle-pieces-in-order", "*a*b*", "xbxa", False),
    ("middle-pieces-in-order-true", "*a*b*", "xaxb", True),
    ("double-star", "a**b", "ab", True),
    # JSON "\\*" is the pattern \* : a literal star.
    ("escaped-star-is-literal", "a\\*b", "a*b", True),
    ("escaped-star-is-not-wildcard", "a\\*b", "axxb", False),
    # JSON "\\\\" is the pattern \\ : a literal backslash.
    ("escaped-backslash-is-literal", "a\\\\b", "a\\b", True),
    ("escaped-backslash-then-star", "a\\\\*", "a\\anything", True),
    ("escaped-backslash-then-star-needs-backslash", "a\\\\*", "aanything", False),
]


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [pytest.param(p, v, e, id=case_id) for case_id, p, v, e in MATCHES_CASES],
)
def test_string_matches(pattern: str, value: str, expected: bool):
    assert holds({"Variable": "$.v", "StringMatches": pattern}, {"v": value}) is expected


@pytest.mark.parametrize(
    ("pattern", "index"),
    [
        pytest.param("a\\b", 1, id="backslash-before-letter"),
        pytest.param("abc\\", 3, id="trailing-backslash"),
    ],
)
def test_string_matches_open_escape_fails_at_run_time(pattern: str, index: int):
    # The spec: "If an open escape backslash \ is found in the StringMatches string, the
    # interpreter will throw a runtime error." It compiles; evaluating it fails. The cause text
    # is ours (AWS documents none).
    [rule] = compile_choice_rules(
        [{"Variable": "$.v", "StringMatches": pattern, "Next": "X"}], WHERE
    )
    with pytest.raises(StatesError) as caught:
        rule.matches(resolver({"v": "abc"}))
    assert caught.value.error == "States.Runtime"
    assert caught.value.cause == (
        f"The StringMatches pattern {pattern!r} has an open escape backslash at index {index}; "
        "only \\* (a literal *) and \\\\ (a literal backslash) are escapes."
    )


# --- And / Or / Not, nested ----------------------------------------------------------------------


def _between(low: int, high: int) -> dict[str, Any]:
    return {
        "And": [
            {"Variable": "$.n", "NumericGreaterThanEquals": low},
            {"Variable": "$.n", "NumericLessThan": high},
        ]
    }


NESTED_CASES = [
    ("and-true", _between(1, 5), {"n": 3}, True),
    ("and-false", _between(1, 5), {"n": 5}, False),
    ("or-second-true", {"Or": [_between(0, 1), _between(10, 20)]}, {"n": 15}, True),
    ("or-none-true", {"Or": [_between(0, 1), _between(10, 20)]}, {"n": 5}, False),
    ("not-true", {"Not": _between(1, 5)}, {"n": 7}, True),
    ("not-not", {"Not": {"Not": {"Variable": "$.n", "NumericEquals": 3}}}, {"n": 3}, True),
    (
        "deep-mix",
        {
            "And": [
                {"Not": {"Variable": "$.s", "StringEquals": "skip"}},
                {
                    "Or": [
                        {"Variable": "$.n", "IsNull": True},
                        {"Not": {"Or": [_between(0, 10), _between(20, 30)]}},
                    ]
                },
            ]
        },
        {"s": "go", "n": 15},
        True,
    ),
    (
        "deep-mix-false",
        {
            "And": [
                {"Not": {"Variable": "$.s", "StringEquals": "skip"}},
                {
                    "Or": [
                        {"Variable": "$.n", "IsNull": True},
                        {"Not": {"Or": [_between(0, 10), _between(20, 30)]}},
                    ]
                },
            ]
        },
        {"s": "go", "n": 25},
        False,
    ),
    ("single-element-and", {"And": [{"Variable": "$.n", "NumericEquals": 3}]}, {"n": 3}, True),
    # And/Or stop once the answer is known, so later rules on missing paths never run.
    (
        "and-stops-at-first-false",
        {
            "And": [
                {"Variable": "$.n", "NumericEquals": 0},
                {"Variable": "$.missing", "NumericEquals": 0},
            ]
        },
        {"n": 3},
        False,
    ),
    (
        "or-stops-at-first-true",
        {
            "Or": [
                {"Variable": "$.n", "NumericEquals": 3},
                {"Variable": "$.missing", "NumericEquals": 0},
            ]
        },
        {"n": 3},
        True,
    ),
    # The guide's IsPresent guard: StringEquals is only evaluated when the key exists.
    (
        "doc-guide-is-present-guard-missing",
        {
            "And": [
                {"Variable": "$.keyThatMightNotExist", "IsPresent": True},
                {"Variable": "$.keyThatMightNotExist", "StringEquals": "foo"},
            ]
        },
        {},
        False,
    ),
    (
        "doc-guide-is-present-guard-present",
        {
            "And": [
                {"Variable": "$.keyThatMightNotExist", "IsPresent": True},
                {"Variable": "$.keyThatMightNotExist", "StringEquals": "foo"},
            ]
        },
        {"keyThatMightNotExist": "foo"},
        True,
    ),
    (
        "nested-comment-allowed",
        {"Not": {"Variable": "$.n", "NumericEquals": 1, "Comment": "c"}, "Comment": "top"},
        {"n": 2},
        True,
    ),
]


@pytest.mark.parametrize(
    ("rule", "state_input", "expected"),
    [
        pytest.param(rule, state_input, expected, id=case_id)
        for case_id, rule, state_input, expected in NESTED_CASES
    ],
)
def test_boolean_combinators(rule: dict[str, Any], state_input: Any, expected: bool):
    assert holds(rule, state_input) is expected


# --- Path variants: input, context object, variables ---------------------------------------------

CONTEXT = {
    "Execution": {"Id": "arn:exec:1", "StartTime": "2024-05-01T10:00:00Z"},
    "Map": {"Item": {"Index": 2, "Value": {"limit": 10}}},
}
VARIABLES = {
    "threshold": 5,
    "flag": True,
    "cutoff": "2024-05-01T09:00:00Z",
    "names": {"first": "Ada"},
    "list": [4, 8],
}

PATH_CASES = [
    (
        "numeric-equals-path",
        {"Variable": "$.n", "NumericEqualsPath": "$.m"},
        {"n": 2, "m": 2.0},
        True,
    ),
    (
        "numeric-less-than-path",
        {"Variable": "$.n", "NumericLessThanPath": "$.m"},
        {"n": 2, "m": 1},
        False,
    ),
    (
        "numeric-greater-than-path-variable",
        {"Variable": "$.n", "NumericGreaterThanPath": "$threshold"},
        {"n": 6},
        True,
    ),
    (
        "numeric-less-than-equals-path-variable-index",
        {"Variable": "$.n", "NumericLessThanEqualsPath": "$list[1]"},
        {"n": 8},
        True,
    ),
    (
        "numeric-greater-than-equals-path-context",
        {"Variable": "$$.Map.Item.Index", "NumericGreaterThanEqualsPath": "$.min"},
        {"min": 3},
        False,
    ),
    (
        "numeric-less-than-path-context-value",
        {"Variable": "$.n", "NumericLessThanPath": "$$.Map.Item.Value.limit"},
        {"n": 9},
        True,
    ),
    (
        "string-equals-path-context",
        {"Variable": "$.id", "StringEqualsPath": "$$.Execution.Id"},
        {"id": "arn:exec:1"},
        True,
    ),
    (
        "string-less-than-path",
        {"Variable": "$.a", "StringLessThanPath": "$.b"},
        {"a": "apple", "b": "banana"},
        True,
    ),
    (
        "string-greater-than-path-variable",
        {"Variable": "$.a", "StringGreaterThanPath": "$names.first"},
        {"a": "Ada"},
        False,
    ),
    (
        "string-less-than-equals-path-variable",
        {"Variable": "$names.first", "StringLessThanEqualsPath": "$.a"},
        {"a": "Ada"},
        True,
    ),
    (
        "string-greater-than-equals-path",
        {"Variable": "$.a", "StringGreaterThanEqualsPath": "$.b"},
        {"a": "b", "b": "a"},
        True,
    ),
    (
        "boolean-equals-path-variable",
        {"Variable": "$flag", "BooleanEqualsPath": "$.b"},
        {"b": True},
        True,
    ),
    (
        "boolean-equals-path-false",
        {"Variable": "$.a", "BooleanEqualsPath": "$.b"},
        {"a": True, "b": False},
        False,
    ),
    (
        "timestamp-equals-path",
        {"Variable": "$.t", "TimestampEqualsPath": "$$.Execution.StartTime"},
        {"t": "2024-05-01T12:00:00+02:00"},
        True,
    ),
    (
        "timestamp-less-than-path-variable",
        {"Variable": "$.t", "TimestampLessThanPath": "$cutoff"},
        {"t": "2024-05-01T08:59:59Z"},
        True,
    ),
    (
        "timestamp-greater-than-path",
        {"Variable": "$$.Execution.StartTime", "TimestampGreaterThanPath": "$cutoff"},
        {},
        True,
    ),
    (
        "timestamp-less-than-equals-path",
        {"Variable": "$.t", "TimestampLessThanEqualsPath": "$.u"},
        {"t": TS, "u": TS},
        True,
    ),
    (
        "timestamp-greater-than-equals-path",
        {"Variable": "$.t", "TimestampGreaterThanEqualsPath": "$.u"},
        {"t": TS, "u": "2001-01-01T12:00:01Z"},
        False,
    ),
    (
        "timestamp-path-operand-not-a-timestamp",
        {"Variable": "$.t", "TimestampEqualsPath": "$.u"},
        {"t": TS, "u": "noon"},
        False,
    ),
    ("variable-is-a-workflow-variable", {"Variable": "$threshold", "NumericEquals": 5}, {}, True),
    ("is-present-on-unknown-variable", {"Variable": "$nope", "IsPresent": True}, {}, False),
    ("is-present-on-context", {"Variable": "$$.Execution.Id", "IsPresent": True}, {}, True),
]


@pytest.mark.parametrize(
    ("rule", "state_input", "expected"),
    [
        pytest.param(rule, state_input, expected, id=case_id)
        for case_id, rule, state_input, expected in PATH_CASES
    ],
)
def test_path_variants(rule: dict[str, Any], state_input: Any, expected: bool):
    assert holds(rule, state_input, context=CONTEXT, variables=VARIABLES) is expected


# --- run time: paths that select nothing ---------------------------------------------------------

RUNTIME_CASES = [
    ("variable-missing", {"Variable": "$.missing", "NumericEquals": 1}, "$.missing"),
    ("is-null-on-missing", {"Variable": "$.missing", "IsNull": True}, "$.missing"),
    ("is-string-false-on-missing", {"Variable": "$.missing", "IsString": False}, "$.missing"),
    ("path-operand-missing", {"Variable": "$.n", "NumericEqualsPath": "$.right"}, "$.right"),
    ("variable-checked-before-operand", {"Variable": "$.x", "StringEqualsPath": "$.y"}, "$.x"),
    ("unknown-workflow-variable", {"Variable": "$nope", "StringEquals": "a"}, "$nope"),
    (
        "context-field-missing",
        {"Variable": "$$.Execution.Name", "StringEquals": "a"},
        "$$.Execution.Name",
    ),
    ("inside-not", {"Not": {"Variable": "$.missing", "BooleanEquals": True}}, "$.missing"),
    (
        "second-of-and",
        {
            "And": [
                {"Variable": "$.n", "NumericEquals": 1},
                {"Variable": "$.gone", "NumericEquals": 1},
            ]
        },
        "$.gone",
    ),
    (
        "string-matches-with-open-escape-reports-missing-variable-first",
        {"Variable": "$.missing", "StringMatches": "a\\b"},
        "$.missing",
    ),
]


@pytest.mark.parametrize(
    ("rule", "missing"),
    [pytest.param(rule, missing, id=case_id) for case_id, rule, missing in RUNTIME_CASES],
)
def test_a_path_that_selects_nothing_is_states_runtime(rule: dict[str, Any], missing: str):
    with pytest.raises(StatesError) as caught:
        holds(rule, {"n": 1}, context=CONTEXT, variables=VARIABLES)
    # AWS's cause, less its "An error occurred while executing the state ..." prefix, which the
    # interpreter adds because only it knows the state and event id.
    assert (caught.value.error, caught.value.cause) == (
        "States.Runtime",
        f"Invalid path '{missing}': The choice state's condition path references an invalid value.",
    )


def test_no_choice_matched():
    error = no_choice_matched("Check")
    assert (error.error, error.cause) == (
        NO_CHOICE_MATCHED,
        "An error occurred while executing the state 'Check'. Failed to transition out of the "
        "state. The state does not point to a next state.",
    )
    assert NO_CHOICE_MATCHED == "States.Runtime"  # error-handling page: NoChoiceMatched is reserved


def test_no_choice_matched_with_event_id():
    error = no_choice_matched("Check", entered_event_id=2)
    assert error.cause == (
        "An error occurred while executing the state 'Check' (entered at the event id #2). "
        "Failed to transition out of the state. The state does not point to a next state."
    )


# --- load time: what CreateStateMachine refuses --------------------------------------------------


def _top(**fields: Any) -> list[dict[str, Any]]:
    return [{"Variable": "$.n", "NumericEquals": 1, "Next": "A"}, {**fields}]


REFUSAL_CASES = [
    ("choices-empty", [], WHERE, "Choices must be a non-empty array of Choice Rules"),
    (
        "choices-not-array",
        {"Variable": "$.n"},
        WHERE,
        "Choices must be a non-empty array of Choice Rules",
    ),
    (
        "rule-not-object",
        ["StringEquals"],
        f"{WHERE}/0",
        "a Choice Rule must be an object (got a string)",
    ),
    (
        "top-level-without-next",
        _top(Variable="$.n", NumericEquals=2),
        f"{WHERE}/1/Next",
        "a top-level Choice Rule needs Next, the state to go to",
    ),
    (
        "next-not-a-string",
        _top(Variable="$.n", NumericEquals=2, Next=3),
        f"{WHERE}/1/Next",
        "must be a state name (got 3)",
    ),
    (
        "nested-rule-with-next",
        [{"Not": {"Variable": "$.n", "NumericEquals": 1, "Next": "B"}, "Next": "A"}],
        f"{WHERE}/0/Not/Next",
        "Next belongs on a top-level Choice Rule, not inside And/Or/Not",
    ),
    (
        "nested-in-and-with-next",
        [
            {
                "And": [
                    {"Variable": "$.n", "IsNull": False},
                    {"Variable": "$.n", "IsNull": True, "Next": "B"},
                ],
                "Next": "A",
            }
        ],
        f"{WHERE}/0/And/1/Next",
        "Next belongs on a top-level Choice Rule, not inside And/Or/Not",
    ),
    (
        "unknown-operator",
        _top(Variable="$.n", NumericNotEquals=2, Next="B"),
        f"{WHERE}/1/NumericNotEquals",
        "'NumericNotEquals' is not a Choice Rule field or operator",
    ),
    (
        "string-matches-has-no-path-variant",
        _top(Variable="$.s", StringMatchesPath="$.p", Next="B"),
        f"{WHERE}/1/StringMatchesPath",
        "'StringMatchesPath' is not a Choice Rule field or operator",
    ),
    (
        "jsonata-condition-in-jsonpath",
        _top(Condition="{% $n = 1 %}", Next="B"),
        f"{WHERE}/1/Condition",
        "Condition is JSONata; in JSONPath a Choice Rule uses Variable and an operator",
    ),
    (
        "no-operator",
        _top(Variable="$.n", Next="B"),
        f"{WHERE}/1",
        "a Choice Rule needs one operator (a comparison, an Is test, And, Or or Not)",
    ),
    (
        "two-operators",
        _top(Variable="$.n", NumericEquals=1, NumericLessThan=5, Next="B"),
        f"{WHERE}/1/NumericLessThan",
        "a Choice Rule takes exactly one operator, this one has NumericEquals, NumericLessThan",
    ),
    (
        "comparison-and-combinator",
        _top(Variable="$.n", NumericEquals=1, Not={}, Next="B"),
        f"{WHERE}/1/Not",
        "a Choice Rule takes exactly one operator, this one has NumericEquals, Not",
    ),
    (
        "missing-variable",
        _top(StringEquals="a", Next="B"),
        f"{WHERE}/1/Variable",
        "StringEquals needs Variable, the path to test",
    ),
    (
        "variable-not-a-path",
        _top(Variable="n", StringEquals="a", Next="B"),
        f"{WHERE}/1/Variable",
        "must be a path starting with $ (got 'n')",
    ),
    (
        "variable-on-combinator",
        _top(Variable="$.n", And=[{"Variable": "$.n", "IsNull": True}], Next="B"),
        f"{WHERE}/1/Variable",
        "And takes no Variable; its rules have their own",
    ),
    (
        "string-equals-number",
        _top(Variable="$.s", StringEquals=5, Next="B"),
        f"{WHERE}/1/StringEquals",
        "must be a string (got a number, 5)",
    ),
    (
        "numeric-equals-string",
        _top(Variable="$.n", NumericEquals="5", Next="B"),
        f"{WHERE}/1/NumericEquals",
        "must be a number (got a string, '5')",
    ),
    (
        "numeric-equals-boolean",
        _top(Variable="$.n", NumericEquals=True, Next="B"),
        f"{WHERE}/1/NumericEquals",
        "must be a number (got a boolean, True)",
    ),
    (
        "boolean-equals-string",
        _top(Variable="$.b", BooleanEquals="true", Next="B"),
        f"{WHERE}/1/BooleanEquals",
        "must be a boolean (got a string, 'true')",
    ),
    (
        "string-matches-array",
        _top(Variable="$.s", StringMatches=["*"], Next="B"),
        f"{WHERE}/1/StringMatches",
        "must be a string pattern (got an array)",
    ),
    (
        "is-null-not-boolean",
        _top(Variable="$.v", IsNull="true", Next="B"),
        f"{WHERE}/1/IsNull",
        "must be true or false (got a string, 'true')",
    ),
    (
        "is-present-not-boolean",
        _top(Variable="$.v", IsPresent=1, Next="B"),
        f"{WHERE}/1/IsPresent",
        "must be true or false (got a number, 1)",
    ),
    (
        "timestamp-invalid-literal",
        _top(Variable="$.t", TimestampEquals="2001-01-01 12:00:00Z", Next="B"),
        f"{WHERE}/1/TimestampEquals",
        "must be a timestamp string (RFC 3339 with uppercase T and Z, e.g. 2016-08-18T17:33:00Z) "
        "(got a string, '2001-01-01 12:00:00Z')",
    ),
    (
        "timestamp-lowercase-z-literal",
        _top(Variable="$.t", TimestampLessThan="2001-01-01T12:00:00z", Next="B"),
        f"{WHERE}/1/TimestampLessThan",
        "must be a timestamp string (RFC 3339 with uppercase T and Z, e.g. 2016-08-18T17:33:00Z) "
        "(got a string, '2001-01-01T12:00:00z')",
    ),
    (
        "timestamp-number-literal",
        _top(Variable="$.t", TimestampGreaterThan=0, Next="B"),
        f"{WHERE}/1/TimestampGreaterThan",
        "must be a timestamp string (RFC 3339 with uppercase T and Z, e.g. 2016-08-18T17:33:00Z) "
        "(got a number, 0)",
    ),
    (
        "and-empty",
        _top(And=[], Next="B"),
        f"{WHERE}/1/And",
        "And takes a non-empty array of Choice Rules",
    ),
    (
        "or-not-array",
        _top(Or={"Variable": "$.n", "IsNull": True}, Next="B"),
        f"{WHERE}/1/Or",
        "Or takes a non-empty array of Choice Rules",
    ),
    (
        "not-array",
        _top(Not=[{"Variable": "$.n", "IsNull": True}], Next="B"),
        f"{WHERE}/1/Not",
        "Not takes one Choice Rule object (got an array)",
    ),
    (
        "and-element-not-object",
        _top(And=["x"], Next="B"),
        f"{WHERE}/1/And/0",
        "a Choice Rule must be an object (got a string)",
    ),
    (
        "deep-nested-refusal",
        _top(Or=[{"Not": {"And": [{"Variable": "$.n", "Foo": 1}]}}], Next="B"),
        f"{WHERE}/1/Or/0/Not/And/0/Foo",
        "'Foo' is not a Choice Rule field or operator",
    ),
    (
        "path-operand-not-a-path",
        _top(Variable="$.n", NumericEqualsPath="m", Next="B"),
        f"{WHERE}/1/NumericEqualsPath",
        "must be a path starting with $ (got 'm')",
    ),
    (
        "path-operand-not-a-string",
        _top(Variable="$.n", NumericEqualsPath=3, Next="B"),
        f"{WHERE}/1/NumericEqualsPath",
        "must be a path starting with $ (got 3)",
    ),
    (
        "path-operand-bad-variable-path",
        _top(Variable="$.n", StringEqualsPath="$name-x", Next="B"),
        f"{WHERE}/1/StringEqualsPath",
        "not a valid variable path (got '$name-x')",
    ),
    (
        "assign-not-object",
        _top(Variable="$.n", IsNull=True, Assign="x", Next="B"),
        f"{WHERE}/1/Assign",
        "must be an object (got a string)",
    ),
    (
        "assign-in-nested-rule",
        _top(Not={"Variable": "$.n", "IsNull": True, "Assign": {"a": 1}}, Next="B"),
        f"{WHERE}/1/Not/Assign",
        "Assign belongs on a top-level Choice Rule, not inside And/Or/Not",
    ),
    (
        "comment-not-string",
        _top(Variable="$.n", IsNull=True, Comment=7, Next="B"),
        f"{WHERE}/1/Comment",
        "must be a string (got a number)",
    ),
]


@pytest.mark.parametrize(
    ("choices", "path", "rule"),
    [
        pytest.param(choices, path, rule, id=case_id)
        for case_id, choices, path, rule in REFUSAL_CASES
    ],
)
def test_load_time_refusals(choices: Any, path: str, rule: str):
    with pytest.raises(SpecError) as caught:
        compile_choice_rules(choices, WHERE)
    assert (caught.value.path, caught.value.rule) == (path, rule)


def test_malformed_jsonpath_is_refused_with_the_field_named():
    # The exact rule text comes from runner.paths (jsonpath-ng's parser message), so only the
    # path and the start of the rule are pinned here.
    with pytest.raises(SpecError) as caught:
        compile_choice_rules(_top(Variable="$.a[", StringEquals="x", Next="B"), WHERE)
    assert caught.value.path == f"{WHERE}/1/Variable"
    assert caught.value.rule.startswith("not a valid JSONPath")


ACCEPTED_CASES = [
    (
        "assign-and-comment",
        [
            {
                "Variable": "$.n",
                "IsNull": True,
                "Next": "A",
                "Assign": {"x.$": "$.n"},
                "Comment": "why",
            }
        ],
    ),
    (
        "variable-paths",
        [
            {"Variable": "$", "IsString": True, "Next": "A"},
            {"Variable": "$$.Execution.Id", "IsString": True, "Next": "A"},
            {"Variable": "$var", "IsPresent": True, "Next": "A"},
            {"Variable": "$var.a[0].b", "IsPresent": True, "Next": "A"},
            {"Variable": "$['key with space']", "IsPresent": True, "Next": "A"},
        ],
    ),
    (
        "every-operator-compiles",
        [
            {"Variable": "$.v", name: value, "Next": "A"}
            for name, value in [
                *(
                    (f"String{op}", "a")
                    for op in (
                        "Equals",
                        "LessThan",
                        "GreaterThan",
                        "LessThanEquals",
                        "GreaterThanEquals",
                    )
                ),
                *(
                    (f"Numeric{op}", 1)
                    for op in (
                        "Equals",
                        "LessThan",
                        "GreaterThan",
                        "LessThanEquals",
                        "GreaterThanEquals",
                    )
                ),
                *(
                    (f"Timestamp{op}", TS)
                    for op in (
                        "Equals",
                        "LessThan",
                        "GreaterThan",
                        "LessThanEquals",
                        "GreaterThanEquals",
                    )
                ),
                *(
                    (f"{family}{op}Path", "$.w")
                    for family in ("String", "Numeric", "Timestamp")
                    for op in (
                        "Equals",
                        "LessThan",
                        "GreaterThan",
                        "LessThanEquals",
                        "GreaterThanEquals",
                    )
                ),
                ("BooleanEquals", True),
                ("BooleanEqualsPath", "$.w"),
                ("StringMatches", "*"),
                ("IsNull", True),
                ("IsPresent", True),
                ("IsNumeric", True),
                ("IsString", True),
                ("IsBoolean", True),
                ("IsTimestamp", True),
            ]
        ],
    ),
]


@pytest.mark.parametrize(
    "choices", [pytest.param(choices, id=case_id) for case_id, choices in ACCEPTED_CASES]
)
def test_accepted_definitions(choices: list[dict[str, Any]]):
    rules = compile_choice_rules(choices, WHERE)
    assert [rule.next for rule in rules] == [choice["Next"] for choice in choices]


# The guide's list of supported comparison operators, as it spells them.
GUIDE_OPERATORS = """And BooleanEquals BooleanEqualsPath IsBoolean IsNull IsNumeric IsPresent
IsString IsTimestamp Not NumericEquals NumericEqualsPath NumericGreaterThan NumericGreaterThanPath
NumericGreaterThanEquals NumericGreaterThanEqualsPath NumericLessThan NumericLessThanPath
NumericLessThanEquals NumericLessThanEqualsPath Or StringEquals StringEqualsPath StringGreaterThan
StringGreaterThanPath StringGreaterThanEquals StringGreaterThanEqualsPath StringLessThan
StringLessThanPath StringLessThanEquals StringLessThanEqualsPath StringMatches TimestampEquals
TimestampEqualsPath TimestampGreaterThan TimestampGreaterThanPath TimestampGreaterThanEquals
TimestampGreaterThanEqualsPath TimestampLessThan TimestampLessThanPath TimestampLessThanEquals
TimestampLessThanEqualsPath""".split()


def test_every_documented_operator_is_covered():
    [every] = [
        choices for case_id, choices in ACCEPTED_CASES if case_id == "every-operator-compiles"
    ]
    compiled = {name for rule in every for name in rule if name not in ("Variable", "Next")}
    assert compiled | {"And", "Or", "Not"} == set(GUIDE_OPERATORS)


# --- timestamps as AWS accepts them --------------------------------------------------------------

TIMESTAMP_FORMS = [
    ("doc-guide-example", "2016-08-18T17:33:00Z", True),
    ("fraction", "2016-08-18T17:33:00.5Z", True),
    ("offset", "2016-08-18T17:33:00+05:30", True),
    ("negative-zero-offset", "2016-08-18T17:33:00-00:00", True),
    ("leap-day", "2024-02-29T00:00:00Z", True),
    ("not-a-leap-day", "2023-02-29T00:00:00Z", False),
    ("lowercase-t", "2016-08-18t17:33:00Z", False),
    ("lowercase-z", "2016-08-18T17:33:00z", False),
    ("no-seconds", "2016-08-18T17:33Z", False),
    ("no-zone", "2016-08-18T17:33:00", False),
    ("space-separator", "2016-08-18 17:33:00Z", False),
    ("hour-24", "2016-08-18T24:00:00Z", False),
    ("offset-without-colon", "2016-08-18T17:33:00+0530", False),
    ("empty-fraction", "2016-08-18T17:33:00.Z", False),
    ("non-ascii-digits", "\uff12\uff1016-08-18T17:33:00Z", False),
]


@pytest.mark.parametrize(
    ("text", "valid"),
    [pytest.param(text, valid, id=case_id) for case_id, text, valid in TIMESTAMP_FORMS],
)
def test_timestamp_forms(text: str, valid: bool):
    assert (parse_timestamp(text) is not None) is valid


def test_timestamps_compare_as_instants():
    assert parse_timestamp("2016-08-18T17:33:00.100Z") == parse_timestamp(
        "2016-08-18T19:33:00.1+02:00"
    )
    assert parse_timestamp("1970-01-01T00:00:00Z") == (0, "")
