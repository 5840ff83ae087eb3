"""A run's Map Run record, DescribeMapRun-shaped, read from its journal (any process may read)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from runner.journal import Journal
from runner.types import Counts, MapRunResult, RunStatus

__all__ = ["describe_map_run", "map_run_result"]

_COUNT_KEYS = (
    "pending",
    "running",
    "succeeded",
    "failed",
    "timedOut",
    "aborted",
    "total",
    "resultsWritten",
    "failuresNotRedrivable",
    "pendingRedrive",
)
_STATUS_KEY = {
    "RUNNING": "running",
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    "TIMED_OUT": "timedOut",
    "ABORTED": "aborted",
    "PENDING": "pending",
}


def describe_map_run(journal: Journal) -> dict[str, Any]:
    """DescribeMapRun's fields for the journaled run (AWS's names and shapes).

    >>> with Journal.open(".shardmap", run_id, readonly=True) as j:  # doctest: +SKIP
    ...     describe_map_run(j)["itemCounts"]["succeeded"]
    """
    row = journal.run()
    spec = row.spec
    counts = journal.counts()
    finished, written = row.status != "RUNNING", row.exported
    items = _counts(counts, row.total_items, index=1, finished=finished, written=written)
    executions = _counts(counts, row.total_batches, index=0, finished=finished, written=written)
    described: dict[str, Any] = {
        "mapRunArn": row.map_run_arn,
        "executionArn": row.map_run_arn.replace(":mapRun:", ":execution:").rsplit(":", 1)[0]
        + f":{row.id}",
        "status": row.status,
        "startDate": row.start_date,
        "maxConcurrency": spec.get("MaxConcurrency", 0),
        "toleratedFailurePercentage": float(spec.get("ToleratedFailurePercentage", 0.0)),
        "toleratedFailureCount": int(spec.get("ToleratedFailureCount", 0)),
        "itemCounts": items,
        "executionCounts": executions,
        "redriveCount": row.redrive_count,
    }
    if row.stop_date:
        described["stopDate"] = row.stop_date
    if row.error:
        described["error"], described["cause"] = row.error, row.cause
    if row.manifest_url and row.exported:
        described["resultWriterDetails"] = {"manifest": row.manifest_url}
    if row.unexported:  # shardmap's own: the run ended, its results are still being written
        described["shardmap"] = {"outcome": row.outcome, "resultsExported": False}
    return described


def map_run_result(journal: Journal) -> MapRunResult:
    """The journaled run as a :class:`~runner.types.MapRunResult`, counts as
    :func:`describe_map_run` gives them (for a run that ended: what its results hold).

    The Map state's output and the reduce step's outcome are not journaled, so ``output`` and
    ``reduce`` are ``None``; a run still going has ``stop_date`` now.
    """
    row = journal.run()
    described = describe_map_run(journal)
    return MapRunResult(
        run_id=row.id,
        map_run_arn=row.map_run_arn,
        status=RunStatus(row.status),
        item_counts=Counts.from_aws(described["itemCounts"]),
        execution_counts=Counts.from_aws(described["executionCounts"]),
        manifest_url=row.manifest_url,
        output=None,
        start_date=datetime.fromisoformat(row.start_date),
        stop_date=datetime.fromisoformat(row.stop_date) if row.stop_date else datetime.now(UTC),
        error=row.error,
        cause=row.cause,
    )


def _counts(
    counts: dict[str, tuple[int, int]], total: int, *, index: int, finished: bool, written: bool
) -> dict[str, int]:
    out = dict.fromkeys(_COUNT_KEYS, 0)
    for status, pair in counts.items():
        out[_STATUS_KEY[status]] += pair[index]
    journaled = sum(pair[index] for pair in counts.values())
    total = max(total, journaled)
    if not finished:  # planned but not yet started: not in the batch table yet
        out["pending"] += total - journaled
    out["total"] = total
    # Results are written from the journal when the run ends: until then none exist.
    if written:
        out["resultsWritten"] = sum(
            out[k] for k in ("succeeded", "failed", "timedOut", "aborted", "pending")
        )
    out["pendingRedrive"] = 0
    return out
