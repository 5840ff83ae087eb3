"""JSONL items: one JSON value per line, each line an item.

- Lines end with ``\\n`` (a ``\\r`` before it is whitespace, so CRLF files work).
- Blank lines (nothing but whitespace) are skipped: files often end with one, and editors add them.
- A line that is not one valid JSON value, or not UTF-8, fails the read with ``line N`` (counted
  from 1, blank lines included) and :mod:`json`'s message. The items before it have already been
  produced: the error surfaces when the reader reaches the line, so nothing already read is lost.
- ``NaN`` and ``Infinity`` are refused: they are not JSON, and no result file could hold them.
- A line longer than 256 MiB fails the read: no item that large can be processed, and it stops a
  file without line breaks (a JSON array named ``.jsonl``) from being read into memory whole.
- A line nesting containers deeper than :data:`~runner.readers.base.MAX_NESTING_DEPTH` (512)
  fails the read with its line and column, before it is decoded. Only lines longer than the
  limit, with more brackets than the limit, are looked at closely, so the check costs nothing
  on ordinary files.
- A UTF-8 byte-order mark at the start is ignored.

The file is read in 1 MiB blocks through :func:`runner.readers._io.open_binary`, so ``.gz`` and
``.zst`` inputs work and memory does not grow with the file.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import IO, Any, NoReturn

from runner.errors import ReaderError
from runner.readers._io import open_binary
from runner.readers.base import MAX_NESTING_DEPTH, ItemReader, Shard, placed
from runner.readers.json import JsonDepth

__all__ = ["JsonlReader"]

_BLOCK = 1 << 20  # bytes read and split at a time
_MAX_LINE = 256 << 20
_LONG_LINE = f"line longer than {_MAX_LINE >> 20} MiB (is this a JSON Lines file?)"
_BOM = b"\xef\xbb\xbf"


class JsonlReader(ItemReader):
    """Stream a JSON Lines file, one item per non-blank line.

    >>> from runner.readers.base import ReaderConfig
    >>> reader = JsonlReader(ReaderConfig(input_type="JSONL"))
    >>> list(reader.iter_items("s3://bucket/events.jsonl.gz"))  # doctest: +SKIP
    [{'id': 1, 'kind': 'click'}, {'id': 2, 'kind': 'view'}]
    """

    input_type = "JSONL"

    def read_shard(self, shard: Shard) -> Iterator[Any]:
        """The value of every non-blank line of ``shard.url``, in order."""
        url = shard.url
        number = 0
        try:
            with open_binary(url, self.config.storage_options) as raw:
                for number, line in enumerate(_lines(raw, url), start=1):
                    try:
                        value = _decode(line.decode())
                    except ValueError as exc:  # not UTF-8, not JSON, or a NaN/Infinity refused
                        if not line or line.isspace():
                            continue  # a blank line: cheaper to find here than to test each
                        raise _invalid(url, number, exc) from exc
                    except (RecursionError, MemoryError) as exc:  # the depth check prevents it
                        raise ReaderError(
                            url, f"cannot decode: {type(exc).__name__}: {exc}", f"line {number}"
                        ) from exc
                    yield value
        except ReaderError as exc:  # a broken .gz knows no line: the one after those read
            raise placed(exc, f"line {number + 1}") from exc.__cause__


def _not_json(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for all lines: json.loads with any keyword builds a new decoder per call.
_decode = json.JSONDecoder(parse_constant=_not_json).decode


def _invalid(url: str, number: int, exc: ValueError) -> ReaderError:
    position = f"line {number}"
    if isinstance(exc, json.JSONDecodeError):
        return ReaderError(url, f"invalid JSON: {exc.msg} at column {exc.colno}", position)
    if isinstance(exc, UnicodeDecodeError):
        return ReaderError(url, f"not UTF-8 text: {exc.reason} at byte {exc.start + 1}", position)
    return ReaderError(url, f"invalid JSON: {exc}", position)


def deepest_line(lines: list[bytes]) -> tuple[int, int] | None:
    """``(index, byte offset)`` of the first line nesting a container past the limit, if any.

    A line needs more bytes, and more ``[``/``{``, than the limit to pass it: those two tests
    run in C over the whole block, and only lines passing both are walked.
    """
    if not lines or max(map(len, lines)) <= MAX_NESTING_DEPTH:
        return None
    long_lines = map(MAX_NESTING_DEPTH.__lt__, map(len, lines))
    for index in itertools.compress(itertools.count(), long_lines):
        line = lines[index]
        if line.count(b"[") + line.count(b"{") > MAX_NESTING_DEPTH:
            offset = JsonDepth().feed(line)
            if offset is not None:
                return index, offset
    return None


def too_deep(url: str, number: int, line: bytes, offset: int) -> ReaderError:
    """The error for line ``number`` opening a container past the limit at byte ``offset``."""
    column = len(line[:offset].decode("utf-8", "replace")) + 1  # in characters, as json's
    reason = f"JSON nested deeper than {MAX_NESTING_DEPTH} levels at column {column}"
    return ReaderError(url, reason, f"line {number}")


def _checked(lines: list[bytes], url: str, done: int) -> Iterator[list[bytes]]:
    """``lines``; with one nested too deep, the lines before it, then the error."""
    deep = deepest_line(lines)
    if deep is None:
        yield lines
        return
    index, offset = deep
    yield lines[:index]
    raise too_deep(url, done + index + 1, lines[index], offset)


def _lines(raw: IO[bytes], url: str) -> Iterator[bytes]:
    """The lines of ``raw`` without their ``\\n``; split in C a block at a time.

    Faster than a TextIOWrapper over fsspec's file objects, and decoding each line on its own
    puts a bad UTF-8 byte on its exact line without losing the lines before it.
    """
    return itertools.chain.from_iterable(_line_blocks(raw, url))


def _line_blocks(raw: IO[bytes], url: str) -> Iterator[list[bytes]]:
    pending: list[bytes] = []  # the start of a line that continues in the next block
    pending_size = 0
    done = 0  # lines handed out so far
    first = True
    while data := raw.read(_BLOCK):
        if first:
            data, first = data.removeprefix(_BOM), False
        if b"\n" not in data:
            pending.append(data)  # a long line: keep collecting, do not re-split
            pending_size += len(data)
            if pending_size > _MAX_LINE:
                raise ReaderError(url, _LONG_LINE, f"line {done + 1}")
            continue
        if pending:
            data = b"".join([*pending, data])
        lines = data.split(b"\n")
        tail = lines.pop()  # after the last "\n": the start of the next line, or b""
        pending, pending_size = ([tail], len(tail)) if tail else ([], 0)
        yield from _checked(lines, url, done)
        done += len(lines)
    if pending:
        yield from _checked([b"".join(pending)], url, done)
