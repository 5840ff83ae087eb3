"""The item-reader protocol and the lazy registry of readers by InputType.

A reader turns one source URL into a stream of item values. Implementers write two hooks:

- ``plan_shards(url)``: cut the source into lazy, picklable :class:`Shard` descriptions
  (a whole file, a byte range, a Parquet row group, a listing page). Nothing is read yet
  beyond what is needed to find boundaries.
- ``read_shard(shard)``: stream the item values of one shard, in source order.

Everything else (``iter_items``) is built on those two, so a new reader is small.
Readers never assign global item indices: the planner numbers items as it streams them,
which keeps indices exact whatever the sharding.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from runner.errors import SpecError

__all__ = ["ItemReader", "KeyedValue", "ReaderConfig", "Shard", "get_reader", "known_input_types"]


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


@dataclass(frozen=True)
class Shard:
    """A lazily read piece of a source. Picklable; opens nothing until read."""

    url: str
    number: int = 0
    start: int | None = None  # byte offset, row group, or page token, reader-specific
    end: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


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

    # -- user API ----------------------------------------------------------------------
    def iter_items(self, url: str) -> Iterator[Any]:
        """Every item value of ``url``, in source order, streaming."""
        for shard in self.plan_shards(url):
            yield from self.read_shard(shard)

    def source_name(self, url: str) -> str:
        """``$$.Map.Item.Source``: ``S3://bucket/key`` for a file (the URL itself locally)."""
        if url.startswith("s3://"):
            return "S3://" + url[len("s3://") :]
        return url


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


def get_reader(config: ReaderConfig) -> ItemReader:
    """The reader for ``config.input_type``; an unknown type lists the known ones."""
    name = config.input_type
    if name not in _loaded:
        target = _READERS.get(name)
        if target is None:
            raise SpecError(
                "ItemReader.ReaderConfig.InputType",
                f"must be one of {', '.join(known_input_types())} (got {name!r})",
            )
        module_name, _, class_name = target.partition(":")
        _loaded[name] = getattr(importlib.import_module(module_name), class_name)
    return _loaded[name](config)
