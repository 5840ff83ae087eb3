"""The Parquet item reader: one shard per row group, rows streamed in record batches.

Planning reads only the footer. A shard is ``(file URL, row group)``; reading it streams that
row group through ``iter_batches``. Memory is bounded by one row group's compressed column
chunks (pyarrow pre-buffers them in a few coalesced range reads, which is what keeps S3 fast;
AWS caps row groups at 256 MB) plus one decoded batch, whatever the file size.
The URL may also be a directory or prefix: every ``*.parquet`` file under it, in sorted order.

Each row becomes a dict of JSON-compatible values (what a child workflow receives as JSON):

=======================  =========================================================
Arrow type               item value
=======================  =========================================================
timestamp                ISO-8601 string, ``2024-01-01T00:00:00+00:00`` with a time zone,
                         ``2024-01-01T00:00:00`` without; the fraction as Python writes it
                         (none, or 6 digits), 9 digits when nanoseconds are present
date / time              ISO-8601 string (``2024-01-01``, ``12:30:00``; fractions as above)
decimal                  string, exact and positional (``"1.50"``, ``"0.000000100"``)
binary                   the UTF-8 text when the bytes decode, else standard base64; the two
                         cannot be told apart from the value, so store text as ``string``
float NaN / +-inf        ``None``: JSON has no such numbers
duration                 seconds as a float, when the float is the exact decimal value
interval                 ``[months, days, nanoseconds]``
list / struct / map      array / object (map keys made strings) / recursively converted
uuid (extension)         the canonical text, ``"12345678-1234-..."``
other extension types    the value of their storage type, converted as above
=======================  =========================================================

Never a silent change: a value JSON cannot hold exactly fails the read with a
:class:`ReaderError` naming the file, ``row group G, row R`` (R counted from 0 in the group) and
the column: a timestamp or date outside the years 1-9999, a duration a float cannot hold
exactly, a map holding a key twice (or two keys that are the same text), a struct or row with
two fields of one name, a string column that is not UTF-8, and an INT96 timestamp (Spark's and
Impala's legacy type) outside 1677-2262, which Arrow's ``timestamp[ns]`` would wrap around.
Nesting is bounded by Parquet itself: Arrow refuses schemas deeper than 100 levels (footer
error), below :data:`~runner.readers.base.MAX_NESTING_DEPTH`.

Columnar workers skip the conversion with :meth:`ParquetReader.read_shard_arrow`.
"""

from __future__ import annotations

import base64
import contextlib
import math
import posixpath
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import IO, Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from runner.errors import InputNotFound, ReaderError
from runner.readers._io import filesystem, is_local_disk, open_binary, url_of
from runner.readers.base import ItemReader, Recent, Shard, placed

__all__ = ["ParquetReader", "to_json_rows"]

_decoded_groups = Recent(keep=2)  # row groups this worker process decoded last

Converter = Callable[[Any], Any]


class ParquetReader(ItemReader):
    """Rows of a Parquet file (or of every ``.parquet`` file under a prefix) as dicts.

    >>> reader = ParquetReader(ReaderConfig(input_type="PARQUET"))
    >>> next(reader.iter_items("s3://bucket/trips.parquet"))  # doctest: +SKIP
    {'vendor': 'CMT', 'pickup': '2024-01-01T00:04:12', 'fare': '12.50'}
    """

    input_type: ClassVar[str] = "PARQUET"
    batch_size: int = 8192  # rows per record batch: bounds memory, amortises Python overhead

    # -- hooks -------------------------------------------------------------------------
    def plan_shards(self, url: str) -> Iterator[Shard]:
        """One shard per row group, from the footers only."""
        number = 0
        for file_url in self._files(url):
            with self._open(file_url) as parquet:
                metadata = parquet.metadata
            for group in range(metadata.num_row_groups):
                rows = metadata.row_group(group).num_rows
                yield Shard(url=file_url, number=number, start=group, end=group + 1,
                            extra={"count": rows})  # fmt: skip
                number += 1

    def read_shard(self, shard: Shard) -> Iterator[dict[str, Any]]:
        """The rows of one row group as JSON-compatible dicts (see the module table)."""
        group, first_row = shard.start or 0, 0
        for batch in self.read_shard_arrow(shard):
            try:
                rows = _json_rows(batch, shard.url, group, first_row)
            except _BadRow as bad:  # the rows before the bad one are still items
                yield from _rows(batch.slice(0, bad.row))
                raise bad.error from bad.__cause__
            yield from rows
            first_row += len(batch)

    # -- shard reading: row groups, counted by the footers -----------------------------
    def plan_ranges(self, url: str, shard_bytes: int) -> list[Shard] | None:
        """The row groups (their row counts from the footers: no index needed)."""
        return list(self.plan_shards(url))

    def read_range(self, shard: Shard, offset: int, skip: int, take: int, line: int) -> list[Any]:
        """Rows ``skip .. skip+take`` of the row group. A worker runs a group's batches one
        after another, so it keeps the last groups it decoded."""
        table = _decoded_groups.get(
            (shard.url, shard.start or 0),
            lambda: pa.Table.from_batches(list(self.read_shard_arrow(shard))),
        )
        rows: list[Any] = []
        row_group, first_row = shard.start or 0, skip
        for batch in table.slice(skip, take).to_batches():
            # errors name the file, row group and row, as a driver-side read does
            rows.extend(
                to_json_rows(batch, url=shard.url, row_group=row_group, first_row=first_row)
            )
            first_row += batch.num_rows
        return rows

    # -- columnar API ------------------------------------------------------------------
    def read_shard_arrow(self, shard: Shard) -> Iterator[pa.RecordBatch]:
        """The row group of ``shard`` as Arrow record batches, without per-row conversion."""
        group = shard.start or 0
        try:
            yield from self._batches(shard.url, group)
        except ReaderError as exc:  # a storage read that failed mid-file
            raise placed(exc, f"row group {group}") from exc.__cause__

    def _batches(self, url: str, group: int) -> Iterator[pa.RecordBatch]:
        with open_binary(url, self.config.storage_options, decompress=False) as raw:
            parquet = _parquet_file(raw, url)
            if group >= parquet.metadata.num_row_groups:
                raise ReaderError(
                    url,
                    f"the file has {parquet.metadata.num_row_groups} row groups; "
                    "it changed since it was planned",
                    position=f"row group {group}",
                )
            int96 = _int96_columns(parquet)
            if int96:
                _check_int96(raw, url, group, int96)
            batches = parquet.iter_batches(
                batch_size=self.batch_size, row_groups=[group], use_threads=False
            )
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    return
                except Exception as exc:  # Arrow, OSError, MemoryError: the data is bad
                    raise ReaderError(
                        url, f"cannot read row group {group}: {type(exc).__name__}: {exc}",
                        position=f"row group {group}",
                    ) from exc  # fmt: skip
                yield batch

    # -- internals ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _open(self, url: str) -> Iterator[pq.ParquetFile]:
        try:
            with open_binary(url, self.config.storage_options, decompress=False) as raw:
                yield _parquet_file(raw, url)
        except ReaderError as exc:  # opening to read the footer failed
            raise placed(exc, "footer") from exc.__cause__

    def _files(self, url: str) -> list[str]:
        """``[url]`` for a file; the sorted ``*.parquet`` files for a directory or prefix."""
        fs, path = filesystem(url, self.config.storage_options)
        if not url.endswith("/") and not _isdir(fs, path):
            return [url]
        found = sorted(p for p in fs.find(path) if p.endswith(".parquet"))
        if not found:
            raise InputNotFound(url, "no .parquet files under this directory or prefix")
        if is_local_disk(fs):
            return found
        return [url_of(fs, posixpath.normpath(p)) for p in found]


def _parquet_file(raw: IO[bytes], url: str) -> pq.ParquetFile:
    try:
        # Checksums cost one CRC per page and turn silent corruption into an error
        # wherever the writer recorded them.
        return pq.ParquetFile(raw, page_checksum_verification=True)
    except Exception as exc:  # Arrow, OSError, MemoryError from a footer that lies
        raise ReaderError(url, f"cannot read the Parquet footer: {exc}", position="footer") from exc


def _int96_columns(parquet: pq.ParquetFile) -> list[str]:
    """Top-level columns stored as INT96 (read as ``timestamp[ns]``, which can wrap around)."""
    return [
        column.path
        for column in parquet.schema
        if column.physical_type == "INT96" and "." not in column.path
    ]


# The seconds a timestamp[ns] holds without wrapping (one second of margin each side).
_NS_SECONDS = (-(2**63) // 10**9 + 1, (2**63 - 1) // 10**9 - 1)


def _check_int96(raw: IO[bytes], url: str, group: int, columns: list[str]) -> None:
    """Fail when an INT96 value lies outside what ``timestamp[ns]`` holds.

    Arrow converts INT96 to nanoseconds in 64 bits and wraps silently (year 1 reads as 1754).
    Read at a unit of seconds, which never wraps, the same values show whether any would.
    """
    try:
        coarse = pq.ParquetFile(raw, coerce_int96_timestamp_unit="s").read_row_group(
            group, columns=columns, use_threads=False
        )
    except Exception as exc:
        raise ReaderError(
            url, f"cannot read row group {group}: {type(exc).__name__}: {exc}",
            position=f"row group {group}",
        ) from exc  # fmt: skip
    low, high = _NS_SECONDS
    for name in columns:
        seconds = coarse.column(name).cast(pa.int64())
        extremes = pc.min_max(seconds).as_py()
        if extremes["min"] is None or (low <= extremes["min"] and extremes["max"] <= high):
            continue
        values = seconds.to_pylist()
        row = next(i for i, v in enumerate(values) if v is not None and not low <= v <= high)
        raise ReaderError(
            url,
            f"column {name!r}: INT96 timestamp {values[row]} s from 1970 is outside "
            "1677-2262, which timestamp[ns] holds",
            f"row group {group}, row {row}",
        )


def _isdir(fs: Any, path: str) -> bool:
    try:
        return bool(fs.isdir(path))
    except FileNotFoundError:
        return False


# -- Arrow -> JSON-compatible values ---------------------------------------------------------
def to_json_rows(
    batch: pa.RecordBatch, *, url: str = "record batch", row_group: int = 0, first_row: int = 0
) -> list[dict[str, Any]]:
    """``batch`` as a list of dicts of JSON-compatible values (see the module docstring).

    A value that cannot be converted exactly raises :class:`ReaderError` naming ``url``, the
    column and the row (``first_row`` is the row group's row of the batch's first row).

    >>> to_json_rows(pa.record_batch({"t": pa.array([1], pa.time64("ns"))}))
    [{'t': '00:00:00.000000001'}]
    """
    try:
        return _json_rows(batch, url, row_group, first_row)
    except _BadRow as bad:
        raise bad.error from bad.__cause__


class _BadRow(Exception):
    """Row ``row`` of a batch cannot be converted: ``error`` names it."""

    def __init__(self, error: ReaderError, row: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.row = row


def _json_rows(
    batch: pa.RecordBatch, url: str, row_group: int, first_row: int
) -> list[dict[str, Any]]:
    names = batch.schema.names
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise ReaderError(
            url, f"column {twice!r} appears twice: a row object cannot hold both",
            f"row group {row_group}",
        )  # fmt: skip
    try:
        return _rows(batch)
    except Exception as exc:  # find the column and row, then name them
        raise _locate(batch, url, row_group, first_row, exc) from exc


def _rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    plans = [_plan(field.type) for field in batch.schema]
    if any(exact is not None for exact, _ in plans):
        # Values to_pylist would round (ns times, durations) are converted from their integers.
        columns = [
            column if exact is None else _exact_column(column, exact)
            for column, (exact, _) in zip(batch.columns, plans, strict=True)
        ]
        batch = pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
    rows = batch.to_pylist()
    for field, (_, convert) in zip(batch.schema, plans, strict=True):
        if convert is not None:
            name = field.name
            for row in rows:
                row[name] = convert(row[name])
    return rows


def _locate(
    batch: pa.RecordBatch, url: str, row_group: int, first_row: int, exc: Exception
) -> _BadRow:
    """The first value that fails, found row by row (halving), then column by column."""
    low, high = 0, len(batch)  # rows before low convert; the batch up to high does not
    while high - low > 1:
        middle = (low + high) // 2
        try:
            _rows(batch.slice(0, middle))
            low = middle
        except Exception:
            high = middle
    row = batch.slice(low, 1)
    for field, column in zip(row.schema, row.columns, strict=True):
        try:
            _rows(pa.RecordBatch.from_arrays([column], names=[field.name]))
        except Exception as column_exc:
            reason = f"column {field.name!r} ({field.type}): {_reason(column_exc)}"
            error = ReaderError(url, reason, f"row group {row_group}, row {first_row + low}")
            return _BadRow(error, low)
    error = ReaderError(url, _reason(exc), f"row group {row_group}, row {first_row + low}")
    return _BadRow(error, low)


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, _Inexact) else f"{type(exc).__name__}: {exc}"


class _Inexact(ValueError):
    """A value JSON cannot hold exactly; the message says which and why."""


def _plan(kind: pa.DataType) -> tuple[pa.DataType | None, Converter | None]:
    """``(integer type to cast the column to first, or None; converter, or None)``."""
    exact = _exact_type(kind)
    return exact, _converter(kind)


def _exact_column(column: pa.Array, exact: pa.DataType) -> pa.Array:
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if isinstance(column.type, pa.BaseExtensionType):
        column = column.storage
    return column.cast(exact)


def _exact_type(kind: pa.DataType) -> pa.DataType | None:
    """``kind`` with every value to_pylist would round replaced by its integer, else ``None``.

    ``time64[ns]`` (Python's ``time`` stops at microseconds) and durations (a ``timedelta`` or
    pandas ``Timedelta`` would round, and a float of seconds may) are formatted from integers.
    """
    types = pa.types
    if types.is_time64(kind) and kind.unit == "ns":
        return pa.int64()
    if types.is_duration(kind):
        return pa.int64()
    if types.is_dictionary(kind):
        return _exact_type(kind.value_type)
    if isinstance(kind, pa.BaseExtensionType):
        return _exact_type(kind.storage_type)
    if types.is_map(kind):
        key, item = _exact_type(kind.key_type), _exact_type(kind.item_type)
        if key is None and item is None:
            return None
        return pa.map_(
            kind.key_field.with_type(key or kind.key_type),
            kind.item_field.with_type(item or kind.item_type),
        )
    if _is_list_like(kind):
        inner = _exact_type(kind.value_type)
        if inner is None:
            return None
        value_field = kind.value_field.with_type(inner)
        if types.is_fixed_size_list(kind):
            return pa.list_(value_field, kind.list_size)
        return pa.large_list(value_field) if types.is_large_list(kind) else pa.list_(value_field)
    if types.is_struct(kind):
        fields = [kind.field(i) for i in range(kind.num_fields)]
        exact = [_exact_type(f.type) for f in fields]
        if all(e is None for e in exact):
            return None
        return pa.struct([f.with_type(e or f.type) for f, e in zip(fields, exact, strict=True)])
    return None


def _converter(kind: pa.DataType) -> Converter | None:
    """A function making one value of ``kind`` JSON-compatible, or ``None`` if it already is."""
    types = pa.types
    if isinstance(kind, pa.BaseExtensionType):
        if kind.extension_name == "arrow.uuid":
            return _nullable(str)  # to_pylist gives uuid.UUID: its canonical text
        return _converter(kind.storage_type)
    if types.is_dictionary(kind):
        return _converter(kind.value_type)
    if types.is_time64(kind) and kind.unit == "ns":
        return _nullable(_time_of_day_ns)  # given as int64 (see _exact_type)
    if types.is_duration(kind):
        return _nullable(_seconds(kind.unit))  # given as int64 (see _exact_type)
    if types.is_timestamp(kind) or types.is_date(kind) or types.is_time(kind):
        return _nullable(_isoformat)
    if types.is_decimal(kind):
        return _nullable(_decimal_text)
    if types.is_binary(kind) or types.is_large_binary(kind) or types.is_fixed_size_binary(kind):
        return _nullable(_bytes_to_text)
    if types.is_binary_view(kind):
        return _nullable(_bytes_to_text)
    if types.is_floating(kind):
        return _nullable(_finite)
    if types.is_interval(kind):
        return _nullable(lambda value: list(value) if isinstance(value, tuple) else value)
    if types.is_map(kind):
        return _map_converter(kind)
    if _is_list_like(kind):
        inner = _converter(kind.value_type)
        return None if inner is None else _nullable(lambda value: [inner(x) for x in value])
    if types.is_struct(kind):
        return _struct_converter(kind)
    return None


def _is_list_like(kind: pa.DataType) -> bool:
    types = pa.types
    return (
        types.is_list(kind)
        or types.is_large_list(kind)
        or types.is_fixed_size_list(kind)
        or types.is_list_view(kind)
        or types.is_large_list_view(kind)
    )


def _struct_converter(kind: pa.StructType) -> Converter | None:
    maybe = [(kind.field(i).name, _converter(kind.field(i).type)) for i in range(kind.num_fields)]
    fields = [(name, convert) for name, convert in maybe if convert is not None]
    if not fields:
        return None

    def convert(value: dict[str, Any]) -> dict[str, Any]:
        for name, convert_field in fields:
            value[name] = convert_field(value[name])
        return value

    return _nullable(convert)


def _map_converter(kind: pa.MapType) -> Converter:
    # Arrow hands a map over as (key, value) pairs; JSON objects need string keys, once each.
    keys = _converter(kind.key_type) or (lambda key: key)
    items = _converter(kind.item_type) or (lambda item: item)

    def convert(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
        converted = {_as_key(keys(key)): items(item) for key, item in pairs}
        if len(converted) != len(pairs):  # an object would keep only the last value of a key
            seen: set[str] = set()
            for key, _ in pairs:
                text = _as_key(keys(key))
                if text in seen:
                    raise _Inexact(f"the map holds key {text!r} more than once")
                seen.add(text)
        return converted

    return _nullable(convert)


def _as_key(key: Any) -> str:
    return key if isinstance(key, str) else str(key)


def _nullable(convert: Converter) -> Converter:
    return lambda value: None if value is None else convert(value)


def _isoformat(value: Any) -> str:
    text: str = value.isoformat()  # datetime/date/time, or pandas Timestamp (ns kept)
    return text


def _decimal_text(value: Any) -> str:
    # Positional notation always, every digit of the scale kept: "0.000000100", never "1.00E-7".
    return format(value, "f")


def _time_of_day_ns(value: int) -> str:
    """``HH:MM:SS`` and the fraction as Python and pandas write one: 6 digits, or 9 if needed."""
    if not 0 <= value < 86_400 * 10**9:
        raise _Inexact(f"time of day {value} ns is outside 00:00:00-24:00:00")
    seconds, nanos = divmod(value, 10**9)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    text = f"{hour:02d}:{minute:02d}:{second:02d}"
    if nanos % 1000:
        return f"{text}.{nanos:09d}"
    return f"{text}.{nanos // 1000:06d}" if nanos else text


_UNIT_EXPONENT = {"s": 0, "ms": 3, "us": 6, "ns": 9}


def _seconds(unit: str) -> Converter:
    """Durations in ``unit`` (given as integers) as float seconds, refused when a float cannot
    hold the exact decimal value (past 2**53 units, about 104 days of nanoseconds)."""
    exponent = _UNIT_EXPONENT[unit]

    def convert(value: int) -> float:
        seconds = value / 10**exponent
        if abs(value) > _EXACT_FLOAT and Decimal(repr(seconds)) != Decimal(value).scaleb(-exponent):
            raise _Inexact(
                f"duration {value} {unit} has more digits than a JSON number as a float keeps"
            )
        return seconds

    return convert


_EXACT_FLOAT = 10**15  # below this many units, value / 10**k prints as its exact decimal


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _bytes_to_text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii")
