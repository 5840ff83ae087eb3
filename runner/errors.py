"""The one error tree of shardmap. Imports nothing from the package.

::

    ShardmapError
    ├── SpecError (ValueError)            the user must fix a pipeline / ASL definition
    │   └── PatternError                  an event pattern breaks EventBridge's rules (triggers)
    ├── WorkerNotFound (LookupError)      an unknown worker name or import path
    ├── MissingExtra (ImportError)        a workload/executor whose ``shardmap[extra]`` is missing
    ├── ReaderError                       bad or missing input  -> States.ItemReaderFailed
    │   ├── InputNotFound (FileNotFoundError)   bucket, key or file missing
    │   └── SourceUnavailable             storage unreachable, access denied   (exit 3)
    ├── WriterError                       results not written -> States.ResultWriterFailed (exit 3)
    ├── ExecutorError                     an executor could not run batches    (exit 3)
    │   ├── WorkerProcessDied*            a worker process died running a batch
    │   └── TaskExited*                   a task called sys.exit in a pool worker
    ├── JournalError                      a run journal missing, another run's, or in use
    │   └── JournalUnavailable            the journal cannot be written: disk full (exit 3)
    ├── AslValidatorMissing (FileNotFoundError)   node or asl-validator is not installed
    ├── RunFailed                         the map run ended FAILED (carries Error and Cause; exit 1)
    └── StatesError                       a state machine failed at run time, by AWS's error name
                                          and cause (States.Runtime, ...; exit 1)

    * defined in runner/executors/procpool.py beside the pool that raises them (they carry a
      pid, an exit code and the pool's own wording); every other class is defined here, and
      runner.journal, runner.aws.checks and runner.triggers.patterns re-export their own.

Every class carries the CLI's ``exit_code``: 0 the run succeeded, 1 the run failed, 2 bad usage or
bad input (the user must fix a pipeline, an argument or the data), 3 storage or a service could
not be used (unreachable, access denied, disk full): nothing is wrong with the input, try again.
:func:`storage_error` is the one place that turns an ``OSError`` (from fsspec, s3fs, boto3 or
the OS) into the most specific class.

URLs in messages go through :func:`redact_url`, so ``user:password@`` never reaches a terminal,
a log, the journal or a result file.

Worker exceptions are not raised through this tree: they become the ``Error`` and ``Cause`` of a
failed batch record (see :class:`WorkerError` for choosing the Error name yourself).
"""

from __future__ import annotations

import errno
import json
import re
import traceback
from typing import Any

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_RUN_FAILED",
    "EXIT_SUCCEEDED",
    "EXIT_UNAVAILABLE",
    "AslValidatorMissing",
    "ExecutorError",
    "InputNotFound",
    "JournalError",
    "JournalUnavailable",
    "MissingExtra",
    "PatternError",
    "ReaderError",
    "RunFailed",
    "ShardmapError",
    "SourceUnavailable",
    "SpecError",
    "StatesError",
    "WorkerError",
    "WorkerNotFound",
    "WriterError",
    "lambda_error_cause",
    "redact_url",
    "storage_error",
]

EXIT_SUCCEEDED, EXIT_RUN_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 0, 1, 2, 3


class ShardmapError(Exception):
    """Root of every error shardmap raises on purpose."""

    #: What the CLI exits with when this error ends a command.
    exit_code = EXIT_BAD_INPUT


class SpecError(ShardmapError, ValueError):
    """A pipeline or ASL definition breaks a rule. ``path`` is the field path, ``rule`` the rule."""

    def __init__(self, path: str, rule: str) -> None:
        self.path = path
        self.rule = rule
        super().__init__(f"{path}: {rule}" if path else rule)

    def __reduce__(self) -> tuple[Any, ...]:  # errors cross process and Dask boundaries
        return (type(self), (self.path, self.rule))


class PatternError(SpecError):
    """An event pattern breaks EventBridge's rules; ``path`` names the offending field."""


class WorkerNotFound(ShardmapError, LookupError):
    """No registered worker (or importable ``module:function``) has this name."""


class MissingExtra(ShardmapError, ImportError):
    """A worker, sample or executor needs an optional extra that is not installed.

    ``extra`` names it (``images``), ``needed_by`` what needs it, ``module`` the missing import;
    the message ends with the ``pip install`` to run.
    """

    def __init__(self, extra: str, needed_by: str, module: str) -> None:
        self.extra = extra
        self.needed_by = needed_by
        self.module = module
        super().__init__(
            f"{needed_by} needs the {extra} extra (no module {module!r}): "
            f"pip install 'shardmap[{extra}]'"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.extra, self.needed_by, self.module))


class ReaderError(ShardmapError):
    """An item reader met data it cannot turn into items.

    ``url`` names the file, ``position`` where in it (``"line 12"``, ``"item 40"``,
    ``"row group 3"``, ``"byte 1024"``), ``reason`` what is wrong.
    """

    error_name = "States.ItemReaderFailed"

    def __init__(self, url: str, reason: str, position: str | None = None) -> None:
        self.url = url = redact_url(url)
        self.position = position
        self.reason = reason = redact_url(reason)
        where = f"{url}, {position}" if position else url
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_reader_error, (type(self), self.url, self.reason, self.position))


class InputNotFound(ReaderError, FileNotFoundError):
    """The bucket, key, prefix or local file of the item source does not exist."""

    def __init__(self, url: str, reason: str = "no such bucket, key or file") -> None:
        super().__init__(url, reason)


class SourceUnavailable(ReaderError):
    """The item source exists, or may, but cannot be read now: its storage is unreachable or
    refuses access. Nothing is wrong with the data; exit 3."""

    exit_code = EXIT_UNAVAILABLE


class WriterError(ShardmapError):
    """Results could not be written to the destination (unreachable, denied, disk full)."""

    error_name = "States.ResultWriterFailed"
    exit_code = EXIT_UNAVAILABLE


class ExecutorError(ShardmapError):
    """An executor could not be started or lost contact with its workers."""

    exit_code = EXIT_UNAVAILABLE


class JournalError(ShardmapError):
    """A journal is missing, belongs to another run, or is in use by a live driver."""


class JournalUnavailable(JournalError):
    """The journal cannot be written (disk full, read-only, I/O error): exit 3."""

    exit_code = EXIT_UNAVAILABLE


class AslValidatorMissing(ShardmapError, FileNotFoundError):
    """node or npm's asl-validator is not installed (``npm ci --prefix tools``)."""


class RunFailed(ShardmapError):
    """The map run ended FAILED. ``error``/``cause`` are the AWS-style run error and cause."""

    exit_code = EXIT_RUN_FAILED

    def __init__(self, error: str, cause: str, result: object | None = None) -> None:
        self.error = error
        self.cause = cause
        self.result = result
        super().__init__(f"{error}: {cause}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.error, self.cause))


class StatesError(ShardmapError):
    """A state machine failed at run time, by one of AWS's error names (``States.Runtime``,
    ``States.QueryEvaluationError``, ...) or a Task's own error name; ``cause`` is AWS's text.

    Raised inside :mod:`runner.states` while a state runs; a state's Catch may take it,
    otherwise the execution fails with ``error`` and ``cause`` as Step Functions would.
    """

    exit_code = EXIT_RUN_FAILED

    def __init__(self, error: str, cause: str = "") -> None:
        self.error = error
        self.cause = cause
        super().__init__(f"{error}: {cause}" if cause else error)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.error, self.cause))


class WorkerError(Exception):
    """Raise from a worker to fail its batch with a chosen AWS ``Error`` name and ``Cause``.

    >>> raise WorkerError("Images.Corrupt", "not a JPEG")  # doctest: +SKIP
    """

    def __init__(self, error: str, cause: str = "") -> None:
        self.error = error
        self.cause = cause
        super().__init__(f"{error}: {cause}" if cause else error)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.error, self.cause))


def lambda_error_cause(
    exc: BaseException, error_type: str | None = None, message: str | None = None
) -> str:
    """Lambda's error shape; ``error_type`` replaces a class name that means nothing to users."""
    return json.dumps(
        {
            "errorMessage": str(exc) if message is None else message,
            "errorType": error_type or type(exc).__name__,
            "stackTrace": traceback.format_exception(type(exc), exc, exc.__traceback__),
        }
    )


def _rebuild_reader_error(
    cls: type[ReaderError], url: str, reason: str, position: str | None
) -> ReaderError:
    error = cls.__new__(cls, url, reason)
    ReaderError.__init__(error, url, reason, position)
    return error


_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s]*@")


def redact_url(text: str) -> str:
    """``text`` with the ``user:password@`` of every URL in it masked.

    >>> redact_url("https://me:s3cret@example.com/data.csv")
    'https://***@example.com/data.csv'
    """
    return _CREDENTIALS.sub(r"\g<scheme>***@", text) if "@" in text else text


# Exception class names (anywhere in the cause chain) that mean "could not reach the service".
# Matched by name so that this module imports nothing: botocore, aiohttp and urllib3 spell them.
_UNREACHABLE_NAMES = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ProxyConnectionError",
        "ClientConnectorError",
        "ClientConnectionError",
        "ServerDisconnectedError",
        "ServerTimeoutError",
        "NewConnectionError",
        "MaxRetryError",
    }
)
_DENIED_NAMES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"})


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 16:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def storage_error(exc: BaseException, url: str, *, writing: bool = False) -> ShardmapError:
    """The shardmap error for a storage failure ``exc`` on ``url`` (the one translation table).

    Reading: a missing bucket, key or file is :class:`InputNotFound`; an unreachable endpoint,
    access denied or a full disk is :class:`SourceUnavailable`; anything else is a plain
    :class:`ReaderError` (bad input). Writing: always
    :class:`WriterError`, with the reason spelled out (disk full, access denied, unreachable).
    The original exception stays the ``__cause__`` when the caller raises ``from exc``.
    """
    chain = _chain(exc)
    names = {type(e).__name__ for e in chain}
    text = " ".join(str(e) for e in chain)
    errnos = {e.errno for e in chain if isinstance(e, OSError) and e.errno}
    if names & _UNREACHABLE_NAMES or any(
        isinstance(e, ConnectionError | TimeoutError) for e in chain
    ):
        reason = f"cannot reach the storage service ({_describe(chain, _UNREACHABLE_NAMES)})"
    elif errno.ENOSPC in errnos or errno.EDQUOT in errnos:
        reason = "no space left on the device"
    elif (
        errno.EACCES in errnos
        or errno.EPERM in errnos
        or errno.EROFS in errnos
        or any(isinstance(e, PermissionError) for e in chain)
        or any(name in text for name in _DENIED_NAMES)
    ):
        reason = f"access denied ({_describe(chain, frozenset())})"
    elif not writing and (
        any(isinstance(e, FileNotFoundError) for e in chain)
        or "NoSuchBucket" in text
        or "NoSuchKey" in text
    ):
        return InputNotFound(url)
    elif writing:
        reason = f"{type(exc).__name__}: {exc}"
    else:  # not the storage's fault as far as anyone can tell: the input's
        return ReaderError(url, f"cannot read: {type(exc).__name__}: {exc}")
    if writing:
        return WriterError(redact_url(f"{url}: {reason}"))
    return SourceUnavailable(url, reason)


def _describe(chain: list[BaseException], prefer: frozenset[str]) -> str:
    """The most telling exception of a chain, as ``Type: message``."""
    for e in reversed(chain):
        if type(e).__name__ in prefer:
            return redact_url(f"{type(e).__name__}: {e}")
    deepest = chain[-1]
    return redact_url(f"{type(deepest).__name__}: {deepest}")
