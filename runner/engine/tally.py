"""A run's item and execution counts as the loop moves batches through their states (AWS's
``itemCounts``/``executionCounts``), and the failed-item count thresholds are judged on."""

from __future__ import annotations

from collections.abc import Iterable

from runner.types import BatchStatus, Counts

THRESHOLD_ERROR = "States.ExceedToleratedFailureThreshold"
THRESHOLD_CAUSE = "The specified tolerated failure threshold was exceeded"

_FIELD = {
    BatchStatus.SUCCEEDED: "succeeded",
    BatchStatus.FAILED: "failed",
    BatchStatus.TIMED_OUT: "timed_out",
    BatchStatus.ABORTED: "aborted",
}
_FAILED = (BatchStatus.FAILED, BatchStatus.TIMED_OUT)  # what thresholds count (AWS)


class Tally:
    def __init__(self) -> None:
        self.items = Counts()
        self.executions = Counts()
        self.failed_items = 0

    def restore(self, kept: Iterable[tuple[str, int]]) -> None:
        """Start from the ``(status, size)`` of batches a resumed or redriven run keeps."""
        for status, size in kept:
            self._ended(BatchStatus(status), size)

    def start(self, size: int) -> None:
        self.items.running += size
        self.executions.running += 1

    def finish(self, status: BatchStatus, size: int) -> None:
        """A running batch ended with ``status`` (its record is written)."""
        self.items.running -= size
        self.executions.running -= 1
        self._ended(status, size)

    def pending(self, size: int) -> None:
        """A batch that never started, recorded PENDING after the run stopped."""
        self.items.pending += size
        self.executions.pending += 1

    def stopping(self) -> None:
        """The run stops: pending is recounted as PENDING records go out."""
        self.items.pending = self.executions.pending = 0

    def planned(self, items: int, batches: int, *, stopped: bool) -> None:
        """The planner has read ``items`` in ``batches`` so far: totals, and (while the run goes
        on) pending as what is planned but not yet started."""
        self.items.total = max(items, self.items.total)
        self.executions.total = max(batches, self.executions.total)
        if stopped:
            return
        for counts, planned in ((self.items, items), (self.executions, batches)):
            started = counts.succeeded + counts.failed + counts.timed_out + counts.running
            counts.pending = max(0, planned - started - counts.aborted)

    def exceeded(
        self, count: int | None, percentage: float | None, total_known: int | None
    ) -> bool:
        """Whether failures crossed the tolerated threshold (AWS: with neither set, any failed
        item fails the run). A percentage above zero is judged once ``total_known``."""
        if self.failed_items == 0:
            return False
        if count is None and percentage is None:
            count = 0
        if count is not None and self.failed_items > count:
            return True
        if percentage is None:
            return False
        if percentage == 0:
            return True
        if total_known is None:
            return False
        return total_known > 0 and self.failed_items * 100.0 / total_known > percentage

    def _ended(self, status: BatchStatus, size: int) -> None:
        name = _FIELD[status]
        setattr(self.items, name, getattr(self.items, name) + size)
        setattr(self.executions, name, getattr(self.executions, name) + 1)
        if status in _FAILED:
            self.failed_items += size
        self.items.results_written += size
        self.executions.results_written += 1
