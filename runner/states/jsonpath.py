"""The JSONPath query language of a state: InputPath, Parameters, ResultSelector, ResultPath,
OutputPath, and the scope their paths read (the state's input, the context object ``$$`` and the
workflow's variables ``$name``).

Step Functions reports every failure here as ``States.Runtime`` (the ASL names
``States.ParameterPathFailure`` and ``States.ResultPathMatchFailure`` are reserved and not
raised, says the developer guide's error-handling page); the causes follow AWS's wording, e.g.
``The JSONPath '$.a' specified for the field 'b.$' could not be found in the input '{...}'``.
The interpreter prefixes them with the state's name, as AWS does.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from runner import jsontext
from runner.errors import SpecError, StatesError
from runner.paths import PathNotFound, compile_path
from runner.states.intrinsics import compile_intrinsic

__all__ = [
    "Payload",
    "Scope",
    "apply_result_path",
    "compact_json",
    "compile_payload",
    "reference_path_steps",
    "select",
]

RUNTIME = "States.Runtime"
_VARIABLE = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)(.*)$", re.DOTALL)
_REFERENCE_STEP = re.compile(r"\.([^.\[\]]+)|\['([^']*)'\]|\[(\d+)\]")


def compact_json(value: Any) -> str:
    """JSON as AWS quotes it in causes: no spaces."""
    return jsontext.dumps(value)


@lru_cache(maxsize=4096)
def _getter(path: str) -> Callable[[Any, Any], Any]:
    return compile_path(path, path)


class Scope:
    """What a state's paths read: ``$`` the input, ``$$`` the context object, ``$x`` variable x.

    Calling it resolves a path or raises :class:`~runner.paths.PathNotFound`, the resolver the
    intrinsic and Choice modules take.
    """

    __slots__ = ("context", "data", "variables")

    def __init__(self, data: Any, context: Any, variables: Mapping[str, Any]) -> None:
        self.data = data
        self.context = context
        self.variables = variables

    def with_data(self, data: Any) -> Scope:
        return Scope(data, self.context, self.variables)

    def __call__(self, path: str) -> Any:
        if path.startswith("$$") or path == "$" or path[1:2] in (".", "["):
            return _getter(path)(self.data, self.context)
        match = _VARIABLE.match(path)
        if match is None:
            raise PathNotFound(path)
        name, rest = match.groups()
        if name not in self.variables:
            raise PathNotFound(path)
        return _getter("$" + rest)(self.variables[name], None) if rest else self.variables[name]


def bracketed(path: str) -> str:
    """``$.a.b[0]`` as AWS prints it in causes: ``$['a']['b'][0]``."""
    steps = reference_path_steps(path)
    if steps is None:
        return path
    head = "$$" if path.startswith("$$") else "$"
    return head + "".join(f"[{s}]" if isinstance(s, int) else f"['{s}']" for s in steps)


def reference_path_steps(path: str) -> list[str | int] | None:
    """The steps of a reference path (``$.a['b'][0]``), or None if ``path`` is not one."""
    body = path[2:] if path.startswith("$$") else path[1:]
    if not path.startswith("$"):
        return None
    steps: list[str | int] = []
    position = 0
    for match in _REFERENCE_STEP.finditer(body):
        if match.start() != position:
            return None
        name, quoted, index = match.groups()
        steps.append(int(index) if index is not None else (name if name is not None else quoted))
        position = match.end()
    return steps if position == len(body) else None


def select(path: str | None, scope: Scope, field: str) -> Any:
    """InputPath / OutputPath / ItemsPath...: ``null`` gives ``{}``, a miss is States.Runtime."""
    if path is None:
        return {}
    try:
        return scope(path)
    except PathNotFound:
        raise StatesError(
            RUNTIME, f"Invalid path '{path}' : No results for path: {bracketed(path)}"
        ) from None


def apply_result_path(path: str | None, state_input: Any, result: Any) -> Any:
    """ResultPath: ``$`` replaces the input, ``null`` keeps it, a reference path sets a node.

    The input is never changed in place (a Parallel branch or a retried state may still hold it).
    """
    if path is None:
        return state_input
    steps = reference_path_steps(path) or []
    if not steps:
        return result
    if not isinstance(state_input, dict):
        raise StatesError(
            RUNTIME,
            f"Unable to apply ReferencePath {path} to input {compact_json(state_input)}",
        )
    output = copy.copy(state_input)
    node: Any = output
    for step in steps[:-1]:
        child = node.get(step) if isinstance(node, dict) else None
        if child is None and isinstance(node, dict) and step not in node:
            child = {}
        elif not isinstance(child, dict):
            raise StatesError(
                RUNTIME,
                f"Unable to apply ReferencePath {path} to input {compact_json(state_input)}",
            )
        else:
            child = copy.copy(child)
        node[step] = child
        node = child
    last = steps[-1]
    if not isinstance(node, dict) or isinstance(last, int):
        raise StatesError(
            RUNTIME, f"Unable to apply ReferencePath {path} to input {compact_json(state_input)}"
        )
    node[last] = result
    return output


class Payload:
    """A compiled Parameters-style template: keys ending in ``.$`` take a path or an intrinsic
    function, everything else is literal. Used for Parameters, ResultSelector, ItemSelector,
    Arguments-free JSONPath Task inputs and JSONPath ``Assign``."""

    __slots__ = ("_build",)

    def __init__(self, build: Callable[[Scope], Any]) -> None:
        self._build = build

    def evaluate(self, scope: Scope) -> Any:
        return self._build(scope)


def compile_payload(template: Any, where: str) -> Payload:
    """Compile ``template`` once; ``where`` is its location (``/States/Name/Parameters``)."""
    return Payload(_compile(template, where))


def _compile(template: Any, where: str) -> Callable[[Scope], Any]:
    if isinstance(template, Mapping):
        parts = [_compile_entry(key, value, f"{where}/{key}") for key, value in template.items()]

        def build(scope: Scope) -> dict[str, Any]:
            return {key: fn(scope) for key, fn in parts}

        return build
    if isinstance(template, list):
        items = [_compile(value, f"{where}/{i}") for i, value in enumerate(template)]
        return lambda scope: [fn(scope) for fn in items]
    return lambda scope: template


def _compile_entry(key: str, value: Any, where: str) -> tuple[str, Callable[[Scope], Any]]:
    if not key.endswith(".$"):
        return key, _compile(value, where)
    if not isinstance(value, str):
        raise SpecError(
            where, f"the value of a field ending in .$ must be a string (got {value!r})"
        )
    if value.startswith("States."):
        return key[:-2], compile_intrinsic(value, where).evaluate
    if not value.startswith("$"):
        raise SpecError(where, f"{value!r} is neither a JSONPath nor an intrinsic function call")
    _check_path(value, where)
    return key[:-2], _path_entry(value, key)


def _check_path(path: str, where: str) -> None:
    if path.startswith("$$") or path == "$" or path[1:2] in (".", "["):
        _getter(path)  # raises SpecError for a malformed JSONPath
    elif _VARIABLE.match(path) is None:
        raise SpecError(where, f"{path!r} is not a valid JSONPath or variable reference")


def _path_entry(path: str, key: str) -> Callable[[Scope], Any]:
    def evaluate(scope: Scope) -> Any:
        try:
            return scope(path)
        except PathNotFound:
            raise StatesError(
                RUNTIME,
                f"The JSONPath '{path}' specified for the field '{key}' could not be found "
                f"in the input '{compact_json(scope.data)}'",
            ) from None

    return evaluate
