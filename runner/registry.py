"""Workers by name: the ``shardmap.workers`` entry-point group, plus ``module:function`` paths.

A worker is a plain function. It receives the child input AWS would send a Lambda
(``{"Items": [...]}``, with ``BatchInput`` when configured, or the lone item without an
ItemBatcher) and returns a JSON-able output. A worker declared ``columnar`` instead receives
``(table: pyarrow.Table, batch_input)``. No worker knows which executor runs it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any, TypeVar

from runner.errors import WorkerNotFound

__all__ = ["WorkerInfo", "known_workers", "resolve_worker", "worker", "worker_info"]

F = TypeVar("F", bound=Callable[..., Any])
GROUP = "shardmap.workers"


@dataclass(frozen=True)
class WorkerInfo:
    columnar: bool = False  # takes (pyarrow.Table, batch_input) instead of the JSON child input


def worker(fn: F | None = None, *, columnar: bool = False) -> Any:
    """Mark a function as a shardmap worker (registration itself is by entry point).

    >>> @worker(columnar=True)
    ... def count_rows(table, batch_input):
    ...     return {"rows": table.num_rows}
    """

    def mark(f: F) -> F:
        f.__shardmap_worker__ = WorkerInfo(columnar=columnar)  # type: ignore[attr-defined]
        return f

    return mark(fn) if fn is not None else mark


def worker_info(fn: Callable[..., Any]) -> WorkerInfo:
    return getattr(fn, "__shardmap_worker__", WorkerInfo())


@cache
def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def known_workers() -> dict[str, str]:
    """Registered worker names -> the first line of their docstring."""
    docs = {}
    for name, ep in sorted(_entry_points().items()):
        try:
            doc = inspect.getdoc(ep.load()) or ""
        except Exception as exc:  # a broken plugin must not hide the others
            doc = f"(cannot load: {exc})"
        docs[name] = doc.splitlines()[0] if doc else ""
    return docs


@cache
def resolve_worker(ref: str, allow_import_path: bool = True) -> Callable[..., Any]:
    """The function for a registered name or, when allowed, a ``module:function`` path."""
    ep = _entry_points().get(ref)
    if ep is not None:
        return ep.load()
    if ":" in ref and allow_import_path:
        module_name, _, attr = ref.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            raise WorkerNotFound(f"cannot import worker {ref!r}: {exc}") from exc
        if not callable(target):
            raise WorkerNotFound(f"worker {ref!r} is not callable")
        return target
    known = ", ".join(sorted(_entry_points())) or "none"
    hint = "" if allow_import_path else " (import paths are not allowed here)"
    raise WorkerNotFound(f"unknown worker {ref!r}{hint}; registered workers: {known}")
