"""CSV text as shardmap reads it: lines, headers, rows to dicts and the errors' wording.

The primitives both CSV read paths share: the whole-file reader (:mod:`runner.readers.csv`) and
the byte-range reader of shard reading (:mod:`runner.readers.csv_ranges`), so both give the same
items and word the same error at the same line. The rules they implement are the ones
:mod:`runner.readers.csv` documents.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable, Iterator, Sequence
from types import MappingProxyType
from typing import IO, Protocol

from runner.errors import ReaderError, SpecError
from runner.readers._io import BOM
from runner.readers.base import ReaderConfig

__all__ = [
    "DUPLICATE_HEADERS",
    "LONG_LINE",
    "MAX_LINE",
    "Rows",
    "check_unique",
    "decoded",
    "delimiter_of",
    "dict_builder",
    "given_headers",
    "header_row",
    "malformed",
    "physical_lines",
    "unbroken",
]

DUPLICATE_HEADERS = "CSV headers cannot contain duplicates."  # AWS's message, word for word
_BLOCK = 1 << 20  # bytes read and split at a time
MAX_LINE = 64 << 20  # no item fits in a longer line; stops a file without line breaks early
LONG_LINE = f"line longer than {MAX_LINE >> 20} MiB (is this a CSV file?)"

_DELIMITERS = MappingProxyType(
    {"COMMA": ",", "PIPE": "|", "SEMICOLON": ";", "SPACE": " ", "TAB": "\t"}
)


class Rows(Protocol):
    """What this module uses of a ``csv.reader`` object (its type has no public name)."""

    line_num: int

    def __iter__(self) -> Iterator[list[str]]: ...

    def __next__(self) -> list[str]: ...


def delimiter_of(name: str) -> str:
    try:
        return _DELIMITERS[name]
    except KeyError:
        raise SpecError(
            "ItemReader.ReaderConfig.CSVDelimiter",
            f"must be one of {', '.join(sorted(_DELIMITERS))} (got {name!r})",
        ) from None


def given_headers(config: ReaderConfig) -> tuple[str, ...] | None:
    """The CSVHeaders to use, or ``None`` when the file's first row holds them."""
    location = config.csv_header_location
    if location == "FIRST_ROW":
        return None
    if location != "GIVEN":
        raise SpecError(
            "ItemReader.ReaderConfig.CSVHeaderLocation",
            f"must be FIRST_ROW or GIVEN (got {location!r})",
        )
    if not config.csv_headers:
        raise SpecError(
            "ItemReader.ReaderConfig.CSVHeaders", "required when CSVHeaderLocation is GIVEN"
        )
    return tuple(config.csv_headers)


def check_unique(headers: Sequence[str], url: str, position: str | None) -> None:
    if len(set(headers)) != len(headers):
        raise ReaderError(url, DUPLICATE_HEADERS, position)


def header_row(rows: Rows, url: str) -> tuple[str, ...]:
    """The first non-blank row; empty when the file has none."""
    start = rows.line_num + 1
    try:
        for row in rows:
            if row:
                headers = tuple(row)
                check_unique(headers, url, f"line {start}")
                return headers
            start = rows.line_num + 1
    except csv.Error as exc:
        raise malformed(url, start, rows.line_num, exc) from exc
    return ()


def dict_builder(headers: tuple[str, ...]) -> Callable[[list[str]], dict[str, str]]:
    """A function turning a row into ``{header: field}``, ignoring fields past the header.

    It is ``lambda row: {h0: row[0], h1: row[1], ...}`` compiled once per file, as
    ``collections.namedtuple`` does: a dict display with fixed keys builds about twice as fast
    as ``dict(zip(headers, row))``, and this is the hot loop. The source holds only indices;
    the header names reach it as values, so no text from the file is ever compiled.
    """
    names = {f"h{i}": name for i, name in enumerate(headers)}
    fields = ", ".join(f"h{i}: row[{i}]" for i in range(len(headers)))
    build: Callable[[list[str]], dict[str, str]] = eval(f"lambda row: {{{fields}}}", names)
    return build


def malformed(url: str, start: int, found: int, exc: csv.Error) -> ReaderError:
    """A ReaderError at the line where the bad record starts (and where the parser gave up)."""
    reason = f"malformed CSV row: {exc}"
    if found > start:
        reason += f" (record starts at line {start}, error found at line {found})"
    return ReaderError(url, reason, f"line {start}")


def physical_lines(raw: IO[bytes], url: str) -> Iterator[str]:
    """The lines of ``raw`` as text, each with its line break (``\\n``, ``\\r\\n`` or ``\\r``).

    This is what ``io.TextIOWrapper(raw, newline="")`` yields, but the lines come about twice
    as fast from fsspec's file objects (TextIOWrapper checks ``closed`` in Python on every line
    unless the buffer is a plain ``FileIO``), and a bad UTF-8 byte is reported on its own line.
    Blocks are split and decoded in C; ``chain`` hands the lines over without a Python frame
    per line.
    """
    return itertools.chain.from_iterable(_line_blocks(raw, url))


def _line_blocks(raw: IO[bytes], url: str) -> Iterator[list[str]]:
    pending: list[bytes] = []  # the start of a line that continues in the next block
    pending_size = 0
    done = 0  # lines handed out so far
    first = True
    while data := raw.read(_BLOCK):
        if first:  # a byte-order mark is not part of the first header name
            data, first = data.removeprefix(BOM), False
            if not data:
                continue  # the file held only the mark
        if pending and unbroken(pending[-1], data):
            pending.append(data)  # a long line: keep collecting, do not re-split
            pending_size += len(data)
            if pending_size > MAX_LINE:
                raise ReaderError(url, LONG_LINE, f"line {done + 1}")
            continue
        if pending:
            data = b"".join([*pending, data])
        pieces = data.splitlines(keepends=True)  # bytes split on \n, \r\n and \r only
        # A last piece without "\n" is unfinished, or a "\r" whose "\n" is in the next block.
        pending = [pieces.pop()] if not pieces[-1].endswith(b"\n") else []
        pending_size = len(pending[0]) if pending else 0
        if pieces:
            yield from decoded(pieces, url, done)
            done += len(pieces)
    if pending:
        yield from decoded([b"".join(pending)], url, done)


def unbroken(tail: bytes, data: bytes) -> bool:
    """True when ``tail + data`` holds no line break (a ``\\r`` ending ``tail`` is one)."""
    return not tail.endswith(b"\r") and b"\n" not in data and b"\r" not in data


def decoded(pieces: list[bytes], url: str, done: int) -> Iterator[list[str]]:
    """``pieces`` as text; with a bad UTF-8 byte, the lines before it, then an error naming it."""
    try:
        lines = list(map(bytes.decode, pieces))
    except UnicodeDecodeError:
        yield from _up_to_bad_line(pieces, url, done)
    else:
        yield lines


def _up_to_bad_line(pieces: list[bytes], url: str, done: int) -> Iterator[list[str]]:
    for number, piece in enumerate(pieces, start=done + 1):
        try:
            line = piece.decode()
        except UnicodeDecodeError as exc:
            raise ReaderError(url, f"not UTF-8 text: {exc.reason}", f"line {number}") from exc
        yield [line]
