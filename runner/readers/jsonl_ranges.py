"""JSON Lines byte ranges: the range hooks of :class:`~runner.readers.jsonl.JsonlReader`.

A JSONL record is a line, so a range owns the lines that start in it and has one index (no H1).
A line is checked by the C JSON scanner alone, without the per-line Python of
:meth:`json.JSONDecoder.decode`. Items and errors are exactly those of the whole-file reader
(the primitives of :mod:`runner.readers.jsonltext`).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Iterator
from typing import Any

from runner.errors import ReaderError
from runner.readers import jsonltext
from runner.readers.base import MAX_NESTING_DEPTH, ItemReader, RangeIndex, Shard
from runner.readers.ranges import Chunks, LongLine, batch_reads, plan_byte_ranges, range_chunks

__all__ = ["index_range", "plan_ranges", "read_range"]

_JSON_SPACE = " \t\r\n"  # what json.JSONDecoder.decode skips around a value
# jsonltext's own decoder, called without the Python of JSONDecoder.decode around its C scanner
_SCAN = jsonltext.decode.__self__.scan_once  # type: ignore[attr-defined]
_END = operator.itemgetter(1)


def plan_ranges(reader: ItemReader, url: str, shard_bytes: int) -> list[Shard] | None:
    """Byte ranges of ``url``."""
    return plan_byte_ranges(reader, url, shard_bytes)


def index_range(
    reader: ItemReader, shard: Shard, spacing: int, *, validate: bool = True
) -> tuple[RangeIndex, None]:
    """The index of one range. ``validate=False`` counts the non-blank lines without decoding
    them, about ten times faster: a bad line is then reported by :func:`read_range`, with the
    same wording and line, instead of here."""
    with range_chunks(reader, shard, spacing) as (chunks, _):
        return _index_jsonl(chunks, shard.url, spacing, validate), None


def read_range(
    reader: ItemReader, shard: Shard, offset: int, skip: int, take: int, line: int
) -> list[Any]:
    """The values of ``take`` items after skipping ``skip`` from the line start ``offset``."""
    if take <= 0:
        return []
    with batch_reads(reader, shard, offset) as chunks:
        return _read_jsonl(chunks, shard.url, skip, take, line)


def _jsonl_blocks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Runs of whole lines (each ending with ``\\n``, except the file's last), one per chunk."""
    pending: list[bytes] = []
    pending_size = 0
    for data in chunks:
        cut = data.rfind(b"\n") + 1
        if not cut:
            pending.append(data)
            pending_size += len(data)
            if pending_size > jsonltext.MAX_LINE:
                raise LongLine
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


def _index_jsonl(chunks: Chunks, url: str, spacing: int, validate: bool) -> RangeIndex:
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
    except LongLine:
        if error is None:
            error = (jsonltext.LONG_LINE, lines)
    return RangeIndex(count, tuple(offsets), tuple(at_lines), lines, False, error)


def _clipped(chunks: Chunks) -> Iterator[bytes]:
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
    deep = jsonltext.deepest_line(texts)  # before any decoding: the C scanner recurses
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
            return items, (jsonltext.too_deep(url, 0, line, deep[1]).reason, number)
        try:
            jsonltext.decode(line.decode())
        except ValueError as exc:
            if not line or line.isspace():
                continue
            return items, (jsonltext.invalid(url, 0, exc).reason, number)
        except (RecursionError, MemoryError) as exc:  # as jsonl.py words it
            return items, (f"cannot decode: {type(exc).__name__}: {exc}", number)
        items.append(number)
    return items, None


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
                if len(text) > MAX_NESTING_DEPTH and (deep := jsonltext.deepest_line([text])):
                    raise jsonltext.too_deep(url, number, text, deep[1])
                try:
                    value = jsonltext.decode(text.decode())
                except ValueError as exc:
                    if not text or text.isspace():
                        continue
                    raise jsonltext.invalid(url, number, exc) from exc
                except (RecursionError, MemoryError) as exc:  # as jsonl.py words it
                    raise ReaderError(
                        url, f"cannot decode: {type(exc).__name__}: {exc}", f"line {number}"
                    ) from exc
                items.append(value)
                if len(items) == take:
                    return items
    except LongLine:
        raise ReaderError(url, jsonltext.LONG_LINE, f"line {number + 1}") from None
    return items
