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
from collections.abc import Iterator
from typing import Any

from runner.errors import ReaderError
from runner.readers import csv_ranges
from runner.readers._io import open_binary
from runner.readers.base import ItemReader, RangeIndex, ReaderConfig, Shard, placed
from runner.readers.csvtext import (
    DUPLICATE_HEADERS,
    Rows,
    check_unique,
    delimiter_of,
    dict_builder,
    given_headers,
    header_row,
    malformed,
    physical_lines,
)

__all__ = ["DUPLICATE_HEADERS", "CsvReader"]


class CsvReader(ItemReader):
    """Stream a CSV file as ``{header: value}`` dicts of strings.

    >>> reader = CsvReader(ReaderConfig(input_type="CSV", csv_delimiter="PIPE"))
    >>> list(reader.iter_items("people.csv"))  # doctest: +SKIP
    [{'name': 'Ada', 'born': '1815'}, {'name': 'Alan', 'born': '1912'}]
    """

    input_type = "CSV"

    def __init__(self, config: ReaderConfig) -> None:
        super().__init__(config)
        self._delimiter = delimiter_of(config.csv_delimiter)
        self._given = given_headers(config)

    def read_shard(self, shard: Shard) -> Iterator[dict[str, str]]:
        """Every row of ``shard.url`` after the header, as a dict of strings."""
        url = shard.url
        if self._given is not None:
            check_unique(self._given, url, position=None)
        rows: Rows | None = None
        try:
            with open_binary(url, self.config.storage_options) as raw:
                rows = csv.reader(physical_lines(raw, url), delimiter=self._delimiter, strict=True)
                headers = self._given if self._given is not None else header_row(rows, url)
                if headers:
                    yield from _items(rows, headers, url)
        except ReaderError as exc:  # a broken .gz: the line the parser was on
            raise placed(exc, f"line {rows.line_num + 1 if rows else 1}") from exc.__cause__

    # -- shard reading: byte ranges (runner.readers.csv_ranges) --------------------------
    def plan_ranges(self, url: str, shard_bytes: int) -> list[Shard] | None:
        return csv_ranges.plan_ranges(self, url, shard_bytes)

    def index_range(
        self, shard: Shard, spacing: int, *, validate: bool = True
    ) -> tuple[RangeIndex, RangeIndex | None]:
        # A CSV record cannot be found without parsing: ranges are always checked.
        return csv_ranges.index_range(self, shard, spacing)

    def read_range(self, shard: Shard, offset: int, skip: int, take: int, line: int) -> list[Any]:
        return csv_ranges.read_range(self, shard, offset, skip, take, line)


def _items(rows: Rows, headers: tuple[str, ...], url: str) -> Iterator[dict[str, str]]:
    """The data rows, padded or cut to the header. The hot loop: keep it lean."""
    width = len(headers)
    padding = [""] * width
    build = dict_builder(headers)
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
        raise malformed(url, start, rows.line_num, exc) from exc
