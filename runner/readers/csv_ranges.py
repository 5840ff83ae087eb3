"""CSV byte ranges: the range hooks of :class:`~runner.readers.csv.CsvReader`.

A CSV record may hold quoted line breaks, so a worker cannot tell whether a range's first
record boundary starts a record or lies inside a quoted field of a record begun in an earlier
range. After a ``\\n`` the C ``csv`` parser is in one of only those two states, so the worker
indexes both hypotheses, H0 (a record starts there) and H1 (inside a quoted field: the bytes up
to the end of that record belong to the previous range), and the driver keeps the one the
previous range's answer implies (:func:`runner.readers.ranges.choose`).

Keeping the index cheaper than a read: a line without ``"`` that starts a record is the whole
record, so runs of such lines are counted from the split lines without the ``csv`` module; only
records starting on a line with a quote are parsed. H1 usually fails within a line (it takes
the next opening quote for a closing one) or reaches a record start that H0 reaches too; from
there both parses are the same, and one parse serves both. Items and errors are exactly those
of the whole-file reader (the primitives of :mod:`runner.readers.csvtext`).
"""

from __future__ import annotations

import bisect
import csv
import functools
import itertools
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from runner.errors import ReaderError
from runner.readers import csvtext
from runner.readers.base import ItemReader, RangeIndex, Shard
from runner.readers.ranges import (
    Chunks,
    LongLine,
    batch_reads,
    plan_byte_ranges,
    range_chunks,
)

__all__ = ["index_range", "plan_ranges", "read_range"]

_FAR = sys.maxsize  # "no limit" for line indices
_BREAKS = frozenset((b"\n", b"\r\n", b"\r"))  # a blank CSV line is only its line break
_TEXT_BREAKS = frozenset(("\n", "\r\n", "\r"))


def plan_ranges(reader: ItemReader, url: str, shard_bytes: int) -> list[Shard] | None:
    """Byte ranges of ``url``'s data after its header; each shard's ``extra["headers"]`` holds
    the headers (the only data the driver reads)."""

    def header(raw: IO[bytes]) -> tuple[dict[str, Any], int] | None:
        headers, header_bytes, first_line = _csv_header(reader, raw, url)
        if not headers:
            return None
        return {"headers": headers, "first_line": first_line}, header_bytes

    return plan_byte_ranges(reader, url, shard_bytes, header)


def index_range(
    reader: ItemReader, shard: Shard, spacing: int
) -> tuple[RangeIndex, RangeIndex | None]:
    """H0's and H1's index of one range (H1 ``None`` for the range at the data start)."""
    delimiter = csvtext.delimiter_of(reader.config.csv_delimiter)
    with range_chunks(reader, shard, spacing) as (chunks, with_h1):
        return _index_csv(chunks, delimiter, spacing, with_h1=with_h1)


def read_range(
    reader: ItemReader, shard: Shard, offset: int, skip: int, take: int, line: int
) -> list[dict[str, str]]:
    """``take`` rows after skipping ``skip`` records from the record start ``offset``."""
    if take <= 0:
        return []
    delimiter = csvtext.delimiter_of(reader.config.csv_delimiter)
    headers = tuple(shard.extra["headers"])
    with batch_reads(reader, shard, offset) as chunks:
        return _read_csv(chunks, shard.url, delimiter, headers, (skip, take), line)


def _csv_pieces(chunks: Iterable[bytes]) -> Iterator[tuple[bytes, list[bytes]]]:
    """Whole physical lines with their breaks, as csv.py splits them: ``(their bytes, lines)``
    per chunk (the bytes let the index search a block at once)."""
    pending: list[bytes] = []  # the start of a line that continues in the next chunk
    pending_size = 0
    for data in chunks:
        if pending and csvtext.unbroken(pending[-1], data):
            pending.append(data)
            pending_size += len(data)
            if pending_size > csvtext.MAX_LINE:
                raise LongLine
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


def _csv_header(reader: ItemReader, raw: IO[bytes], url: str) -> tuple[tuple[str, ...], int, int]:
    """The headers, the bytes of the header record (BOM excluded), the first data line."""
    given = csvtext.given_headers(reader.config)
    if given is not None:
        csvtext.check_unique(given, url, position=None)
        return given, 0, 1
    taken = [0]

    def counted(lines: Iterator[str]) -> Iterator[str]:
        for text in lines:  # only the header record and blank lines before it pass here
            taken[0] += len(text.encode())
            yield text

    delimiter = csvtext.delimiter_of(reader.config.csv_delimiter)
    rows = csv.reader(counted(csvtext.physical_lines(raw, url)), delimiter=delimiter, strict=True)
    headers = csvtext.header_row(rows, url)
    return headers, taken[0], rows.line_num + 1


def _index_csv(
    chunks: Chunks, delimiter: str, spacing: int, with_h1: bool
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

    def __init__(self, chunks: Chunks) -> None:
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
        except LongLine:
            new, bad = (b"", []), (len(carried), csvtext.LONG_LINE)
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
        except LongLine:
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
        raise csvtext.malformed(url, start, base + rows.line_num, exc) from exc
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
    return csvtext.dict_builder(headers)


def _csv_texts(chunks: Iterator[bytes], url: str, line: int) -> Iterator[str]:
    return itertools.chain.from_iterable(_csv_text_blocks(chunks, url, line))


def _csv_text_blocks(chunks: Iterator[bytes], url: str, line: int) -> Iterator[list[str]]:
    done = line - 1  # lines before the ones being decoded
    try:
        for _, pieces in _csv_pieces(chunks):
            yield from csvtext.decoded(pieces, url, done)
            done += len(pieces)
    except LongLine:
        raise ReaderError(url, csvtext.LONG_LINE, f"line {done + 1}") from None
