"""The one scheduling loop: keep MaxConcurrency batches running on any executor, retry, time
out, enforce tolerated-failure thresholds, stop on a signal, and hand every outcome to the
run's records. The planner thread (:mod:`runner.engine.planner`) feeds it; it is the only
code that touches the records, so executors only run callables and return futures.

Thresholds (AWS): the failed share is (failed + timed-out items) / total items. The total is
known once the reader is exhausted; until then a percentage threshold above zero cannot be
judged, so it is checked as soon as the total is known (the read-ahead keeps that early for
all but very large sources). A count threshold is checked at every failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import itertools
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from runner.batcher import Batch, dumps
from runner.child import ChildOutcome, run_child, run_ref
from runner.engine.child import Child
from runner.engine.limits import AwsLimits
from runner.engine.planner import DONE, Carry, Planner, plan_batches, reader_config, source_changed
from runner.engine.records import RunNames, RunRecords
from runner.engine.tally import THRESHOLD_CAUSE, THRESHOLD_ERROR, Tally
from runner.errors import ReaderError, ShardmapError, SpecError
from runner.executors import Executor
from runner.executors.base import started_at
from runner.journal import Journal, RunRow, fingerprint
from runner.registry import resolve_worker
from runner.results import ResultWriterDetails
from runner.shards import shard_batches, why_not_sharded
from runner.spec import AWS_MAX_OUTPUT_BYTES, MapSpec
from runner.types import BatchStatus, MapRunResult, RunProgress, RunStatus

log = logging.getLogger("shardmap")

DEFAULT_READ_AHEAD_ITEMS = 100_000


@dataclass(frozen=True)
class RunOptions:
    """How the driver runs a Map, beyond its spec; journaled, so resume and redrive run the
    same way. ``read_ahead_items``: how far the planner reads ahead of the loop;
    ``rollover_bytes``: result-file size limit (AWS's 5 GB when ``None``); ``shard_reading``:
    whether workers read their own shards (``None``: when the executor and source allow)."""

    read_ahead_items: int = DEFAULT_READ_AHEAD_ITEMS
    rollover_bytes: int | None = None
    shard_reading: bool | None = None

    @classmethod
    def of(cls, row: RunRow) -> RunOptions:
        """The options a journaled run was started with (defaults for a journal without)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (row.options or {}).items() if k in known})


@contextlib.contextmanager
def stop_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """SIGINT and SIGTERM go to ``handler`` while a run goes on (main thread only: Python
    delivers signals there); the previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) not in (signal.SIG_IGN, None):  # ignored (nohup): keep so
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class MapRun:
    """One run of a Map: from the first planned batch to the exported results."""

    def __init__(
        self,
        spec: MapSpec,
        *,
        run_input: Any,
        executor: Executor,
        dest_url: str,
        run_id: str,
        on_progress: Callable[[RunProgress], None] | None,
        options: RunOptions,
        journal: Journal | None = None,
        carry: Carry | None = None,
    ) -> None:
        self.spec = spec
        self.options = options
        self.sharded = False
        self.journal = journal
        self.carry = carry or Carry()
        self.dest_url = dest_url
        self.run_input = run_input
        self.executor = executor
        self.run_id = run_id
        self.on_progress = on_progress
        self.names = RunNames.of(spec, run_id)
        self.map_run_arn = self.names.map_run_arn
        self.records = RunRecords(
            spec,
            self.names,
            dest_url,
            rollover_bytes=options.rollover_bytes,
            journal=journal,
            redrive_count=self.carry.redrive_count,
        )
        if journal is not None:
            journal.begin(self.carry.redrive_count)
        self.tally = Tally()
        self.tally.restore((status, size) for status, _, size in self.carry.keep.values())
        self.in_flight: dict[Future, Child] = {}
        self.interrupted: list[Child] = []  # submitted, but the submit call was interrupted
        # OversizedOutput FAIL (AWS): a child output over 256 KiB fails its batch.
        self.output_limit = AWS_MAX_OUTPUT_BYTES if spec.oversized_output == "FAIL" else None
        #: Set (to the signal's name) by SIGINT/SIGTERM: the loop stops at its next turn.
        self.stop_requested: str | None = None
        self.error_exit_code: int | None = None
        self.in_worker_call = False
        self.waiting: list[tuple[float, int, Child]] = []  # retry backoff heap
        self._sequence = itertools.count()
        self.error: str | None = None
        self.cause: str | None = None
        self.held: Batch | None = None
        self.planner_finished = False
        self.limits = AwsLimits(spec.aws_warnings())

    # -- entry -------------------------------------------------------------------------
    def execute(self) -> MapRunResult:
        started, clock = datetime.now(UTC), time.monotonic()
        self.started_clock = clock
        self.worker = self._worker_callable()
        batches = self._plan()
        batcher = self.spec.item_batcher
        per_batch = (batcher.max_items_per_batch or 1) if batcher else 1
        self.planner = Planner(
            batches,
            max(64, self.options.read_ahead_items // per_batch),
            self.carry,
            fingerprints=self.journal is not None,
        )
        status = RunStatus.SUCCEEDED
        with stop_signals(self._on_stop_signal):
            try:
                with self.executor:
                    self.planner.start()
                    try:
                        self._loop()
                    except KeyboardInterrupt:
                        self.error, self.cause = "States.Aborted", self._stopped_by()
                        status = RunStatus.ABORTED
                        log.warning("map run %s: %s", self.run_id, self.cause)
                    if self.error is not None:
                        if status != RunStatus.ABORTED:
                            status = RunStatus.FAILED
                        self._stop_everything()
                    self._report_progress()
            finally:
                # Whatever happened, what was written stays readable: the manifest goes last.
                details = self.records.close_stream()
            stop = datetime.now(UTC)
            if self.journal is not None:
                details = self._export(status, stop)
            assert details is not None
        return MapRunResult(
            run_id=self.run_id,
            map_run_arn=self.map_run_arn,
            status=status,
            item_counts=self.tally.items,
            execution_counts=self.tally.executions,
            manifest_url=details.manifest_url,
            output=details.map_state_output(self.map_run_arn),
            start_date=started,
            stop_date=stop,
            error=self.error,
            cause=self.cause,
            warnings=self.limits.warnings,
            shard_reading=self.sharded,
            error_exit_code=self.error_exit_code,
        )

    def _plan(self) -> Iterator[Batch]:
        """Batches read on the driver, or refs the workers read (shard-parallel reading)."""
        wanted = self.options.shard_reading
        if wanted is None:
            wanted = bool(getattr(self.executor, "reads_shards", False))
        if not wanted:
            return plan_batches(self.spec, self.run_input)
        reason = why_not_sharded(self.spec)
        if reason is None:
            batches = shard_batches(
                self.spec,
                self.run_input,
                reader_config(self.spec),
                self._submit_now,
                window=2 * self.executor.slots,
            )
            if batches is not None:
                self.sharded = True
                log.info("map run %s: workers read their own shards", self.run_id)
                return batches
            reason = "compressed files cannot be split"
        log.info("map run %s: items are read on the driver: %s", self.run_id, reason)
        return plan_batches(self.spec, self.run_input)

    def _submit_now(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Submit from the planner thread (index tasks), bypassing any bulk buffering."""
        future = self.executor.submit(fn, *args)
        flush = getattr(self.executor, "flush", None)
        if flush is not None:
            flush()
        return future

    def _worker_callable(self) -> Any:
        if not self.spec.worker:
            raise SpecError("Worker", "no worker: name one in the pipeline or with --worker")
        fn = resolve_worker(self.spec.worker)  # fail early, before any item is read
        # Separate processes import the worker by name; threads can share the function.
        return self.spec.worker if self.executor.remote else fn

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        """SIGINT/SIGTERM: stop at the loop's next turn (at once if a worker runs in this
        thread); a second signal stops at once, wherever the driver is."""
        if self.stop_requested is not None:
            raise KeyboardInterrupt  # asked twice: `shardmap resume` finishes what is left
        self.stop_requested = signal.Signals(signum).name
        log.warning(
            "map run %s: %s received: aborting running batches and writing the results "
            "(send it again to stop at once)",
            self.run_id,
            self.stop_requested,
        )
        if self.in_worker_call:
            raise KeyboardInterrupt

    def _stopped_by(self) -> str:
        if self.stop_requested == "SIGTERM":
            return "stopped by SIGTERM"
        if self.stop_requested == "SIGINT":
            return "stopped by the user (Ctrl-C)"
        return "stopped: KeyboardInterrupt raised while a batch ran"

    def _loop(self) -> None:
        last_progress = 0.0
        flush = getattr(self.executor, "flush", None)  # executors that send submissions in bulk
        while self.error is None:
            if self.stop_requested is not None:
                raise KeyboardInterrupt
            self._fill_slots()
            if flush is not None:
                flush()
            if not self.in_flight and not self.waiting and self._planner_drained():
                break
            done = self._wait_some()
            for future in done:
                self._finished(self.in_flight.pop(future), future)
            self._expire_deadlines()
            self._check_thresholds()
            now = time.monotonic()
            if now - last_progress > 0.25:
                self._report_progress()
                last_progress = now
        if self.error is None:
            self._check_thresholds(final=True)

    # -- starting --------------------------------------------------------------------------
    def _fill_slots(self) -> None:
        # Unlimited MaxConcurrency still keeps only a few batches per slot queued, so a failure
        # threshold can stop the run before everything was handed out.
        limit = self.spec.max_concurrency or self.executor.slots * self.executor.prefetch
        now = time.monotonic()
        while len(self.in_flight) < limit and self.waiting and self.waiting[0][0] <= now:
            _, _, child = heapq.heappop(self.waiting)
            self._submit(child)
        while len(self.in_flight) < limit and self.error is None:
            batch = self._next_batch(block=False)
            if batch is None:
                return
            if batch.error:  # failed before it could run: record, never start
                self._count_start(batch)
                self._final(
                    Child(batch, datetime.now(UTC)),
                    BatchStatus.FAILED,
                    batch.error,
                    batch.cause or "",
                )
                continue
            self._count_start(batch)
            self._submit(Child(batch, datetime.now(UTC)))

    def _next_batch(self, block: bool, timeout: float = 0.05) -> Batch | None:
        if self.held is not None:
            batch, self.held = self.held, None
            return batch
        if self.planner_finished:
            return None
        try:
            item = self.planner.queue.get(block=block, timeout=timeout if block else None)
        except queue.Empty:
            return None
        if item is DONE:
            self.planner_finished = True
            if self.planner.error is not None:
                self._fail_from_planner(self.planner.error)
            return None
        return item

    def _planner_drained(self) -> bool:
        return self.planner_finished and self.held is None

    def _fail_from_planner(self, exc: BaseException) -> None:
        if isinstance(exc, ShardmapError):
            self.error_exit_code = exc.exit_code
        if isinstance(exc, ReaderError):
            self.error, self.cause = exc.error_name, str(exc)
        elif isinstance(exc, SpecError):
            self.error, self.cause = "States.Runtime", str(exc)
        else:
            self.error, self.cause = "States.ItemReaderFailed", f"{type(exc).__name__}: {exc}"
        log.error("map run %s: %s: %s", self.run_id, self.error, self.cause)

    def _count_start(self, batch: Batch) -> None:
        self.tally.start(batch.size)

    def _submit(self, child: Child) -> None:
        batch = child.batch
        if self.journal is not None:
            self.journal.started(
                batch.number, batch.first_index, batch.size, batch.fingerprint or ""
            )
        limit = self.output_limit
        self.in_worker_call = True  # an inline executor runs the worker inside submit
        try:
            if batch.ref is not None:
                future = self.executor.submit(run_ref, self.worker, batch.ref, limit)
            else:
                child_input = batch.child_input()
                if self.limits.sampling_inputs:  # a dumps per child would cost the hot path
                    self.limits.child_input(dumps(child_input))
                future = self.executor.submit(
                    run_child, self.worker, child_input, output_limit=limit
                )
        except BaseException:
            # Ctrl-C while an inline executor ran this batch in this thread: it was running,
            # so it is aborted with the others, never dropped.
            self.interrupted.append(child)
            raise
        finally:
            self.in_worker_call = False
        child.deadline = None  # armed by _expire_deadlines once the attempt starts running
        child.attempt = future
        self.in_flight[future] = child

    def _wait_some(self) -> set[Future]:
        timeout = 0.25
        now = time.monotonic()
        if self.waiting:
            timeout = min(timeout, max(0.0, self.waiting[0][0] - now))
        deadlines = [c.deadline for c in self.in_flight.values() if c.deadline is not None]
        if deadlines:
            timeout = min(timeout, max(0.0, min(deadlines) - now))
        if not self.in_flight:
            # Nothing running: wait for the planner (or a retry) instead of spinning.
            batch = self._next_batch(block=True, timeout=max(timeout, 0.001))
            self.held = batch  # started by the next _fill_slots, keeping source order
            return set()
        done, _ = wait(self.in_flight, timeout=timeout, return_when=FIRST_COMPLETED)
        return done

    # -- finishing ---------------------------------------------------------------------------
    def _finished(self, child: Child, future: Future) -> None:
        start = started_at(future)
        if start is not None:  # one that never started (say, unpicklable) keeps its hand-over
            child.note_start(start.clock, start.wall)
        try:
            outcome: ChildOutcome = future.result()
        except ReaderError as exc:  # a worker could not read its shard: as a driver-side read
            self._fail_from_planner(exc)
            self.in_flight[future] = child  # still running for the count: aborted with the rest
            return
        except Exception as exc:  # the executor itself failed this batch (lost process, pickling)
            outcome = ChildOutcome(False, None, type(exc).__name__, f"{type(exc).__name__}: {exc}")
        except BaseException:  # KeyboardInterrupt in the worker: the run stops, this batch too
            self.in_flight[future] = child
            raise
        if outcome.ok and self.output_limit is None:
            self.limits.child_output(outcome.output_json or "")
        if outcome.input_json is not None and not self._took_input(child.batch, outcome):
            self.in_flight[future] = child
            return
        if self.journal is not None:
            status = "SUCCEEDED" if outcome.ok else "FAILED"
            self.journal.attempt_ended(child.batch.number, status, outcome.error, outcome.seconds)
        child.seconds = outcome.seconds
        if outcome.ok:
            self._final(child, BatchStatus.SUCCEEDED, output_json=outcome.output_json)
        elif outcome.final:
            self._final(child, BatchStatus.FAILED, outcome.error, outcome.cause or "")
        else:
            self._failed_attempt(child, outcome.error or "States.TaskFailed", outcome.cause or "")

    def _took_input(self, batch: Batch, outcome: ChildOutcome) -> bool:
        """Keep the input a worker built; on resume it must match what the journal holds."""
        assert outcome.input_json is not None
        if batch.input_json is None:
            batch.input_json = outcome.input_json
            if self.limits.sampling_inputs:
                self.limits.child_input(outcome.input_json)
        if self.journal is not None:
            found = fingerprint(outcome.input_json)
            if batch.expected is not None and batch.expected != found:
                self._fail_from_planner(source_changed(batch))
                return False
            batch.fingerprint = found
        return True

    def _expire_deadlines(self) -> None:
        """Time out attempts running longer than TimeoutSeconds, counted from when each began
        running (as a child execution's): never one still queued in the executor (behind
        busy workers, or while a process starts), whatever it waited."""
        timeout = self.spec.timeout_seconds
        if not timeout:
            return
        now = time.monotonic()
        # Executors that say when a call starts (runner.executors.base); for any other, a call
        # runs from when the loop first sees it running.
        reported = getattr(self.executor, "reports_starts", False)
        expired = []
        for future, child in self.in_flight.items():
            if future.done():  # finished in time: its outcome is taken at the next turn
                continue
            if child.deadline is None:
                start = started_at(future)
                if start is not None:
                    child.deadline = child.note_start(start.clock, start.wall) + timeout
                elif not reported and future.running():
                    child.deadline = child.note_start(now, time.time()) + timeout
                else:
                    continue  # not started yet: its clock does not tick
            if child.deadline <= now:
                expired.append(future)
        if not expired:
            return
        self.executor.cancel(expired)
        for future in expired:
            child = self.in_flight.pop(future)
            cause = f"child did not finish within TimeoutSeconds={self.spec.timeout_seconds:g}"
            if self.journal is not None:
                self.journal.attempt_ended(child.batch.number, "TIMED_OUT", "States.Timeout", None)
            self._failed_attempt(child, "States.Timeout", cause)

    def _failed_attempt(self, child: Child, error: str, cause: str) -> None:
        delay = child.retry_delay(self.spec.retry, error)
        if delay is not None:
            ready = time.monotonic() + delay
            heapq.heappush(self.waiting, (ready, next(self._sequence), child))
            return
        status = BatchStatus.TIMED_OUT if error == "States.Timeout" else BatchStatus.FAILED
        self._final(child, status, error, cause)

    def _final(
        self,
        child: Child,
        status: BatchStatus,
        error: str | None = None,
        cause: str | None = None,
        output_json: str | None = None,
    ) -> None:
        self.records.keep(
            child.batch,
            status,
            error=error,
            cause=cause,
            output_json=output_json,
            start_date=child.first_start,
            seconds=child.seconds,
        )
        self.tally.finish(status, child.batch.size)

    # -- results from the journal ------------------------------------------------------------
    def _export(self, status: RunStatus, stop: datetime) -> ResultWriterDetails:
        """Record the outcome, write every journaled record in AWS's layout (manifest last),
        and only then mark the run with its final status: a crash anywhere in between leaves
        a RUNNING run whose ``outcome`` says what ``export`` (or resume) must finish."""
        return self.records.export(
            outcome=str(status),
            error=self.error,
            cause=self.cause,
            stop_date=stop.isoformat(),
            total_items=self.planner.items,
            total_batches=self.planner.executions,
            plan_complete=int(self.planner.done.is_set()),
        )

    # -- thresholds and stopping -------------------------------------------------------------
    def _check_thresholds(self, final: bool = False) -> None:
        if self.error is not None:
            return
        total_known = self._planner_drained() or self.planner.done.is_set() or final
        spec = self.spec
        if self.tally.exceeded(
            spec.tolerated_failure_count,
            spec.tolerated_failure_percentage,
            self.planner.items if total_known else None,
        ):
            self.error, self.cause = THRESHOLD_ERROR, THRESHOLD_CAUSE

    def _stop_everything(self) -> None:
        """Fail fast: running children become ABORTED, unstarted ones PENDING (AWS)."""
        self.tally.stopping()
        self.executor.cancel(list(self.in_flight))
        if self.journal is not None:  # their attempts end here (waiting ones already ended)
            for child in self.in_flight.values():
                self.journal.attempt_ended(child.batch.number, "ABORTED", "States.Aborted", None)
        stopped = [*self.in_flight.values(), *self.interrupted, *(c for _, _, c in self.waiting)]
        self.interrupted.clear()
        for child in stopped:
            self._final(
                child, BatchStatus.ABORTED, "States.Aborted", f"Map Run stopped: {self.error}"
            )
        self.in_flight.clear()
        self.waiting.clear()
        while not self._planner_drained():
            batch = self._next_batch(block=True, timeout=1.0)
            if batch is not None:
                self._pending(batch)
        unfinished = self.planner.unfinished
        if unfinished is not None:  # read before the source failed: in the results, as PENDING
            self._pending(unfinished)
            last = unfinished.first_index + unfinished.size - 1
            log.warning(
                "map run %s: items %d-%d, read before the item source failed, are PENDING",
                self.run_id,
                unfinished.first_index,
                last,
            )

    def _pending(self, batch: Batch) -> None:
        self.records.keep(
            batch,
            BatchStatus.PENDING,
            error=None,
            cause=None,
            output_json=None,
            start_date=None,
            seconds=None,
        )
        self.tally.pending(batch.size)

    def _report_progress(self) -> None:
        planned_items = self.planner.items
        self.tally.planned(planned_items, self.planner.executions, stopped=self.error is not None)
        if self.journal is not None:  # so `shardmap status` sees the plan grow
            self.journal.update_run(
                total_items=planned_items,
                total_batches=self.planner.executions,
                plan_complete=int(self.planner.done.is_set()),
            )
            self.journal.commit()
        if self.on_progress is not None:
            self.on_progress(
                RunProgress(
                    self.run_id,
                    self.tally.items,
                    self.tally.executions,
                    self.planner.done.is_set(),
                    time.monotonic() - self.started_clock,
                    self.executor.describe(),
                )
            )
