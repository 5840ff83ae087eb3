"""JSONPath for ItemSelector, ItemsPath and the ``...Path`` fields, compiled once per spec.

Simple dotted paths (``$.a.b``, ``$$.Map.Item.Value.id``, ``$.list[0]``) take a fast getter,
because ItemSelector runs once per item on the hot path; anything richer (filters, wildcards,
slices) goes through jsonpath-ng. A path that selects nothing raises :class:`PathNotFound`,
which the engine reports as ``States.Runtime`` the way Step Functions does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from jsonpath_ng.ext import parse as parse_jsonpath

from runner.errors import SpecError

__all__ = ["PathNotFound", "compile_path", "compile_template", "context_object"]

_SIMPLE = re.compile(r"^\$\$?((?:\.[A-Za-z_][\w-]*|\[\d+\])*)$")
_STEP = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]")

Getter = Callable[[Any, Any], Any]  # (run_input, context) -> value


class PathNotFound(LookupError):
    """A path selected nothing. ``str()`` names the path."""


def context_object(index: int, value: Any, key: str | None, source: str) -> dict[str, Any]:
    """The ``$$`` object inside ItemSelector."""
    item: dict[str, Any] = {"Index": index, "Value": value, "Source": source}
    if key is not None:
        item["Key"] = key
    return {"Map": {"Item": item}}


def compile_path(path: str, field: str) -> Getter:
    """A getter for ``path``: ``$``-paths read the run input, ``$$``-paths the context object."""
    if not isinstance(path, str) or not path.startswith("$"):
        raise SpecError(field, f"must be a JSONPath starting with $ or $$ (got {path!r})")
    on_context = path.startswith("$$")
    match = _SIMPLE.match(path)
    if match:
        steps = [(name, int(idx) if idx else None) for name, idx in _STEP.findall(match.group(1))]
        return _simple_getter(path, steps, on_context)
    try:
        expression = parse_jsonpath(path[1:] if on_context else path)
    except Exception as exc:  # jsonpath-ng raises several unrelated types for bad syntax
        raise SpecError(field, f"not a valid JSONPath ({exc})") from None

    def get(run_input: Any, context: Any) -> Any:
        found = [m.value for m in expression.find(context if on_context else run_input)]
        if not found:
            raise PathNotFound(path)
        # Reference paths yield one value; wildcard/filter paths yield a list, as in ASL.
        return found[0] if len(found) == 1 and not _is_multi(path) else found

    return get


def _is_multi(path: str) -> bool:
    return any(token in path for token in ("*", "[?", "..", ":", ","))


def _simple_getter(path: str, steps: list[tuple[str, int | None]], on_context: bool) -> Getter:
    def get(run_input: Any, context: Any) -> Any:
        value = context if on_context else run_input
        for name, index in steps:
            try:
                value = value[name] if index is None else value[index]
            except (KeyError, IndexError, TypeError):
                raise PathNotFound(path) from None
        return value

    return get


def compile_template(template: Any, field: str) -> Callable[[Any, Any], Any]:
    """A builder for a Parameters-style template (ItemSelector, BatchInput).

    Keys ending in ``.$`` take a path; every other value is literal. Compiled once, so the
    per-item cost is one dict build.
    """
    if isinstance(template, Mapping):
        parts: list[tuple[str, bool, Any]] = []
        for key, value in template.items():
            if key.endswith(".$"):
                if isinstance(value, str) and value.startswith("States."):
                    raise SpecError(f"{field}.{key}", "intrinsic functions are not supported yet")
                parts.append((key[:-2], True, compile_path(value, f"{field}.{key}")))
            else:
                parts.append((key, False, compile_template(value, f"{field}.{key}")))

        def build(run_input: Any, context: Any) -> dict[str, Any]:
            return {key: fn(run_input, context) for key, _, fn in parts}

        return build
    if isinstance(template, list):
        builders = [compile_template(v, f"{field}[{i}]") for i, v in enumerate(template)]
        return lambda run_input, context: [b(run_input, context) for b in builders]
    return lambda run_input, context: template
