"""Run one child (one batch) through a worker. This is the code path every executor and the
Lambda handler share: it never raises for a worker's failure, it reports it.

The outcome's ``error``/``cause`` follow AWS Lambda's shape: ``Error`` is the exception's type
name (or :class:`~runner.errors.WorkerError`'s chosen name) and ``Cause`` is the JSON
``{"errorMessage", "errorType", "stackTrace"}`` so a remote traceback survives the trip.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runner.errors import WorkerError
from runner.registry import resolve_worker, worker_info

__all__ = ["ChildOutcome", "run_child"]


@dataclass(slots=True)
class ChildOutcome:
    ok: bool
    output_json: str | None = None  # encoded where the worker ran: once, and cheap to ship
    error: str | None = None
    cause: str | None = None
    seconds: float = 0.0
    input_json: str | None = None  # set when the worker built the child input (shard reading)
    final: bool = False  # failed before the worker ran (a selection error): never retried


def run_child(
    worker: str | Callable[..., Any], child_input: Any, *, allow_import_path: bool = True
) -> ChildOutcome:
    """Run ``worker`` on ``child_input``; worker errors become a failed outcome."""
    started = time.perf_counter()
    try:
        fn = resolve_worker(worker, allow_import_path) if isinstance(worker, str) else worker
        if worker_info(fn).columnar:
            output = fn(*_columnar_args(child_input))
        else:
            output = fn(child_input)
        output_json = _encode(output)
    except WorkerError as exc:
        return ChildOutcome(
            False, None, exc.error, exc.cause or _cause(exc), time.perf_counter() - started
        )
    except _NotJson as exc:
        return ChildOutcome(
            False, None, "Runtime.MarshalError", _cause(exc), time.perf_counter() - started
        )
    except Exception as exc:
        return ChildOutcome(
            False, None, type(exc).__name__, _cause(exc), time.perf_counter() - started
        )
    return ChildOutcome(True, output_json, seconds=time.perf_counter() - started)


def _columnar_args(child_input: Any) -> tuple[Any, Any]:
    import pyarrow as pa

    if isinstance(child_input, dict) and "Items" in child_input:
        return pa.Table.from_pylist(child_input["Items"]), child_input.get("BatchInput")
    return pa.Table.from_pylist([child_input]), None


class _NotJson(TypeError):
    pass


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _encode(output: Any) -> str:
    """The output as compact JSON; NaN, Infinity and non-JSON types are the worker's error."""
    try:
        return _ENCODER.encode(output)
    except (TypeError, ValueError) as exc:
        raise _NotJson(f"worker output is not valid JSON: {exc}") from None


def _cause(exc: BaseException) -> str:
    return json.dumps(
        {
            "errorMessage": str(exc),
            "errorType": type(exc).__name__,
            "stackTrace": traceback.format_exception(type(exc), exc, exc.__traceback__),
        }
    )
