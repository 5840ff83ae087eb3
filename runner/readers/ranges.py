"""Byte ranges of a line-based file: what the CSV and JSONL readers' range hooks share.

The driver cuts a file into byte ranges (the reader's ``plan_ranges``); each worker counts the
items of its own range (``index_range``); the driver chains the answers (:func:`resolve`);
workers then read any batch straight from storage (``read_range``). Items come out exactly as
``reader.iter_items(url)`` gives them, and errors carry the same wording and line numbers. The
format-specific parts are :mod:`runner.readers.csv_ranges` and
:mod:`runner.readers.jsonl_ranges`, reached through the hooks of
:class:`~runner.readers.base.ItemReader`; this module holds what they share.

Which records a range owns
    Range ``i`` owns the records whose first byte lies in ``[c_i, c_{i+1})``, where ``c_i`` is
    the byte after the first ``\\n`` at or after ``start - 1`` (the data start for the first
    range). A JSONL record is a line, so that settles it; a CSV record may hold quoted line
    breaks, which :mod:`runner.readers.csv_ranges` settles with two hypotheses per range, of
    which :func:`choose` keeps the true one.

Files are read in blocks of at most 1 MiB; a range is never held whole. ``bench/split_index.py``
measures indexing and batch reads against a plain read.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

from runner.errors import ReaderError
from runner.readers._io import BOM, compression_of, open_binary
from runner.readers.base import ItemReader, RangeIndex, Shard

__all__ = [
    "BLOCK",
    "FIRST_READ",
    "Chunks",
    "LongLine",
    "RangeIndex",
    "batch_reads",
    "choose",
    "plan_byte_ranges",
    "range_chunks",
    "range_error",
    "resolve",
]

BLOCK = 1 << 20  # the most read and split at a time
FIRST_READ = 64 << 10  # a small range needs far less than a block
_BATCH_READ = 32 << 10  # first read of a batch: a hundred short records and a skip

#: Reads the header record of a file positioned at its start: ``(shard extra, header bytes)``,
#: or ``None`` for a file with no header (it has no items).
ReadHeader = Callable[[IO[bytes]], "tuple[dict[str, Any], int] | None"]


def plan_byte_ranges(
    reader: ItemReader, url: str, shard_bytes: int, header: ReadHeader | None = None
) -> list[Shard] | None:
    """Byte ranges of ``shard_bytes`` covering the data of ``url``; ``None`` if it cannot split
    (a compressed file). Reads no further than the block holding the header record. Every
    shard carries ``extra["first_line"]`` (the 1-based line at the data start) and
    ``extra["data_start"]``, and what ``header`` adds.
    """
    if shard_bytes < 1:
        raise ValueError(f"shard_bytes must be at least 1 (got {shard_bytes})")
    if compression_of(url) is not None:
        return None
    with open_binary(url, reader.config.storage_options, decompress=False) as raw:
        size = raw.seek(0, io.SEEK_END)
        raw.seek(0)
        data_start = len(BOM) if raw.read(len(BOM)) == BOM else 0
        raw.seek(0)
        extra: dict[str, Any] = {"first_line": 1}
        if header is not None:
            found = header(raw)
            if found is None:
                return []  # an empty file has no header and no items
            extra, header_bytes = found
            data_start += header_bytes
    extra["data_start"] = data_start
    starts = range(data_start, size, shard_bytes)
    return [
        Shard(url, number=i, start=s, end=min(s + shard_bytes, size), extra=dict(extra))
        for i, s in enumerate(starts)
    ]


@contextmanager
def range_chunks(reader: ItemReader, shard: Shard, spacing: int) -> Iterator[tuple[Chunks, bool]]:
    """The bytes of a planned range from its first record boundary on, and whether it starts
    after the data start (only then can it start inside a quoted CSV field)."""
    if spacing < 1:
        raise ValueError(f"spacing must be at least 1 (got {spacing})")
    start, end, data_start = _bounds(shard)
    with open_binary(shard.url, reader.config.storage_options, decompress=False) as raw:
        begin, head = _record_boundary(raw, start, data_start)
        yield Chunks(raw, begin, head, end), start > data_start


@contextmanager
def batch_reads(reader: ItemReader, shard: Shard, offset: int) -> Iterator[Iterator[bytes]]:
    """Reads from the record start ``offset`` on, doubling up to a block: a batch of short
    records needs only the first one or two."""
    with open_binary(
        shard.url, reader.config.storage_options, decompress=False, block_size=BLOCK
    ) as raw:
        raw.seek(offset)
        yield _growing_reads(raw)


def choose(previous: RangeIndex | None, pair: tuple[RangeIndex, RangeIndex | None]) -> RangeIndex:
    """The true index of a range, given the chosen index of the range before (``None``: first).

    >>> chosen = None
    >>> for pair in pairs:  # doctest: +SKIP
    ...     chosen = choose(chosen, pair)
    """
    h0, h1 = pair
    if previous is None or not previous.next_inside_quotes:
        return h0
    if h1 is None:
        raise AssertionError(
            "the previous range ends inside a quoted field, but this range has no H1 index "
            "(a JSONL index, or ranges out of order?)"
        )
    return h1


def resolve(indexes: Sequence[tuple[RangeIndex, RangeIndex | None]]) -> list[RangeIndex]:
    """The true index of every range, in order (see :func:`choose`)."""
    chosen: list[RangeIndex] = []
    for pair in indexes:
        chosen.append(choose(chosen[-1] if chosen else None, pair))
    return chosen


def range_error(url: str, index: RangeIndex, line: int) -> ReaderError | None:
    """The :class:`ReaderError` csv.py or jsonl.py would raise for ``index.error``, or ``None``.

    ``line`` is the absolute 1-based line at ``c_i``: the shard's ``first_line`` plus the
    ``lines`` of the chosen indexes of all ranges before it.
    """
    if index.error is None:
        return None
    reason, local = index.error
    start = line + local
    if index.error_span:
        reason += (
            f" (record starts at line {start}, error found at line {start + index.error_span})"
        )
    return ReaderError(url, reason, f"line {start}")


def _bounds(shard: Shard) -> tuple[int, int, int]:
    """``(start, end, data_start)`` of a shard made by :func:`plan_ranges`."""
    if shard.start is None or shard.end is None or "data_start" not in shard.extra:
        raise ValueError(f"not a planned byte range: {shard!r}")
    return shard.start, shard.end, int(shard.extra["data_start"])


def _record_boundary(raw: IO[bytes], start: int, data_start: int) -> tuple[int, bytes]:
    """``c_i``, and the bytes after it already read (the file is positioned after those)."""
    if start <= data_start:
        raw.seek(data_start)
        return data_start, b""
    raw.seek(start - 1)
    position = start - 1
    while data := raw.read(FIRST_READ):
        found = data.find(b"\n")
        if found >= 0:
            return position + found + 1, data[found + 1 :]
        position += len(data)
    return position, b""  # no line break up to the end: no record starts in this range


class Chunks:
    """The bytes from ``c_i`` on, read on demand; finds ``c_{i+1}`` (``cut``) on the way."""

    def __init__(self, raw: IO[bytes], begin: int, head: bytes, end: int) -> None:
        self.raw = raw
        self.begin = begin
        self.head = head
        self.end = end
        # c_{i+1} is after the first "\n" at or after end - 1; the one before c_i may be it.
        self.cut: int | None = begin if begin >= end else None

    def __iter__(self) -> Iterator[bytes]:
        position = self.begin
        data = self.head or self._read(position)
        while data:
            if self.cut is None and position + len(data) >= self.end:
                found = data.find(b"\n", max(0, self.end - 1 - position))
                if found >= 0:
                    self.cut = position + found + 1
            position += len(data)
            yield data
            data = self._read(position)
        if self.cut is None:
            self.cut = position  # the last range ends with the file

    def _read(self, position: int) -> bytes:
        # Within the range read what is left (a small range needs little); past it, only what
        # a record running over the end needs.
        wanted = self.end - position if self.cut is None else 0
        return self.raw.read(min(BLOCK, max(FIRST_READ, wanted)))


def _growing_reads(raw: IO[bytes]) -> Iterator[bytes]:
    """Reads doubling up to a block: a batch of short records needs only the first one or two."""
    size = _BATCH_READ
    while data := raw.read(size):
        yield data
        size = min(size * 2, BLOCK)


class LongLine(Exception):
    """A line longer than the reader accepts starts right after the lines handed out so far."""
