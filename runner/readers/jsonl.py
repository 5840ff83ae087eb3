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

from collections.abc import Iterator
from typing import Any

from runner.errors import ReaderError
from runner.readers import jsonl_ranges
from runner.readers._io import open_binary
from runner.readers.base import ItemReader, RangeIndex, Shard, placed
from runner.readers.jsonltext import decode, invalid, lines

__all__ = ["JsonlReader"]


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
                for number, line in enumerate(lines(raw, url), start=1):
                    try:
                        value = decode(line.decode())
                    except ValueError as exc:  # not UTF-8, not JSON, or a NaN/Infinity refused
                        if not line or line.isspace():
                            continue  # a blank line: cheaper to find here than to test each
                        raise invalid(url, number, exc) from exc
                    except (RecursionError, MemoryError) as exc:  # the depth check prevents it
                        raise ReaderError(
                            url, f"cannot decode: {type(exc).__name__}: {exc}", f"line {number}"
                        ) from exc
                    yield value
        except ReaderError as exc:  # a broken .gz knows no line: the one after those read
            raise placed(exc, f"line {number + 1}") from exc.__cause__

    # -- shard reading: byte ranges (runner.readers.jsonl_ranges) ------------------------
    def plan_ranges(self, url: str, shard_bytes: int) -> list[Shard] | None:
        return jsonl_ranges.plan_ranges(self, url, shard_bytes)

    def index_range(
        self, shard: Shard, spacing: int, *, validate: bool = True
    ) -> tuple[RangeIndex, RangeIndex | None]:
        return jsonl_ranges.index_range(self, shard, spacing, validate=validate)

    def read_range(self, shard: Shard, offset: int, skip: int, take: int, line: int) -> list[Any]:
        return jsonl_ranges.read_range(self, shard, offset, skip, take, line)
