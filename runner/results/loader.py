"""Map Run results read back: :func:`iter_result_records` streams the records a manifest lists,
:func:`load_results` gives one row per item (a DataFrame). Reads AWS's files as well as ours:
JSON arrays or JSONL (sniffed), records with embedded JSON strings, any depth refused past the
nesting limit."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import ijson
from fsspec.core import url_to_fs

from runner.errors import InputNotFound, ReaderError, storage_error
from runner.readers.base import MAX_NESTING_DEPTH
from runner.readers.json import DepthLimitedFile, JsonDepth, check_depth
from runner.readers.jsonltext import deepest_line, too_deep
from runner.results.names import parse_child_name
from runner.results.writer import RESULT_TYPES

if TYPE_CHECKING:  # pandas costs half a second to import; only loaders need it
    import pandas as pd

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
