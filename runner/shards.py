"""Shard-parallel reading: the driver numbers items from shard indexes; workers read the items.

On an executor that reads shards (Dask), a run over a CSV, JSONL or Parquet source never moves
item data through the driver:

1. The driver plans shards: byte ranges of a text file (the reader's ``plan_ranges``, only the
   CSV header is read), Parquet row groups (from the footers) or listing pages (1,000 keys each).
2. Workers index the byte ranges (the count of records starting in each, and a checkpoint every
   ``k`` records); Parquet and listings need no index, planning knows their counts.
3. The driver walks the shards in source order with a running total, so every item gets its
   exact global index, and cuts batches exactly where :func:`runner.engine.plan_batches` would.
   A batch is a :class:`BatchRef`: pieces of one or two shards, never the items themselves.
4. The worker that runs a batch reads its pieces, applies ItemSelector and builds AWS's child
   input (:func:`materialize`); :func:`runner.child.run_ref` then runs the worker on it and
   returns the input JSON with the outcome. Running children is the layer above planning, so
   this module never imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from runner.batcher import Batch, Failed, compile_selector, dumps, select_items
from runner.errors import ReaderError
from runner.readers.base import ItemReader, ReaderConfig, Shard, get_reader, reader_class
from runner.readers.ranges import choose, range_error
from runner.settings import DEFAULT_SHARD_BYTES, settings
from runner.spec import MapSpec

__all__ = [
    "DEFAULT_SHARD_BYTES",
    "BatchRef",
    "Piece",
    "materialize",
    "shard_batches",
    "why_not_sharded",
]

log = logging.getLogger("shardmap.shards")

_MIN_SPACING = 16  # checkpoints per item cost driver memory; skipping 15 records is cheap

Submit = Callable[..., Future]


@dataclass(frozen=True, slots=True)
class Piece:
    """Items ``skip .. skip+take`` counted from ``offset`` in ``shard``.

    Text: ``offset`` is the byte where a record starts (a checkpoint) and ``line`` its physical
    line, for error messages. Parquet: ``offset`` is 0 and ``skip`` counts rows of the group.
    """

    shard: Shard
    offset: int
    skip: int
    take: int
    line: int = 0


@dataclass(frozen=True)
class BatchRef:
    """All a worker needs to build one child input from storage (picklable, small)."""

    config: ReaderConfig
    pieces: tuple[Piece, ...]
    first_index: int
    batch_input: Any
    batched: bool
    selector: Any  # the ItemSelector template, or None
    run_input: Any
    source: str  # $$.Map.Item.Source

    @property
    def size(self) -> int:
        return sum(piece.take for piece in self.pieces)

    def child_input(self) -> Any:
        """AWS's child input of these items, read from storage now (see :func:`materialize`)."""
        return materialize(self)[0]


def why_not_sharded(spec: MapSpec) -> str | None:
    """Why this run's source must be read on the driver, or ``None`` when workers can read it."""
    reader = spec.item_reader
    if reader is None:
        return "the items come from the run input"
    input_type = spec.input_type
    if input_type is None or not reader_class(input_type).reads_ranges():
        return f"{input_type} sources are read on the driver"
    if reader.reader_config.transformation == "LOAD_AND_FLATTEN":
        return "LOAD_AND_FLATTEN item counts are only known by reading every object"
    batcher = spec.item_batcher
    if batcher is not None and batcher.max_input_bytes_per_batch is not None:
        return "MaxInputBytesPerBatch cuts batches by the size of every item"
    if batcher is not None and not batcher.max_items_per_batch:
        return "ItemBatcher without MaxItemsPerBatch"
    return None


def shard_batches(
    spec: MapSpec,
    run_input: Any,
    config: ReaderConfig,
    submit: Submit,
    *,
    window: int,
    shard_bytes: int | None = None,
) -> Iterator[Batch] | None:
    """The run's batches as refs, in source order; ``None`` when the source cannot be split.

    ``submit`` runs index tasks on the workers; at most ``window`` are outstanding.
    """
    url = spec.source_url()
    if not url:
        return None
    reader = get_reader(config)
    batcher = spec.item_batcher
    size = batcher.max_items_per_batch if batcher and batcher.max_items_per_batch else 1
    spacing = max(size, _MIN_SPACING)
    shards = reader.plan_ranges(url, shard_bytes or _shard_bytes())
    if shards is None:
        return None
    if all("count" in shard.extra for shard in shards):
        located: Iterator[_Located] = (_Located(s, int(s.extra["count"])) for s in shards)
    else:
        located = _text_shards(config, shards, submit, spacing, window)
    max_items = spec.item_reader.reader_config.max_items if spec.item_reader else None
    template = dict(
        config=config,
        batch_input=batcher.batch_input if batcher else None,
        batched=batcher is not None,
        selector=spec.item_selector,
        run_input=run_input,
        source=reader.source_name(url),
    )
    return _batches(located, size, max_items, template)


# -- numbering ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Located:
    """A shard whose item count is known, and how to find its ``j``-th item."""

    shard: Shard
    count: int
    checkpoints: tuple[int, ...] = ()
    checkpoint_lines: tuple[int, ...] = ()
    spacing: int = 0
    line: int = 0  # physical line where the shard's first record starts

    def piece(self, j: int, take: int) -> Piece:
        if not self.spacing:  # Parquet: rows of the group
            return Piece(self.shard, 0, j, take)
        m = j // self.spacing
        line = self.line + self.checkpoint_lines[m]
        return Piece(self.shard, self.checkpoints[m], j - m * self.spacing, take, line)


def _batches(
    located: Iterator[_Located], size: int, max_items: int | None, template: dict[str, Any]
) -> Iterator[Batch]:
    """Cut the numbered items into batches of ``size`` (a batch may span shards)."""
    number = index = first = filled = 0
    pieces: list[Piece] = []
    limit = max_items if max_items is not None else float("inf")

    def batch() -> Batch:
        ref = BatchRef(pieces=tuple(pieces), first_index=first, **template)
        return Batch(number, first, [], ref.batch_input, ref.batched, ref=ref, count=filled)

    for shard in located:
        j = 0
        while j < shard.count and index < limit:
            take = int(min(size - filled, shard.count - j, limit - index))
            if not filled:
                first = index
            pieces.append(shard.piece(j, take))
            filled, j, index = filled + take, j + take, index + take
            if filled == size:
                yield batch()
                number, pieces, filled = number + 1, [], 0
        if index >= limit:
            break
    if filled:
        yield batch()


def _text_shards(
    config: ReaderConfig, ranges: list[Shard], submit: Submit, spacing: int, window: int
) -> Iterator[_Located]:
    """Index the ranges on the workers, ``window`` at a time, and resolve them in order."""
    pending: list[Future] = []
    upcoming = iter(ranges)
    line = ranges[0].extra.get("first_line", 1) if ranges else 1
    previous = None
    for shard in ranges:
        while len(pending) < window and (nxt := next(upcoming, None)) is not None:
            pending.append(submit(index_task, config, nxt, spacing))
        pair = pending.pop(0).result()
        chosen = choose(previous, pair)
        error = range_error(shard.url, chosen, line)
        if error is not None:
            raise error
        yield _Located(shard, chosen.count, tuple(chosen.checkpoints),
                       tuple(chosen.checkpoint_lines), spacing, line)  # fmt: skip
        line += chosen.lines
        previous = chosen


def index_task(config: ReaderConfig, shard: Shard, spacing: int) -> Any:
    """Runs on a worker: both hypotheses' index of one byte range."""
    return get_reader(config).index_range(shard, spacing)


# -- reading on the worker ---------------------------------------------------------------------


def materialize(ref: BatchRef) -> tuple[Any, str | None, str | None]:
    """The child input of ``ref`` and, when an ItemSelector path selected nothing, the
    batch's ``(error, cause)`` (the item stands as ``null``, as the driver-side batcher does)."""
    reader = get_reader(ref.config)
    values: list[Any] = []
    for piece in ref.pieces:
        values.extend(_read_piece(reader, piece))
    if len(values) != ref.size:
        raise ReaderError(
            ref.pieces[0].shard.url,
            f"expected {ref.size} items from item {ref.first_index}, found {len(values)}: "
            "the source changed since the run was planned",
            f"item {ref.first_index + len(values)}",
        )
    error = cause = None
    if ref.selector is not None:
        selected = []
        build = _template(ref.selector)
        for _, value in select_items(values, build, ref.run_input, ref.source, ref.first_index):
            if isinstance(value, Failed):  # the item stands as null; the first failure tells
                error, cause = (error, cause) if error else (value.error, value.cause)
                value = None
            selected.append(value)
        values = selected
    if not ref.batched:
        return values[0], error, cause
    if ref.batch_input is not None:
        return {"BatchInput": ref.batch_input, "Items": values}, error, cause
    return {"Items": values}, error, cause


_templates: dict[str, Any] = {}


def _template(selector: Any) -> Any:
    """ItemSelector compiled once per worker process, not once per batch."""
    key = dumps(selector)
    build = _templates.get(key)
    if build is None:
        build = _templates[key] = compile_selector(selector)
    return build


def _read_piece(reader: ItemReader, piece: Piece) -> list[Any]:
    return reader.read_range(piece.shard, piece.offset, piece.skip, piece.take, piece.line)


def _shard_bytes() -> int:
    """``$SHARDMAP_SHARD_BYTES`` (read at plan time, so tests and users can tune it)."""
    return settings().shard_bytes
