"""The item-reader protocol and the lazy registry of readers by InputType.

A reader turns one source URL into a stream of item values. Implementers write two hooks:

- ``plan_shards(url)``: cut the source into lazy, picklable :class:`Shard` descriptions
  (a whole file, a byte range, a Parquet row group, a listing page). Nothing is read yet
  beyond what is needed to find boundaries.
- ``read_shard(shard)``: stream the item values of one shard, in source order.

Everything else (``iter_items``) is built on those two, so a new reader is small. A reader whose
sources workers can read in pieces (shard reading, :mod:`runner.shards`) adds three more:
``plan_ranges``, ``index_range`` and ``read_range``.
Readers never assign global item indices: the planner numbers items as it streams them,
which keeps indices exact whatever the sharding.

Limits every reader keeps, whatever the input (hostile files included):

- Every failure is a :class:`~runner.errors.ReaderError` naming the file and a position.
  Readers raise their own, with the line, item, byte or row; :meth:`ItemReader.iter_items` turns
  anything else a parser lets escape (``RecursionError``, ``MemoryError``, ...) into one naming
  the item being read, chained to the original.
- Values nest at most :data:`MAX_NESTING_DEPTH` (512) containers deep, counted from the
  document (JSON file, JSONL line, Parquet row) down. AWS documents no limit. Deeper data fails
  the read before it is parsed: ijson's memory grows with the square of the depth (a 200 KB
  file nested 100,000 deep takes 23 GB), and past about 1,000 levels Python's ``json`` and
  ``pickle``, which carry every item to workers, results and the journal, give up. 512 leaves
  room for the ``{"Items": [...]}`` envelope and the caller's own stack frames.
"""

from __future__ import annotations

import importlib
import itertools
import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import fsspec

from runner.errors import ReaderError, ShardmapError, SpecError
from runner.spec import SAME_AS_MANIFEST

__all__ = [
    "MAX_NESTING_DEPTH",
    "ItemReader",
    "KeyedValue",
    "RangeIndex",
    "ReaderConfig",
    "Recent",
    "Shard",
    "get_reader",
    "known_input_types",
    "placed",
    "reader_class",
]

#: The deepest nesting of containers any reader accepts in an item (see the module docstring).
MAX_NESTING_DEPTH = 512

_FIRST = operator.itemgetter(0)


@dataclass(frozen=True, slots=True)
class KeyedValue:
    """One key/value pair of a JSON object being iterated (``$$.Map.Item.Key`` is ``key``)."""

    key: str
    value: Any


@dataclass(frozen=True)
class ReaderConfig:
    """ReaderConfig of an ItemReader, already validated by the spec (AWS field names in ASL)."""

    input_type: str  # CSV | JSON | JSONL | PARQUET | MANIFEST | LISTING (listObjectsV2)
    csv_header_location: str = "FIRST_ROW"  # FIRST_ROW | GIVEN
    csv_headers: tuple[str, ...] | None = None
    csv_delimiter: str = "COMMA"  # COMMA | PIPE | SEMICOLON | SPACE | TAB
    items_pointer: str | None = None  # JSON Pointer, e.g. /inventory/items
    manifest_type: str | None = None  # S3_INVENTORY | ATHENA_DATA
    transformation: str = "NONE"  # NONE | LOAD_AND_FLATTEN (listing only)
    inner_input_type: str | None = (
        None  # InputType of each object read under LOAD_AND_FLATTEN or ATHENA_DATA
    )
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    #: Where the files a MANIFEST names may be (``AllowedLocations``; see runner.readers.manifest).
    allowed_locations: tuple[str, ...] = (SAME_AS_MANIFEST,)


@dataclass(frozen=True)
class Shard:
    """A lazily read piece of a source. Picklable; opens nothing until read."""

    url: str
    number: int = 0
    start: int | None = None  # byte offset, row group, or page token, reader-specific
    end: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


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
    :class:`ReaderError` with :func:`runner.readers.ranges.range_error`.
    """

    count: int
    checkpoints: tuple[int, ...]
    checkpoint_lines: tuple[int, ...]
    lines: int
    next_inside_quotes: bool
    error: tuple[str, int] | None
    error_span: int = 0


class ItemReader:
    """Base class: subclasses set ``input_type`` and implement the two hooks."""

    input_type: ClassVar[str] = ""

    def __init__(self, config: ReaderConfig) -> None:
        self.config = config

    # -- implementer hooks -------------------------------------------------------------
    def plan_shards(self, url: str) -> Iterator[Shard]:
        """Cut ``url`` into shards. Default: the whole source is one shard."""
        yield Shard(url=url)

    def read_shard(self, shard: Shard) -> Iterator[Any]:
        """Stream the item values of ``shard`` (a :class:`KeyedValue` for JSON-object pairs)."""
        raise NotImplementedError

    # -- shard reading (runner.shards): a worker reads a batch straight from storage ----
    @classmethod
    def reads_ranges(cls) -> bool:
        """Whether workers can read this reader's sources in shards (it has
        :meth:`plan_ranges`)."""
        return cls.plan_ranges is not ItemReader.plan_ranges

    def plan_ranges(self, url: str, shard_bytes: int) -> list[Shard] | None:
        """``url`` cut into shards a worker can read a batch from, or ``None`` when this
        source cannot be split (the driver then reads it). A shard whose ``extra`` holds
        ``count`` needs no index (planning knows its items: Parquet row groups, listing
        pages); the others are byte ranges of about ``shard_bytes`` that workers index
        (:meth:`index_range`). Default: ``None``.
        """
        return None

    def index_range(
        self, shard: Shard, spacing: int, *, validate: bool = True
    ) -> tuple[RangeIndex, RangeIndex | None]:
        """The records that start in the byte range ``shard``, under both hypotheses (H1
        ``None`` where a range cannot start inside a record), with a checkpoint every
        ``spacing`` items. Never raises for bad data: each hypothesis records its first error,
        raised only if that hypothesis is the true one (:func:`runner.readers.ranges.choose`).
        """
        raise ValueError(f"{type(self).__name__} ranges cannot be indexed")

    def read_range(self, shard: Shard, offset: int, skip: int, take: int, line: int) -> list[Any]:
        """The values of ``take`` items after skipping ``skip`` from ``offset`` in ``shard``
        (a checkpoint of its index; 0 for a counted shard); ``line`` is the 1-based physical
        line at ``offset``, for errors. Bad data raises the :class:`ReaderError` the
        whole-file read would raise there.
        """
        raise ValueError(f"{type(self).__name__} ranges cannot be read")

    # -- user API ----------------------------------------------------------------------
    def iter_items(self, url: str) -> Iterator[Any]:
        """Every item value of ``url``, in source order, streaming.

        Raises :class:`ReaderError` naming the file and a position for any failure: a parser
        error that escaped its reader (a bug, but never an anonymous one) names the item being
        read, counted from 0 in its file.
        """
        shard_url = url
        counted = itertools.count()  # items of the current file so far: where a failure is
        try:
            for shard in self.plan_shards(url):
                if shard.url != shard_url:
                    shard_url, counted = shard.url, itertools.count()
                # zip advances the counter only after an item came: counted in C, per item
                yield from map(_FIRST, zip(self.read_shard(shard), counted, strict=False))
        except ShardmapError:
            raise
        except Exception as exc:  # RecursionError, MemoryError, a parser's own exception
            raise ReaderError(
                shard_url, f"cannot read: {type(exc).__name__}: {exc}", f"item {next(counted)}"
            ) from exc

    def source_name(self, url: str) -> str:
        """``$$.Map.Item.Source``: ``S3://bucket/key`` for a file (the URL itself locally)."""
        if url.startswith("s3://"):
            return "S3://" + url[len("s3://") :]
        if url.startswith("s3key://"):  # an exact key (runner.readers.s3keys): name it as AWS does
            from runner.readers.s3keys import split_object_url

            return "S3://" + "/".join(split_object_url(url))
        return url


class Recent:
    """The last ``keep`` values made, by key, for one worker process (thread-safe): a worker
    runs the batches of a row group or a listing page one after another, and decoding or
    listing it again per batch would cost more than the batch."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._values: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The value kept for ``key``, else ``make()`` (called outside the lock), kept."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = make()
        with self._lock:
            self._values[key] = value
            while len(self._values) > self.keep:
                self._values.popitem(last=False)
        return value


# Keys are keys: an s3key:// URL (runner.readers.s3keys.object_url) names one object by its exact
# key. Registered by name only, so s3fs is imported when such a URL is first opened.
fsspec.register_implementation("s3key", "runner.readers.s3keys.ExactKeyS3FileSystem", clobber=True)


def placed(error: ReaderError, position: str) -> ReaderError:
    """``error`` at ``position`` when it names none (a ``.gz`` stream that breaks off knows no
    line; its reader does). Missing or unreachable storage is not the data's: left as is.

    >>> str(placed(ReaderError("a.csv.gz", "gzip data is corrupt"), "line 7"))
    'a.csv.gz, line 7: gzip data is corrupt'
    """
    if error.position is not None or type(error) is not ReaderError:
        return error
    moved = ReaderError(error.url, error.reason, position)
    moved.__cause__ = error.__cause__
    return moved


# InputType -> "module:Class". Sorted; imported on first use (fsspec's lazy registry).
_READERS: dict[str, str] = {
    "CSV": "runner.readers.csv:CsvReader",
    "JSON": "runner.readers.json:JsonReader",
    "JSONL": "runner.readers.jsonl:JsonlReader",
    "LISTING": "runner.readers.listing:ListingReader",
    "MANIFEST": "runner.readers.manifest:ManifestReader",
    "PARQUET": "runner.readers.parquet:ParquetReader",
}
_loaded: dict[str, type[ItemReader]] = {}
registry: Mapping[str, type[ItemReader]] = MappingProxyType(_loaded)


def known_input_types() -> list[str]:
    return sorted(_READERS)


def reader_class(input_type: str) -> type[ItemReader]:
    """The reader class of ``input_type``, imported on first use; an unknown type lists the
    known ones."""
    if input_type not in _loaded:
        target = _READERS.get(input_type)
        if target is None:
            raise SpecError(
                "ItemReader.ReaderConfig.InputType",
                f"must be one of {', '.join(known_input_types())} (got {input_type!r})",
            )
        module_name, _, class_name = target.partition(":")
        _loaded[input_type] = getattr(importlib.import_module(module_name), class_name)
    return _loaded[input_type]


def get_reader(config: ReaderConfig) -> ItemReader:
    """The reader for ``config.input_type``; an unknown type lists the known ones."""
    return reader_class(config.input_type)(config)
