"""ItemBatcher: group selected items into child inputs, exactly as AWS shapes them.

Batches cover contiguous item indices, in order, so a batch's ``first_index`` and size map every
result back to its source position. ``MaxInputBytesPerBatch`` counts the UTF-8 bytes of the whole
compact-JSON child input (``{"BatchInput": ..., "Items": [...]}``), so a batch never exceeds it;
an item that alone exceeds it becomes a batch of its own that fails with
``States.DataLimitExceeded`` instead of being dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Batch", "Failed", "batch_items", "dumps"]


def dumps(value: Any) -> str:
    """Compact JSON, the form children receive and result files store."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


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

    @property
    def size(self) -> int:
        return len(self.items)

    def child_input(self) -> Any:
        """AWS's child input: ``{"Items": [...]}`` (+ ``BatchInput``), or the lone item."""
        if not self.batched:
            return self.items[0]
        if self.batch_input is not None:
            return {"BatchInput": self.batch_input, "Items": self.items}
        return {"Items": self.items}


@dataclass(slots=True)
class Failed:
    """An item that could not be selected: ``error``/``cause`` say why (States.Runtime)."""

    error: str
    cause: str


def batch_items(
    items: Iterable[tuple[int, Any]],
    *,
    max_items: int | None,
    max_bytes: int | None,
    batch_input: Any = None,
    batched: bool = True,
) -> Iterator[Batch]:
    """Group ``(index, item)`` pairs into batches; a :class:`Failed` item gets its own batch."""
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
    first = 0
    used = overhead
    for index, item in items:
        if isinstance(item, Failed):
            if current:
                yield Batch(number, first, current, batch_input)
                number, current = number + 1, []
            yield _single(number, index, item, batched=True, batch_input=batch_input)
            number += 1
            continue
        cost = 0
        if max_bytes is not None:
            cost = len(dumps(item).encode()) + (1 if current else 0)  # +1 for the comma
            if overhead + cost > max_bytes:  # alone it cannot fit: fail it, keep order
                if current:
                    yield Batch(number, first, current, batch_input)
                    number, current = number + 1, []
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
                yield Batch(number, first, current, batch_input)
                number, current, used = number + 1, [], overhead
                cost -= 1  # first item of the new batch needs no comma
        if not current:
            first = index
        current.append(item)
        used += cost
        if max_items is not None and len(current) >= max_items:
            yield Batch(number, first, current, batch_input)
            number, current, used = number + 1, [], overhead
    if current:
        yield Batch(number, first, current, batch_input)


def _single(number: int, index: int, item: Any, *, batched: bool, batch_input: Any = None) -> Batch:
    if isinstance(item, Failed):
        return Batch(number, index, [None], batch_input, batched, item.error, item.cause)
    return Batch(number, index, [item], batch_input, batched)
