"""The Lambda entry points of a deployed pipeline: the same worker code as every local executor.

Step Functions invokes the worker Lambda once per child execution with AWS's child input
(``{"Items": [...]}`` or ``{"BatchInput": {...}, "Items": [...]}`` with an ItemBatcher, the lone
item without one). :func:`lambda_handler` runs it through :func:`runner.child.run_child`, the
code path of the local, process and Dask executors, so a worker behaves the same everywhere.

Errors: ``run_child`` names a failure as the local executor records it (the exception's type
name, :class:`~runner.errors.WorkerError`'s chosen name, ``Runtime.MarshalError`` for an output
that is not JSON). The Lambda Python runtime reports a raised exception's *class name* as
``errorType``, which Step Functions turns into the child's ``Error``; so the handler raises an
exception whose class is named after that error (:func:`child_failure`). Retry's
``ErrorEquals`` and the tolerated-failure thresholds then see the same names on AWS as locally.
The worker's traceback goes to the log (CloudWatch), its message into ``errorMessage``.

The worker is named by the ``SHARDMAP_WORKER`` environment variable (a registered name or
``module:function``), set by :func:`runner.aws.deploy.deploy`; never by the event.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from typing import Any

from runner.child import run_child
from runner.errors import WorkerNotFound
from runner.settings import env_var, lambda_settings

__all__ = [
    "REDUCE_ENV",
    "WORKER_ENV",
    "ChildFailed",
    "child_failure",
    "lambda_handler",
    "reduce_handler",
]

# The variables deploy sets (runner.settings.LambdaSettings reads them).
WORKER_ENV = env_var("worker")  # SHARDMAP_WORKER
REDUCE_ENV = env_var("reduce")  # SHARDMAP_REDUCE
SOURCE_ENV = env_var("source")  # the pipeline's item source, handed to the reducer
BATCH_INPUT_ENV = env_var("batch_input")  # the static ItemBatcher.BatchInput, as JSON

log = logging.getLogger("shardmap.lambda")


class ChildFailed(Exception):
    """A child (batch) failed. Subclasses are named after the AWS ``Error`` they report.

    ``error`` is that name, ``cause`` the ``Cause`` shardmap records locally (Lambda-shaped
    JSON with the worker's traceback).
    """

    error: str = "States.TaskFailed"

    def __init__(self, message: str, cause: str = "") -> None:
        super().__init__(message)
        self.cause = cause


@cache
def _failure_class(error: str) -> type[ChildFailed]:
    # The runtime reports ``type(exc).__name__``; a dotted name such as "Custom.Failure" is a
    # valid class name for type(), and it is exactly the Error Step Functions must see.
    return type(error, (ChildFailed,), {"error": error, "__module__": __name__})


def child_failure(error: str, cause: str | None) -> ChildFailed:
    """The exception to raise for a failed child: its class name is ``error``.

    >>> exc = child_failure("Custom.Failure", '{"errorMessage": "item 3 failed"}')
    >>> type(exc).__name__, str(exc)
    ('Custom.Failure', 'item 3 failed')
    """
    return _failure_class(error)(_message_of(cause), cause or "")


def _message_of(cause: str | None) -> str:
    if not cause:
        return ""
    try:
        parsed = json.loads(cause)
    except ValueError:
        return cause
    if isinstance(parsed, dict) and "errorMessage" in parsed:
        return str(parsed["errorMessage"])
    return cause


def _log_cause(error: str, cause: str | None) -> None:
    try:
        trace = json.loads(cause or "").get("stackTrace")
    except (ValueError, AttributeError):
        trace = None
    text = "".join(trace) if isinstance(trace, list) else (cause or "")
    log.error("child failed with %s\n%s", error, text)


def lambda_handler(event: Any, context: Any = None) -> Any:
    """Run the worker named by ``$SHARDMAP_WORKER`` on one child input; return its output.

    Parameters
    ----------
    event
        AWS's child input: ``{"Items": [...], "BatchInput": {...}}`` with an ItemBatcher (the
        ``BatchInput`` only when configured), else the one item.
    context
        The Lambda context (unused).

    Raises
    ------
    ChildFailed
        A subclass named after the child's Error when the worker fails.

    Examples
    --------
    With ``SHARDMAP_WORKER=echo`` set on the function, as deploy sets it:

    >>> lambda_handler({"Items": [{"n": 1}], "BatchInput": {}})     # doctest: +SKIP
    """
    worker = lambda_settings().worker
    if not worker:
        raise WorkerNotFound(f"set {WORKER_ENV} to a registered worker name or module:function")
    outcome = run_child(worker, event)
    if not outcome.ok:
        error = outcome.error or "States.TaskFailed"
        _log_cause(error, outcome.cause)
        raise child_failure(error, outcome.cause)
    assert outcome.output_json is not None
    return json.loads(outcome.output_json)


def reduce_handler(event: Any, context: Any = None) -> Any:
    """Run the reducer named by ``$SHARDMAP_REDUCE`` over a finished Map Run's results.

    ``event`` is the Distributed Map state's output, ``{"MapRunArn", "ResultWriterDetails":
    {"Bucket", "Key"}}`` (the manifest's location), at the top level or under one key.
    """
    from runner.reduce import ReduceContext, run_reduce

    config = lambda_settings()
    name = config.reduce
    if not name:
        raise WorkerNotFound(f"set {REDUCE_ENV} to a registered reducer or module:function")
    details, map_run_arn = _writer_details(event)
    bucket, key = details["Bucket"], details["Key"]
    run_id = map_run_arn.rsplit(":", 1)[-1] if map_run_arn else key.rsplit("/", 2)[-2]
    prefix = key.rsplit("/", 2)[0] if key.count("/") >= 2 else ""
    context_ = ReduceContext(
        run_id=run_id,
        manifest_url=f"s3://{bucket}/{key}",
        destination=f"s3://{bucket}/{prefix}".rstrip("/"),
        source=config.source,
        run_input=None,
        batch_input=config.batch_input,
    )
    outcome = run_reduce(name, context_)
    if not outcome.succeeded:
        error = outcome.error or "States.TaskFailed"
        _log_cause(error, outcome.cause)
        raise _failure_class(error)(outcome.cause or "", outcome.cause or "")
    return outcome.output


def _writer_details(event: Any) -> tuple[dict[str, str], str]:
    candidates = [event]
    if isinstance(event, dict):
        candidates += [value for value in event.values() if isinstance(value, dict)]
    for candidate in candidates:
        if isinstance(candidate, dict) and isinstance(candidate.get("ResultWriterDetails"), dict):
            return candidate["ResultWriterDetails"], str(candidate.get("MapRunArn", ""))
    raise ValueError(
        "the reduce step needs the Map state's output "
        '({"MapRunArn", "ResultWriterDetails": {"Bucket", "Key"}})'
    )
