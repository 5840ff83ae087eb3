"""The optional reduce step: one function over a finished Map Run's results, on the driver.

A Distributed Map ends with its results written; work whose answer spans batches (deduplicating
across the whole dataset, totals, a final commit) needs one more step. A pipeline names it with
``Reduce: name-or-module:function``; it is resolved like a worker and called once with a
:class:`ReduceContext` after the Map Run SUCCEEDED (after ``run``, and after a ``resume`` or
``redrive`` that ends SUCCEEDED). It is not called for a FAILED run, whose results are partial.

A reducer may run more than once for the same results (a crash after it started, a redrive),
so it must be idempotent: write its outputs under fixed names and commit them last.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from runner.registry import resolve_worker
from runner.results import iter_result_records
from runner.types import ReduceOutcome  # a value object: MapRunResult holds one

__all__ = ["ReduceContext", "ReduceOutcome", "run_reduce"]


@dataclass(frozen=True)
class ReduceContext:
    """What a reducer is given: where the run's results are and what the run was asked."""

    run_id: str
    manifest_url: str
    destination: str  # the run's results prefix (``--dest``); outputs usually go under it
    source: str | None  # the run's item source URL
    run_input: Any
    batch_input: Any  # the resolved ItemBatcher.BatchInput, the same the workers saw
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    def outputs(self) -> Iterator[Any]:
        """Stream the Output of every SUCCEEDED child, parsed, in result-file order."""
        options = dict(self.storage_options)
        for kind, record in iter_result_records(self.manifest_url, storage_options=options):
            if kind != "SUCCEEDED":
                continue
            if isinstance(record, dict) and "Output" in record and "Status" in record:
                output = record["Output"]
                yield json.loads(output) if isinstance(output, str) else output
            else:  # COMPACT / FLATTEN results hold bare outputs
                yield record


def run_reduce(name: str, context: ReduceContext) -> ReduceOutcome:
    """Call reducer ``name`` on ``context``; its exception becomes a failed outcome."""
    try:
        reducer = resolve_worker(name)
        output = reducer(context)
        json.dumps(output)  # the outcome is reported and journaled as JSON
    except Exception as exc:
        return ReduceOutcome(name, error=type(exc).__name__, cause=str(exc) or repr(exc))
    return ReduceOutcome(name, output=output)
