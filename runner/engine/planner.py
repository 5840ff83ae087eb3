"""Planning: a run's settings resolved against its input, the items its source yields, selected
(MaxItems, ItemSelector) and cut into batches, and the planner thread that does it ahead of the
loop into a bounded queue. On resume it checks the source still yields what the journal holds.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from runner.batcher import (
    Batch,
    ReadGuard,
    UnfinishedBatch,
    batch_items,
    compile_selector,
    encode_input,
    select_items,
    slice_batches,
)
from runner.errors import ReaderError, SpecError
from runner.journal import Journal, fingerprint
from runner.paths import PathNotFound, compile_path, compile_template
from runner.readers.base import KeyedValue, ReaderConfig, get_reader
from runner.spec import MapSpec

DONE = object()  # the planner's last word on its queue


def run_context(spec: MapSpec, run_id: str, run_input: Any, dest_url: str) -> dict[str, Any]:
    """The ``$$`` object of a run-level template (ItemBatcher.BatchInput).

    ``Execution`` and ``StateMachine`` as in AWS's context object, plus a shardmap extension,
    ``$$.Shardmap.Source`` / ``.Destination`` / ``.RunId``, so that a pipeline can send its
    workers where to write (``ThumbnailsTo.$: $$.Shardmap.Destination``) and ``--dest`` moves
    those outputs with the results.
    """
    return {
        "Execution": {"Name": run_id, "Input": run_input, "StartTime": aws_timestamp()},
        "StateMachine": {"Name": spec.name},
        "Shardmap": {"Source": spec.source_url(), "Destination": dest_url, "RunId": run_id},
    }


def aws_timestamp() -> str:
    """Now as the context object writes times: ISO 8601, UTC, milliseconds, a ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def resolve_paths(spec: MapSpec, run_input: Any, context: Any = None) -> MapSpec:
    """Replace every ``...Path`` field with the value it selects from the run input, and build
    BatchInput once (its ``$$`` paths read ``context``, see :func:`run_context`)."""

    def value(path: str, field: str) -> Any:
        try:
            return compile_path(path, field)(run_input, None)
        except PathNotFound:
            raise SpecError(field, f"path {path} selected nothing in the run input") from None

    changes: dict[str, Any] = {}
    for name, alias in (
        ("max_concurrency", "MaxConcurrencyPath"),
        ("tolerated_failure_percentage", "ToleratedFailurePercentagePath"),
        ("tolerated_failure_count", "ToleratedFailureCountPath"),
    ):
        path = getattr(spec, f"{name}_path")
        if path:
            changes[name], changes[f"{name}_path"] = value(path, alias), None
    if spec.item_batcher:
        batcher = spec.item_batcher.model_dump(exclude_none=True)
        for name, alias in (
            ("max_items_per_batch", "ItemBatcher.MaxItemsPerBatchPath"),
            ("max_input_bytes_per_batch", "ItemBatcher.MaxInputBytesPerBatchPath"),
        ):
            if batcher.get(f"{name}_path"):
                batcher[name] = value(batcher.pop(f"{name}_path"), alias)
        if batcher.get("batch_input") is not None:
            build = compile_template(batcher["batch_input"], "ItemBatcher.BatchInput")
            try:
                batcher["batch_input"] = build(run_input, context or {})
            except PathNotFound as exc:
                raise SpecError("ItemBatcher.BatchInput", f"path {exc} selected nothing") from None
        changes["item_batcher"] = batcher
    reader = spec.item_reader
    if reader and reader.reader_config.max_items_path:
        config = reader.reader_config.model_dump(exclude_none=True)
        config["max_items"] = value(
            config.pop("max_items_path"), "ItemReader.ReaderConfig.MaxItemsPath"
        )
        changes["item_reader"] = {**reader.model_dump(exclude_none=True), "reader_config": config}
    return spec.replace(**changes) if changes else spec


# ---------------------------------------------------------------------------------------------
# planning


def reader_config(spec: MapSpec) -> ReaderConfig:
    assert spec.item_reader is not None
    config = spec.item_reader.reader_config
    input_type = spec.input_type
    return ReaderConfig(
        input_type=input_type or "JSON",
        csv_header_location=config.csv_header_location,
        csv_headers=config.csv_headers,
        csv_delimiter=config.csv_delimiter,
        items_pointer=config.items_pointer,
        manifest_type=config.manifest_type,
        transformation=config.transformation,
        inner_input_type=config.input_type if input_type in ("LISTING", "MANIFEST") else None,
        allowed_locations=spec.allowed_locations,
    )


def _source_items(spec: MapSpec, run_input: Any) -> tuple[Iterator[Any], str]:
    """The raw item values and ``$$.Map.Item.Source``."""
    if spec.item_reader is None:
        items = compile_path(spec.items_path or "$", "ItemsPath")(run_input, None)
        if isinstance(items, dict):
            return (KeyedValue(k, v) for k, v in items.items()), "STATE_DATA"
        if not isinstance(items, list):
            raise SpecError(
                "ItemsPath", f"must select an array or an object, found {type(items).__name__}"
            )
        return iter(items), "STATE_DATA"
    url = spec.source_url()
    if not url:
        raise SpecError("Source", "no item source: give --source or ItemReader.Parameters")
    reader = get_reader(reader_config(spec))
    return reader.iter_items(url), reader.source_name(url)


def _selected(
    spec: MapSpec, run_input: Any, values: Iterator[Any], source: str
) -> Iterator[tuple[int, Any]]:
    """``(index, item)`` after MaxItems and ItemSelector; selection errors become Failed."""
    max_items = spec.item_reader.reader_config.max_items if spec.item_reader else None
    if max_items is not None:
        values = itertools.islice(values, max_items)
    return select_items(values, compile_selector(spec.item_selector), run_input, source)


def plan_batches(spec: MapSpec, run_input: Any) -> Iterator[Batch]:
    """Every batch of the run, in source order (reader -> MaxItems -> ItemSelector -> batcher)."""
    raw, source = _source_items(spec, run_input)
    guard = ReadGuard(raw)  # a read error mid-batch must not take the items read with it
    values: Iterator[Any] = guard.items
    batcher = spec.item_batcher
    if (
        batcher is not None
        and batcher.max_items_per_batch
        and batcher.max_input_bytes_per_batch is None
        and spec.item_selector is None
        and not _may_yield_pairs(spec)
    ):
        # The common case needs no per-item Python work: slice the stream in C.
        max_items = spec.item_reader.reader_config.max_items if spec.item_reader else None
        if max_items is not None:
            values = itertools.islice(values, max_items)
        return guard.guarded(
            slice_batches(values, batcher.max_items_per_batch, batcher.batch_input)
        )
    return guard.guarded(
        batch_items(
            _selected(spec, run_input, values, source),
            max_items=batcher.max_items_per_batch if batcher else None,
            max_bytes=batcher.max_input_bytes_per_batch if batcher else None,
            batch_input=batcher.batch_input if batcher else None,
            batched=batcher is not None,
        )
    )


def _may_yield_pairs(spec: MapSpec) -> bool:
    """Whether items can be JSON-object pairs (KeyedValue), which need converting."""
    if spec.item_reader is None:
        return True  # ItemsPath may select an object
    config = spec.item_reader.reader_config
    return config.input_type in (None, "JSON")


@dataclass
class Carry:
    """What a resumed or redriven run takes over from its journal."""

    keep: dict[int, tuple[str, str, int]] = field(default_factory=dict)  # done: not run again
    check: dict[int, str] = field(default_factory=dict)  # run again: fingerprint must match
    redrive_count: int = 0

    @classmethod
    def from_journal(cls, journal: Journal, done: tuple[str, ...], redrive_count: int) -> Carry:
        """Batches in a ``done`` state are kept; every other journaled batch runs again."""
        states = journal.batch_states()
        return cls(
            keep={n: s for n, s in states.items() if s[0] in done},
            check={n: s[1] for n, s in states.items() if s[0] not in done and s[1]},
            redrive_count=redrive_count,
        )


def source_changed(batch: Batch) -> ReaderError:
    return ReaderError(
        "the item source",
        f"batch {batch.number} no longer holds the items it held when the run was "
        "planned: the source changed since the run started; start a new run",
        f"item {batch.first_index}",
    )


class Planner(threading.Thread):
    """Reads and batches ahead of the loop into a bounded queue; counts what it planned.

    It also encodes each child input once (the journal, the fingerprint check and the result
    record all need the JSON text) and, on resume, skips the batches that are already done
    after checking the source still yields the same inputs.
    """

    def __init__(
        self, batches: Iterator[Batch], max_queued: int, carry: Carry, fingerprints: bool
    ) -> None:
        super().__init__(name="shardmap-planner", daemon=True)
        self.batches = batches
        self.queue: queue.Queue[Any] = queue.Queue(max_queued)
        self.carry = carry
        self.fingerprints = fingerprints
        self.items = 0
        self.executions = 0
        self.error: BaseException | None = None
        #: The batch being filled when the source failed: read, never run (recorded PENDING).
        self.unfinished: Batch | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            for batch in self.batches:
                self.items += batch.size
                self.executions += 1
                if batch.ref is not None:  # the worker builds the input: check it on return
                    if self.fingerprints and self._ref_already_done(batch):
                        continue
                    self.queue.put(batch)
                    continue
                batch.input_json = encode_input(batch)  # an item JSON cannot hold fails its batch
                if self.fingerprints and self._already_done(batch):
                    continue
                self.queue.put(batch)
        except UnfinishedBatch as exc:
            self.items += exc.batch.size
            self.executions += 1
            self.unfinished, self.error = exc.batch, exc.error
        except BaseException as exc:  # reported by the loop as the run's error
            self.error = exc
        finally:
            self.done.set()
            self.queue.put(DONE)

    def _ref_already_done(self, batch: Batch) -> bool:
        kept = self.carry.keep.get(batch.number)
        if kept is None:
            batch.expected = self.carry.check.get(batch.number)
        return kept is not None

    def _already_done(self, batch: Batch) -> bool:
        assert batch.input_json is not None
        batch.fingerprint = fingerprint(batch.input_json)
        kept = self.carry.keep.get(batch.number)
        expected = kept[1] if kept else self.carry.check.get(batch.number)
        if expected is not None and expected != batch.fingerprint:
            raise source_changed(batch)
        return kept is not None


# ---------------------------------------------------------------------------------------------
# the loop
