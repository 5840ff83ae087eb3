"""Run one child (one batch) through a worker. This is the code path every executor and the
Lambda handler share: it never raises for a worker's failure, it reports it.

The outcome's ``error``/``cause`` follow AWS Lambda's shape: ``Error`` is the exception's type
name (or :class:`~runner.errors.WorkerError`'s chosen name) and ``Cause`` is the JSON
``{"errorMessage", "errorType", "stackTrace"}`` so a remote traceback survives the trip.

Two failures are named as AWS names them rather than by a Python class:

- a worker that exits (``sys.exit``, ``exit()``, even with status 0) fails its batch with
  ``Runtime.ExitError``, as a Lambda function whose runtime exits does; it never ends the run,
  let alone the driver, with a false success;
- output that is not JSON is ``Runtime.MarshalError``; output over ``output_limit`` bytes of
  JSON (AWS: 256 KiB for a state's output) is ``States.DataLimitExceeded``, which no Retry with
  ``States.ALL`` catches.

``KeyboardInterrupt`` is not a worker failure: it is the user stopping the run, so it goes up
to the scheduling loop, which aborts the run and records the batch ABORTED.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runner.batcher import Batch, encode_input
from runner.constants import AWS_MAX_OUTPUT_BYTES
from runner.errors import WorkerError, lambda_error_cause
from runner.jsontext import dumps
from runner.registry import resolve_worker, worker_info
from runner.shards import BatchRef, materialize

__all__ = ["ChildOutcome", "run_child", "run_ref"]


@dataclass(slots=True)
class ChildOutcome:
    ok: bool
    output_json: str | None = None  # encoded where the worker ran: once, and cheap to ship
    error: str | None = None
    cause: str | None = None
    seconds: float = 0.0
    input_json: str | None = None  # set when the worker built the child input (shard reading)
    final: bool = False  # failed before the worker ran (a selection error): never retried


def run_ref(
    worker: Any, ref: BatchRef, output_limit: int | None = AWS_MAX_OUTPUT_BYTES
) -> ChildOutcome:
    """Runs on a worker (shard-parallel reading): read the batch's items from storage, then
    run the child (:func:`run_child`).

    A read error raises (the driver fails the run with States.ItemReaderFailed, as a driver-side
    read would); a selection error, or an item JSON cannot encode (see
    :func:`~runner.batcher.encode_input`), fails the batch without running it.
    """
    child_input, error, cause = materialize(ref)
    items = child_input["Items"] if ref.batched else [child_input]
    batch = Batch(0, ref.first_index, items, ref.batch_input, ref.batched, error, cause)
    input_json = encode_input(batch)  # the driver's encoding, and its checks, done here
    child_input, error, cause = batch.child_input(), batch.error, batch.cause
    if error is not None:
        return ChildOutcome(False, None, error, cause, input_json=input_json, final=True)
    outcome = run_child(worker, child_input, output_limit=output_limit)
    outcome.input_json = input_json
    return outcome


def run_child(
    worker: str | Callable[..., Any],
    child_input: Any,
    *,
    allow_import_path: bool = True,
    output_limit: int | None = AWS_MAX_OUTPUT_BYTES,
) -> ChildOutcome:
    """Run ``worker`` on ``child_input``; worker errors become a failed outcome.

    ``output_limit``: output larger than this many bytes of JSON fails the batch with
    ``States.DataLimitExceeded`` (``None``: no limit).
    """
    started = time.perf_counter()

    def failed(error: str, cause: str) -> ChildOutcome:
        return ChildOutcome(False, None, error, cause, time.perf_counter() - started)

    try:
        fn = resolve_worker(worker, allow_import_path) if isinstance(worker, str) else worker
        if worker_info(fn).columnar:
            output = fn(*_columnar_args(child_input))
        else:
            output = fn(child_input)
    except WorkerError as exc:
        return failed(exc.error, exc.cause or _cause(exc))
    except SystemExit as exc:  # a worker must not end the process: its batch fails instead
        return failed("Runtime.ExitError", _cause(exc, "Runtime.ExitError", _exit_message(exc)))
    except Exception as exc:
        return failed(type(exc).__name__, _cause(exc))
    try:
        output_json = dumps(output)
    except (TypeError, ValueError, RecursionError) as exc:  # NaN, a set, a cycle, ...
        # Lambda's words for output it cannot serialise; the traceback would only show ours.
        message = f"Unable to marshal response: {exc}"
        return failed("Runtime.MarshalError", _message_cause(message, "Runtime.MarshalError"))
    if output_limit is not None and len(output_json) > output_limit // 4:
        size = len(output_json.encode())  # exact bytes only when the text might be over
        if size > output_limit:
            message = (
                f"the worker's output is {size:,} bytes of JSON, over the limit of "
                f"{output_limit:,} bytes that AWS puts on a state's output; write large "
                "results to storage and return their location, or lower MaxItemsPerBatch"
            )
            return failed(
                "States.DataLimitExceeded", _message_cause(message, "States.DataLimitExceeded")
            )
    return ChildOutcome(True, output_json, seconds=time.perf_counter() - started)


def _exit_message(exc: SystemExit) -> str:
    code = exc.code
    status = 0 if code is None else code
    return (
        f"the worker called sys.exit({status!r}): Runtime exited with error: exit status {status}"
    )


def _columnar_args(child_input: Any) -> tuple[Any, Any]:
    import pyarrow as pa

    if isinstance(child_input, dict) and "Items" in child_input:
        return pa.Table.from_pylist(child_input["Items"]), child_input.get("BatchInput")
    return pa.Table.from_pylist([child_input]), None


_cause = lambda_error_cause


def _message_cause(message: str, error_type: str) -> str:
    return json.dumps({"errorMessage": message, "errorType": error_type})
