"""EventBridge event patterns: validate them, and match events against them.

The pattern a trigger holds is the one ``shardmap deploy --trigger`` puts on the EventBridge
rule, so the local service and AWS decide alike. The rules implemented (AWS EventBridge user
guide, "Event patterns" and "Content filtering"):

- A pattern is a JSON object. Its keys are AND-ed; a key's value is either a nested object (the
  event's field is an object) or a non-empty array of matchers, which are OR-ed.
- A matcher is a literal (string, number, ``true``/``false``, ``null``; exact, numbers compared
  as numbers), or an object with one operator: ``prefix``, ``suffix`` (each a string or
  ``{"equals-ignore-case": s}``), ``equals-ignore-case``, ``wildcard`` (``*`` matches any run of
  characters, ``\\*`` a literal star, ``\\\\`` a backslash; ``**`` is refused as AWS does),
  ``anything-but`` (a literal, a list of literals, or ``prefix``/``suffix``/
  ``equals-ignore-case``/``wildcard``), ``numeric`` (``[op, n]`` or ``[">"|">=", lo, "<"|"<=",
  hi]``), ``cidr`` and ``exists``.
- Matchers apply to leaves only: an event field holding an object matches nothing but
  ``{"exists": false}``. When the event's value is an array, the matcher matches if any element
  does (for ``anything-but`` too: an element outside the set suffices).
- Every operator but ``exists: false`` needs the field to be present.
- ``"$or": [pattern, ...]`` at any object level matches if one of its patterns does.

No event value ever becomes code: a wildcard is compiled from the *pattern* (trusted config)
into a regular expression with every other character escaped.

>>> pattern = {"detail": {"object": {"key": [{"prefix": "in/"}], "size": [{"numeric": [">", 0]}]}}}
>>> matches(pattern, {"detail": {"object": {"key": "in/a.csv", "size": 10}}})
True
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from runner.errors import PatternError

__all__ = ["PatternError", "matches", "validate"]

_MISSING = object()
_NUMERIC_OPS = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_STRING_OPS = ("prefix", "suffix", "equals-ignore-case", "wildcard")
MAX_PATTERN_CHARS = 4096  # AWS's limit on a rule's EventPattern


# -- validation ----------------------------------------------------------------------------------


def validate(pattern: Any, path: str = "pattern") -> None:
    """Raise :class:`PatternError` unless ``pattern`` is a pattern EventBridge would accept.

    >>> validate({"key": [{"wildcard": "in/**"}]})
    Traceback (most recent call last):
    ...
    runner.errors.PatternError: pattern.key[0].wildcard: consecutive wildcard ...
    """
    if len(json.dumps(pattern)) > MAX_PATTERN_CHARS:
        raise PatternError(path, f"longer than {MAX_PATTERN_CHARS} characters")
    _validate_object(pattern, path)


def _validate_object(pattern: Any, path: str) -> None:
    if not isinstance(pattern, Mapping) or not pattern:
        raise PatternError(path, "must be a non-empty object")
    for key, value in pattern.items():
        here = f"{path}.{key}"
        if key == "$or":
            if not isinstance(value, list) or len(value) < 2:
                raise PatternError(here, "$or takes an array of at least two patterns")
            for number, inner in enumerate(value):
                _validate_object(inner, f"{here}[{number}]")
        elif isinstance(value, Mapping):
            _validate_object(value, here)
        elif isinstance(value, list):
            if not value:
                raise PatternError(here, "empty arrays are not allowed")
            for number, matcher in enumerate(value):
                _validate_matcher(matcher, f"{here}[{number}]")
        else:
            raise PatternError(here, "must be an object or an array of matchers")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_literal(value: Any) -> bool:
    return value is None or isinstance(value, str | bool) or _is_number(value)


def _validate_matcher(matcher: Any, path: str) -> None:
    if _is_literal(matcher):
        return
    if not isinstance(matcher, Mapping) or len(matcher) != 1:
        raise PatternError(path, "a matcher is a literal or an object with exactly one operator")
    ((op, arg),) = matcher.items()
    here = f"{path}.{op}"
    if op in ("prefix", "suffix"):
        _validate_string_arg(arg, here, ignore_case_form=True)
    elif op == "equals-ignore-case":
        _validate_string_arg(arg, here)
    elif op == "wildcard":
        _validate_string_arg(arg, here)
        _wildcard_regex(arg, here)
    elif op == "anything-but":
        _validate_anything_but(arg, here)
    elif op == "numeric":
        _numeric_checks(arg, here)
    elif op == "cidr":
        if not isinstance(arg, str):
            raise PatternError(here, "takes a CIDR string")
        try:
            ipaddress.ip_network(arg, strict=False)
        except ValueError as exc:
            raise PatternError(here, f"not a CIDR block: {exc}") from None
    elif op == "exists":
        if not isinstance(arg, bool):
            raise PatternError(here, "takes true or false")
    else:
        known = "prefix, suffix, equals-ignore-case, wildcard, anything-but, numeric, cidr, exists"
        raise PatternError(path, f"unknown operator {op!r}; known: {known}")


def _validate_string_arg(arg: Any, path: str, ignore_case_form: bool = False) -> None:
    if isinstance(arg, str):
        return
    if (
        ignore_case_form
        and isinstance(arg, Mapping)
        and list(arg) == ["equals-ignore-case"]
        and isinstance(arg["equals-ignore-case"], str)
    ):
        return
    raise PatternError(path, "takes a string" + (" or {equals-ignore-case: s}" * ignore_case_form))


def _validate_anything_but(arg: Any, path: str) -> None:
    if _is_literal(arg) and arg is not None and not isinstance(arg, bool):
        return
    if isinstance(arg, list):
        if not arg:
            raise PatternError(path, "empty arrays are not allowed")
        if not (all(isinstance(v, str) for v in arg) or all(_is_number(v) for v in arg)):
            raise PatternError(path, "takes a list of strings or a list of numbers, not a mix")
        return
    if isinstance(arg, Mapping) and len(arg) == 1:
        ((op, inner),) = arg.items()
        if op in ("prefix", "suffix") and isinstance(inner, str):
            return
        if op in ("equals-ignore-case", "wildcard"):
            values = inner if isinstance(inner, list) else [inner]
            if values and all(isinstance(v, str) for v in values):
                for value in values if op == "wildcard" else ():
                    _wildcard_regex(value, f"{path}.wildcard")
                return
    raise PatternError(
        path,
        "takes a string, a number, a list, or one of prefix/suffix/equals-ignore-case/wildcard",
    )


def _numeric_checks(arg: Any, path: str) -> list[tuple[str, float]]:
    if not isinstance(arg, list) or len(arg) not in (2, 4):
        raise PatternError(path, 'takes [op, number] or [">", low, "<", high]')
    checks = []
    for op, bound in zip(arg[::2], arg[1::2], strict=True):
        if op not in _NUMERIC_OPS or not _is_number(bound):
            raise PatternError(
                path, f"{op!r} {bound!r}: an operator (=, <, <=, >, >=) and a number"
            )
        checks.append((op, float(bound)))
    if len(checks) == 2 and (checks[0][0] not in (">", ">=") or checks[1][0] not in ("<", "<=")):
        raise PatternError(path, "a range is a lower bound (> or >=) then an upper bound (< or <=)")
    return checks


@lru_cache(maxsize=1024)
def _wildcard_regex(pattern: str, path: str = "wildcard") -> re.Pattern[str]:
    if "**" in pattern.replace("\\\\", "").replace("\\*", ""):
        raise PatternError(path, "consecutive wildcard characters are not allowed")
    parts, index = [], 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern) and pattern[index + 1] in "*\\":
            parts.append(re.escape(pattern[index + 1]))
            index += 2
            continue
        parts.append(".*" if char == "*" else re.escape(char))
        index += 1
    return re.compile("".join(parts), re.DOTALL)


# -- matching ------------------------------------------------------------------------------------


def matches(pattern: Mapping[str, Any], event: Any) -> bool:
    """Whether ``event`` matches ``pattern`` (validate the pattern first; see the module doc)."""
    return _match_object(pattern, event)


def _field(event: Any, key: str) -> Any:
    return event.get(key, _MISSING) if isinstance(event, Mapping) else _MISSING


def _match_object(pattern: Mapping[str, Any], event: Any) -> bool:
    for key, value in pattern.items():
        if key == "$or":
            if not any(_match_object(inner, event) for inner in value):
                return False
            continue
        field = _field(event, key)
        if isinstance(value, Mapping):
            if isinstance(field, list):  # an array of objects: any element may match
                objects: list[Any] = [e for e in field if isinstance(e, Mapping)] or [_MISSING]
                if not any(_match_object(value, element) for element in objects):
                    return False
            elif not _match_object(value, field):
                return False
        elif not _match_leaf(value, field):
            return False
    return True


def _leaves(field: Any) -> list[Any]:
    """The leaf values of an event field: none when absent or an object, the elements of an
    array (nested arrays flattened, objects skipped), else the value itself."""
    if field is _MISSING or isinstance(field, Mapping):
        return []
    if isinstance(field, list):
        out: list[Any] = []
        for element in field:
            out.extend(_leaves(element))
        return out
    return [field]


def _match_leaf(matchers: list[Any], field: Any) -> bool:
    values = _leaves(field)
    for matcher in matchers:
        if isinstance(matcher, Mapping) and "exists" in matcher:
            if bool(values) == matcher["exists"]:
                return True
        elif any(_match_value(matcher, value) for value in values):
            return True
    return False


def _equal(literal: Any, value: Any) -> bool:
    if _is_number(literal) and _is_number(value):
        return float(literal) == float(value)
    if isinstance(literal, bool) or isinstance(value, bool) or literal is None or value is None:
        return literal is value  # True must not equal 1, nor None equal anything else
    return type(literal) is type(value) and literal == value


def _string_test(op: str, arg: Any, value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if isinstance(arg, Mapping):  # {"prefix": {"equals-ignore-case": s}}
        arg, value = arg["equals-ignore-case"].lower(), value.lower()
    if op == "prefix":
        return bool(value.startswith(arg))
    if op == "suffix":
        return bool(value.endswith(arg))
    if op == "equals-ignore-case":
        args = arg if isinstance(arg, list) else [arg]
        return any(value.lower() == a.lower() for a in args)
    args = arg if isinstance(arg, list) else [arg]  # wildcard
    return any(_wildcard_regex(a).fullmatch(value) is not None for a in args)


def _match_value(matcher: Any, value: Any) -> bool:
    if not isinstance(matcher, Mapping):
        return _equal(matcher, value)
    ((op, arg),) = matcher.items()
    if op in _STRING_OPS:
        return _string_test(op, arg, value)
    if op == "anything-but":
        if isinstance(arg, Mapping):
            ((inner_op, inner_arg),) = arg.items()
            return not _string_test(inner_op, inner_arg, value)
        excluded = arg if isinstance(arg, list) else [arg]
        return not any(_equal(literal, value) for literal in excluded)
    if op == "numeric":
        if not _is_number(value):
            return False
        return all(_NUMERIC_OPS[o](float(value), bound) for o, bound in _numeric_checks(arg, op))
    if op == "cidr":
        try:
            return ipaddress.ip_address(value) in ipaddress.ip_network(arg, strict=False)
        except (TypeError, ValueError):
            return False
    return False
