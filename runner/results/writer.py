"""ResultWriter: a Map Run's records written in AWS's Distributed Map layout to any fsspec
URL. The layout, and the choices where AWS documents nothing, are in :mod:`runner.results`.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from fsspec.core import url_to_fs

from runner.errors import SpecError, WriterError, storage_error
from runner.jsontext import dumps
from runner.readers._io import is_local_disk, protocols
from runner.types import BatchStatus, ChildRecord

TRANSFORMATIONS = ("NONE", "COMPACT", "FLATTEN")
OUTPUT_TYPES = ("JSON", "JSONL")
RESULT_TYPES = ("SUCCEEDED", "FAILED", "PENDING")
DEFAULT_ROLLOVER_BYTES = 5 * 1024**3
_SUFFIX = {"JSON": ".json", "JSONL": ".jsonl"}
_FRAMING = {"JSON": (b"[\n", b",\n", b"\n]\n"), "JSONL": (b"", b"\n", b"\n")}  # head, sep, tail
_RESULT_TYPE = {
    BatchStatus.SUCCEEDED: "SUCCEEDED",
    BatchStatus.FAILED: "FAILED",
    BatchStatus.TIMED_OUT: "FAILED",
    BatchStatus.ABORTED: "FAILED",
    BatchStatus.PENDING: "PENDING",
}
# Object stores where the first path segment is a bucket; anything else is a directory tree.
_BUCKET_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs"})
_SUCCESS_REDRIVE = ("NOT_REDRIVABLE", "Execution is SUCCEEDED and cannot be redriven")


# -- writing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultWriterDetails:
    """Where a finished ResultWriter put its manifest (AWS's ``ResultWriterDetails``).

    ``bucket``/``key`` are AWS's ``Bucket``/``Key`` (for a local destination: the destination
    directory and the manifest path relative to it); ``manifest_url`` is always directly
    readable with :func:`load_results`.
    """

    bucket: str
    key: str
    manifest_url: str
    map_run_arn: str = ""

    def map_state_output(self, map_run_arn: str | None = None) -> dict[str, Any]:
        """The Distributed Map state's output when results are exported.

        Examples
        --------
        >>> d = ResultWriterDetails("b", "jobs/r1/manifest.json", "s3://b/jobs/r1/manifest.json")
        >>> out = d.map_state_output("arn:aws:states:us-east-1:123456789012:mapRun:sm/Map:r1")
        >>> out["ResultWriterDetails"]
        {'Bucket': 'b', 'Key': 'jobs/r1/manifest.json'}
        """
        return {
            "MapRunArn": map_run_arn or self.map_run_arn,
            "ResultWriterDetails": {"Bucket": self.bucket, "Key": self.key},
        }


class ResultWriter:
    """Stream child records into AWS's result files; write ``manifest.json`` on :meth:`close`.

    Parameters
    ----------
    dest_url
        Destination ``<Bucket>/<Prefix>`` as a URL (``s3://bucket/prefix``, a local directory,
        ``memory://...``). Files go under ``<dest_url>/<map_run_id>/``.
    map_run_id, map_run_arn
        The Map Run's id (one path segment) and ARN (recorded in the manifest).
    transformation, output_type
        AWS's ``WriterConfig``: ``NONE`` | ``COMPACT`` | ``FLATTEN`` and ``JSON`` | ``JSONL``.
    rollover_bytes
        Start the next ``<STATUS>_<n>`` file when one would pass this size (AWS: 5 GB).
    storage_options
        Passed to fsspec.

    Notes
    -----
    Records are written as they arrive, never kept. Leaving a ``with`` block by an exception
    discards the open files without a manifest (no manifest means incomplete results); call
    :meth:`close` yourself to publish the results of a failed run, as AWS does.

    Any failure while writing or closing (a storage error, or any ``BaseException`` such as
    ``KeyboardInterrupt``) aborts the writer: every file it opened and did not finish is
    discarded at once, so no half-written upload is left to commit later (an s3fs file left
    open commits from ``__del__``, which at interpreter exit waits for ever on fsspec's
    stopped event loop). An aborted writer refuses further writes with :class:`WriterError`.

    Examples
    --------
    >>> with ResultWriter("s3://bucket/jobs", run_id, run_arn) as writer:  # doctest: +SKIP
    ...     for record in records:
    ...         writer.write(record)
    ...     details = writer.close()
    >>> details.map_state_output()["ResultWriterDetails"]  # doctest: +SKIP
    {'Bucket': 'bucket', 'Key': 'jobs/<run_id>/manifest.json'}
    """

    def __init__(
        self,
        dest_url: str,
        map_run_id: str,
        map_run_arn: str,
        *,
        transformation: str = "NONE",
        output_type: str = "JSON",
        rollover_bytes: int = DEFAULT_ROLLOVER_BYTES,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        _check_config(map_run_id, transformation, output_type, rollover_bytes)
        self.dest_url = dest_url.rstrip("/") or dest_url
        self.map_run_id = map_run_id
        self.map_run_arn = map_run_arn
        self.transformation = transformation
        self.output_type = output_type
        self.rollover_bytes = rollover_bytes
        self.run_url = f"{self.dest_url}/{map_run_id}"
        with _storage(self.dest_url, "resolve the destination"):
            self._fs, root = url_to_fs(self.dest_url, **dict(storage_options or {}))
        self._run_path = posixpath.join(root, map_run_id)
        self._bucket, self._key_prefix = _bucket_and_prefix(self._fs, root, self.dest_url)
        self._series = {kind: _FileSeries(self, kind) for kind in RESULT_TYPES}
        self._dirs_made = False
        # Every file opened and not yet closed, by path: what abort() must discard.
        self._open_files: dict[str, IO[bytes]] = {}
        self._failure: BaseException | None = None  # why the writer was aborted
        self.details: ResultWriterDetails | None = None

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort(exc if isinstance(exc, BaseException) else None)

    def write(self, record: ChildRecord) -> None:
        """Append one finished (or never started) child record to its result file.

        Examples
        --------
        >>> writer.write(record)  # doctest: +SKIP
        """
        if self.details is not None:
            raise ValueError("ResultWriter is closed")
        self._check_not_aborted()
        status = BatchStatus(record.status)
        if status not in _RESULT_TYPE:
            raise ValueError(f"child {record.name} is {status}; only finished or pending children")
        kind = _RESULT_TYPE[status]
        # Encoded first: a value JSON cannot hold fails its record before any byte is written.
        payloads = [_dump_value(value, record.name) for value in self._values_of(record, kind)]
        try:
            for payload in payloads:
                self._series[kind].add(payload)
        except BaseException as exc:
            self.abort(exc)
            raise

    def close(self) -> ResultWriterDetails:
        """Finish every result file, then write ``manifest.json``; idempotent.

        Examples
        --------
        >>> writer.close().manifest_url  # doctest: +SKIP
        's3://bucket/jobs/<run_id>/manifest.json'
        """
        if self.details is not None:
            return self.details
        self._check_not_aborted()
        try:
            for series in self._series.values():
                series.finish()
            self._write_manifest()
        except BaseException as exc:  # the other files must not stay open (see Notes)
            self.abort(exc)
            raise
        self.details = ResultWriterDetails(
            bucket=self._bucket,
            key=self._key("manifest.json"),
            manifest_url=f"{self.run_url}/manifest.json",
            map_run_arn=self.map_run_arn,
        )
        return self.details

    def abort(self, reason: BaseException | None = None) -> None:
        """Discard every result file still open, publishing no manifest; idempotent.

        Nothing buffered is uploaded: an object-store file is dropped (s3fs also aborts a
        multipart upload it began), a file written in place (local, memory) is closed and
        removed. Files already finished stay, unlisted. Never raises for a storage failure:
        the failure that led here matters more. After a successful :meth:`close` it does
        nothing.
        """
        if self.details is not None:
            return
        if self._failure is None:
            self._failure = reason or WriterError(f"{self.run_url}: the writer was aborted")
        open_files, self._open_files = self._open_files, {}
        for series in self._series.values():
            series.forget()
        for path, handle in open_files.items():
            _discard(self._fs, path, handle)

    # -- internals -------------------------------------------------------------------------
    def _values_of(self, record: ChildRecord, kind: str) -> list[Any]:
        if kind != "SUCCEEDED" or self.transformation == "NONE":
            return [_none_record(record)]
        output = record.output if record.output_json is None else json.loads(record.output_json)
        if self.transformation == "FLATTEN" and isinstance(output, list):
            return output
        return [output]

    def _key(self, name: str) -> str:
        return posixpath.join(self._key_prefix, self.map_run_id, name)

    def _check_not_aborted(self) -> None:
        if self._failure is not None:
            failure = self._failure
            raise WriterError(
                f"{self.run_url}: no results were published: the writer was aborted after "
                f"{type(failure).__name__}: {failure}"
            ) from failure

    def _open(self, name: str) -> IO[bytes]:
        path = posixpath.join(self._run_path, name)
        with _storage(f"{self.run_url}/{name}", "create"):
            if not self._dirs_made and is_local_disk(self._fs):
                self._fs.makedirs(self._run_path, exist_ok=True)  # object stores need no dirs
                self._dirs_made = True
            handle = self._fs.open(path, "wb")
        self._open_files[path] = handle
        return handle

    def _close(self, name: str, handle: IO[bytes]) -> None:
        """Finish one file; until this returns, abort() still owns (and would discard) it."""
        with _storage(f"{self.run_url}/{name}", "finish"):
            handle.close()
        self._open_files.pop(posixpath.join(self._run_path, name), None)

    def _write_manifest(self) -> None:
        manifest = {
            "DestinationBucket": self._bucket,
            "MapRunArn": self.map_run_arn,
            "ResultFiles": {
                kind: [{"Key": self._key(n), "Size": s} for n, s in self._series[kind].files]
                for kind in sorted(RESULT_TYPES)
            },
        }
        body = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
        handle = self._open("manifest.json")
        with _storage(f"{self.run_url}/manifest.json", "write"):
            handle.write(body)
        self._close("manifest.json", handle)


class _FileSeries:
    """The ``<KIND>_0``, ``<KIND>_1``, ... files of one result type, one open at a time."""

    def __init__(self, writer: ResultWriter, kind: str) -> None:
        self.writer = writer
        self.kind = kind
        self.files: list[tuple[str, int]] = []  # finished (name, size)
        self._handle: IO[bytes] | None = None
        self._name = ""
        self._size = 0
        self._count = 0
        self._head, self._sep, self._tail = _FRAMING[writer.output_type]

    def add(self, payload: bytes) -> None:
        if self._handle is not None and self._would_pass(payload):
            self.finish()
        if self._handle is None:
            self._start()
        chunk = (self._sep if self._count else b"") + payload
        self._put(chunk)
        self._count += 1

    def finish(self) -> None:
        if self._handle is None:
            return
        self._put(self._tail)
        self.writer._close(self._name, self._handle)
        self.files.append((self._name, self._size))
        self._handle = None

    def forget(self) -> None:
        """The writer discarded the open file (abort): start afresh, never touch it again."""
        self._handle = None

    @property
    def _url(self) -> str:
        return f"{self.writer.run_url}/{self._name}"

    def _would_pass(self, payload: bytes) -> bool:
        projected = self._size + len(self._sep) + len(payload) + len(self._tail)
        return projected > self.writer.rollover_bytes  # a lone oversized value still gets a file

    def _start(self) -> None:
        self._name = f"{self.kind}_{len(self.files)}{_SUFFIX[self.writer.output_type]}"
        self._handle = self.writer._open(self._name)
        self._size = self._count = 0
        self._put(self._head)

    def _put(self, chunk: bytes) -> None:
        assert self._handle is not None
        with _storage(self._url, "write"):
            self._handle.write(chunk)
        self._size += len(chunk)


def _check_config(run_id: str, transformation: str, output_type: str, rollover: int) -> None:
    if transformation not in TRANSFORMATIONS:
        raise SpecError("ResultWriter.WriterConfig.Transformation", _one_of(TRANSFORMATIONS))
    if output_type not in OUTPUT_TYPES:
        raise SpecError("ResultWriter.WriterConfig.OutputType", _one_of(OUTPUT_TYPES))
    if rollover < 1:
        raise ValueError("rollover_bytes must be positive")
    # the run id becomes one path segment: it must not climb out of the destination
    if not run_id or "/" in run_id or "\\" in run_id or run_id in (".", ".."):
        raise ValueError(f"map_run_id must be a single path segment, got {run_id!r}")


def _one_of(values: tuple[str, ...]) -> str:
    return "must be one of " + ", ".join(values)


def _bucket_and_prefix(fs: Any, root: str, dest_url: str) -> tuple[str, str]:
    if protocols(fs) & _BUCKET_PROTOCOLS:
        bucket, _, prefix = root.strip("/").partition("/")
        return bucket, prefix
    return dest_url, ""


@contextlib.contextmanager
def _storage(url: str, action: str) -> Iterator[None]:
    """Turn any storage failure into :class:`WriterError` naming the URL and the reason."""
    try:
        yield
    except WriterError:
        raise
    except Exception as exc:  # fsspec backends raise OSError, botocore and aiohttp errors alike
        raise storage_error(exc, f"{url}: cannot {action}", writing=True) from exc


def _discard(fs: Any, path: str, handle: IO[bytes]) -> None:
    """Drop a result file that will never be published, without committing it."""
    from fsspec.spec import AbstractBufferedFile

    if isinstance(handle, AbstractBufferedFile):
        # Buffered until close (s3fs, gcsfs): closing would upload it, a commit that blocks
        # on an unreachable store. discard() drops the buffer (and aborts a multipart upload
        # already begun); marked closed, neither close() nor __del__ commits it later.
        with contextlib.suppress(Exception):
            handle.discard()
        handle.closed = True
        return
    # Written in place (local files, memory): the partial file exists already; remove it.
    with contextlib.suppress(Exception):
        handle.close()
    with contextlib.suppress(Exception):
        if fs.exists(path):
            fs.rm(path)


def _none_record(record: ChildRecord) -> dict[str, Any]:
    """AWS's record for one child (Transformation NONE)."""
    status = BatchStatus(record.status)
    body: dict[str, Any] = dict(record.extra)  # extra AWS fields; the core ones below win
    body.update(
        ExecutionArn=record.execution_arn,
        Input=(
            record.input_json
            if record.input_json is not None
            else _json_text(record.input, record.name, "input")
        ),
        InputDetails={"Included": True},
        Name=record.name,
        RedriveCount=record.redrive_count,
        StateMachineArn=record.state_machine_arn,
        Status=status.value,
    )
    body.update(_redrive_fields(record, status))
    if status is BatchStatus.SUCCEEDED:
        body["Output"] = (
            record.output_json
            if record.output_json is not None
            else _json_text(record.output, record.name, "output")
        )
    elif status is not BatchStatus.PENDING:
        body["Error"] = record.error or ""
        body["Cause"] = record.cause or ""
    if status is not BatchStatus.PENDING:
        body["OutputDetails"] = {"Included": True}
    for key, when in (("StartDate", record.start_date), ("StopDate", record.stop_date)):
        if when is not None:
            body[key] = _aws_date(when)
    return dict(sorted(body.items()))  # AWS writes record keys in alphabetical order


def _redrive_fields(record: ChildRecord, status: BatchStatus) -> dict[str, Any]:
    fields = (record.redrive_status, record.redrive_status_reason)
    if status is not BatchStatus.SUCCEEDED and fields == _SUCCESS_REDRIVE:
        # untouched ChildRecord defaults describe a success; AWS writes failed children so
        return {"RedriveStatus": "REDRIVABLE_BY_MAP_RUN"}
    out = {"RedriveStatus": record.redrive_status}
    if record.redrive_status_reason:
        out["RedriveStatusReason"] = record.redrive_status_reason
    return out


def _aws_date(when: datetime) -> str:
    # AWS: 2025-02-04T01:49:50.099Z; a naive datetime is taken as UTC
    when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{when.microsecond // 1000:03d}Z"


def _json_text(value: Any, name: str, what: str) -> str:
    try:
        return dumps(value)
    except (TypeError, ValueError) as exc:  # NaN or a non-JSON type would corrupt the file
        raise WriterError(f"child {name}: {what} is not valid JSON: {exc}") from exc


def _dump_value(value: Any, name: str) -> bytes:
    try:
        text = dumps(value)
    except (TypeError, ValueError) as exc:
        raise WriterError(f"child {name}: result is not valid JSON: {exc}") from exc
    return text.encode()
