"""ResultWriter: AWS's Distributed Map result layout, written to any fsspec URL, and read back.

Layout (AWS developer guide, ``input-output-resultwriter``, section "Exporting to Amazon S3")::

    <dest>/<map-run-id>/manifest.json      written last, after every result file is complete
    <dest>/<map-run-id>/SUCCEEDED_<n>.json successful children
    <dest>/<map-run-id>/FAILED_<n>.json    failed, timed-out and aborted children
    <dest>/<map-run-id>/PENDING_<n>.json   children never started

``<n>`` starts at 0 and moves on when a file would pass ``rollover_bytes`` (AWS: 5 GB). Only files
that received a value exist and are listed. Records are AWS's (Transformation ``NONE``): keys in
alphabetical order as AWS writes them, ``Input``/``Output`` as compact JSON *strings*, dates as
``2025-02-04T01:49:50.099Z`` (UTC, milliseconds). ``COMPACT`` writes the bare outputs of successful
children, ``FLATTEN`` concatenates array outputs; failed and pending records always stay ``NONE``.

Choices where AWS documents nothing:

- ``OutputType: JSONL`` files are named ``<STATUS>_<n>.jsonl`` (AWS only ever shows ``.json``).
  The suffix keeps our JSONL files unambiguous to the loader, which also reads JSONL stored under
  a ``.json`` name by sniffing the content (see :func:`iter_result_records`).
- PENDING records carry no ``StartDate``/``StopDate``/``Output``/``OutputDetails``.
- A failed or pending record still carrying :class:`ChildRecord`'s success defaults for the
  redrive fields is written as AWS writes failed Map Run children: ``RedriveStatus``
  ``REDRIVABLE_BY_MAP_RUN`` and no ``RedriveStatusReason``.
- Local and other non-bucket destinations: ``DestinationBucket`` is the destination URL as given
  and each ``Key`` is relative to it (``<map-run-id>/SUCCEEDED_0.json``). The loader ignores both
  and finds result files next to ``manifest.json``, so a manifest copied from AWS loads too.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import posixpath
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

import ijson
from fsspec.core import url_to_fs

from runner.errors import InputNotFound, ReaderError, SpecError, WriterError, storage_error
from runner.jsontext import dumps
from runner.readers._io import is_local_disk, protocols
from runner.readers.base import MAX_NESTING_DEPTH
from runner.readers.json import DepthLimitedFile, JsonDepth, check_depth
from runner.readers.jsonltext import deepest_line, too_deep
from runner.types import BatchStatus, ChildRecord

if TYPE_CHECKING:  # pandas costs half a second to import; only loaders need it
    import pandas as pd

__all__ = [
    "ResultWriter",
    "ResultWriterDetails",
    "child_name",
    "iter_result_records",
    "load_results",
    "parse_child_name",
]

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
_MAX_NAME = 80  # AWS execution-name limit
_NAME_TAIL = re.compile(r"-b\d+-i(\d+)-n(\d+)\Z")


# -- child names ---------------------------------------------------------------------------


def child_name(map_run_id: str, batch_number: int, first_index: int, item_count: int) -> str:
    """Name a child execution so its items can be found again from its record alone.

    Parameters
    ----------
    map_run_id
        The Map Run id; its first 8 name-safe characters prefix the name.
    batch_number, first_index, item_count
        Which batch, the source index of its first item, and how many items it holds.

    Returns
    -------
    str
        At most 80 characters of ``[A-Za-z0-9_-]``, valid as an AWS execution name.

    Examples
    --------
    >>> child_name("3a1f5e2c-9b7d-3c4e", 3, 200, 100)
    '3a1f5e2c-b000003-i200-n100'
    """
    if min(batch_number, first_index, item_count) < 0:
        raise ValueError("batch_number, first_index and item_count must be >= 0")
    prefix = re.sub(r"[^A-Za-z0-9_-]", "", map_run_id)[:8] or "map"
    name = f"{prefix}-b{batch_number:06d}-i{first_index}-n{item_count}"
    if len(name) > _MAX_NAME:
        raise ValueError(f"child name longer than {_MAX_NAME} characters: {name}")
    return name


def parse_child_name(name: str | None) -> tuple[int, int] | None:
    """``(first_index, item_count)`` from a name made by :func:`child_name`, else ``None``.

    Examples
    --------
    >>> parse_child_name("3a1f5e2c-b000003-i200-n100")
    (200, 100)
    >>> parse_child_name("da4e9fc7-abab-3b27-9a77-a277e463b709") is None
    True
    """
    match = _NAME_TAIL.search(name) if isinstance(name, str) else None
    return (int(match[1]), int(match[2])) if match else None


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


# -- reading -------------------------------------------------------------------------------

_SNIFF_BYTES = 1024 * 1024  # one AWS record line (256 KiB in + 256 KiB out, escaped) fits
_COLUMNS = (
    "index",
    "item",
    "batch_input",
    "output",
    "status",
    "error",
    "cause",
    "execution",
    "start_date",
    "stop_date",
)
_RECORD_KEYS = frozenset({"ExecutionArn", "StateMachineArn", "Status"})
# yajl (ijson's C parser) stops at 64-bit integers; its pure-Python parser has no limit.
_INT_OVERFLOW = "integer overflow"
_EXACT_IJSON = ijson.get_backend("python")


def iter_result_records(
    manifest_url: str, *, storage_options: Mapping[str, Any] | None = None
) -> Iterator[tuple[str, Any]]:
    """Stream ``(result_type, value)`` from every result file a manifest lists.

    ``result_type`` is ``SUCCEEDED``, ``FAILED`` or ``PENDING``; ``value`` is a raw AWS record
    (``Input``/``Output`` still JSON strings) or, for ``COMPACT``/``FLATTEN`` successes, a bare
    output. Result files are found by name next to the manifest. ``.jsonl`` files are JSON Lines;
    other files are sniffed: a JSON array unless the first line is a whole value and more follow.
    (A JSONL file of one line holding an array, under a ``.json`` name, reads as an array.)

    Raises
    ------
    InputNotFound
        The manifest or a listed file is missing.
    ReaderError
        A file is not valid JSON / JSON Lines, or the manifest lacks ``ResultFiles``.

    Examples
    --------
    >>> for kind, record in iter_result_records("s3://bucket/jobs/r1/manifest.json"):
    ...     print(kind, record["Status"])  # doctest: +SKIP
    SUCCEEDED SUCCEEDED
    """
    for kind, value, _, _ in _result_values(manifest_url, dict(storage_options or {})):
        yield kind, value


def _result_values(
    manifest_url: str, options: dict[str, Any]
) -> Iterator[tuple[str, Any, str, int]]:
    """``(result_type, value, file URL, position of the value in its file)``."""
    manifest = _read_manifest(manifest_url, options)
    base = manifest_url.rsplit("/", 1)[0] if "/" in manifest_url else "."
    for kind in RESULT_TYPES:
        entries = manifest["ResultFiles"].get(kind) or []
        if not isinstance(entries, list):
            raise ReaderError(manifest_url, f"ResultFiles.{kind} is not a list")
        for number, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("Key"), str):
                where = f"ResultFiles.{kind}[{number}]"
                raise ReaderError(manifest_url, 'a result file entry has no "Key"', where)
            url = f"{base}/{entry['Key'].rsplit('/', 1)[-1]}"
            for position, value in enumerate(_iter_values(url, options)):
                yield kind, value, url, position


def load_results(
    manifest_url: str, *, storage_options: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """Load a Map Run's results, ours or AWS's, as one row per item.

    Columns: ``index`` (nullable Int64 source index, known when the child was named by
    :func:`child_name`), ``item``, ``batch_input``, ``output`` (the item's own output when the
    batch returned a list as long as its Items, else the batch output), ``status``, ``error``,
    ``cause``, ``execution`` (child name), ``start_date``, ``stop_date`` (UTC timestamps).
    Rows are sorted by ``index``, unknown indices last. ``COMPACT``/``FLATTEN`` outputs become
    rows with status ``SUCCEEDED`` and unknown index and item.

    Examples
    --------
    >>> df = load_results("s3://bucket/jobs/r1/manifest.json")  # doctest: +SKIP
    >>> df[df.status != "SUCCEEDED"][["index", "item", "error"]]  # doctest: +SKIP
    """
    columns: dict[str, list[Any]] = {name: [] for name in _COLUMNS}
    for kind, value, url, position in _result_values(manifest_url, dict(storage_options or {})):
        try:
            rows = list(_rows_of(kind, value))
        except _TooDeep as exc:
            raise ReaderError(url, str(exc), f"record {position}") from None
        for row in rows:
            for name, cell in zip(_COLUMNS, row, strict=True):
                columns[name].append(cell)
    frame = _frame(columns)
    if frame.empty:
        return frame
    return frame.sort_values("index", na_position="last", kind="stable").reset_index(drop=True)


def _frame(columns: dict[str, list[Any]]) -> pd.DataFrame:
    import pandas as pd

    data: dict[str, Any] = {"index": pd.array(columns["index"], dtype="Int64")}
    for name in ("item", "batch_input", "output"):
        data[name] = pd.Series(columns[name], dtype=object)
    for name in ("status", "error", "cause", "execution"):
        data[name] = pd.Series(columns[name], dtype="string")
    for name in ("start_date", "stop_date"):
        data[name] = pd.to_datetime(
            pd.Series(columns[name], dtype=object), utc=True, format="ISO8601", errors="coerce"
        )
    return pd.DataFrame(data)


def _read_manifest(url: str, options: dict[str, Any]) -> dict[str, Any]:
    with _reading(url):
        fs, path = url_to_fs(url, **options)
        with fs.open(path, "rb") as handle:
            data = handle.read()
        check_depth(url, data)  # json.loads recurses: a deep manifest must not reach it
        manifest = json.loads(data)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("ResultFiles"), dict):
        raise ReaderError(url, "not a Map Run manifest: no ResultFiles object")
    return manifest


@contextlib.contextmanager
def _reading(url: str) -> Iterator[None]:
    try:
        yield
    except ReaderError:
        raise
    except FileNotFoundError as exc:
        raise InputNotFound(url) from exc
    except (ValueError, ijson.JSONError) as exc:  # JSON, and UTF-8, errors
        raise ReaderError(url, "invalid JSON: " + " ".join(str(exc).split())) from exc
    except OSError as exc:  # unreachable, denied, ...: the one table decides
        raise storage_error(exc, url) from exc
    except (RecursionError, MemoryError) as exc:  # nothing above should let one through
        raise ReaderError(url, f"cannot read: {type(exc).__name__}: {exc}") from exc


def _iter_values(url: str, options: dict[str, Any]) -> Iterator[Any]:
    with _reading(url):
        fs, path = url_to_fs(url, **options)
        jsonl = path.endswith(".jsonl") or _sniff_jsonl(fs, path)
        if jsonl:
            with fs.open(path, "rb") as handle:
                for number, line in enumerate(handle, start=1):
                    if line.strip():
                        yield _json_line(line, url, number)
        else:
            yield from _array_values(fs, path, url)


def _array_values(fs: Any, path: str, url: str) -> Iterator[Any]:
    """The elements of a JSON array file, numbers exact: integers beyond 64 bits included."""
    done = 0
    with fs.open(path, "rb") as handle:
        try:
            for value in ijson.items(DepthLimitedFile(handle, url), "item", use_float=True):
                yield value
                done += 1
            return
        except ijson.JSONError as exc:
            if _INT_OVERFLOW not in str(exc):
                raise
    # Rare enough to pay for: read again with the parser that has no integer limit (about 25
    # times slower), skipping the values already produced.
    with fs.open(path, "rb") as handle:
        values = _EXACT_IJSON.items(DepthLimitedFile(handle, url), "item", use_float=True)
        yield from itertools.islice(values, done, None)


def _json_line(line: bytes, url: str, number: int) -> Any:
    if len(line) > MAX_NESTING_DEPTH and (deep := deepest_line([line])):
        raise too_deep(url, number, line, deep[1])
    try:
        return json.loads(line)
    except ValueError as exc:
        raise ReaderError(url, f"invalid JSON: {exc}", f"line {number}") from exc


def _sniff_jsonl(fs: Any, path: str) -> bool:
    """JSON Lines unless the content opens a JSON array (see :func:`iter_result_records`)."""
    with fs.open(path, "rb", block_size=_SNIFF_BYTES) as handle:
        head = handle.read(_SNIFF_BYTES).lstrip()
    if not head.startswith(b"["):
        return bool(head)
    first, newline, rest = head.partition(b"\n")
    if not newline:
        return False
    try:
        json.loads(first)
    except (ValueError, RecursionError):
        return False  # "[" or "[{...}," opens a multi-line array (or nests too deep to tell)
    return bool(rest.strip())


def _rows_of(kind: str, value: Any) -> Iterator[tuple[Any, ...]]:
    import pandas as pd

    if isinstance(value, dict) and value.keys() >= _RECORD_KEYS:
        yield from _record_rows(value)
    else:  # a COMPACT/FLATTEN output: nothing ties it to an item
        yield (pd.NA, pd.NA, None, value, kind, None, None, None, None, None)


def _record_rows(record: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
    import pandas as pd

    named = parse_child_name(record.get("Name"))
    items, batch_input, batched = _items_of(record, named)
    output = _embedded_json(record, "Output", "OutputDetails")
    per_item = batched and isinstance(output, list) and len(output) == len(items)
    common = (
        record.get("Status"),
        record.get("Error"),
        record.get("Cause"),
        record.get("Name"),
        record.get("StartDate"),
        record.get("StopDate"),
    )
    for position, item in enumerate(items):
        index = named[0] + position if named else pd.NA
        yield (index, item, batch_input, output[position] if per_item else output, *common)


def _items_of(record: dict[str, Any], named: tuple[int, int] | None) -> tuple[list, Any, bool]:
    """``(items, batch_input, batched)`` of one child's input."""
    import pandas as pd

    missing = object()
    value = _embedded_json(record, "Input", "InputDetails", missing)
    if value is missing:  # input not included: only the name can say how many items
        return [pd.NA] * max(named[1] if named else 1, 1), None, named is not None
    if _is_batch(value, named):
        return value["Items"], value.get("BatchInput"), True
    return [value], None, False


def _is_batch(value: Any, named: tuple[int, int] | None) -> bool:
    if not (isinstance(value, dict) and isinstance(value.get("Items"), list)):
        return False
    if not value["Items"] or not value.keys() <= {"Items", "BatchInput"}:
        return False
    # an unbatched item may look like a batch; the name's item count tells them apart
    return named is None or named[1] == len(value["Items"]) or named[1] != 1


def _embedded_json(record: dict[str, Any], key: str, details: str, missing: Any = None) -> Any:
    """A record's ``Input``/``Output``: JSON text unless AWS left it out (``Included: false``)."""
    text = record.get(key)
    included = (record.get(details) or {}).get("Included", True)
    if not included or not isinstance(text, str) or not text:
        return missing
    if _too_deep(text):  # json.loads recurses: refuse before it does
        raise _TooDeep(f"{key} nests JSON deeper than {MAX_NESTING_DEPTH} levels")
    try:
        return json.loads(text)
    except ValueError:
        return text  # keep what AWS gave rather than lose it
    except RecursionError:
        raise _TooDeep(f"{key} nests JSON too deep to decode") from None


class _TooDeep(Exception):
    """A record's embedded Input/Output nests too deep; the caller names the file and record."""


def _too_deep(text: str) -> bool:
    """Whether ``text`` nests past the limit; only long texts with many brackets are walked."""
    if len(text) <= MAX_NESTING_DEPTH:
        return False
    if text.count("[") + text.count("{") <= MAX_NESTING_DEPTH:
        return False
    return JsonDepth().feed(text.encode()) is not None
