"""A child execution as the scheduling loop tracks it: its batch, its attempts, when the first
one began running (the record's StartDate), its deadline, and what its retriers allow."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime

from runner.batcher import Batch
from runner.executors.base import started_at
from runner.spec import Retrier


@dataclass
class Child:
    """One child execution (one batch) and its attempts, as the loop sees them."""

    batch: Batch
    handed_over: datetime  # when the batch was first handed to the executor
    #: This attempt's, armed from when it began running (queued time is not running time).
    deadline: float | None = None
    retries: dict[int, int] = field(default_factory=dict)
    seconds: float | None = None  # worker time of the last attempt
    attempt: Future | None = None  # the latest attempt's (its executor marks when it starts)
    started: datetime | None = None  # when the first attempt that ran began

    @property
    def first_start(self) -> datetime:
        """The record's StartDate: when the first attempt began running; the hand-over for a
        batch that never ran (say, aborted while it waited in the executor's queue)."""
        if self.started is None and self.attempt is not None:
            start = started_at(self.attempt)
            if start is not None:
                self.note_start(start.clock, start.wall)
        return self.started or self.handed_over

    def note_start(self, clock: float, wall: float) -> float:
        """An attempt began running at ``clock`` (monotonic) / ``wall`` (Unix time): keep the
        first one's as the StartDate, between hand-over and now (a worker's clock may be off),
        and return ``clock``."""
        if self.started is None:
            earliest = self.handed_over.timestamp()
            self.started = datetime.fromtimestamp(min(max(wall, earliest), time.time()), UTC)
        return clock

    def retry_delay(self, retriers: Sequence[Retrier], error: str) -> float | None:
        """Seconds until the next attempt after one that failed with ``error``, or ``None``
        when no retrier allows another (AWS: the first retrier whose ErrorEquals matches
        decides, and only it)."""
        for number, retrier in enumerate(retriers):
            if retrier.matches(error):
                used = self.retries.get(number, 0)
                if used >= retrier.max_attempts:
                    return None
                self.retries[number] = used + 1
                return retrier.delay(used + 1, random.random())
        return None
