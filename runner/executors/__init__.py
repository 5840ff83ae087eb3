"""Executors by name, resolved once with a documented precedence.

Precedence (as dask's ``get_scheduler``): an explicit argument, then ``SHARDMAP_EXECUTOR``
(:mod:`runner.settings`), then the embedded default ``local``. Names map to ``"module:factory"``
and import on first use, so optional dependencies stay optional.
"""

from __future__ import annotations

from typing import Any

from runner.errors import ExecutorError, SpecError
from runner.executors.base import Executor
from runner.registry import load
from runner.settings import env_var, settings

__all__ = ["Executor", "get_executor", "known_executors"]

_EXECUTORS: dict[str, str] = {
    "dask": "runner.executors.dask:DaskExecutor",
    "inline": "runner.executors.local:_inline",
    "local": "runner.executors.local:LocalExecutor",
    "processes": "runner.executors.local:_processes",
    "threads": "runner.executors.local:LocalExecutor",
}


def known_executors() -> list[str]:
    return sorted(_EXECUTORS)


def get_executor(name: str | Executor | None = None, **options: Any) -> Executor:
    """An executor from a name (``local``, ``threads``, ``processes``, ``inline``) or as given."""
    if name is not None and not isinstance(name, str):
        return name
    configured = not name
    name = name or settings().executor
    target = _EXECUTORS.get(name)
    if target is None:
        unknown = f"unknown executor {name!r}; known: {', '.join(known_executors())}"
        if configured:  # the user must fix a variable, not wait for a service: exit 2
            raise SpecError(env_var("executor"), unknown)
        raise ExecutorError(unknown)
    factory = load(target, f"executor {name!r}")  # a missing extra: MissingExtra, exit 2
    return factory(**options)
