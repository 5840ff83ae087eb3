"""Value objects shared by the engine, executors and the result writer. Imports only errors."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["BatchStatus", "ChildRecord", "RunStatus"]


class RunStatus(enum.StrEnum):
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
