"""ItemBatcher: group selected items into child inputs, exactly as AWS shapes them.

Batches cover contiguous item indices, in order, so a batch's ``first_index`` and size map every
result back to its source position. ``MaxInputBytesPerBatch`` counts the UTF-8 bytes of the whole
compact-JSON child input (``{"BatchInput": ..., "Items": [...]}``), so a batch never exceeds it;
an item that alone exceeds it becomes a batch of its own that fails with
``States.DataLimitExceeded`` instead of being dropped.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from runner.jsontext import dumps
from runner.paths import PathNotFound, compile_template, context_object
from runner.readers.base import KeyedValue

__all__ = [
    "Batch",
    "Failed",
    "ReadGuard",
    "UnfinishedBatch",
    "batch_items",
    "compile_selector",
    "dumps",
    "encode_input",
    "select_items",
    "slice_batches",
]
# ``dumps`` (runner.jsontext's, AWS's compact JSON) is re-exported: the planner, the records
# and shards encode child inputs through this module.


@dataclass(slots=True)
class Batch:
    """One child workflow execution's worth of items.

    ``error``/``cause`` are set when the batch fails before it can run (an item over the byte
    limit, an ItemSelector path that selected nothing); such a batch is recorded, never run.
    """

    number: int
    first_index: int
    items: list[Any]
    batch_input: Any = None
    batched: bool = True
    error: str | None = None
    cause: str | None = None
    input_json: str | None = None  # the child input as compact JSON, made by the planner
    fingerprint: str | None = None  # of input_json, when a journal checks resumed plans
    # Shard-parallel runs: where the worker reads the items (a runner.shards.BatchRef, which
    # this module does not import: shards cut Batches, so it sits above), and how many;
    # ``items`` stays empty on the driver.
    ref: Any = None
    count: int = 0
    expected: str | None = None  # the fingerprint a resumed ref batch must come back with

    @property
    def size(self) -> int:
        return self.count if self.ref is not None else len(self.items)

    def child_input(self) -> Any:
        """AWS's child input: ``{"Items": [...]}`` (+ ``BatchInput``), or the lone item."""
        if self.ref is not None:  # read here only for records of batches that never ran
            return self.ref.child_input()
        if not self.batched:
            return self.items[0]
        if self.batch_input is not None:
            return {"BatchInput": self.batch_input, "Items": self.items}
        return {"Items": self.items}


@dataclass(slots=True)
class Failed:
    """An item that could not be selected: ``error``/``cause`` say why (States.Runtime).
    Its batch fails as a whole and is never run; the item stands in its input as ``null``."""

    error: str
    cause: str


# What encoding raises for a value JSON has no form for: NaN/Infinity and cycles (ValueError),
# sets, bytes and other objects (TypeError), nesting deeper than the interpreter's stack.
_NOT_JSON = (TypeError, ValueError, RecursionError)


def _not_json(index: int, exc: BaseException) -> Failed:
    return Failed("States.Runtime", f"item {index} cannot be encoded as JSON: {exc}")


def encode_input(batch: Batch) -> str:
    """``batch``'s child input as compact JSON, encoded once: the text the journal, the input
    fingerprint and the result record keep.

    An item JSON has no form for (NaN, Infinity, a set: only a Python run input can hold one,
    readers refuse them) fails its batch as an ItemSelector path that selects nothing does:
    the batch gets ``States.Runtime`` naming the first such item (unless it had already
    failed), each such item stands in the input as ``null``, and the batch is recorded, never
    run. Finding the items costs nothing until an encoding fails. A ``BatchInput`` that JSON
    cannot encode still raises ``ValueError``/``TypeError``.

    >>> batch = Batch(0, 10, [1, float("nan")])
    >>> encode_input(batch)
    '{"Items":[1,null]}'
    >>> batch.error, batch.cause.partition(":")[0]
    ('States.Runtime', 'item 11 cannot be encoded as JSON')
    """
    try:
        return dumps(batch.child_input())
    except _NOT_JSON:
        if batch.ref is not None:  # read on the worker: run_ref encodes it there
            raise
    failure = None
    for offset, item in enumerate(batch.items):
        try:
            dumps(item)
        except _NOT_JSON as exc:
            batch.items[offset] = None
            failure = failure or _not_json(batch.first_index + offset, exc)
    if failure is not None and batch.error is None:
        batch.error, batch.cause = failure.error, failure.cause
    return dumps(batch.child_input())


class ReadGuard:
    """Wraps an item source so that a read error ends the stream instead of escaping a batcher.

    A reader that fails mid-file has already handed over some items of the batch being cut.
    Raised inside a batcher, the error would take those items with it: they would be in no
    result file and not in the total. Behind a guard the batcher ends normally, emits the
    partial batch, and :meth:`guarded` then raises :class:`UnfinishedBatch` carrying it, so
    the run records those items PENDING (they never ran) and fails with the reader's error.

    >>> guard = ReadGuard(iter([1, 2, 3]))
    >>> list(guard.items), guard.error
    ([1, 2, 3], None)
    """

    def __init__(self, values: Iterable[Any]) -> None:
        self.error: BaseException | None = None
        self.items: Iterator[Any] = self._guard(values)

    def _guard(self, values: Iterable[Any]) -> Iterator[Any]:
        try:
            yield from values  # delegated by the interpreter: no Python call per item
        except Exception as exc:
            self.error = exc

    def guarded(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        """``batches`` cut from :attr:`items`; the batch cut after a read error (if any) is not
        yielded but raised with the error (:class:`UnfinishedBatch`)."""
        for batch in batches:
            if self.error is not None:
                raise UnfinishedBatch(self.error, batch)
            yield batch
        if self.error is not None:
            raise self.error


class UnfinishedBatch(Exception):
    """The item source failed (``error``) while ``batch`` was being filled: its items were read
    but the batch was never complete, so it must not run; the run records it PENDING."""

    def __init__(self, error: BaseException, batch: Batch) -> None:
        super().__init__(str(error))
        self.error = error
        self.batch = batch


def batch_items(
    items: Iterable[tuple[int, Any]],
    *,
    max_items: int | None,
    max_bytes: int | None,
    batch_input: Any = None,
    batched: bool = True,
) -> Iterator[Batch]:
    """Group ``(index, item)`` pairs into batches.

    A :class:`Failed` item stands in the batch as ``null`` and fails the whole batch with its
    error: batch boundaries never depend on whether selection succeeded, so a run that reads
    its shards on the workers (where selection happens) numbers batches exactly the same way.
    """
    number = 0
    if not batched:
        for index, item in items:
            yield _single(number, index, item, batched=False)
            number += 1
        return
    overhead = len(
        dumps(
            {"BatchInput": batch_input, "Items": []} if batch_input is not None else {"Items": []}
        ).encode()
    )
    current: list[Any] = []
    failure: Failed | None = None
    first = 0
    used = overhead

    def emit() -> Batch:
        error, cause = (failure.error, failure.cause) if failure else (None, None)
        return Batch(number, first, current, batch_input, error=error, cause=cause)

    for index, item in items:
        failed = item if isinstance(item, Failed) else None
        if failed is not None:
            item = None
        cost = 0
        if max_bytes is not None:
            try:
                encoded = dumps(item)
            except _NOT_JSON as exc:  # its batch fails, as in encode_input
                failed, item, encoded = _not_json(index, exc), None, "null"
            cost = len(encoded.encode()) + (1 if current else 0)  # +1 for the comma
            if overhead + cost > max_bytes:  # alone it cannot fit: fail it, keep order
                if current:
                    yield emit()
                    number, current, failure = number + 1, [], None
                yield Batch(
                    number,
                    index,
                    [item],
                    batch_input,
                    error="States.DataLimitExceeded",
                    cause=f"item {index} is {cost} bytes of JSON; MaxInputBytesPerBatch "
                    f"is {max_bytes} including the batch envelope",
                )
                number += 1
                used = overhead
                continue
            if current and used + cost > max_bytes:
                yield emit()
                number, current, used, failure = number + 1, [], overhead, None
                cost -= 1  # first item of the new batch needs no comma
        if not current:
            first = index
        if failed is not None and failure is None:
            failure = failed
        current.append(item)
        used += cost
        if max_items is not None and len(current) >= max_items:
            yield emit()
            number, current, used, failure = number + 1, [], overhead, None
    if current:
        yield emit()


def _single(number: int, index: int, item: Any, *, batched: bool, batch_input: Any = None) -> Batch:
    if isinstance(item, Failed):
        return Batch(number, index, [None], batch_input, batched, item.error, item.cause)
    return Batch(number, index, [item], batch_input, batched)


def compile_selector(selector: Any) -> Callable[[Any, Any], Any] | None:
    """The ItemSelector template compiled (``None`` for no selector)."""
    return compile_template(selector, "ItemSelector") if selector is not None else None


def slice_batches(values: Iterable[Any], size: int, batch_input: Any = None) -> Iterator[Batch]:
    """Batches of ``size`` items with no selection and no byte limit: the common case, cut by
    slicing the stream in C with no per-item Python work. Numbers and indices are those
    :func:`batch_items` gives the same items."""
    values = iter(values)
    chunks = iter(lambda: list(itertools.islice(values, size)), [])
    for number, chunk in enumerate(chunks):
        yield Batch(number, number * size, chunk, batch_input)


def select_items(
    values: Iterable[Any],
    build: Callable[[Any, Any], Any] | None,
    run_input: Any,
    source: str,
    first_index: int = 0,
) -> Iterator[tuple[int, Any]]:
    """``(index, item)`` after the ItemSelector ``build`` (:func:`compile_selector`; ``None``:
    no selector), the one selection path of
    driver-side planning and of workers that read their own shards. A JSON-object pair
    (:class:`~runner.readers.base.KeyedValue`) becomes ``{"Key", "Value"}`` without a selector,
    as AWS shapes it; an item whose path selects nothing becomes :class:`Failed`."""
    for index, value in enumerate(values, first_index):
        key = None
        if isinstance(value, KeyedValue):
            key, value = value.key, value.value
            if build is None:
                yield index, {"Key": key, "Value": value}
                continue
        if build is None:
            yield index, value
            continue
        try:
            yield index, build(run_input, context_object(index, value, key, source))
        except PathNotFound as exc:
            cause = f"ItemSelector: the JSONPath {exc} selected nothing for item {index}"
            yield index, Failed("States.Runtime", cause)
