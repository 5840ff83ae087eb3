"""Choice rules in the JSONPath query language, compiled once and evaluated per input.

A Choice state's ``Choices`` is a list of rules, each with ``Next``. A rule is either a
comparison (``Variable`` plus one operator such as ``NumericEquals`` or ``StringMatches``), a type
test (``IsNull``, ``IsPresent``, ...), or a combinator (``And``/``Or`` over a non-empty list of
rules, ``Not`` over one rule), nested to any depth; only top-level rules carry ``Next`` (and
``Assign``). :func:`compile_choice_rules` checks a ``Choices`` list the way CreateStateMachine
does and turns each rule into a tree of closures, so evaluating one costs only path look-ups and
a few comparisons.

Semantics, from the Step Functions developer guide (Choice state) and the ASL specification:

* A comparison whose operand types do not match is false, never an error: ``NumericEquals`` on a
  string, ``StringEquals`` on a number, ``TimestampEquals`` on a string that is not a timestamp.
* String order is Java's ``String.compareTo`` (UTF-16 code units), which the guide cites.
* Timestamps are RFC 3339 with an uppercase ``T`` and an uppercase ``Z`` (or a numeric offset),
  optional fractional seconds; they are compared as instants, so ``...T13:00:00+01:00`` equals
  ``...T12:00:00Z``.
* ``StringMatches``: ``*`` matches any run of characters, ``\\*`` is a literal ``*`` and ``\\\\`` a
  literal backslash; nothing else is special, and any other backslash (an "open escape") is a
  run-time ``States.Runtime``, as the spec says, not a load-time refusal.
* ``And``/``Or`` stop as soon as the answer is known (the spec: "ceasing array processing when the
  boolean value has been unambiguously determined"), which is what makes an ``IsPresent`` guard in
  front of a comparison work.
* A ``Variable`` or ``...Path`` operand that selects nothing fails the state with
  ``States.Runtime``, except under ``IsPresent``, which tests exactly that.
"""

from __future__ import annotations

import datetime
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from runner.errors import SpecError, StatesError
from runner.paths import PathNotFound, compile_path

__all__ = [
    "NO_CHOICE_MATCHED",
    "ChoiceRule",
    "compile_choice_rules",
    "no_choice_matched",
    "parse_timestamp",
]

Resolve = Callable[[str], Any]
Predicate = Callable[[Resolve], bool]

#: The error a Choice state raises when no rule matches and it has no Default. The ASL spec names
#: it States.NoChoiceMatched, but the developer guide's error-handling page says that name is
#: reserved for future use and reported as States.Runtime, which emulators tested against AWS
#: confirm.
NO_CHOICE_MATCHED: Final = "States.Runtime"

# AWS's wording for a Choice state with nothing to transition to, as executions report it (the
# guide says only "a failure to transition out of the state"; this exact text is AWS's observed
# cause, not quoted by the guide).
_NO_NEXT_STATE: Final = (
    "Failed to transition out of the state. The state does not point to a next state."
)


class ChoiceRule:
    """One top-level Choice Rule: when :meth:`matches` is true the state goes to :attr:`next`.

    :attr:`assign` is the rule's raw ``Assign`` (or ``None``); the interpreter evaluates it when
    this rule is the one taken.
    """

    __slots__ = ("_predicate", "assign", "next")

    def __init__(self, next_state: str, predicate: Predicate, assign: Any = None) -> None:
        self.next = next_state
        self.assign = assign
        self._predicate = predicate

    def matches(self, resolve: Resolve) -> bool:
        """Whether the rule holds for the data ``resolve`` reads.

        Raises :class:`StatesError` ``States.Runtime`` when a path it needs selects nothing.
        """
        return self._predicate(resolve)

    def __repr__(self) -> str:
        return f"ChoiceRule(next={self.next!r})"


def compile_choice_rules(choices: Sequence[Mapping[str, Any]], where: str) -> list[ChoiceRule]:
    """Check a JSONPath-mode ``Choices`` list and compile it, in order.

    ``where`` is the list's location (``/States/Check/Choices``); a :class:`SpecError` names the
    offending field below it (``/States/Check/Choices/0/NumericEquals``). Only what
    CreateStateMachine refuses is refused here.

    >>> rules = compile_choice_rules([{"Variable": "$.n", "NumericEquals": 1, "Next": "One"}], "")
    >>> rules[0].next, rules[0].matches(lambda path: 1)
    ('One', True)
    """
    if isinstance(choices, str | bytes) or not isinstance(choices, Sequence) or not choices:
        raise SpecError(where, "Choices must be a non-empty array of Choice Rules")
    return [_compile_top_rule(rule, f"{where}/{index}") for index, rule in enumerate(choices)]


def no_choice_matched(state_name: str, entered_event_id: int | None = None) -> StatesError:
    """The error for a Choice state where no rule matched and there is no Default.

    AWS prefixes its causes with ``An error occurred while executing the state '<name>' (entered
    at the event id #<n>).``; the event id part appears only when the caller knows it.
    """
    entered = "" if entered_event_id is None else f" (entered at the event id #{entered_event_id})"
    return StatesError(
        NO_CHOICE_MATCHED,
        f"An error occurred while executing the state '{state_name}'{entered}. {_NO_NEXT_STATE}",
    )


# --- rule structure ------------------------------------------------------------------------------

_COMBINATORS: Final = frozenset({"And", "Or", "Not"})


def _compile_top_rule(rule: Any, path: str) -> ChoiceRule:
    if not isinstance(rule, Mapping):
        raise SpecError(path, f"a Choice Rule must be an object (got {_json_type(rule)})")
    if "Next" not in rule:
        raise SpecError(f"{path}/Next", "a top-level Choice Rule needs Next, the state to go to")
    next_state = rule["Next"]
    if not isinstance(next_state, str) or not next_state:
        raise SpecError(f"{path}/Next", f"must be a state name (got {next_state!r})")
    assign = rule.get("Assign")
    if assign is not None and not isinstance(assign, Mapping):
        raise SpecError(f"{path}/Assign", f"must be an object (got {_json_type(assign)})")
    body = {key: value for key, value in rule.items() if key not in ("Next", "Assign")}
    return ChoiceRule(next_state, _compile_condition(body, path), assign)


def _compile_nested_rule(rule: Any, path: str) -> Predicate:
    if not isinstance(rule, Mapping):
        raise SpecError(path, f"a Choice Rule must be an object (got {_json_type(rule)})")
    for field in ("Next", "Assign"):
        if field in rule:
            raise SpecError(
                f"{path}/{field}",
                f"{field} belongs on a top-level Choice Rule, not inside And/Or/Not",
            )
    return _compile_condition(rule, path)


def _compile_condition(rule: Mapping[str, Any], path: str) -> Predicate:
    """The predicate of one rule's body (its fields other than Next and Assign)."""
    comment = rule.get("Comment")
    if comment is not None and not isinstance(comment, str):
        raise SpecError(f"{path}/Comment", f"must be a string (got {_json_type(comment)})")
    fields = [key for key in rule if key != "Comment"]
    operators = [key for key in fields if key in _COMBINATORS or key in _DATA_TESTS]
    for key in fields:
        if key not in operators and key != "Variable":
            raise SpecError(f"{path}/{key}", _unknown_field_rule(key))
    if not operators:
        raise SpecError(
            path, "a Choice Rule needs one operator (a comparison, an Is test, And, Or or Not)"
        )
    if len(operators) > 1:
        raise SpecError(
            f"{path}/{operators[1]}",
            f"a Choice Rule takes exactly one operator, this one has {', '.join(operators)}",
        )
    name = operators[0]
    if name in _COMBINATORS:
        if "Variable" in rule:
            raise SpecError(
                f"{path}/Variable", f"{name} takes no Variable; its rules have their own"
            )
        return _compile_combinator(name, rule[name], f"{path}/{name}")
    if "Variable" not in rule:
        raise SpecError(f"{path}/Variable", f"{name} needs Variable, the path to test")
    variable = rule["Variable"]
    _check_path(variable, f"{path}/Variable")
    return _DATA_TESTS[name](variable, rule[name], f"{path}/{name}")


def _unknown_field_rule(key: str) -> str:
    if key == "Condition":
        return "Condition is JSONata; in JSONPath a Choice Rule uses Variable and an operator"
    return f"{key!r} is not a Choice Rule field or operator"


def _compile_combinator(name: str, value: Any, path: str) -> Predicate:
    if name == "Not":
        if not isinstance(value, Mapping):
            raise SpecError(path, f"Not takes one Choice Rule object (got {_json_type(value)})")
        inner = _compile_nested_rule(value, path)
        return lambda resolve: not inner(resolve)
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
        raise SpecError(path, f"{name} takes a non-empty array of Choice Rules")
    rules = tuple(_compile_nested_rule(rule, f"{path}/{i}") for i, rule in enumerate(value))
    return _all_of(rules) if name == "And" else _any_of(rules)


def _all_of(rules: tuple[Predicate, ...]) -> Predicate:
    def all_hold(resolve: Resolve) -> bool:
        return all(rule(resolve) for rule in rules)  # stops at the first false, as the spec says

    return all_hold


def _any_of(rules: tuple[Predicate, ...]) -> Predicate:
    def any_holds(resolve: Resolve) -> bool:
        return any(rule(resolve) for rule in rules)  # stops at the first true, as the spec says

    return any_holds


# --- paths ---------------------------------------------------------------------------------------

# A workflow variable reference: $name, optionally followed by .field or [index] steps.
_VARIABLE_PATH: Final = re.compile(r"\$([^\W\d]\w*)(.*)", re.DOTALL)


def _check_path(path: Any, field: str) -> None:
    """Refuse, at load time, a Variable or ``...Path`` value that is not a path."""
    if not isinstance(path, str) or not path.startswith("$"):
        raise SpecError(field, f"must be a path starting with $ (got {path!r})")
    variable = _VARIABLE_PATH.fullmatch(path)
    if variable is None:
        compile_path(path, field)  # $, $.x, $[0], $$.Execution.Id: raises SpecError if malformed
        return
    steps = variable.group(2)
    if steps and steps[0] not in ".[":
        raise SpecError(field, f"not a valid variable path (got {path!r})")
    if steps:
        compile_path("$" + steps, field)


def _select(resolve: Resolve, path: str) -> Any:
    try:
        return resolve(path)
    except PathNotFound:
        raise StatesError("States.Runtime", _invalid_path_cause(path)) from None


def _invalid_path_cause(path: str) -> str:
    # AWS's wording for a condition path that selects nothing, without the "An error occurred
    # while executing the state ..." prefix that only the interpreter can write.
    return f"Invalid path '{path}': The choice state's condition path references an invalid value."


def _is_present(resolve: Resolve, path: str) -> bool:
    try:
        resolve(path)
    except PathNotFound:
        return False
    return True


# --- operand types -------------------------------------------------------------------------------

_MISMATCH: Final = object()  # a value of the wrong type for a comparison: the comparison is false


@dataclass(frozen=True, slots=True)
class _Family:
    """One operand type: what the literal must be, and how a value becomes comparable."""

    expects: str  # for messages: "a string"
    key: Callable[[Any], Any]  # value -> comparable key, or _MISMATCH


def _string_key(value: Any) -> Any:
    return value if isinstance(value, str) else _MISMATCH


def _number_key(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return _MISMATCH


def _boolean_key(value: Any) -> Any:
    return value if isinstance(value, bool) else _MISMATCH


def _timestamp_key(value: Any) -> Any:
    key = parse_timestamp(value) if isinstance(value, str) else None
    return _MISMATCH if key is None else key


_STRING = _Family("a string", _string_key)
_NUMBER = _Family("a number", _number_key)
_BOOLEAN = _Family("a boolean", _boolean_key)
_TIMESTAMP = _Family(
    "a timestamp string (RFC 3339 with uppercase T and Z, e.g. 2016-08-18T17:33:00Z)",
    _timestamp_key,
)

Relation = Callable[[Any, Any], bool]
_RELATIONS: Final[dict[str, Relation]] = {
    "Equals": operator.eq,
    "LessThan": operator.lt,
    "GreaterThan": operator.gt,
    "LessThanEquals": operator.le,
    "GreaterThanEquals": operator.ge,
}


def _java_string_order(relation: Relation) -> Relation:
    """``relation`` on strings as Java's ``compareTo`` orders them: by UTF-16 code unit.

    Python orders by code point, which differs only when a character above U+FFFF meets one in
    U+E000..U+FFFF; big-endian UTF-16 bytes compare exactly like UTF-16 code units.
    """

    def compare(left: str, right: str) -> bool:
        if left.isascii() and right.isascii():
            return relation(left, right)
        return relation(
            left.encode("utf-16-be", "surrogatepass"), right.encode("utf-16-be", "surrogatepass")
        )

    return compare


# --- timestamps ----------------------------------------------------------------------------------

_TIMESTAMP_FORM: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:Z|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
_EPOCH_ORDINAL: Final = datetime.date(1970, 1, 1).toordinal()


def parse_timestamp(text: str) -> tuple[int, str] | None:
    """The instant ``text`` names, as (whole seconds since the epoch, fraction digits), or None.

    The fraction keeps every digit (trailing zeros dropped), so instants compare exactly at any
    precision: digit strings without trailing zeros order like the fractions they spell.

    >>> parse_timestamp("2001-01-01T13:00:00+01:00") == parse_timestamp("2001-01-01T12:00:00Z")
    True
    >>> parse_timestamp("2001-01-01t12:00:00z") is None
    True
    """
    match = _TIMESTAMP_FORM.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    try:
        ordinal = datetime.date(year, month, day).toordinal()
    except ValueError:  # 2001-02-30, month 13, year 0
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    offset = 0
    if match.group(8):
        offset_hours, offset_minutes = int(match.group(9)), int(match.group(10))
        if offset_hours > 23 or offset_minutes > 59:
            return None
        offset = (offset_hours * 3600 + offset_minutes * 60) * (1 if match.group(8) == "+" else -1)
    seconds = (ordinal - _EPOCH_ORDINAL) * 86400 + hour * 3600 + minute * 60 + second - offset
    return seconds, (match.group(7) or "").rstrip("0")


# --- data tests ----------------------------------------------------------------------------------

DataTestCompiler = Callable[[str, Any, str], Predicate]  # (Variable, operator value, field path)


def _comparison(family: _Family, relation: Relation) -> DataTestCompiler:
    """A comparison against a literal: the literal's type is checked once, here."""

    def compile_rule(variable: str, literal: Any, field: str) -> Predicate:
        operand = family.key(literal)
        if operand is _MISMATCH:
            raise SpecError(field, f"must be {family.expects} (got {_literal(literal)})")
        key = family.key

        def compare(resolve: Resolve) -> bool:
            value = key(_select(resolve, variable))
            return value is not _MISMATCH and relation(value, operand)

        return compare

    return compile_rule


def _path_comparison(family: _Family, relation: Relation) -> DataTestCompiler:
    """A ``...Path`` comparison: both operands come from paths; a wrong type on either is false."""

    def compile_rule(variable: str, operand_path: Any, field: str) -> Predicate:
        _check_path(operand_path, field)
        key = family.key

        def compare(resolve: Resolve) -> bool:
            value = key(_select(resolve, variable))
            operand = key(_select(resolve, operand_path))
            return value is not _MISMATCH and operand is not _MISMATCH and relation(value, operand)

        return compare

    return compile_rule


def _string_matches(variable: str, pattern: Any, field: str) -> Predicate:
    if not isinstance(pattern, str):
        raise SpecError(field, f"must be a string pattern (got {_literal(pattern)})")
    open_escape = _open_escape(pattern)
    if open_escape is not None:
        # The spec: "If an open escape backslash \ is found in the StringMatches string, the
        # interpreter will throw a runtime error." So this is not a load-time refusal.
        return _fails_at_run_time(variable, _open_escape_cause(pattern, open_escape))
    matches = _wildcard_matcher(_split_pattern(pattern))

    def compare(resolve: Resolve) -> bool:
        value = _select(resolve, variable)
        return isinstance(value, str) and matches(value)

    return compare


def _open_escape(pattern: str) -> int | None:
    """The index of the first backslash that escapes neither ``*`` nor a backslash, or None."""
    index = pattern.find("\\")
    while index >= 0:
        if index + 1 == len(pattern) or pattern[index + 1] not in "*\\":
            return index
        index = pattern.find("\\", index + 2)
    return None


def _open_escape_cause(pattern: str, index: int) -> str:
    # Not documented by AWS: the spec says only that this is a runtime error.
    return (
        f"The StringMatches pattern {pattern!r} has an open escape backslash at index {index}; "
        "only \\* (a literal *) and \\\\ (a literal backslash) are escapes."
    )


def _fails_at_run_time(variable: str, cause: str) -> Predicate:
    def fail(resolve: Resolve) -> bool:
        _select(resolve, variable)  # a missing Variable is still reported as such first
        raise StatesError("States.Runtime", cause)

    return fail


def _split_pattern(pattern: str) -> list[str]:
    """The literal pieces between the unescaped ``*`` of a StringMatches pattern.

    ``\\*`` is a literal star and ``\\\\`` a literal backslash; the caller has already refused
    any other backslash.
    """
    pieces: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            current.append(pattern[index + 1])
            index += 2
            continue
        if char == "*":
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    pieces.append("".join(current))
    return pieces


def _wildcard_matcher(pieces: list[str]) -> Callable[[str], bool]:
    """A matcher for ``pieces[0] * pieces[1] * ... * pieces[-1]``.

    Anchored head and tail, then each middle piece at its leftmost place: for ``*``-only patterns
    greedy leftmost search is exact, and ``str.find`` keeps it linear-ish with no regex
    backtracking to blow up on hostile patterns.
    """
    if len(pieces) == 1:
        literal = pieces[0]
        return lambda value: value == literal
    head, *middle, tail = pieces
    fixed = len(head) + len(tail)

    def matches(value: str) -> bool:
        if len(value) < fixed or not value.startswith(head) or not value.endswith(tail):
            return False
        position, end = len(head), len(value) - len(tail)
        for piece in middle:
            found = value.find(piece, position, end)
            if found < 0:
                return False
            position = found + len(piece)
        return True

    return matches


def _type_test(holds: Callable[[Any], bool]) -> DataTestCompiler:
    """IsNull, IsNumeric, IsString, IsBoolean, IsTimestamp: ``true`` tests the type, ``false`` its
    absence. The Variable must still select something."""

    def compile_rule(variable: str, expected: Any, field: str) -> Predicate:
        if not isinstance(expected, bool):
            raise SpecError(field, f"must be true or false (got {_literal(expected)})")
        return lambda resolve: holds(_select(resolve, variable)) is expected

    return compile_rule


def _is_present_test(variable: str, expected: Any, field: str) -> Predicate:
    if not isinstance(expected, bool):
        raise SpecError(field, f"must be true or false (got {_literal(expected)})")
    return lambda resolve: _is_present(resolve, variable) is expected


def _build_data_tests() -> dict[str, DataTestCompiler]:
    tests: dict[str, DataTestCompiler] = {}
    families = {"String": _STRING, "Numeric": _NUMBER, "Timestamp": _TIMESTAMP}
    for prefix, family in families.items():
        for suffix, relation in _RELATIONS.items():
            if family is _STRING and suffix != "Equals":
                relation = _java_string_order(relation)
            tests[prefix + suffix] = _comparison(family, relation)
            tests[prefix + suffix + "Path"] = _path_comparison(family, relation)
    tests["BooleanEquals"] = _comparison(_BOOLEAN, operator.eq)
    tests["BooleanEqualsPath"] = _path_comparison(_BOOLEAN, operator.eq)
    tests["StringMatches"] = _string_matches  # the spec defines no StringMatchesPath
    tests["IsNull"] = _type_test(lambda value: value is None)
    tests["IsNumeric"] = _type_test(lambda value: _number_key(value) is not _MISMATCH)
    tests["IsString"] = _type_test(lambda value: isinstance(value, str))
    tests["IsBoolean"] = _type_test(lambda value: isinstance(value, bool))
    tests["IsTimestamp"] = _type_test(lambda value: _timestamp_key(value) is not _MISMATCH)
    tests["IsPresent"] = _is_present_test
    return tests


_DATA_TESTS: Final = _build_data_tests()


# --- messages ------------------------------------------------------------------------------------


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, Sequence):
        return "an array"
    return type(value).__name__


def _literal(value: Any) -> str:
    """A literal for a message: short scalars verbatim with their type, containers by type."""
    if isinstance(value, str | int | float | bool) or value is None:
        return f"{_json_type(value)}, {value!r}"
    return _json_type(value)
