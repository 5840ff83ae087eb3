"""Shard-parallel reading of CSV and JSON Lines files: byte ranges, range indexes, batch reads.

The driver cuts a file into byte ranges (:func:`plan_ranges`); each worker counts the items of
its own range (:func:`index_range`); the driver chains the answers (:func:`resolve`); workers then
read any batch straight from storage (:func:`read_range`). Items come out exactly as
``reader.iter_items(url)`` gives them, and errors carry the same wording and line numbers.

Which records a range owns
    Range ``i`` owns the records whose first byte lies in ``[c_i, c_{i+1})``, where ``c_i`` is
    the byte after the first ``\\n`` at or after ``start - 1`` (the data start for the first
    range). A JSONL record is a line, so that settles it. A CSV record may hold quoted line
    breaks: a worker cannot tell whether ``c_i`` starts a record or lies inside a quoted field
    of a record begun in an earlier range. After a ``\\n`` the C ``csv`` parser is in one of
    only those two states, so the worker indexes both hypotheses, H0 (a record starts at
    ``c_i``) and H1 (inside a quoted field: the bytes up to the end of that record belong to
    the previous range), and the driver keeps the one the previous range's answer implies.

Keeping the index cheaper than a read
    A line without ``"`` that starts a record is the whole record, so runs of such lines are
    counted from the split lines without the ``csv`` module; only records starting on a line
    with a quote are parsed. H1 usually fails within a line (it takes the next opening quote
    for a closing one) or reaches a record start that H0 reaches too; from there both parses
    are the same, and one parse serves both. A JSONL line is checked by the C JSON scanner
    alone, without the per-line Python of :meth:`json.JSONDecoder.decode`.

Files are read in blocks of at most 1 MiB; a range is never held whole. ``bench/split_index.py``
measures indexing and batch reads against a plain read.
"""

from __future__ import annotations

import bisect
import csv
import functools
import io
import itertools
import operator
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from runner.errors import ReaderError
from runner.readers import csv as csv_items
from runner.readers import jsonl as jsonl_items
from runner.readers._io import compression_of, open_binary
from runner.readers.base import MAX_NESTING_DEPTH, ItemReader, Shard
from runner.readers.csv import CsvReader
from runner.readers.jsonl import JsonlReader

__all__ = [
    "RangeIndex",
    "choose",
    "index_range",
    "plan_ranges",
    "range_error",
    "read_range",
    "resolve",
]

_BLOCK = 1 << 20  # the most read and split at a time
_FIRST_READ = 64 << 10  # a small range needs far less than a block
_BATCH_READ = 32 << 10  # first read of a batch: a hundred short records and a skip
_FAR = sys.maxsize  # "no limit" for line indices
_BREAKS = frozenset((b"\n", b"\r\n", b"\r"))  # a blank CSV line is only its line break
_TEXT_BREAKS = frozenset(("\n", "\r\n", "\r"))
_JSON_SPACE = " \t\r\n"  # what json.JSONDecoder.decode skips around a value
# jsonl.py's own decoder, called without the Python of JSONDecoder.decode around its C scanner
_SCAN = jsonl_items._decode.__self__.scan_once  # type: ignore[attr-defined]
_END = operator.itemgetter(1)


@dataclass(frozen=True)
class RangeIndex:
    """What one hypothesis says about the records that start in ``[c_i, c_{i+1})``.

    ``checkpoints[j]`` is a byte offset where a record starts (in the parser's sense), with at
    most blank lines between it and local item ``j * spacing``; ``checkpoint_lines[j]`` is its
    physical line counted from ``c_i`` (0-based). ``lines`` counts the line breaks in the range
    (the same for both hypotheses; a lower bound only after a line over the length limit,
    where the read cannot go on). ``error`` is
    ``(reason, local line)`` of the first read error; ``error_span`` is how many lines after the
    record's first line the parser gave up (csv.py names both lines then): build the exact
    :class:`ReaderError` with :func:`range_error`.
    """

    count: int
    checkpoints: tuple[int, ...]
    checkpoint_lines: tuple[int, ...]
    lines: int
    next_inside_quotes: bool
    error: tuple[str, int] | None
    error_span: int = 0


# -- public API -------------------------------------------------------------------------------


def plan_ranges(reader: ItemReader, url: str, shard_bytes: int) -> list[Shard] | None:
    """Byte ranges of ``shard_bytes`` covering the data of ``url``; ``None`` if it cannot split.

    Only uncompressed CSV and JSONL files split. Reads no further than the block holding the
    header record. Every shard
    carries ``extra["first_line"]`` (the 1-based line at the data start) and
    ``extra["data_start"]``; CSV shards also ``extra["headers"]``.

    >>> plan_ranges(reader, "s3://bucket/big.csv", 64 << 20)  # doctest: +SKIP
    [Shard(url='s3://bucket/big.csv', number=0, start=17, end=67108881, extra={...}), ...]
    """
    if shard_bytes < 1:
        raise ValueError(f"shard_bytes must be at least 1 (got {shard_bytes})")
    kind = _kind(reader)
    if kind is None or compression_of(url) is not None:
        return None
    with open_binary(url, reader.config.storage_options, decompress=False) as raw:
        size = raw.seek(0, io.SEEK_END)
        raw.seek(0)
        data_start = len(csv_items._BOM) if raw.read(len(csv_items._BOM)) == csv_items._BOM else 0
        raw.seek(0)
        extra: dict[str, Any] = {"first_line": 1}
        if kind == "CSV":
            headers, header_bytes, first_line = _csv_header(reader, raw, url)
            if not headers:
                return []  # an empty file has no header and no items
            data_start += header_bytes
            extra = {"headers": headers, "first_line": first_line}
    extra["data_start"] = data_start
    starts = range(data_start, size, shard_bytes)
    return [
        Shard(url, number=i, start=s, end=min(s + shard_bytes, size), extra=dict(extra))
        for i, s in enumerate(starts)
    ]


def index_range(
    reader: ItemReader, shard: Shard, spacing: int, *, validate: bool = True
) -> tuple[RangeIndex, RangeIndex | None]:
    """Count the items of one planned range under H0 and H1, with a checkpoint every ``spacing``.

    Never raises for bad data: each hypothesis records its first error instead, and the driver
    raises it only if that hypothesis is the true one. H1 is ``None`` for JSONL and for the
    range at the data start.

    ``validate=False`` (JSONL only) counts the non-blank lines without decoding them, about ten
    times faster: a line that is not JSON or not UTF-8 is then reported by :func:`read_range`,
    with the same wording and line, instead of here. A CSV record cannot be found without
    parsing, so CSV ranges are always checked.

    >>> h0, h1 = index_range(reader, shard, spacing=100)  # doctest: +SKIP
    """
    if spacing < 1:
        raise ValueError(f"spacing must be at least 1 (got {spacing})")
    kind = _kind(reader)
    if kind is None:
        raise ValueError(f"{type(reader).__name__} ranges cannot be indexed")
    start, end, data_start = _bounds(shard)
    with open_binary(shard.url, reader.config.storage_options, decompress=False) as raw:
        begin, head = _record_boundary(raw, start, data_start)
        chunks = _Chunks(raw, begin, head, end)
        if kind == "JSONL":
            return _index_jsonl(chunks, shard.url, spacing, validate), None
        delimiter = csv_items._delimiter(reader.config.csv_delimiter)
        return _index_csv(chunks, delimiter, spacing, with_h1=start > data_start)


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


def read_range(
    reader: ItemReader, shard: Shard, offset: int, skip: int, take: int, line: int
) -> list[Any]:
    """The values of ``take`` items after skipping ``skip`` from the record start ``offset``.

    ``line`` is the absolute 1-based line at ``offset``. Reads past ``shard.end`` when the items
    run on; returns fewer only at the end of the file. Bad data raises the :class:`ReaderError`
    the whole-file reader would raise there.

    >>> read_range(reader, shard, index.checkpoints[3], 20, 100, line=4711)  # doctest: +SKIP
    """
    kind = _kind(reader)
    if kind is None:
        raise ValueError(f"{type(reader).__name__} ranges cannot be read")
    if take <= 0:
        return []
    with open_binary(
        shard.url, reader.config.storage_options, decompress=False, block_size=_BLOCK
    ) as raw:
        raw.seek(offset)
        chunks = _growing_reads(raw)
        if kind == "JSONL":
            return _read_jsonl(chunks, shard.url, skip, take, line)
        delimiter = csv_items._delimiter(reader.config.csv_delimiter)
        headers = tuple(shard.extra["headers"])
        return _read_csv(chunks, shard.url, delimiter, headers, (skip, take), line)


# -- shared plumbing --------------------------------------------------------------------------


def _kind(reader: ItemReader) -> str | None:
    if isinstance(reader, CsvReader):
        return "CSV"
    if isinstance(reader, JsonlReader):
        return "JSONL"
    return None


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
    while data := raw.read(_FIRST_READ):
        found = data.find(b"\n")
        if found >= 0:
            return position + found + 1, data[found + 1 :]
        position += len(data)
    return position, b""  # no line break up to the end: no record starts in this range


class _Chunks:
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
        return self.raw.read(min(_BLOCK, max(_FIRST_READ, wanted)))


def _growing_reads(raw: IO[bytes]) -> Iterator[bytes]:
    """Reads doubling up to a block: a batch of short records needs only the first one or two."""
    size = _BATCH_READ
    while data := raw.read(size):
        yield data
        size = min(size * 2, _BLOCK)


class _LongLine(Exception):
    """A line longer than the reader accepts starts right after the lines handed out so far."""


def _csv_pieces(chunks: Iterable[bytes]) -> Iterator[tuple[bytes, list[bytes]]]:
    """Whole physical lines with their breaks, as csv.py splits them: ``(their bytes, lines)``
    per chunk (the bytes let the index search a block at once)."""
    pending: list[bytes] = []  # the start of a line that continues in the next chunk
    pending_size = 0
    for data in chunks:
        if pending and csv_items._unbroken(pending[-1], data):
            pending.append(data)
            pending_size += len(data)
            if pending_size > csv_items._MAX_LINE:
                raise _LongLine
            continue
        if pending:
            data = b"".join([*pending, data])
        pieces = data.splitlines(keepends=True)  # \n, \r\n and \r only, as csv.py
        # A last piece without "\n" is unfinished, or a "\r" whose "\n" is in the next chunk.
        pending = [pieces.pop()] if not pieces[-1].endswith(b"\n") else []
        pending_size = len(pending[0]) if pending else 0
        if pieces:
            yield (data[: len(data) - pending_size] if pending else data), pieces
    if pending:
        last = b"".join(pending)
        yield last, [last]


def _jsonl_blocks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Runs of whole lines (each ending with ``\\n``, except the file's last), one per chunk."""
    pending: list[bytes] = []
    pending_size = 0
    for data in chunks:
        cut = data.rfind(b"\n") + 1
        if not cut:
            pending.append(data)
            pending_size += len(data)
            if pending_size > jsonl_items._MAX_LINE:
                raise _LongLine
            continue
        yield b"".join([*pending, data[:cut]]) if pending else data[:cut]
        pending = [data[cut:]] if cut < len(data) else []
        pending_size = len(data) - cut
    if pending:
        yield b"".join(pending)


def _split_jsonl(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    return lines


# -- planning ---------------------------------------------------------------------------------


def _csv_header(reader: ItemReader, raw: IO[bytes], url: str) -> tuple[tuple[str, ...], int, int]:
    """The headers, the bytes of the header record (BOM excluded), the first data line."""
    given = csv_items._given_headers(reader.config)
    if given is not None:
        csv_items._check_unique(given, url, position=None)
        return given, 0, 1
    taken = [0]

    def counted(lines: Iterator[str]) -> Iterator[str]:
        for text in lines:  # only the header record and blank lines before it pass here
            taken[0] += len(text.encode())
            yield text

    delimiter = csv_items._delimiter(reader.config.csv_delimiter)
    rows = csv.reader(
        counted(csv_items._physical_lines(raw, url)), delimiter=delimiter, strict=True
    )
    headers = csv_items._header_row(rows, url)
    return headers, taken[0], rows.line_num + 1


# -- JSONL index ------------------------------------------------------------------------------


def _index_jsonl(chunks: _Chunks, url: str, spacing: int, validate: bool) -> RangeIndex:
    count = lines = 0
    offset = chunks.begin
    offsets: list[int] = []
    at_lines: list[int] = []
    error: tuple[str, int] | None = None
    try:
        for data in _jsonl_blocks(_clipped(chunks)):
            texts = _split_jsonl(data)
            if error is None:
                items, bad = _jsonl_items(data, texts, url, validate)
                due = range(-count % spacing, len(items), spacing)  # this block's checkpoints
                if due:
                    sums = list(itertools.accumulate(map(len, texts), initial=0))
                    offsets.extend(offset + sums[items[x]] + items[x] for x in due)
                    at_lines.extend(lines + items[x] for x in due)
                count += len(items)
                if bad is not None:
                    error = (bad[0], lines + bad[1])
            lines += len(texts) - (not data.endswith(b"\n"))  # line breaks, not lines
            offset += len(data)
    except _LongLine:
        if error is None:
            error = (jsonl_items._LONG_LINE, lines)
    return RangeIndex(count, tuple(offsets), tuple(at_lines), lines, False, error)


def _clipped(chunks: _Chunks) -> Iterator[bytes]:
    """The bytes of ``[c_i, c_{i+1})`` only: a JSONL record never runs past its line."""
    position = chunks.begin
    if chunks.cut == position:
        return
    for data in chunks:
        if chunks.cut is not None and position + len(data) >= chunks.cut:
            yield data[: chunks.cut - position]
            return
        position += len(data)
        yield data


def _jsonl_items(
    data: bytes, texts: list[bytes], url: str, validate: bool
) -> tuple[list[int], tuple[str, int] | None]:
    """Indices of the item lines of ``data`` (split as ``texts``), and an invalid line's
    ``(reason, line)``.

    All in C for a clean block: decode, strip, scan every value, compare where each ended with
    its length (a value followed by more text, or a scan that stopped ``map`` early, differs).
    Any doubt goes to the line-by-line check, which words the error as jsonl.py does.
    """
    if not validate:  # blank is what bytes.strip() empties: jsonl.py's isspace()
        return list(itertools.compress(itertools.count(), map(bytes.strip, texts))), None
    deep = jsonl_items.deepest_line(texts)  # before any decoding: the C scanner recurses
    try:
        if deep is not None:
            raise ValueError("a line nests too deep: find it below")
        lines = data.decode().split("\n")
        if data.endswith(b"\n"):
            lines.pop()
        stripped = list(map(str.strip, lines, itertools.repeat(_JSON_SPACE)))
        values = list(filter(None, stripped))
        if list(map(_END, map(_SCAN, values, itertools.repeat(0)))) == list(map(len, values)):
            return list(itertools.compress(itertools.count(), stripped)), None
    except (ValueError, RecursionError):  # not UTF-8, not JSON, NaN, too deep: find it below
        pass
    items: list[int] = []
    for number, line in enumerate(texts):
        if deep is not None and number == deep[0]:
            return items, (jsonl_items.too_deep(url, 0, line, deep[1]).reason, number)
        try:
            jsonl_items._decode(line.decode())
        except ValueError as exc:
            if not line or line.isspace():
                continue
            return items, (jsonl_items._invalid(url, 0, exc).reason, number)
        except (RecursionError, MemoryError) as exc:  # as jsonl.py words it
            return items, (f"cannot decode: {type(exc).__name__}: {exc}", number)
        items.append(number)
    return items, None


# -- CSV index --------------------------------------------------------------------------------


def _index_csv(
    chunks: _Chunks, delimiter: str, spacing: int, with_h1: bool
) -> tuple[RangeIndex, RangeIndex | None]:
    source = _CsvSource(chunks)
    h0 = _Cursor(delimiter, spacing, tail=False)
    cursors = [h0]
    if with_h1:
        cursors.append(_Cursor(delimiter, spacing, tail=True))
    schedules = [c.schedules[0] for c in cursors]
    # An empty range needs no reading: H0 ends at c_i, H1 is still inside the quoted field.
    empty = source.in_range == 0
    block = _Block(0, chunks.begin, (b"", [], []), True, None) if empty else source.block(None, 0)
    while cursors := _walk(block, cursors, source.in_range):
        block = source.block(block, min(c.line for c in cursors))
    lines, limit = source.finish()
    results = [s.result(lines, limit) for s in schedules]
    return results[0], results[1] if with_h1 else None


class _Block:
    """Physical lines of a range held in memory, with what the fast path needs to know."""

    __slots__ = (
        "bad",
        "empties",
        "final",
        "first",
        "offset",
        "pieces",
        "specials",
        "starts",
        "texts",
    )

    def __init__(
        self,
        first: int,
        offset: int,
        lines: tuple[bytes, list[bytes], list[str]],
        final: bool,
        bad: tuple[int, str] | None,
    ) -> None:
        blob, self.pieces, self.texts = lines  # texts: the pieces decoded, up to a bad line
        self.first = first  # local index (from c_i) of pieces[0]
        self.offset = offset  # byte offset of pieces[0]
        self.final = final  # no lines follow: the end of the file
        self.bad = bad  # (index, reason): the line at texts' end cannot be read
        self.starts = list(itertools.accumulate(map(len, self.pieces), initial=0))
        self.specials = _special_lines(blob, self.pieces, self.starts)
        self.empties = _blank_lines(self.pieces)

    def offset_of(self, k: int) -> int:
        return self.offset + self.starts[k]

    def next_special(self, k: int) -> int:
        i = bisect.bisect_left(self.specials, k)
        return self.specials[i] if i < len(self.specials) else len(self.pieces)


def _special_lines(blob: bytes, pieces: list[bytes], starts: list[int]) -> list[int]:
    """Lines a record may start on that only the csv module can parse: a quote, or too long.

    Searched in the block's bytes, one search per such line: testing every line for a quote
    costs ten times more, even in C.
    """
    special = []
    found = blob.find(b'"')
    while found >= 0:
        line = bisect.bisect_right(starts, found) - 1
        special.append(line)
        found = blob.find(b'"', starts[line + 1])
    limit = csv.field_size_limit()  # a longer line may hold a field the parser refuses
    if pieces and max(map(len, pieces)) > limit:
        special = sorted({*special, *(i for i, p in enumerate(pieces) if len(p) > limit)})
    return special


def _blank_lines(pieces: list[bytes]) -> list[int]:
    if not (pieces.count(b"\n") or pieces.count(b"\r\n") or pieces.count(b"\r")):
        return []  # the usual case, found in C
    return [i for i, piece in enumerate(pieces) if piece in _BREAKS]


class _CsvSource:
    """The lines from ``c_i`` on, block by block; counts the lines of the range on the way."""

    def __init__(self, chunks: _Chunks) -> None:
        self.chunks = chunks
        self.pieces = _csv_pieces(chunks)
        self.offset = chunks.begin  # byte offset of the next piece
        self.done = 0  # pieces handed out
        self.in_range: int | None = 0 if chunks.cut == chunks.begin else None
        self.unterminated = False  # the file's last line has no line break

    def block(self, old: _Block | None, keep: int) -> _Block:
        """The next block, starting with ``old``'s lines from local line ``keep`` on."""
        carried: list[bytes] = []
        texts: list[str] = []
        offset = self.offset
        if old is not None:  # usually nothing: only a record running over the block's end
            carried, texts = old.pieces[keep - old.first :], old.texts[keep - old.first :]
            offset = old.offset_of(keep - old.first)
        bad: tuple[int, str] | None = None
        try:
            new = self._next()
        except _LongLine:
            new, bad = (b"", []), (len(carried), csv_items._LONG_LINE)
        blob, pieces = new or (b"", [])
        decoded, unreadable = _decoded(pieces)
        if unreadable is not None:
            bad = (len(carried) + unreadable[0], unreadable[1])
        if carried:
            blob, pieces = b"".join([*carried, blob]), carried + pieces
        return _Block(keep, offset, (blob, pieces, texts + decoded), new is None, bad)

    def finish(self) -> tuple[int, int]:
        """``(line breaks, lines)`` of the range; reads on to its end if the parse stopped early."""
        try:
            while self.in_range is None and self._next() is not None:
                pass
        except _LongLine:
            self.in_range = self.done  # cannot split further; only needed after an error
        lines = self.in_range if self.in_range is not None else self.done
        last_unbroken = self.unterminated and lines == self.done
        return lines - last_unbroken, lines

    def _next(self) -> tuple[bytes, list[bytes]] | None:
        lines = next(self.pieces, None)
        if lines is None:
            if self.in_range is None:
                self.in_range = self.done
            return None
        blob, pieces = lines
        size = len(blob)
        cut = self.chunks.cut
        if self.in_range is None and cut is not None and cut <= self.offset + size:
            ends = itertools.accumulate(map(len, pieces))
            self.in_range = self.done + bisect.bisect_right(list(ends), cut - self.offset)
        self.offset += size
        self.done += len(pieces)
        self.unterminated = not pieces[-1].endswith((b"\n", b"\r"))  # only the file's last
        return lines


def _decoded(pieces: list[bytes]) -> tuple[list[str], tuple[int, str] | None]:
    """The pieces as text, up to a line that is not UTF-8 (its index and csv.py's reason)."""
    if not pieces:
        return [], None
    try:
        return list(map(bytes.decode, pieces)), None
    except UnicodeDecodeError:
        pass
    texts: list[str] = []
    for piece in pieces:
        try:
            texts.append(piece.decode())
        except UnicodeDecodeError as exc:
            return texts, (len(texts), f"not UTF-8 text: {exc.reason}")
    return texts, None


class _Schedule:
    """The checkpoints of one hypothesis, counted by whichever cursor parses for it."""

    def __init__(self, cursor: _Cursor, spacing: int) -> None:
        self.cursor = cursor
        self.spacing = spacing
        self.shift = 0  # the cursor's item number minus this hypothesis's
        self.next = 0  # the cursor's item number of the next checkpoint
        self.offsets: list[int] = []
        self.lines: list[int] = []

    def result(self, lines: int, limit: int) -> RangeIndex:
        cursor = self.cursor
        error, span = (None, 0) if cursor.error is None else (cursor.error[:2], cursor.error[2])
        # Still in the skipped tail, or the last record ran past c_{i+1}: c_{i+1} is in quotes.
        inside = cursor.error is None and (cursor.tail or cursor.line > limit)
        return RangeIndex(
            cursor.items - self.shift,
            tuple(self.offsets),
            tuple(self.lines),
            lines,
            inside,
            error,
            span,
        )


class _Cursor:
    """Where one parse of a range stands: the next record start, items, checkpoints, error."""

    def __init__(self, delimiter: str, spacing: int, tail: bool) -> None:
        self.delimiter = delimiter
        self.spacing = spacing
        self.line = 0  # local line where the next record (or H1's skipped tail) starts
        self.items = 0
        self.tail = tail  # H1 before the end of the record begun in an earlier range
        self.done = False
        self.pending = False  # waiting for the next block
        self.error: tuple[str, int, int] | None = None  # reason, line, span
        self.schedules = [_Schedule(self, spacing)]
        self._block: _Block | None = None  # the block _rows parses
        self._lines: Any = None  # list iterator over its texts, repositioned per record
        self._rows: Any = None

    @property
    def active(self) -> bool:
        return not (self.done or self.pending)

    def adopt(self, other: _Cursor) -> None:
        """Count for ``other`` too: both stand at the same record start, so parse the same."""
        delta = self.items - other.items
        for schedule in other.schedules:
            schedule.cursor = self
            schedule.shift += delta
            schedule.next += delta
        self.schedules += other.schedules

    def advance(self, block: _Block, until: int, limit: int | None) -> None:
        """Parse records while the next one starts before ``until`` and the range's end."""
        stop = min(until, _FAR if limit is None else limit)
        first, ready = block.first, len(block.texts)
        while self.line < stop:
            k = self.line - first
            if k >= ready:
                self._out_of_lines(block, k)
                return
            if not self.tail:
                run_end = min(block.next_special(k), ready, stop - first)
                if run_end > k:
                    self._count_run(block, k, run_end)
                    continue
            self._record(block, k)
            if not self.active:
                return
        if limit is not None and self.line >= limit:
            self.done = True

    def _out_of_lines(self, block: _Block, k: int) -> None:
        if block.bad is not None:
            self._fail(block.bad[1], block.first + k, 0)
        elif block.final:
            self.done = True
        else:
            self.pending = True

    def _count_run(self, block: _Block, k: int, end: int) -> None:
        """Lines ``k`` to ``end`` hold no quote: each non-blank one is a whole record."""
        blanks = 0
        if block.empties:
            blanks = bisect.bisect_left(block.empties, end) - bisect.bisect_left(block.empties, k)
        found = end - k - blanks
        item_lines: list[int] | None = None
        for schedule in self.schedules:
            while schedule.next < self.items + found:
                x = schedule.next - self.items
                if blanks and item_lines is None:
                    item_lines = [i for i in range(k, end) if block.pieces[i] not in _BREAKS]
                line = item_lines[x] if item_lines is not None else k + x
                schedule.offsets.append(block.offset_of(line))
                schedule.lines.append(block.first + line)
                schedule.next += schedule.spacing
        self.items += found
        self.line = block.first + end

    def _record(self, block: _Block, k: int) -> None:
        """Parse the record at line ``k`` (or H1's tail) with the csv module."""
        used, row, exc = self._parse(block, k)
        if exc is None:
            if self.tail:
                self.tail = False  # the tail's row belongs to the range before
            elif row:
                self._checkpoint(block, k)
                self.items += 1
            self.line = block.first + k + used
            return
        ran_out = k + used >= len(block.texts) and str(exc).startswith("unexpected end of data")
        if ran_out and block.bad is not None:
            self._fail(block.bad[1], block.first + block.bad[0], 0)
        elif ran_out and not block.final:
            self.pending = True  # the record goes on in the next block
        else:
            self._fail(f"malformed CSV row: {exc}", block.first + k, used - 1)

    def _parse(self, block: _Block, k: int) -> tuple[int, list[str] | None, csv.Error | None]:
        """``(lines used, row, error)`` of the record at ``k``."""
        if self.tail:  # a quote before the line puts the parser inside a quoted field
            texts = itertools.chain(
                ('"' + block.texts[k],), itertools.islice(block.texts, k + 1, None)
            )
            rows = csv.reader(texts, delimiter=self.delimiter, strict=True)
            before = 0
        else:
            if self._block is not block:
                self._lines = iter(block.texts)
                self._rows = csv.reader(self._lines, delimiter=self.delimiter, strict=True)
                self._block = block
            # One reader per block, moved to each record by repositioning its list iterator:
            # all in C, where a reader per record would cost more than the record.
            self._lines.__setstate__(k)
            rows = self._rows
            before = rows.line_num
        try:
            row = next(rows)
        except csv.Error as exc:
            self._block = None  # the iterator may be spent
            return rows.line_num - before, None, exc
        return rows.line_num - before, row, None

    def _checkpoint(self, block: _Block, k: int) -> None:
        for schedule in self.schedules:
            if schedule.next == self.items:
                schedule.offsets.append(block.offset_of(k))
                schedule.lines.append(block.first + k)
                schedule.next += schedule.spacing

    def _fail(self, reason: str, line: int, span: int) -> None:
        self.error = (reason, line, span)
        self.done = True


def _walk(block: _Block, cursors: list[_Cursor], limit: int | None) -> list[_Cursor]:
    """Advance the cursors through ``block``; return those waiting for the next block.

    With two cursors the one behind moves up to the other, so every record start of either is
    compared with the other's: at the first they share, H1 hands its counting over to H0.
    """
    for cursor in cursors:
        cursor.pending = False
    if len(cursors) == 2:
        h0, h1 = cursors
        if h1.tail:
            h1.advance(block, h1.line + 1, limit)
        while h0.active and h1.active:
            if h0.line == h1.line:
                h0.adopt(h1)
                cursors = [h0]
                break
            behind, ahead = (h0, h1) if h0.line < h1.line else (h1, h0)
            behind.advance(block, ahead.line, limit)
    for cursor in cursors:
        if cursor.active:
            cursor.advance(block, _FAR, limit)
    return [c for c in cursors if not c.done]


# -- batch reads ------------------------------------------------------------------------------


def _read_csv(
    chunks: Iterator[bytes],
    url: str,
    delimiter: str,
    headers: tuple[str, ...],
    window: tuple[int, int],
    line: int,
) -> list[dict[str, str]]:
    """csv.py's item loop from a record start, with absolute line numbers."""
    skip, take = window
    texts = _csv_texts(chunks, url, line)
    skip, passed, stopper = _skip_plain_records(texts, skip)
    if skip < 0:
        return []  # the file ended while skipping
    if stopper is not None:  # a line with a quote: the csv module takes over from it
        texts = itertools.chain((stopper,), texts)
    rows = csv.reader(texts, delimiter=delimiter, strict=True)
    width = len(headers)
    padding = [""] * width
    build = _builder(headers)
    items: list[dict[str, str]] = []
    base = line - 1 + passed  # rows.line_num counts from here
    start = base + 1  # the line where the next record begins
    try:
        for row in rows:
            if row:
                if skip:
                    skip -= 1
                else:
                    if len(row) < width:
                        row += padding[len(row) :]
                    items.append(build(row))
                    if len(items) == take:
                        break
            start = base + rows.line_num + 1
    except csv.Error as exc:
        raise csv_items._malformed(url, start, base + rows.line_num, exc) from exc
    return items


def _skip_plain_records(texts: Iterator[str], skip: int) -> tuple[int, int, str | None]:
    """Skip up to ``skip`` records that are a line without a quote, without the csv module.

    Returns the records still to skip (-1: the file ended first), the lines passed, and the
    line with a quote that stopped the skip (``None`` if none did). Skipped records belong to
    an earlier batch, and the index has checked them.
    """
    passed = 0
    while skip:
        text = next(texts, None)
        if text is None:
            return -1, passed, None
        if '"' in text:
            return skip, passed, text
        passed += 1
        if text not in _TEXT_BREAKS:
            skip -= 1
    return 0, passed, None


@functools.lru_cache(maxsize=64)
def _builder(headers: tuple[str, ...]) -> Callable[[list[str]], dict[str, str]]:
    """csv.py's row-to-dict function, kept: compiling it costs more than a small batch."""
    return csv_items._dict_builder(headers)


def _csv_texts(chunks: Iterator[bytes], url: str, line: int) -> Iterator[str]:
    return itertools.chain.from_iterable(_csv_text_blocks(chunks, url, line))


def _csv_text_blocks(chunks: Iterator[bytes], url: str, line: int) -> Iterator[list[str]]:
    done = line - 1  # lines before the ones being decoded
    try:
        for _, pieces in _csv_pieces(chunks):
            yield from csv_items._decoded(pieces, url, done)
            done += len(pieces)
    except _LongLine:
        raise ReaderError(url, csv_items._LONG_LINE, f"line {done + 1}") from None


def _read_jsonl(chunks: Iterator[bytes], url: str, skip: int, take: int, line: int) -> list[Any]:
    """jsonl.py's item loop from a line start; skipped lines are only told blank or not."""
    items: list[Any] = []
    number = line - 1
    try:
        for data in _jsonl_blocks(chunks):
            for text in _split_jsonl(data):
                number += 1
                if skip:
                    if text and not text.isspace():  # an item (or a bad line: still a record)
                        skip -= 1
                    continue
                if len(text) > MAX_NESTING_DEPTH and (deep := jsonl_items.deepest_line([text])):
                    raise jsonl_items.too_deep(url, number, text, deep[1])
                try:
                    value = jsonl_items._decode(text.decode())
                except ValueError as exc:
                    if not text or text.isspace():
                        continue
                    raise jsonl_items._invalid(url, number, exc) from exc
                except (RecursionError, MemoryError) as exc:  # as jsonl.py words it
                    raise ReaderError(
                        url, f"cannot decode: {type(exc).__name__}: {exc}", f"line {number}"
                    ) from exc
                items.append(value)
                if len(items) == take:
                    return items
    except _LongLine:
        raise ReaderError(url, jsonl_items._LONG_LINE, f"line {number + 1}") from None
    return items
