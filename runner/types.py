"""Value objects shared across layers: statuses, the records the writer writes, and what a Map
Run reports (counts, progress, the result). Imports nothing from the package, so a local run, a
Step Functions run followed from here and a trigger's record of a run all report one shape.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "BatchStatus",
    "ChildRecord",
    "Counts",
    "MapRunResult",
    "ReduceOutcome",
    "RunProgress",
    "RunStatus",
]


class RunStatus(enum.StrEnum):
    """A Map Run's status (DescribeMapRun's ``status``). Names and spellings are AWS's."""

    RUNNING = "RUNNING"  # planned or executing
    SUCCEEDED = "SUCCEEDED"  # every batch finished and failures stayed within the thresholds
    FAILED = "FAILED"  # a threshold was crossed, or the reader/writer failed
    ABORTED = "ABORTED"  # stopped by the user (Ctrl-C)


class BatchStatus(enum.StrEnum):
    """One child workflow execution (one batch). Names and spellings are AWS's."""

    PENDING = "PENDING"  # planned, never started
    RUNNING = "RUNNING"  # submitted to an executor
    SUCCEEDED = "SUCCEEDED"  # the worker returned
    FAILED = "FAILED"  # the worker raised and retries are exhausted
    TIMED_OUT = "TIMED_OUT"  # TimeoutSeconds passed (States.Timeout) and retries are exhausted
    ABORTED = "ABORTED"  # was running when the run failed or was stopped


@dataclass
class ChildRecord:
    """What ResultWriter writes for one child execution (AWS record, Transformation NONE).

    ``input`` is the child's input (``{"Items": [...]}`` with an ItemBatcher, else the item),
    ``output`` the worker's return value; both are JSON-able Python values here and are
    serialised to JSON *strings* by the writer, as AWS does.
    ``first_index`` and ``item_count`` map the record back to source item indices.
    When ``output_json``/``input_json`` are set they are the JSON text of ``output``/``input``,
    which are then ignored.
    """

    name: str
    execution_arn: str
    state_machine_arn: str
    status: BatchStatus
    input: Any
    first_index: int
    item_count: int
    output: Any = None
    #: the output already encoded as compact JSON (the child encodes it once, where it runs)
    output_json: str | None = None
    #: the input already encoded as compact JSON (made once by the planner)
    input_json: str | None = None
    error: str | None = None
    cause: str | None = None
    start_date: datetime | None = None
    stop_date: datetime | None = None
    redrive_count: int = 0
    redrive_status: str = "NOT_REDRIVABLE"
    redrive_status_reason: str = "Execution is SUCCEEDED and cannot be redriven"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Counts:
    """AWS's ``itemCounts`` / ``executionCounts`` of a Map Run."""

    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    aborted: int = 0
    total: int = 0
    results_written: int = 0

    def to_aws(self) -> dict[str, int]:
        """DescribeMapRun's spelling (``timedOut``, ``resultsWritten``, ...)."""
        return {
            "pending": self.pending,
            "running": self.running,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "timedOut": self.timed_out,
            "aborted": self.aborted,
            "total": self.total,
            "resultsWritten": self.results_written,
            "failuresNotRedrivable": 0,
            "pendingRedrive": 0,
        }

    @classmethod
    def from_aws(cls, aws: Mapping[str, Any] | None) -> Counts:
        """The counts of a DescribeMapRun ``itemCounts``/``executionCounts`` (missing: 0).

        >>> Counts.from_aws(Counts(succeeded=3, timed_out=1).to_aws()).timed_out
        1
        """
        aws = aws or {}
        return cls(
            pending=int(aws.get("pending", 0)),
            running=int(aws.get("running", 0)),
            succeeded=int(aws.get("succeeded", 0)),
            failed=int(aws.get("failed", 0)),
            timed_out=int(aws.get("timedOut", 0)),
            aborted=int(aws.get("aborted", 0)),
            total=int(aws.get("total", 0)),
            results_written=int(aws.get("resultsWritten", 0)),
        )


@dataclass
class RunProgress:
    """What a progress display needs, handed to ``on_progress`` a few times a second."""

    run_id: str
    items: Counts
    executions: Counts
    total_known: bool
    elapsed: float
    executor: str

    @property
    def items_per_second(self) -> float:
        done = self.items.succeeded + self.items.failed + self.items.timed_out
        return done / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True)
class ReduceOutcome:
    """The reducer's JSON-able return value, or why it failed (see :mod:`runner.reduce`)."""

    name: str
    output: Any = None
    error: str | None = None
    cause: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None


@dataclass
class MapRunResult:
    """The outcome of a map run (DescribeMapRun's fields plus where the results are)."""

    run_id: str
    map_run_arn: str
    status: RunStatus
    item_counts: Counts
    execution_counts: Counts
    manifest_url: str | None
    output: dict[str, Any] | None
    start_date: datetime
    stop_date: datetime
    error: str | None = None
    cause: str | None = None
    warnings: list[str] = field(default_factory=list)
    #: Whether the workers read their own shards (:mod:`runner.shards`) or the driver read items.
    shard_reading: bool = False
    #: The pipeline's reduce step, when it has one and the Map Run SUCCEEDED.
    reduce: ReduceOutcome | None = None
    #: The exit code the run's error asks for, when it came from a shardmap error (3 when the
    #: item source's storage could not be reached); ``None``: judge by ``error``.
    error_exit_code: int | None = None

    @property
    def succeeded(self) -> bool:
        """The Map Run SUCCEEDED and so did its reduce step, if any."""
        ok = self.status == RunStatus.SUCCEEDED
        return ok and (self.reduce is None or self.reduce.succeeded)

    def describe(self) -> dict[str, Any]:
        """DescribeMapRun-shaped dict (AWS field names)."""
        described: dict[str, Any] = {
            "mapRunArn": self.map_run_arn,
            "status": str(self.status),
            "startDate": self.start_date.isoformat(),
            "stopDate": self.stop_date.isoformat(),
            "itemCounts": self.item_counts.to_aws(),
            "executionCounts": self.execution_counts.to_aws(),
        }
        if self.error:
            described["error"], described["cause"] = self.error, self.cause
        return described
