"""Retry and Catch: which retrier or catcher an error matches, and how long to wait.

From the developer guide's error-handling page: retriers and catchers are tried in order;
``States.ALL`` must be alone and last and matches any error except ``States.DataLimitExceeded``
and ``States.Runtime``; ``States.TaskFailed`` matches any error a Task reports except
``States.Timeout``. A retrier's wait is ``IntervalSeconds * BackoffRate ** (attempt - 1)``,
capped by ``MaxDelaySeconds``, and with ``JitterStrategy: FULL`` a random part of it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runner.errors import SpecError

__all__ = ["Catcher", "Retrier", "compile_catchers", "compile_retriers", "matches"]

ALL = "States.ALL"
TASK_FAILED = "States.TaskFailed"
#: Errors no wildcard takes (error-handling page, States.ALL and States.Runtime).
UNCATCHABLE_BY_WILDCARD = frozenset({"States.DataLimitExceeded", "States.Runtime"})


@dataclass(frozen=True, slots=True)
class Retrier:
    errors: tuple[str, ...]
    interval: float = 1.0
    max_attempts: int = 3
    backoff: float = 2.0
    max_delay: float | None = None
    jitter: bool = False

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
        seconds = self.interval * self.backoff ** (attempt - 1)
        if self.max_delay is not None:
            seconds = min(seconds, self.max_delay)
        if self.jitter:
            seconds = (rng or random).uniform(0, seconds)
        return seconds


@dataclass(frozen=True, slots=True)
class Catcher:
    errors: tuple[str, ...]
    next: str
    result_path: str | None = "$"
    output: Any = None  # a compiled JSONata template, or None
    assign: Any = None  # a compiled Payload (JSONPath) or template (JSONata), or None


def matches(patterns: tuple[str, ...], error: str, *, from_task: bool) -> bool:
    """Whether an ErrorEquals list takes ``error``.

    ``States.Runtime`` and ``States.DataLimitExceeded`` are never retried or caught: "they
    always cause the execution to fail" (error-handling page), whatever the list names.
    """
    if error in UNCATCHABLE_BY_WILDCARD:
        return False
    for pattern in patterns:
        if pattern == error:
            return True
        if pattern == ALL and error not in UNCATCHABLE_BY_WILDCARD:
            return True
        if (
            pattern == TASK_FAILED
            and from_task
            and error != "States.Timeout"
            and error not in UNCATCHABLE_BY_WILDCARD
        ):
            return True
    return False


def compile_retriers(retry: Any, where: str) -> list[Retrier]:
    if not isinstance(retry, list):
        raise SpecError(where, "must be an array of retriers")
    retriers = []
    for index, raw in enumerate(retry):
        here = f"{where}/{index}"
        _fields(raw, here, {"ErrorEquals", "IntervalSeconds", "MaxAttempts", "BackoffRate",
                            "MaxDelaySeconds", "JitterStrategy", "Comment"})  # fmt: skip
        errors = _error_equals(raw, here, last=index == len(retry) - 1)
        interval = _number(raw, "IntervalSeconds", here, 1, minimum=1, integer=True)
        attempts = _number(raw, "MaxAttempts", here, 3, minimum=0, integer=True)
        backoff = _number(raw, "BackoffRate", here, 2.0, minimum=1.0)
        max_delay = raw.get("MaxDelaySeconds")
        if max_delay is not None:
            max_delay = _number(raw, "MaxDelaySeconds", here, None, minimum=1, integer=True)
        jitter = raw.get("JitterStrategy", "NONE")
        if jitter not in ("FULL", "NONE"):
            raise SpecError(f"{here}/JitterStrategy", "must be FULL or NONE")
        retriers.append(
            Retrier(errors, interval, int(attempts), backoff, max_delay, jitter == "FULL")
        )
    return retriers


def compile_catchers(catch: Any, where: str, language: str) -> list[Catcher]:
    from runner.states import jsonata
    from runner.states.jsonpath import compile_payload, reference_path_steps

    if not isinstance(catch, list):
        raise SpecError(where, "must be an array of catchers")
    catchers = []
    for index, raw in enumerate(catch):
        here = f"{where}/{index}"
        extra = {"ResultPath"} if language == "JSONPath" else {"Output"}
        _fields(raw, here, {"ErrorEquals", "Next", "Assign", "Comment", *extra})
        errors = _error_equals(raw, here, last=index == len(catch) - 1)
        if not isinstance(raw.get("Next"), str):
            raise SpecError(f"{here}/Next", "a catcher needs Next (a state name)")
        result_path = raw.get("ResultPath", "$")
        if result_path is not None and (
            not isinstance(result_path, str)
            or result_path.startswith("$$")
            or reference_path_steps(result_path) is None
        ):
            raise SpecError(f"{here}/ResultPath", "must be a reference path or null")
        output = assign = None
        if "Output" in raw:
            output = jsonata.compile_template(raw["Output"], f"{here}/Output")
        if "Assign" in raw:
            compile_assign = compile_payload if language == "JSONPath" else jsonata.compile_template
            assign = compile_assign(raw["Assign"], f"{here}/Assign")
        catchers.append(Catcher(errors, raw["Next"], result_path, output, assign))
    return catchers


def _fields(raw: Any, where: str, allowed: set[str]) -> None:
    if not isinstance(raw, Mapping):
        raise SpecError(where, "must be an object")
    for key in raw:
        if key not in allowed:
            raise SpecError(f"{where}/{key}", "is not a field here")


def _error_equals(raw: Mapping[str, Any], where: str, *, last: bool) -> tuple[str, ...]:
    errors = raw.get("ErrorEquals")
    if not isinstance(errors, list) or not errors or not all(isinstance(e, str) for e in errors):
        raise SpecError(f"{where}/ErrorEquals", "must be a non-empty array of error names")
    if ALL in errors and (len(errors) != 1 or not last):
        raise SpecError(
            f"{where}/ErrorEquals", "States.ALL must appear alone, in the last retrier or catcher"
        )
    return tuple(errors)


def _number(
    raw: Mapping[str, Any],
    key: str,
    where: str,
    default: Any,
    *,
    minimum: float,
    integer: bool = False,
) -> Any:
    value = raw.get(key, default)
    if value is default:
        return value
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and integer:
        ok = isinstance(value, int)
    if not ok or value < minimum:
        kind = "an integer" if integer else "a number"
        raise SpecError(f"{where}/{key}", f"must be {kind} of at least {minimum}")
    return value
