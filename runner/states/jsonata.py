"""The JSONata query language of a state: ``{% ... %}`` expressions in Arguments, Output, Assign,
Items, ItemSelector, Condition, Seconds, Timestamp, TimeoutSeconds, Error, Cause and the rest.

What AWS documents (developer guide, "Transforming data with JSONata in Step Functions"):

* A string is an expression when it starts with ``{%`` and ends with ``%}``, with no leading or
  trailing spaces; "improperly opening or closing the expression will result in a validation
  error". Any other string is a literal. Objects and arrays are templates: an expression may sit
  at any depth.
* Expressions see the reserved ``$states`` (``input``, ``result``, ``errorOutput``, ``context``)
  and the workflow's variables as ``$name``. Which ``$states`` fields exist where is the caller's
  business: it passes them in and this module binds them.
* Step Functions implements JSONata 2.0.6 with every built-in function except ``$eval`` (use
  ``$parse``), and adds ``$partition``, ``$range``, ``$hash``, ``$random`` (with a seed),
  ``$uuid`` and ``$parse``. Integer parameters of those functions drop their fraction.
* Every run-time failure (a type error, an undefined result, a function error) is
  ``States.QueryEvaluationError``.

Load time (:func:`compile_template`) parses each expression once and raises
:class:`~runner.errors.SpecError` only for what CreateStateMachine refuses: a badly delimited
``{% %}`` string (documented), an expression that does not parse, a reference to ``$$``, or to
the context item (``$``, a bare field name) at the top level, which JSONata states do not have
(observed, not documented; see the report). Evaluation never parses.

Thread safety: jsonata-python keeps evaluation state (input, environment, timestamp) on the
``Jsonata`` object and in a thread-local "current instance", so one compiled object must not be
evaluated by two threads at once. Each expression therefore keeps one shallow copy per thread
(sharing the parsed tree, which evaluation does not change) and makes it the thread's current
instance before each evaluation, which also keeps ``$now()`` on this evaluation's timestamp.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import re
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any

from jsonata import Jsonata  # type: ignore[import-untyped]
from jsonata.jexception import JException  # type: ignore[import-untyped]
from jsonata.parser import Parser  # type: ignore[import-untyped]
from jsonata.utils import Utils  # type: ignore[import-untyped]

from runner.errors import SpecError, StatesError

__all__ = [
    "QUERY_EVALUATION_ERROR",
    "Template",
    "compile_template",
    "evaluate_expression",
    "is_jsonata",
]

QUERY_EVALUATION_ERROR = "States.QueryEvaluationError"

_OPEN, _CLOSE = "{%", "%}"
HASH_ALGORITHMS = {
    "MD5": "md5",
    "SHA-1": "sha1",
    "SHA-256": "sha256",
    "SHA-384": "sha384",
    "SHA-512": "sha512",
}
#: The longest array ``$range`` builds. Not documented by AWS: a third-party emulator (Floci)
#: measured that AWS builds 360,145 elements and refuses one more; we refuse at the same point.
RANGE_LIMIT = 360_145
#: JavaScript prints whole numbers below 1e21 in full and larger ones in exponent notation.
_LARGEST_PRINTED_INTEGER = 1e21


def is_jsonata(text: Any) -> bool:
    """True for a string that is a JSONata expression: ``{%`` first and ``%}`` last."""
    return (
        isinstance(text, str)
        and len(text) >= len(_OPEN) + len(_CLOSE)
        and text.startswith(_OPEN)
        and text.endswith(_CLOSE)
    )


# --------------------------------------------------------------------------- run-time errors


def _query_error(cause: str) -> StatesError:
    return StatesError(QUERY_EVALUATION_ERROR, cause)


def _undefined_cause(expression: str, field: str) -> str:
    # AWS's wording, as a failed execution reports it ("... specified for the field
    # 'Arguments/Input/pushLocation' returned nothing (undefined)."); the developer guide only
    # says the expression "would result in an error". The interpreter adds the state prefix.
    return (
        f"The JSONata expression '{expression}' specified for the field '{field}' "
        "returned nothing (undefined)."
    )


def _thrown_cause(expression: str, field: str, reason: str) -> str:
    # Not documented by AWS: modelled on the undefined cause above, with JSONata's own error
    # code and message as the reason, as third-party emulators report AWS doing.
    return (
        f"The JSONata expression '{expression}' specified for the field '{field}' "
        f"threw an error during evaluation. {reason}"
    )


def _unsupported_cause(expression: str, field: str, what: str) -> str:
    # Not documented by AWS: a function or a non-finite number has no JSON form.
    return (
        f"The JSONata expression '{expression}' specified for the field '{field}' "
        f"returned an unsupported result type ({what})."
    )


def _reason(error: BaseException) -> str:
    """``CODE: message`` for a JSONata error, ``Type: message`` for anything else."""
    if isinstance(error, JException):
        # jsonata-python's catalogue says "Object" where JSONata's says "function".
        message = re.sub(r"\bObject\b", "function", str(error))
        return f"{error.error}: {message}" if error.error else message
    return f"{type(error).__name__}: {error}"


class _FunctionError(JException):  # type: ignore[misc]
    """An error raised by a Step Functions function, with JSONata's code where one applies."""

    def __init__(self, message: str, code: str = "") -> None:
        RuntimeError.__init__(self, message)
        self.error = code
        self.location = -1
        self.current = self.expected = self.extra = self.type = self.remaining = None


def _signature_error(function: str, argument: int) -> _FunctionError:
    # JSONata's own T0410 wording, which its built-in functions raise for a wrong argument.
    return _FunctionError(
        f'Argument {argument} of function "{function}" does not match function signature',
        "T0410",
    )


class _Unsupported(Exception):
    """A result with no JSON form (a function, NaN, Infinity); ``what`` names it."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


# --------------------------------------------------------------------------- results as JSON


def _to_json(value: Any) -> Any:
    """A JSONata result (sequences, ``NULL_VALUE``) as plain JSON values; ``3.0`` becomes ``3``.

    ``None`` inside a container is JSON null (it came from the input); the caller checks the
    top-level ``None``, which is JSONata's undefined, before calling this.
    """
    if value is None or value is Utils.NULL_VALUE:
        return None
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, dict):
        return {str(key): _to_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_json(value[index]) for index in range(len(value))]
    raise _Unsupported(
        "a function" if Utils.is_function(value) or _is_lambda(value) else type(value).__name__
    )


def _number(value: float) -> int | float:
    if not math.isfinite(value):
        raise _Unsupported(str(value))
    if value.is_integer() and abs(value) < _LARGEST_PRINTED_INTEGER:
        return int(value)
    return value


def _is_lambda(value: Any) -> bool:
    return isinstance(value, Parser.Symbol)


# --------------------------------------------------------------------------- added functions


class _Function:
    """A Python function JSONata can call: arguments arrive as JSONata values."""

    def __init__(self, name: str, implementation: Callable[..., Any], arity: int) -> None:
        self.name = name
        self.implementation = implementation
        self.arity = arity

    def call(self, _input: Any, args: Sequence[Any] | None) -> Any:
        args = list(args or ())
        if len(args) > self.arity:
            raise _signature_error(self.name, self.arity + 1)
        args += [None] * (self.arity - len(args))
        return self.implementation(*args)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(function: str, argument: int, value: Any) -> int:
    """An integer parameter: a number whose fraction is dropped (towards zero, as observed)."""
    if not _is_number(value) or not math.isfinite(value):
        raise _signature_error(function, argument)
    return math.trunc(value)


def _partition(array: Any, size: Any) -> Any:
    """``$partition(array, chunkSize)``: chunks of ``chunkSize``, the last one shorter."""
    if array is None or size is None:
        return None
    if not isinstance(array, list):
        raise _signature_error("partition", 1)
    chunk = _integer("partition", 2, size)
    if chunk < 1 or not array:
        return None  # undefined, as AWS answers (observed by emulators, not documented)
    items = [array[index] for index in range(len(array))]
    return [items[start : start + chunk] for start in range(0, len(items), chunk)]


def _range(start: Any, end: Any, step: Any) -> Any:
    """``$range(start, end, step)``: from start towards end by step, end included if reached."""
    for position, value in enumerate((start, end, step), start=1):
        if value is not None and not _is_number(value):
            raise _signature_error("range", position)
    if start is None or end is None or step is None:
        return None
    first, last, delta = (_integer("range", i, v) for i, v in enumerate((start, end, step), 1))
    if delta == 0 or (delta > 0 and first > last) or (delta < 0 and first < last):
        return None  # undefined: the step never reaches the end
    count = abs(last - first) // abs(delta) + 1
    if count > RANGE_LIMIT:
        raise _FunctionError("Expression evaluation memory limit exceeded")
    # A sequence, so that a one-element range is the bare number, as AWS answers (observed).
    return Utils.create_sequence_from_iter(range(first, first + count * delta, delta))


def _hash(data: Any, algorithm: Any) -> Any:
    """``$hash(string, algorithm)``: the hex digest, for MD5, SHA-1, SHA-256, SHA-384, SHA-512."""
    if data is not None and not isinstance(data, str):
        raise _signature_error("hash", 1)
    if algorithm is not None and not isinstance(algorithm, str):
        raise _signature_error("hash", 2)
    if data is None or algorithm is None:
        return None
    if algorithm not in HASH_ALGORITHMS:
        # Not documented by AWS: the docs only list the algorithms the argument must be.
        raise _FunctionError(
            f"The hashing algorithm '{algorithm}' is not supported: it must be one of "
            + ", ".join(HASH_ALGORITHMS)
        )
    return hashlib.new(HASH_ALGORITHMS[algorithm], data.encode("utf-8")).hexdigest()


def _random(seed: Any) -> float:
    """``$random()`` or ``$random(seed)``: 0 <= n < 1, the same n for the same seed."""
    if seed is None:
        return random.random()
    return random.Random(_integer("random", 1, seed)).random()


def _uuid() -> str:
    """``$uuid()``: a version 4 UUID."""
    return str(uuid.uuid4())


def _parse(text: Any) -> Any:
    """``$parse(jsonString)``: the JSON value the string holds (AWS's stand-in for ``$eval``)."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise _signature_error("parse", 1)
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as error:
        # Not documented by AWS.
        raise _FunctionError(f"The argument of $parse is not valid JSON: {error}") from error
    return Utils.NULL_VALUE if value is None else value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: Step Functions' additions; ``$random`` replaces JSONata's own (which takes no seed).
_ADDED_FUNCTIONS = (
    _Function("partition", _partition, 2),
    _Function("range", _range, 3),
    _Function("hash", _hash, 2),
    _Function("random", _random, 1),
    _Function("uuid", _uuid, 0),
    _Function("parse", _parse, 1),
)
#: JSONata functions Step Functions removes: calling one is JSONata's T1006 (not a function).
_REMOVED_FUNCTIONS = ("eval",)


def _engine(source: str) -> Any:
    """Parse ``source`` once into a jsonata-python object with Step Functions' functions."""
    compiled = Jsonata(source)
    compiled.set_output_convert_nulls(False)  # keep null (NULL_VALUE) apart from undefined (None)
    for function in _ADDED_FUNCTIONS:
        compiled.register_function(function.name, Jsonata.JFunction(function, None))
    for name in _REMOVED_FUNCTIONS:
        compiled.register_function(name, None)
    return compiled


# --------------------------------------------------------------------------- load-time checks


#: Parts of a node JSONata evaluates against something other than the node's own context.
_PER_ITEM_PARTS = frozenset(
    {"stages", "predicate", "group", "terms", "pattern", "update", "delete"}
)
#: Back references from a node to its ancestors: not children.
_BACK_REFERENCES = frozenset({"ancestor", "slot", "tuple"})


def _refusal(node: Any, top: bool, available: Collection[str] | None) -> str | None:
    """Why CreateStateMachine refuses this node, or None.

    A JSONata state has no context item, so the top-level context (``$``, or a bare field
    name) is refused; ``$$`` is refused anywhere. AWS does not document these; the rule text
    follows what Step Functions answers (``Reference to 'phone' at the top level is not
    supported.``) as a third-party emulator records it.
    """
    kind = getattr(node, "type", None)
    if kind == "variable" and node.value == "$":
        return "Reference to '$$' is not supported."
    if top and kind == "variable" and node.value == "":
        return "Reference to '$' at the top level is not supported."
    if top and kind == "name":
        return f"Reference to '{node.value}' at the top level is not supported."
    if kind == "path" and available is not None:
        return _unavailable_states_field(node.steps, available)
    return None


def _unavailable_states_field(steps: Sequence[Any], available: Collection[str]) -> str | None:
    """``$states.result`` where there is no result: documented as refused at creation."""
    if len(steps) < 2 or steps[0].type != "variable" or steps[0].value != "states":
        return None
    if steps[1].type == "name" and steps[1].value not in available:
        return f"$states.{steps[1].value} is not available in this field"
    return None


def _children(node: Any, top: bool) -> Iterator[tuple[Any, bool]]:
    """Each child node and whether it is evaluated against the top-level context."""
    for part, value in vars(node).items():
        if part.startswith("_") or part in _BACK_REFERENCES:
            continue
        nodes = list(_symbols(value))
        if part == "steps":  # only the first step of a path reads the path's context
            yield from ((step, top and index == 0) for index, step in enumerate(nodes))
        else:
            yield from ((child, top and part not in _PER_ITEM_PARTS) for child in nodes)


def _symbols(value: Any) -> Iterator[Any]:
    if isinstance(value, Parser.Symbol):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _symbols(item)


def _check_references(root: Any, available: Collection[str] | None) -> str | None:
    pending: list[tuple[Any, bool]] = [(root, True)]
    seen: set[int] = set()
    while pending:
        node, top = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        refusal = _refusal(node, top, available)
        if refusal:
            return refusal
        pending.extend(_children(node, top))
    return None


def _parse_expression(text: str, where: str, available: Collection[str] | None) -> Any:
    source = text[len(_OPEN) : -len(_CLOSE)]
    try:
        compiled = _engine(source)
    except JException as error:
        raise SpecError(
            where, f"invalid JSONata expression '{source.strip()}': {_reason(error)}"
        ) from None
    refusal = _check_references(compiled.ast, available)
    if refusal:
        raise SpecError(where, f"unsupported JSONata expression '{source.strip()}': {refusal}")
    return compiled


def _check_delimiters(text: str, where: str) -> None:
    """A string that opens or closes like an expression but is not one is refused."""
    stripped = text.strip()
    if text.startswith(_OPEN) or (stripped.startswith(_OPEN) and stripped.endswith(_CLOSE)):
        raise SpecError(
            where,
            "a JSONata expression must start with '{%' and end with '%}', with no spaces "
            f"before or after: {text!r}",
        )


# --------------------------------------------------------------------------- templates


class _Node:
    """One compiled part of a template."""

    def evaluate(self, bindings: Mapping[str, Any]) -> Any:
        raise NotImplementedError


class _Literal(_Node):
    """A value with no expression in it: returned as a fresh copy, never shared."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.mutable = isinstance(value, (dict, list))

    def evaluate(self, bindings: Mapping[str, Any]) -> Any:
        return copy.deepcopy(self.value) if self.mutable else self.value


class _Object(_Node):
    def __init__(self, members: list[tuple[str, _Node]]) -> None:
        self.members = members

    def evaluate(self, bindings: Mapping[str, Any]) -> Any:
        return {key: node.evaluate(bindings) for key, node in self.members}


class _Array(_Node):
    def __init__(self, items: list[_Node]) -> None:
        self.items = items

    def evaluate(self, bindings: Mapping[str, Any]) -> Any:
        return [node.evaluate(bindings) for node in self.items]


class _Expression(_Node):
    """A ``{% %}`` string: parsed once, evaluated by a per-thread copy of the parsed object."""

    def __init__(self, compiled: Any, source: str, field: str) -> None:
        self.compiled = compiled
        self.source = source  # as AWS quotes it in causes: without {% %} and outer spaces
        self.field = field
        self.per_thread = threading.local()

    def _engine(self) -> Any:
        engine = getattr(self.per_thread, "engine", None)
        if engine is None:
            engine = self.per_thread.engine = copy.copy(self.compiled)
        # jsonata-python evaluates on the thread's "current" instance: make it this one.
        Jsonata.CURRENT.jsonata = engine
        return engine

    def evaluate(self, bindings: Mapping[str, Any]) -> Any:
        try:
            result = self._engine().evaluate(None, bindings)
        except RecursionError:
            raise _query_error(
                _thrown_cause(self.source, self.field, "Stack overflow: too deep a recursion")
            ) from None
        except Exception as error:  # JSONata errors, and Python's from inside jsonata-python
            raise _query_error(_thrown_cause(self.source, self.field, _reason(error))) from None
        if result is None:
            raise _query_error(_undefined_cause(self.source, self.field))
        try:
            return _to_json(result)
        except _Unsupported as unsupported:
            raise _query_error(
                _unsupported_cause(self.source, self.field, unsupported.what)
            ) from None


class Template:
    """A field value compiled once: literals, ``{% %}`` expressions, objects and arrays of them.

    :meth:`evaluate` builds the field's value for one state run: plain JSON, fresh objects.
    """

    def __init__(self, root: _Node, where: str) -> None:
        self._root = root
        self.where = where
        self.is_literal = isinstance(root, _Literal)

    def evaluate(self, states: Mapping[str, Any], variables: Mapping[str, Any]) -> Any:
        """The value, with ``$states`` and the workflow's variables bound.

        Raises ``StatesError("States.QueryEvaluationError", cause)`` when an expression fails.
        """
        if self.is_literal:
            return self._root.evaluate({})
        bindings = dict(variables)
        bindings["states"] = dict(states)
        return self._root.evaluate(bindings)

    def __repr__(self) -> str:
        return f"Template({self.where!r})"


def _field_name(where: str) -> str:
    """``/States/Shape/Arguments`` as AWS names the field in causes: ``Arguments``.

    AWS names a field relative to its state, ``/`` before object keys; array indexes are
    written ``[i]`` (not documented; as third-party emulators report AWS doing).
    """
    marker = where.rfind("/States/")
    rest = where[marker + len("/States/") :].split("/", 1)[1:] if marker >= 0 else [where]
    field = ""
    for segment in "".join(rest).strip("/").split("/"):
        if segment.isdigit() and field:
            field += f"[{segment}]"
        elif segment:
            field = f"{field}/{segment}" if field else segment
    return field


def _compile(value: Any, where: str, field: str, available: Collection[str] | None) -> _Node:
    if isinstance(value, str):
        if is_jsonata(value):
            compiled = _parse_expression(value, where, available)
            return _Expression(compiled, value[len(_OPEN) : -len(_CLOSE)].strip(), field)
        _check_delimiters(value, where)
        return _Literal(value)
    if isinstance(value, dict):
        members = [
            (key, _compile(item, f"{where}/{key}", f"{field}/{key}", available))
            for key, item in value.items()
        ]
        if all(isinstance(node, _Literal) for _, node in members):
            return _Literal(value)
        return _Object(members)
    if isinstance(value, list):
        items = [
            _compile(item, f"{where}/{index}", f"{field}[{index}]", available)
            for index, item in enumerate(value)
        ]
        if all(isinstance(node, _Literal) for node in items):
            return _Literal(value)
        return _Array(items)
    return _Literal(value)


def compile_template(
    value: Any, where: str, *, field: str | None = None, available: Collection[str] | None = None
) -> Template:
    """Compile a field value of a JSONata state; ``where`` is its path, ``/States/X/Output``.

    ``field`` is the field as run-time causes name it (default: ``where`` relative to its
    state, ``Output``). ``available``, when given, lists the ``$states`` fields this field may
    read (``{"input", "context"}`` outside a Catch, say): reading another is refused, as AWS
    refuses ``$states.result`` where there is no result at creation.

    Raises :class:`~runner.errors.SpecError` at ``where`` plus the key path inside the value.
    """
    root = _compile(value, where, _field_name(where) if field is None else field, available)
    return Template(root, where)


@lru_cache(maxsize=1024)
def _cached_template(text: str, where: str) -> Template:
    return compile_template(text, where)


def evaluate_expression(
    text: str, states: Mapping[str, Any], variables: Mapping[str, Any], *, where: str = ""
) -> Any:
    """Evaluate one field value given as text (compiled once per text, then cached).

    A literal string comes back unchanged, as in a template.
    """
    return _cached_template(text, where).evaluate(states, variables)
