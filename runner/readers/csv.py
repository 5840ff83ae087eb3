"""CSV items: one dict of strings per row, keyed by the header, as AWS's CSV ItemReader gives them.

The rules are AWS's (see ``/work/shared/reference/distributed-map.md``):

- Every value is a string; nothing is converted, so ``"007"`` stays ``"007"``.
- ``CSVHeaderLocation`` ``FIRST_ROW``: the first row names the fields and is not an item.
  ``GIVEN``: ``CSVHeaders`` names them and the first row is data.
- ``CSVDelimiter``: ``COMMA`` (default), ``PIPE``, ``SEMICOLON``, ``SPACE``, ``TAB``.
- Double-quoted fields may hold delimiters and line breaks; ``""`` inside them is one ``"``.
- A short row is padded with empty strings; fields beyond the header are dropped.
- Duplicate header names fail the read with "CSV headers cannot contain duplicates.".

shardmap's choices where AWS documents nothing:

- Blank lines (no character between two line breaks) are skipped, before and after the header,
  because editors and exporters leave them at the end of files. A line holding only delimiters
  is a row of empty strings.
- A malformed row (text after a closing quote, a quote left open at the end of the file, a NUL
  byte) fails the read with the line where that record starts; the C ``csv`` parser runs with
  ``strict=True`` so such rows are never guessed at. A quote inside an unquoted field
  (``ab"c``) is kept as a literal character, as Python's and most CSV parsers do.
- A field longer than :func:`csv.field_size_limit` (128 KiB unless the process raised it) is
  reported as malformed. The limit also bounds what a quote left open can buffer, which keeps
  memory flat on a 10 GB file; it is process-wide, so this module leaves it alone.
- An empty file (or one with only blank lines) has no header and no items.

The file is read in 1 MiB blocks through :func:`runner.readers._io.open_binary`, so ``.gz`` and
``.zst`` inputs work and memory does not grow with the file. Rows are parsed by the C ``csv``
module; ``bench/csv_stream.py`` measures throughput and peak memory on a 2 GB file.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable, Iterator, Sequence
from types import MappingProxyType
from typing import IO, Protocol

from runner.errors import ReaderError, SpecError
from runner.readers._io import open_binary
from runner.readers.base import ItemReader, ReaderConfig, Shard, placed

__all__ = ["DUPLICATE_HEADERS", "CsvReader"]

DUPLICATE_HEADERS = "CSV headers cannot contain duplicates."  # AWS's message, word for word

_BLOCK = 1 << 20  # bytes read and split at a time
_MAX_LINE = 64 << 20  # no item fits in a longer line; stops a file without line breaks early
_BOM = b"\xef\xbb\xbf"
_LONG_LINE = f"line longer than {_MAX_LINE >> 20} MiB (is this a CSV file?)"

_DELIMITERS = MappingProxyType(
    {"COMMA": ",", "PIPE": "|", "SEMICOLON": ";", "SPACE": " ", "TAB": "\t"}
)


class _Rows(Protocol):
    """What this module uses of a ``csv.reader`` object (its type has no public name)."""

    line_num: int

    def __iter__(self) -> Iterator[list[str]]: ...

    def __next__(self) -> list[str]: ...


class CsvReader(ItemReader):
    """Stream a CSV file as ``{header: value}`` dicts of strings.

    >>> reader = CsvReader(ReaderConfig(input_type="CSV", csv_delimiter="PIPE"))
    >>> list(reader.iter_items("people.csv"))  # doctest: +SKIP
    [{'name': 'Ada', 'born': '1815'}, {'name': 'Alan', 'born': '1912'}]
    """

    input_type = "CSV"

    def __init__(self, config: ReaderConfig) -> None:
        super().__init__(config)
        self._delimiter = _delimiter(config.csv_delimiter)
        self._given = _given_headers(config)

    def read_shard(self, shard: Shard) -> Iterator[dict[str, str]]:
        """Every row of ``shard.url`` after the header, as a dict of strings."""
        url = shard.url
        if self._given is not None:
            _check_unique(self._given, url, position=None)
        rows: _Rows | None = None
        try:
            with open_binary(url, self.config.storage_options) as raw:
                rows = csv.reader(_physical_lines(raw, url), delimiter=self._delimiter, strict=True)
                headers = self._given if self._given is not None else _header_row(rows, url)
                if headers:
                    yield from _items(rows, headers, url)
        except ReaderError as exc:  # a broken .gz: the line the parser was on
            raise placed(exc, f"line {rows.line_num + 1 if rows else 1}") from exc.__cause__


def _delimiter(name: str) -> str:
    try:
        return _DELIMITERS[name]
    except KeyError:
        raise SpecError(
            "ItemReader.ReaderConfig.CSVDelimiter",
            f"must be one of {', '.join(sorted(_DELIMITERS))} (got {name!r})",
        ) from None


def _given_headers(config: ReaderConfig) -> tuple[str, ...] | None:
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


def _check_unique(headers: Sequence[str], url: str, position: str | None) -> None:
    if len(set(headers)) != len(headers):
        raise ReaderError(url, DUPLICATE_HEADERS, position)


def _header_row(rows: _Rows, url: str) -> tuple[str, ...]:
    """The first non-blank row; empty when the file has none."""
    start = rows.line_num + 1
    try:
        for row in rows:
            if row:
                headers = tuple(row)
                _check_unique(headers, url, f"line {start}")
                return headers
            start = rows.line_num + 1
    except csv.Error as exc:
        raise _malformed(url, start, rows.line_num, exc) from exc
    return ()


def _items(rows: _Rows, headers: tuple[str, ...], url: str) -> Iterator[dict[str, str]]:
    """The data rows, padded or cut to the header. The hot loop: keep it lean."""
    width = len(headers)
    padding = [""] * width
    build = _dict_builder(headers)
    start = rows.line_num + 1  # the physical line where the next record begins
    try:
        for row in rows:
            if len(row) < width:
                if not row:  # a blank line
                    start = rows.line_num + 1
                    continue
                row += padding[len(row) :]
            yield build(row)
            start = rows.line_num + 1
    except csv.Error as exc:
        raise _malformed(url, start, rows.line_num, exc) from exc


def _dict_builder(headers: tuple[str, ...]) -> Callable[[list[str]], dict[str, str]]:
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


def _malformed(url: str, start: int, found: int, exc: csv.Error) -> ReaderError:
    """A ReaderError at the line where the bad record starts (and where the parser gave up)."""
    reason = f"malformed CSV row: {exc}"
    if found > start:
        reason += f" (record starts at line {start}, error found at line {found})"
    return ReaderError(url, reason, f"line {start}")


def _physical_lines(raw: IO[bytes], url: str) -> Iterator[str]:
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
            data, first = data.removeprefix(_BOM), False
            if not data:
                continue  # the file held only the mark
        if pending and _unbroken(pending[-1], data):
            pending.append(data)  # a long line: keep collecting, do not re-split
            pending_size += len(data)
            if pending_size > _MAX_LINE:
                raise ReaderError(url, _LONG_LINE, f"line {done + 1}")
            continue
        if pending:
            data = b"".join([*pending, data])
        pieces = data.splitlines(keepends=True)  # bytes split on \n, \r\n and \r only
        # A last piece without "\n" is unfinished, or a "\r" whose "\n" is in the next block.
        pending = [pieces.pop()] if not pieces[-1].endswith(b"\n") else []
        pending_size = len(pending[0]) if pending else 0
        if pieces:
            yield from _decoded(pieces, url, done)
            done += len(pieces)
    if pending:
        yield from _decoded([b"".join(pending)], url, done)


def _unbroken(tail: bytes, data: bytes) -> bool:
    """True when ``tail + data`` holds no line break (a ``\\r`` ending ``tail`` is one)."""
    return not tail.endswith(b"\r") and b"\n" not in data and b"\r" not in data


def _decoded(pieces: list[bytes], url: str, done: int) -> Iterator[list[str]]:
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
