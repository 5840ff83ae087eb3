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
                         ``2024-01-01T00:00:00`` without; nanoseconds kept when present
date / time              ISO-8601 string (``2024-01-01``, ``12:30:00``)
decimal                  string, exact (``"1.50"``): a float would lose digits
binary                   the UTF-8 text when the bytes decode, else standard base64; the two
                         cannot be told apart from the value, so store text as ``string``
float NaN / +-inf        ``None``: JSON has no such numbers
duration                 seconds as a float
interval                 ``[months, days, nanoseconds]``
list / struct / map      array / object (map keys made strings) / recursively converted
extension (uuid, ...)    ``str(value)``
=======================  =========================================================

Columnar workers skip the conversion with :meth:`ParquetReader.read_shard_arrow`.
"""

from __future__ import annotations

import base64
import contextlib
import math
import posixpath
from collections.abc import Callable, Iterator
from typing import IO, Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from runner.errors import InputNotFound, ReaderError
from runner.readers._io import filesystem, open_binary
from runner.readers.base import ItemReader, Shard

__all__ = ["ParquetReader", "to_json_rows"]

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
                            extra={"rows": rows})  # fmt: skip
                number += 1

    def read_shard(self, shard: Shard) -> Iterator[dict[str, Any]]:
        """The rows of one row group as JSON-compatible dicts (see the module table)."""
        for batch in self.read_shard_arrow(shard):
            yield from to_json_rows(batch)

    # -- columnar API ------------------------------------------------------------------
    def read_shard_arrow(self, shard: Shard) -> Iterator[pa.RecordBatch]:
        """The row group of ``shard`` as Arrow record batches, without per-row conversion."""
        group = shard.start or 0
        with self._open(shard.url) as parquet:
            if group >= parquet.metadata.num_row_groups:
                raise ReaderError(
                    shard.url,
                    f"the file has {parquet.metadata.num_row_groups} row groups; "
                    "it changed since it was planned",
                    position=f"row group {group}",
                )
            batches = parquet.iter_batches(
                batch_size=self.batch_size, row_groups=[group], use_threads=False
            )
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    return
                except (pa.ArrowException, OSError) as exc:
                    raise ReaderError(
                        shard.url, f"cannot read row group {group}: {exc}",
                        position=f"row group {group}",
                    ) from exc  # fmt: skip
                yield batch

    # -- internals ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _open(self, url: str) -> Iterator[pq.ParquetFile]:
        with open_binary(url, self.config.storage_options, decompress=False) as raw:
            yield _parquet_file(raw, url)

    def _files(self, url: str) -> list[str]:
        """``[url]`` for a file; the sorted ``*.parquet`` files for a directory or prefix."""
        fs, path = filesystem(url, self.config.storage_options)
        if not url.endswith("/") and not _isdir(fs, path):
            return [url]
        found = sorted(p for p in fs.find(path) if p.endswith(".parquet"))
        if not found:
            raise InputNotFound(url, "no .parquet files under this directory or prefix")
        if _is_local(fs):
            return found
        return [fs.unstrip_protocol(posixpath.normpath(p)) for p in found]


def _parquet_file(raw: IO[bytes], url: str) -> pq.ParquetFile:
    try:
        # Checksums cost one CRC per page and turn silent corruption into an error
        # wherever the writer recorded them.
        return pq.ParquetFile(raw, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as exc:
        raise ReaderError(url, f"cannot read the Parquet footer: {exc}", position="footer") from exc


def _isdir(fs: Any, path: str) -> bool:
    try:
        return bool(fs.isdir(path))
    except FileNotFoundError:
        return False


def _is_local(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols


# -- Arrow -> JSON-compatible values ---------------------------------------------------------
def to_json_rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """``batch`` as a list of dicts of JSON-compatible values (see the module docstring)."""
    rows = batch.to_pylist()
    for field in batch.schema:
        convert = _converter(field.type)
        if convert is not None:
            name = field.name
            for row in rows:
                row[name] = convert(row[name])
    return rows


def _converter(kind: pa.DataType) -> Converter | None:
    """A function making one value of ``kind`` JSON-compatible, or ``None`` if it already is."""
    types = pa.types
    if isinstance(kind, pa.ExtensionType):
        return _nullable(str)
    if types.is_dictionary(kind):
        return _converter(kind.value_type)
    if types.is_timestamp(kind) or types.is_date(kind) or types.is_time(kind):
        return _nullable(lambda value: value.isoformat())
    if types.is_decimal(kind):
        return _nullable(str)
    if types.is_binary(kind) or types.is_large_binary(kind) or types.is_fixed_size_binary(kind):
        return _nullable(_bytes_to_text)
    if types.is_binary_view(kind):
        return _nullable(_bytes_to_text)
    if types.is_floating(kind):
        return _nullable(_finite)
    if types.is_duration(kind):
        return _nullable(lambda value: value.total_seconds())
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
    # Arrow hands a map over as (key, value) pairs; JSON objects need string keys.
    keys = _converter(kind.key_type) or (lambda key: key)
    items = _converter(kind.item_type) or (lambda item: item)

    def convert(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
        return {_as_key(keys(key)): items(item) for key, item in pairs}

    return _nullable(convert)


def _as_key(key: Any) -> str:
    return key if isinstance(key, str) else str(key)


def _nullable(convert: Converter) -> Converter:
    return lambda value: None if value is None else convert(value)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _bytes_to_text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii")
