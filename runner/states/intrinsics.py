"""The ``States.*`` intrinsic functions of JSONPath payload templates, compiled once per field.

An intrinsic is the value of a key ending in ``.$`` (Parameters, ResultSelector, ItemSelector,
JSONPath ``Assign``, a Fail state's ErrorPath/CausePath), e.g.
``"greeting.$": "States.Format('Hello, {}', $.name)"``. :func:`compile_intrinsic` parses the text
into a tree of closures; :meth:`Intrinsic.evaluate` only resolves paths and calls functions, so a
field evaluated once per Map item never parses.

What AWS documents (developer guide "Intrinsic functions for JSONPath states", ASL specification
"Intrinsic Functions" and Appendix B):

* Syntax: a function name made of ``A-Za-z0-9._``, immediately followed by ``(``, zero or more
  comma-separated arguments and ``)``. An argument is a string in apostrophes, a number,
  ``true``/``false``/``null``, a path (``$``, ``$.a``, ``$$.Execution.Id``, ``$var.a``) or a
  nested intrinsic, nested at most 10 deep. In a string ``\\'``, ``\\{``, ``\\}`` and ``\\\\``
  are escapes; any other backslash is an "open escape", which the guide says is a run-time error.
* ``States.Format`` takes only strings, numbers, booleans and ``null`` as values and renders
  them in their natural form (``null``, ``true``, ``2020``, strings without quotes); the spec
  forbids arrays and objects. ``States.JsonToString`` writes compact JSON (the spec's example).
* Limits: ``ArrayRange`` at most 1000 items, ``Base64Encode``/``Base64Decode``/``Hash`` inputs at
  most 10,000 characters (``Hash`` counts the stringified data), ``MathAdd`` arguments between
  -2147483648 and 2147483647, ``JsonMerge`` shallow only (its third argument must be false).

What AWS does that the pages do not say (observed by emulators tested against AWS; see the
report that came with this module):

* Every run-time failure is ``States.Runtime`` (the ASL name ``States.IntrinsicFailure`` is not
  what executions report), with the cause ``The function '<field value>' had the following
  error: ...``. A path argument that selects nothing says ``The JsonPath argument for the field
  '<path>' could not be found in the input '<state input>'`` (AWS's exact text); a bad argument
  says ``Invalid arguments in States.<Name>``, to which we add the reason and the field.
* Wrong argument counts, unmatched braces in a Format template and a Format placeholder count
  that does not match are run-time failures, not CreateStateMachine refusals. Load time refuses
  only a malformed call, an unknown function name, a malformed path and nesting beyond 10.
* Fractional integer arguments: ``MathAdd`` rounds half up (``Math.round``); ``ArrayRange``,
  ``ArrayPartition``, ``ArrayGetItem`` and ``MathRandom`` drop the fraction (towards zero),
  although the guide says they round.
* ``Base64Decode`` is lenient like a MIME decoder (characters outside the alphabet are skipped,
  padding may be missing); ``Hash`` of a non-string hashes its compact JSON; ``StringSplit``
  splits on every character of its second argument and drops empty pieces.

``MathRandom`` with a seed is deterministic for a given (start, end, seed), but its numbers are
Python's ``random.Random``, not AWS's: AWS's generator is not documented, so its exact numbers
cannot be reproduced.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from runner import jsontext
from runner.errors import SpecError, StatesError
from runner.paths import PathNotFound, compile_path

__all__ = [
    "FUNCTIONS",
    "INTRINSIC_FAILURE",
    "MAX_NESTING",
    "Intrinsic",
    "compile_intrinsic",
    "evaluate_intrinsic",
    "is_intrinsic",
]

Resolve = Callable[[str], Any]
Node = Callable[[Resolve], Any]

#: The error every intrinsic failure raises. The ASL spec names ``States.IntrinsicFailure``, but
#: executions on AWS report ``States.Runtime`` (observed; the guide's error-handling page could
#: not be confirmed on this point).
INTRINSIC_FAILURE: Final = "States.Runtime"
#: "You can nest up to 10 intrinsic functions within a field" (developer guide), read as depth.
MAX_NESTING: Final = 10

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_MAX_ARRAY_RANGE = 1000
_MAX_TEXT = 10_000
_HASH_ALGORITHMS: Final = {
    "MD5": "md5",
    "SHA-1": "sha1",
    "SHA-256": "sha256",
    "SHA-384": "sha384",
    "SHA-512": "sha512",
}
_SHAPE = re.compile(r"States\.[A-Za-z0-9_.]+\(.*\)", re.DOTALL)
_NAME = re.compile(r"[A-Za-z0-9_.]+")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_VARIABLE = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*")
_ESCAPABLE = "'{}\\"
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/]")
_WORDS: Final[Mapping[str, Any]] = {"true": True, "false": False, "null": None}


def is_intrinsic(text: Any) -> bool:
    """True for a string shaped like an intrinsic call: ``States.Name(`` ... ``)``."""
    return isinstance(text, str) and _SHAPE.fullmatch(text) is not None


# --------------------------------------------------------------------------- failures


class _Failure(Exception):
    """An argument a function cannot take; ``reason`` completes AWS's sentence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _PathMiss(Exception):
    """A path argument selected nothing."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def _invalid(function: str, reason: str) -> _Failure:
    # "Invalid arguments in States.X" is AWS's observed wording; the reason after it is ours.
    return _Failure(f"Invalid arguments in {function}: {reason}")


def _compact(value: Any) -> str:
    return jsontext.dumps(value)


def _show(value: Any) -> str:
    """A value as a cause quotes it: compact JSON, cut short when long."""
    text = _compact(value)
    return text if len(text) <= 100 else text[:97] + "..."


class _SyntaxProblem(Exception):
    """The text is not an intrinsic call CreateStateMachine accepts."""


# --------------------------------------------------------------------------- argument checks


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(function: str, what: str, value: Any) -> int | float:
    if not _is_number(value):
        raise _invalid(function, f"{what} must be a number (got {_show(value)})")
    return value


def _truncated(function: str, what: str, value: Any) -> int:
    """An integer argument whose fraction AWS drops (observed; the guide says it rounds)."""
    return math.trunc(_number(function, what, value))


def _rounded(function: str, what: str, value: Any) -> int:
    """An integer argument rounded half up, as Java's ``Math.round`` (MathAdd, observed)."""
    number = _number(function, what, value)
    return number if isinstance(number, int) else math.floor(number + 0.5)


def _array(function: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise _invalid(function, f"the first argument must be an array (got {_show(value)})")
    return value


def _text(function: str, what: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _invalid(function, f"{what} must be a string (got {_show(value)})")
    return value


def _limited(function: str, text: str) -> str:
    if len(text) > _MAX_TEXT:
        raise _invalid(
            function, f"the input has {len(text)} characters; at most {_MAX_TEXT} are allowed"
        )
    return text


def _canonical(value: Any) -> Any:
    """A hashable key under which equal JSON values meet: objects ignore key order, ``1`` equals
    ``1.0``, and ``true`` stays apart from ``1`` (Python would merge them)."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, (int, float)):
        return ("number", int(value) if float(value).is_integer() else value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("array", tuple(_canonical(item) for item in value))
    return ("object", frozenset((key, _canonical(item)) for key, item in value.items()))


# --------------------------------------------------------------------------- the functions


def _states_array(args: Sequence[Any]) -> Any:
    return list(args)


def _array_partition(args: Sequence[Any]) -> Any:
    name = "States.ArrayPartition"
    items = _array(name, args[0])
    size = _truncated(name, "the chunk size", args[1])
    if size < 1:
        raise _invalid(name, f"the chunk size must be a positive integer (got {_show(args[1])})")
    return [items[start : start + size] for start in range(0, len(items), size)]


def _array_contains(args: Sequence[Any]) -> Any:
    items = _array("States.ArrayContains", args[0])
    wanted = _canonical(args[1])
    return any(_canonical(item) == wanted for item in items)


def _array_range(args: Sequence[Any]) -> Any:
    name = "States.ArrayRange"
    start = _truncated(name, "the start", args[0])
    end = _truncated(name, "the end", args[1])
    step = _truncated(name, "the step", args[2])
    if step == 0:
        raise _invalid(name, f"the step must not be zero (got {_show(args[2])})")
    numbers = range(start, end + (1 if step > 0 else -1), step)
    if len(numbers) > _MAX_ARRAY_RANGE:
        raise _invalid(
            name,
            f"the range has {len(numbers)} items; at most {_MAX_ARRAY_RANGE} are allowed",
        )
    return list(numbers)


def _array_get_item(args: Sequence[Any]) -> Any:
    name = "States.ArrayGetItem"
    items = _array(name, args[0])
    index = _truncated(name, "the index", args[1])
    if not 0 <= index < len(items):
        raise _invalid(
            name, f"the index {_show(args[1])} is out of range for an array of {len(items)} items"
        )
    return items[index]


def _array_length(args: Sequence[Any]) -> Any:
    return len(_array("States.ArrayLength", args[0]))


def _array_unique(args: Sequence[Any]) -> Any:
    seen: dict[Any, Any] = {}
    for item in _array("States.ArrayUnique", args[0]):
        seen.setdefault(_canonical(item), item)
    return list(seen.values())


def _base64_encode(args: Sequence[Any]) -> Any:
    name = "States.Base64Encode"
    text = _limited(name, _text(name, "the argument", args[0]))
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _base64_decode(args: Sequence[Any]) -> Any:
    name = "States.Base64Decode"
    text = _limited(name, _text(name, "the argument", args[0]))
    # A MIME decoder: "=" ends the data, characters outside the alphabet are skipped.
    data = _NOT_BASE64.sub("", text.split("=", 1)[0])
    if len(data) % 4 == 1:
        raise _invalid(name, f"{_show(text)} is not Base64: its last group has one character")
    raw = base64.b64decode(data + "=" * (-len(data) % 4))
    return raw.decode("utf-8", errors="replace")


def _hash(args: Sequence[Any]) -> Any:
    name = "States.Hash"
    data = args[0] if isinstance(args[0], str) else _compact(args[0])
    algorithm = _text(name, "the algorithm", args[1])
    if algorithm not in _HASH_ALGORITHMS:
        raise _invalid(
            name,
            f"the algorithm {_show(algorithm)} is not one of " + ", ".join(_HASH_ALGORITHMS),
        )
    digest = hashlib.new(_HASH_ALGORITHMS[algorithm], _limited(name, data).encode("utf-8"))
    return digest.hexdigest()


def _json_merge(args: Sequence[Any]) -> Any:
    name = "States.JsonMerge"
    for position, value in (("first", args[0]), ("second", args[1])):
        if not isinstance(value, dict):
            raise _invalid(name, f"the {position} argument must be an object (got {_show(value)})")
    if not isinstance(args[2], bool):
        raise _invalid(name, f"the third argument must be a boolean (got {_show(args[2])})")
    if args[2]:
        raise _invalid(name, "deep merging is not supported: the third argument must be false")
    return {**args[0], **args[1]}


def _string_to_json(args: Sequence[Any]) -> Any:
    name = "States.StringToJson"
    text = _text(name, "the argument", args[0])
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError as error:
        raise _invalid(name, f"{_show(text)} is not JSON text ({error})") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _json_to_string(args: Sequence[Any]) -> Any:
    return _compact(args[0])


def _math_random(args: Sequence[Any]) -> Any:
    name = "States.MathRandom"
    start = _truncated(name, "the start", args[0])
    end = _truncated(name, "the end", args[1])
    if start >= end:
        raise _invalid(
            name, f"the start ({_show(args[0])}) must be less than the end ({_show(args[1])})"
        )
    if len(args) == 2:
        return random.randrange(start, end)
    return _seeded_random(start, end, _truncated(name, "the seed", args[2]))


@lru_cache(maxsize=1024)
def _seeded_random(start: int, end: int, seed: int) -> int:
    """The same number for the same seed, as AWS promises (not AWS's number: see the module)."""
    return random.Random(seed).randrange(start, end)


def _math_add(args: Sequence[Any]) -> Any:
    name = "States.MathAdd"
    total = 0
    for position, value in (("first", args[0]), ("second", args[1])):
        number = _rounded(name, f"the {position} argument", value)
        if not _INT32_MIN <= number <= _INT32_MAX:
            raise _invalid(
                name,
                f"the {position} argument must be between {_INT32_MIN} and {_INT32_MAX} "
                f"(got {_show(value)})",
            )
        total += number
    return total


def _string_split(args: Sequence[Any]) -> Any:
    name = "States.StringSplit"
    text = _text(name, "the first argument", args[0])
    delimiters = _text(name, "the second argument", args[1])
    if not delimiters:
        return [text] if text else []
    pieces = re.split("[" + re.escape(delimiters) + "]", text)
    return [piece for piece in pieces if piece]


def _states_uuid(args: Sequence[Any]) -> Any:
    return str(uuid.uuid4())


# --------------------------------------------------------------------------- States.Format

_PLACEHOLDER: Final = object()
Template = tuple[Any, ...]  # literal text pieces and _PLACEHOLDER markers


def _template(chars: Sequence[tuple[str, bool]]) -> Template:
    """Split (character, escaped) pairs at each unescaped ``{}``; a lone brace is an error."""
    parts: list[Any] = []
    text: list[str] = []
    position = 0
    while position < len(chars):
        char, escaped = chars[position]
        if not escaped and char == "{":
            if position + 1 < len(chars) and chars[position + 1] == ("}", False):
                parts += ["".join(text), _PLACEHOLDER]
                text = []
                position += 2
                continue
            raise _invalid("States.Format", "the template has a '{' without a matching '}'")
        if not escaped and char == "}":
            raise _invalid("States.Format", "the template has a '}' without a matching '{'")
        text.append(char)
        position += 1
    parts.append("".join(text))
    return tuple(parts)


@lru_cache(maxsize=1024)
def _runtime_template(template: str) -> Template:
    """A template a path or a nested call produced, read with the literal's escapes (``\\{``,
    ``\\}``, ``\\\\``, ``\\'``); any other backslash stays as it is."""
    chars: list[tuple[str, bool]] = []
    position = 0
    while position < len(template):
        char = template[position]
        if char == "\\" and position + 1 < len(template) and template[position + 1] in _ESCAPABLE:
            chars.append((template[position + 1], True))
            position += 2
        else:
            chars.append((char, False))
            position += 1
    return _template(chars)


def _rendered(value: Any, position: int) -> str:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return _compact(value)
    raise _invalid(
        "States.Format",
        f"argument {position} is {_show(value)}; only strings, numbers, booleans and null "
        "can be formatted",
    )


def _format(template: Template, values: Sequence[Any]) -> str:
    wanted = template.count(_PLACEHOLDER)
    if wanted != len(values):
        raise _invalid(
            "States.Format",
            f"the template has {wanted} '{{}}' but {len(values)} values were given",
        )
    rendered = iter(_rendered(value, position) for position, value in enumerate(values, 2))
    return "".join(next(rendered) if part is _PLACEHOLDER else part for part in template)


def _states_format(args: Sequence[Any]) -> Any:
    template = _text("States.Format", "the first argument", args[0])
    return _format(_runtime_template(template), args[1:])


# --------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class _Function:
    """One intrinsic: how many arguments it takes (``most`` None: any number) and what it does."""

    least: int
    most: int | None
    run: Callable[[Sequence[Any]], Any]

    def arity(self) -> str:
        if self.most is None:
            return f"at least {self.least} argument" + ("" if self.least == 1 else "s")
        if self.least == self.most:
            return "no arguments" if self.most == 0 else f"{self.most} argument(s)"
        return f"{self.least} to {self.most} arguments"


FUNCTIONS: Final[Mapping[str, _Function]] = {
    "States.Array": _Function(0, None, _states_array),
    "States.ArrayContains": _Function(2, 2, _array_contains),
    "States.ArrayGetItem": _Function(2, 2, _array_get_item),
    "States.ArrayLength": _Function(1, 1, _array_length),
    "States.ArrayPartition": _Function(2, 2, _array_partition),
    "States.ArrayRange": _Function(3, 3, _array_range),
    "States.ArrayUnique": _Function(1, 1, _array_unique),
    "States.Base64Decode": _Function(1, 1, _base64_decode),
    "States.Base64Encode": _Function(1, 1, _base64_encode),
    "States.Format": _Function(1, None, _states_format),
    "States.Hash": _Function(2, 2, _hash),
    "States.JsonMerge": _Function(3, 3, _json_merge),
    "States.JsonToString": _Function(1, 1, _json_to_string),
    "States.MathAdd": _Function(2, 2, _math_add),
    "States.MathRandom": _Function(2, 3, _math_random),
    "States.StringSplit": _Function(2, 2, _string_split),
    "States.StringToJson": _Function(1, 1, _string_to_json),
    "States.UUID": _Function(0, 0, _states_uuid),
}


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Literal:
    value: Any


@dataclass(frozen=True)
class _String:
    chars: tuple[tuple[str, bool], ...]  # (character, escaped)
    open_escape: str | None  # the first backslash sequence that is not an escape

    @property
    def value(self) -> str:
        return "".join(char for char, _ in self.chars)


@dataclass(frozen=True)
class _Path:
    path: str


@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple[_Argument, ...]


_Argument = _Literal | _String | _Path | _Call


class _Parser:
    """Recursive descent over one field's text; raises :class:`_SyntaxProblem`."""

    def __init__(self, text: str, where: str) -> None:
        self.text = text
        self.where = where
        self.position = 0

    def parse(self) -> _Call:
        call = self._call(depth=1)
        self._skip_space()
        if self.position != len(self.text):
            raise _SyntaxProblem(f"unexpected {self.text[self.position :]!r} after the call")
        return call

    def _skip_space(self) -> None:
        while self.position < len(self.text) and self.text[self.position].isspace():
            self.position += 1

    def _peek(self) -> str:
        return self.text[self.position] if self.position < len(self.text) else ""

    def _call(self, depth: int) -> _Call:
        match = _NAME.match(self.text, self.position)
        name = match.group() if match else ""
        if name not in FUNCTIONS:
            known = ", ".join(FUNCTIONS)
            raise _SyntaxProblem(f"{name!r} is not an intrinsic function (known: {known})")
        if depth > MAX_NESTING:
            raise _SyntaxProblem(f"intrinsic functions nest at most {MAX_NESTING} deep")
        self.position += len(name)
        if self._peek() != "(":
            raise _SyntaxProblem(f"{name} must be followed immediately by '('")
        self.position += 1
        return _Call(name, self._arguments(name, depth))

    def _arguments(self, name: str, depth: int) -> tuple[_Argument, ...]:
        args: list[_Argument] = []
        self._skip_space()
        if self._peek() == ")":
            self.position += 1
            return ()
        while True:
            self._skip_space()
            args.append(self._argument(depth))
            self._skip_space()
            char = self._peek()
            self.position += 1
            if char == ")":
                return tuple(args)
            if char != ",":
                found = repr(char) if char else "the end of the text"
                raise _SyntaxProblem(f"expected ',' or ')' in {name}(...), found {found}")

    def _argument(self, depth: int) -> _Argument:
        char = self._peek()
        if char == "'":
            return self._string()
        if char == "$":
            return self._path()
        if char == "-" or char.isdigit():
            return self._number()
        word = _NAME.match(self.text, self.position)
        if word and word.group() in _WORDS and not self.text.startswith("(", word.end()):
            self.position = word.end()
            return _Literal(_WORDS[word.group()])
        if word:
            return self._call(depth + 1)
        found = repr(char) if char else "the end of the text"
        raise _SyntaxProblem(f"expected an argument, found {found}")

    def _string(self) -> _String:
        chars: list[tuple[str, bool]] = []
        open_escape: str | None = None
        self.position += 1  # the opening apostrophe
        while self.position < len(self.text):
            char = self.text[self.position]
            self.position += 1
            if char == "'":
                return _String(tuple(chars), open_escape)
            if char != "\\":
                chars.append((char, False))
                continue
            following = self._peek()
            if following and following in _ESCAPABLE:
                chars.append((following, True))
                self.position += 1
            else:
                open_escape = open_escape or "\\" + following
                chars.append(("\\", False))
        raise _SyntaxProblem("a string argument is missing its closing apostrophe")

    def _number(self) -> _Literal:
        match = _NUMBER.match(self.text, self.position)
        if match is None:
            raise _SyntaxProblem(f"{self.text[self.position :]!r} does not start with a number")
        self.position = match.end()
        fraction, exponent = match.groups()
        number = match.group()
        return _Literal(float(number) if fraction or exponent else int(number))

    def _path(self) -> _Path:
        start = self.position
        depth = 0
        quote = ""
        while self.position < len(self.text):
            char = self.text[self.position]
            if quote:
                quote = "" if char == quote else quote
            elif depth and char in "'\"":
                quote = char
            elif char == "[":
                depth += 1
            elif char == "]":
                depth -= 1
            elif not depth and (char in ",)" or char.isspace()):
                break
            self.position += 1
        path = self.text[start : self.position]
        self._check_path(path)
        return _Path(path)

    def _check_path(self, path: str) -> None:
        if path.startswith("$$") or path == "$" or path[1:2] in (".", "["):
            steps = path
        else:
            variable = _VARIABLE.match(path)
            if variable is None:
                raise _SyntaxProblem(f"{path!r} is not a JSONPath or a variable reference")
            steps = "$" + path[variable.end() :]
        try:
            compile_path(steps, self.where)
        except SpecError as error:
            raise _SyntaxProblem(f"{path!r}: {error.rule}") from None


# --------------------------------------------------------------------------- compiling


def _node(argument: _Argument) -> Node:
    if isinstance(argument, _Literal):
        value = argument.value
        return lambda resolve: value
    if isinstance(argument, _String):
        return _string_node(argument)
    if isinstance(argument, _Path):
        return _path_node(argument.path)
    return _call_node(argument)


def _string_node(argument: _String) -> Node:
    value = argument.value
    if argument.open_escape is None:
        return lambda resolve: value
    # The guide: "If an open escape backslash \ is found in the intrinsic invocation string, the
    # interpreter will return a runtime error." The cause is ours (not documented).
    reason = (
        f"the string '{value}' has the open escape '{argument.open_escape}'; only \\', \\{{, "
        "\\} and \\\\ are escapes"
    )

    def refuse(resolve: Resolve) -> Any:
        raise _Failure(reason)

    return refuse


def _path_node(path: str) -> Node:
    def select(resolve: Resolve) -> Any:
        try:
            return resolve(path)
        except PathNotFound:
            raise _PathMiss(path) from None

    return select


def _call_node(call: _Call) -> Node:
    function = FUNCTIONS[call.name]
    args = [_node(argument) for argument in call.args]
    if len(args) < function.least or (function.most is not None and len(args) > function.most):
        return _refusal(_invalid(call.name, f"takes {function.arity()} (got {len(args)})"))
    first = call.args[0] if call.args else None
    if call.name == "States.Format" and isinstance(first, _String) and not first.open_escape:
        return _format_node(first, args[1:])
    run = function.run

    def invoke(resolve: Resolve) -> Any:
        return run([arg(resolve) for arg in args])

    return invoke


def _format_node(template_text: _String, args: Sequence[Node]) -> Node:
    """Format with a literal template, split once here, so that an escaped ``\\{`` stays text."""
    try:
        template = _template(template_text.chars)
    except _Failure as failure:
        return _refusal(failure)

    def invoke(resolve: Resolve) -> Any:
        return _format(template, [arg(resolve) for arg in args])

    return invoke


def _refusal(failure: _Failure) -> Node:
    """A call that fails every time it runs: AWS reports these at run time, not at load."""

    def refuse(resolve: Resolve) -> Any:
        raise failure

    return refuse


class Intrinsic:
    """One compiled intrinsic field. :meth:`evaluate` resolves its paths and runs its calls;
    a failure is :class:`~runner.errors.StatesError` with AWS's error name and cause."""

    __slots__ = ("_node", "field", "text")

    def __init__(self, text: str, field: str, node: Node) -> None:
        self.text = text
        self.field = field
        self._node = node

    def __repr__(self) -> str:
        return f"Intrinsic({self.text!r})"

    def evaluate(self, resolve: Resolve) -> Any:
        try:
            return self._node(resolve)
        except _PathMiss as miss:
            raise StatesError(INTRINSIC_FAILURE, self._missing_cause(miss.path, resolve)) from None
        except _Failure as failure:
            # Not documented: AWS's frame with our reason, and the field, which AWS leaves out.
            field = f" (field '{self.field}')" if self.field else ""
            raise StatesError(
                INTRINSIC_FAILURE,
                f"The function '{self.text}' had the following error: {failure.reason}{field}",
            ) from None

    def _missing_cause(self, path: str, resolve: Resolve) -> str:
        # AWS's exact text, as executions report it (the interpreter adds the state prefix).
        try:
            state_input = _compact(resolve("$"))
        except PathNotFound:
            state_input = "null"
        return (
            f"The function '{self.text}' had the following error: The JsonPath argument for "
            f"the field '{path}' could not be found in the input '{state_input}'"
        )


def compile_intrinsic(text: str, where: str) -> Intrinsic:
    """Compile one field's intrinsic; ``where`` is the field's location, e.g.
    ``/States/Greet/Parameters/greeting.$``.

    Raises :class:`~runner.errors.SpecError` (at ``where``) for what CreateStateMachine refuses:
    a malformed call, an unknown function, a malformed path, nesting deeper than 10.
    """
    field = where.rsplit("/", 1)[-1]
    try:
        if not is_intrinsic(text):
            raise _SyntaxProblem("it is not of the form States.Name(arguments)")
        call = _Parser(text, where).parse()
    except _SyntaxProblem as problem:
        raise SpecError(
            where,
            f"The value for the field '{field}' must be a valid JSONPath or a valid intrinsic "
            f"function call: {problem}",
        ) from None
    return Intrinsic(text, field, _call_node(call))


@lru_cache(maxsize=1024)
def _cached(text: str, where: str) -> Intrinsic:
    return compile_intrinsic(text, where)


def evaluate_intrinsic(text: str, resolve: Resolve, where: str = "") -> Any:
    """Compile (once per text, cached) and evaluate; for callers without a compile step."""
    return _cached(text, where).evaluate(resolve)
