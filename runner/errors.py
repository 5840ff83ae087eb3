"""The one error tree of shardmap. Imports nothing from the package.

::

    ShardmapError
    ├── SpecError (ValueError)            the user must fix a pipeline / ASL definition
    ├── WorkerNotFound (LookupError)      an unknown worker name or import path
    ├── ReaderError                       bad or missing input  -> States.ItemReaderFailed
    │   └── InputNotFound (FileNotFoundError)   bucket, key or file missing
    ├── WriterError                       results not written   -> States.ResultWriterFailed
    ├── ExecutorError                     an executor could not run batches
    └── RunFailed                         the map run ended FAILED (carries Error and Cause)

Worker exceptions are not raised through this tree: they become the ``Error`` and ``Cause`` of a
failed batch record (see :class:`WorkerError` for choosing the Error name yourself).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ExecutorError",
    "InputNotFound",
    "ReaderError",
    "RunFailed",
    "ShardmapError",
    "SpecError",
    "WorkerError",
    "WorkerNotFound",
    "WriterError",
]


class ShardmapError(Exception):
    """Root of every error shardmap raises on purpose."""


class SpecError(ShardmapError, ValueError):
    """A pipeline or ASL definition breaks a rule. ``path`` is the field path, ``rule`` the rule."""

    def __init__(self, path: str, rule: str) -> None:
        self.path = path
        self.rule = rule
        super().__init__(f"{path}: {rule}" if path else rule)

    def __reduce__(self) -> tuple[Any, ...]:  # errors cross process and Dask boundaries
        return (type(self), (self.path, self.rule))


class WorkerNotFound(ShardmapError, LookupError):
    """No registered worker (or importable ``module:function``) has this name."""


class ReaderError(ShardmapError):
    """An item reader met data it cannot turn into items.

    ``url`` names the file, ``position`` where in it (``"line 12"``, ``"item 40"``,
    ``"row group 3"``, ``"byte 1024"``), ``reason`` what is wrong.
    """

    error_name = "States.ItemReaderFailed"

    def __init__(self, url: str, reason: str, position: str | None = None) -> None:
        self.url = url
        self.position = position
        self.reason = reason
        where = f"{url}, {position}" if position else url
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_reader_error, (type(self), self.url, self.reason, self.position))


class InputNotFound(ReaderError, FileNotFoundError):
    """The bucket, key, prefix or local file of the item source does not exist."""

    def __init__(self, url: str, reason: str = "no such bucket, key or file") -> None:
        super().__init__(url, reason)


class WriterError(ShardmapError):
    """Results could not be written to the destination."""

    error_name = "States.ResultWriterFailed"


class ExecutorError(ShardmapError):
    """An executor could not be started or lost contact with its workers."""


class RunFailed(ShardmapError):
    """The map run ended FAILED. ``error``/``cause`` are the AWS-style run error and cause."""

    def __init__(self, error: str, cause: str, result: object | None = None) -> None:
        self.error = error
        self.cause = cause
        self.result = result
        super().__init__(f"{error}: {cause}")

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


def _rebuild_reader_error(
    cls: type[ReaderError], url: str, reason: str, position: str | None
) -> ReaderError:
    error = cls.__new__(cls, url, reason)
    ReaderError.__init__(error, url, reason, position)
    return error
