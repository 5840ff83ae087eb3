"""JSON Lines text as shardmap reads it: lines, the one decoder, and the errors' wording.

Shared by the whole-file reader (:mod:`runner.readers.jsonl`) and the byte-range reader of
shard reading (:mod:`runner.readers.jsonl_ranges`), so both give the same items and word the
same error at the same line. The rules are the ones :mod:`runner.readers.jsonl` documents.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import IO, NoReturn

from runner.errors import ReaderError
from runner.readers._io import BOM
from runner.readers.base import MAX_NESTING_DEPTH
from runner.readers.json import JsonDepth

__all__ = ["LONG_LINE", "MAX_LINE", "decode", "deepest_line", "invalid", "lines", "too_deep"]

_BLOCK = 1 << 20  # bytes read and split at a time
MAX_LINE = 256 << 20
LONG_LINE = f"line longer than {MAX_LINE >> 20} MiB (is this a JSON Lines file?)"


def _not_json(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for all lines: json.loads with any keyword builds a new decoder per call.
decode = json.JSONDecoder(parse_constant=_not_json).decode


def invalid(url: str, number: int, exc: ValueError) -> ReaderError:
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


def lines(raw: IO[bytes], url: str) -> Iterator[bytes]:
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
            data, first = data.removeprefix(BOM), False
        if b"\n" not in data:
            pending.append(data)  # a long line: keep collecting, do not re-split
            pending_size += len(data)
            if pending_size > MAX_LINE:
                raise ReaderError(url, LONG_LINE, f"line {done + 1}")
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
