"""The one scheduling loop: plan batches, keep MaxConcurrency of them running on any executor,
retry, time out, enforce tolerated-failure thresholds, and hand every outcome to the writer.

Data flows one way::

    reader ─► (index, item) ─► ItemSelector ─► ItemBatcher ─► queue ─► loop ─► executor
                                                                        │
                                                                        └─► ResultWriter

The planner runs in its own thread so reading overlaps processing; the loop is the only code
that touches the writer. Executors only run callables and return futures, so the Dask and
Step Functions executors get the same retry/timeout/threshold semantics for free.

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
import os
import queue
import random
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from runner.batcher import Batch, Failed, ReadGuard, UnfinishedBatch, batch_items, dumps
from runner.child import ChildOutcome, run_child, run_ref
from runner.errors import ReaderError, ShardmapError, SpecError, redact_url
from runner.executors import Executor, get_executor
from runner.executors.base import started_at
from runner.journal import Journal, JournalError, RunRow, default_state_dir, fingerprint
from runner.paths import PathNotFound, compile_path, compile_template, context_object
from runner.readers.base import KeyedValue, ReaderConfig, get_reader
from runner.readers.infer import infer_item_reader
from runner.reduce import ReduceContext, run_reduce
from runner.registry import resolve_worker
from runner.results import ResultWriter, ResultWriterDetails, child_name
from runner.shards import shard_batches, why_not_sharded
from runner.spec import AWS_MAX_CHILD_INPUT_BYTES, AWS_MAX_OUTPUT_BYTES, MapSpec
from runner.types import BatchStatus, ChildRecord, Counts, MapRunResult, RunProgress, RunStatus

__all__ = [
    "Counts",
    "MapRunResult",
    "RunProgress",
    "export",
    "infer_item_reader",
    "map_run_arn",
    "redrive",
    "resume",
    "run",
]

log = logging.getLogger("shardmap")

THRESHOLD_ERROR = "States.ExceedToleratedFailureThreshold"
THRESHOLD_CAUSE = "The specified tolerated failure threshold was exceeded"
ACCOUNT, REGION = "000000000000", "local"
DEFAULT_READ_AHEAD_ITEMS = 100_000
AWS_ROLLOVER_BYTES = 5 * 1024**3  # ResultWriter starts a new file past 5 GB, as AWS does


def run(
    spec: MapSpec,
    *,
    run_input: Any = None,
    source: str | None = None,
    dest: str | None = None,
    executor: str | Executor | None = None,
    worker: str | None = None,
    run_id: str | None = None,
    on_progress: Callable[[RunProgress], None] | None = None,
    read_ahead_items: int = DEFAULT_READ_AHEAD_ITEMS,
    rollover_bytes: int | None = None,
    state_dir: str | None = None,
    journal: bool = True,
    shard_reading: bool | None = None,
) -> MapRunResult:
    """Run a Distributed Map described by ``spec`` and write AWS-layout results.

    ``source``/``dest``/``worker`` override the spec's. Returns a :class:`MapRunResult`;
    a run that ends FAILED is reported there, not raised. The run is journaled under
    ``state_dir`` (``$SHARDMAP_STATE_DIR`` or ``.shardmap/``) so it can be resumed after a
    crash (:func:`resume`) and redriven (:func:`redrive`); ``journal=False`` turns the journal
    off and streams records straight to the result files. ``shard_reading`` makes the
    workers read the items of their batches from storage (:mod:`runner.shards`); by default it
    is on for executors that read shards (Dask) when the source allows it.

    >>> result = run(MapSpec.from_yaml("pipelines/demo.yaml"))  # doctest: +SKIP
    >>> result.status, result.manifest_url                      # doctest: +SKIP
    """
    changes: dict[str, Any] = {}
    if source:
        changes["source"] = source
    if worker:
        changes["worker"] = worker
    if changes:
        spec = spec.replace(**changes)
    if run_input is None:
        run_input = spec.input if spec.input is not None else {}
    if spec.item_reader is None and spec.items_path is None and spec.source_url():
        spec = spec.replace(item_reader=infer_item_reader(spec.source_url() or ""))
    dest_url = dest or (spec.result_writer.destination_url() if spec.result_writer else None)
    state_dir = state_dir or default_state_dir()
    dest_url = dest_url or f"{state_dir}/results"
    if "://" not in dest_url:  # resume, status and notebooks may run from another directory
        dest_url = os.path.abspath(dest_url)
    run_id = run_id or str(uuid.uuid4())
    resolved = _resolve_paths(spec, run_input, run_context(spec, run_id, run_input, dest_url))
    executor_name = executor if isinstance(executor, str) else None
    # A missing extra or an unknown executor fails before anything is journaled.
    chosen = get_executor(executor, **_executor_options(executor, resolved))
    journal_ = None
    if journal:
        if resolved.worker:
            resolve_worker(resolved.worker)  # an unknown worker fails before anything is journaled
        journal_ = Journal.create(
            state_dir,
            run_id=run_id,
            map_run_arn=map_run_arn(resolved, run_id),
            spec=resolved.to_dict(),
            run_input=run_input,
            dest_url=dest_url,
            executor=executor_name,
        )
    try:
        result = _MapRun(
            resolved,
            run_input=run_input,
            executor=chosen,
            dest_url=dest_url,
            run_id=run_id,
            on_progress=on_progress,
            read_ahead_items=read_ahead_items,
            rollover_bytes=rollover_bytes,
            journal=journal_,
            shard_reading=shard_reading,
        ).execute()
        return _reduced(result, resolved, run_input, dest_url)
    finally:
        if journal_ is not None:
            journal_.close()


def resume(
    run_id: str,
    *,
    state_dir: str | None = None,
    executor: str | Executor | None = None,
    on_progress: Callable[[RunProgress], None] | None = None,
    source: str | None = None,
    dest: str | None = None,
) -> MapRunResult:
    """Finish a run whose driver died: batches already done are not run again.

    The source is read again from the start (each batch is checked against the fingerprint
    the journal holds, so a changed source is an error rather than silently different
    results); results are exported from the journal, so no item is written twice.
    ``source``/``dest``: the run's URLs again, when they hold ``user:password@`` (the journal
    keeps them masked).
    """
    with Journal.open(state_dir or default_state_dir(), run_id) as journal:
        row = journal.claim()
        row = _with_credentials(row, source, dest, "resume")
        if row.unexported:  # it ended, but its driver died writing the results
            return _finish_export(row, journal)
        if row.status != "RUNNING":
            raise JournalError(
                f"run {run_id} is {row.status}, not interrupted; "
                "`shardmap redrive` reruns the failed batches of a finished run"
            )
        done = ("SUCCEEDED", "FAILED", "TIMED_OUT")
        carry = _Carry.from_journal(journal, done, row.redrive_count)
        return _continue(row, journal, carry, executor, on_progress)


def redrive(
    run_id: str,
    *,
    state_dir: str | None = None,
    executor: str | Executor | None = None,
    on_progress: Callable[[RunProgress], None] | None = None,
    source: str | None = None,
    dest: str | None = None,
) -> MapRunResult:
    """Rerun the failed, timed-out, aborted and pending batches of a finished run (AWS's Map
    Run redrive). Successes are kept; the new manifest lists the successes of every attempt and
    the failures and pending items of this one; rerun records carry the new RedriveCount."""
    with Journal.open(state_dir or default_state_dir(), run_id) as journal:
        row = journal.claim()
        row = _with_credentials(row, source, dest, "redrive")
        ended = row.outcome if row.unexported else row.status
        if ended not in ("FAILED", "ABORTED"):
            hint = "; `shardmap resume` finishes an interrupted run" if ended == "RUNNING" else ""
            raise JournalError(
                f"run {run_id} is {ended}; only FAILED or ABORTED runs redrive{hint}"
            )
        if row.redrive_count >= 1000:
            raise JournalError(f"run {run_id} was redriven 1,000 times, AWS's limit")
        carry = _Carry.from_journal(journal, ("SUCCEEDED",), row.redrive_count + 1)
        journal.update_run(
            status="RUNNING",
            outcome=None,
            error=None,
            cause=None,
            stop_date=None,
            exported=0,
            redrive_count=carry.redrive_count,
        )
        journal.commit(force=True)
        return _continue(row, journal, carry, executor, on_progress)


def export(run_id: str, *, state_dir: str | None = None, dest: str | None = None) -> MapRunResult:
    """Write the results of a run that ended but whose driver died before its result files
    and manifest were all written (``shardmap export RUN``). Nothing runs again.

    >>> export("3f2c...")  # doctest: +SKIP
    """
    with Journal.open(state_dir or default_state_dir(), run_id) as journal:
        row = _with_credentials(journal.claim(), None, dest, "export", check_source=False)
        if not row.unexported:
            state = "still running" if row.status == "RUNNING" else f"{row.status}, exported"
            raise JournalError(f"run {run_id} has no results waiting to be written ({state})")
        return _finish_export(row, journal)


def _with_credentials(
    row: RunRow, source: str | None, dest: str | None, command: str, check_source: bool = True
) -> RunRow:
    """The run row with its source and destination URLs as they were before the journal
    masked their ``user:password@``: given again by the user, and checked to be the same."""
    spec = MapSpec.from_dict(row.spec)
    changes: dict[str, Any] = {}
    given = _url_again(spec.source_url(), source, "source", row.id, command, check_source)
    if given is not None:
        changes["spec"] = spec.replace(source=given).to_dict()
    given = _url_again(row.dest_url, dest, "dest", row.id, command)
    if given is not None:
        changes["dest_url"] = given
    return dataclasses.replace(row, **changes) if changes else row


def _url_again(
    journaled: str | None,
    given: str | None,
    what: str,
    run_id: str,
    command: str,
    required: bool = True,
) -> str | None:
    if given is None:
        if required and journaled and "://***@" in journaled:
            raise JournalError(
                f"run {run_id} used {journaled}, whose credentials the journal does not keep; "
                f"give the {what} again: shardmap {command} {run_id} --{what} URL"
            )
        return None
    if redact_url(given) != journaled:
        raise JournalError(
            f"run {run_id}: --{what} {redact_url(given)} is not the {what} the run used "
            f"({journaled})"
        )
    return given


def _finish_export(row: Any, journal: Journal) -> MapRunResult:
    spec = MapSpec.from_dict(row.spec)
    details = _export_journal(journal, spec, _RunNames.of(spec, row.id), row.dest_url, None)
    items, executions = _journal_counts(journal)
    result = MapRunResult(
        run_id=row.id,
        map_run_arn=row.map_run_arn,
        status=RunStatus(row.outcome),
        item_counts=items,
        execution_counts=executions,
        manifest_url=details.manifest_url,
        output=details.map_state_output(row.map_run_arn),
        start_date=datetime.fromisoformat(row.start_date),
        stop_date=_datetime(row.stop_date) or datetime.now(UTC),
        error=row.error,
        cause=row.cause,
    )
    return _reduced(result, spec, row.run_input, row.dest_url)


_COUNT_FIELDS = {
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    "TIMED_OUT": "timed_out",
    "ABORTED": "aborted",
    "PENDING": "pending",
    "RUNNING": "running",
}


def _journal_counts(journal: Journal) -> tuple[Counts, Counts]:
    """Item and execution counts of an exported run, from its batch rows."""
    items, executions = Counts(), Counts()
    for status, (batches, size) in journal.counts().items():
        name = _COUNT_FIELDS[status]
        setattr(items, name, getattr(items, name) + size)
        setattr(executions, name, getattr(executions, name) + batches)
    for counts in (items, executions):
        counts.total = sum(getattr(counts, name) for name in _COUNT_FIELDS.values())
        counts.results_written = counts.total - counts.running
    return items, executions


def _continue(
    row: Any,
    journal: Journal,
    carry: _Carry,
    executor: str | Executor | None,
    on_progress: Callable[[RunProgress], None] | None,
) -> MapRunResult:
    spec = MapSpec.from_dict(row.spec)
    executor = executor if executor is not None else row.executor
    result = _MapRun(
        spec,
        run_input=row.run_input,
        executor=get_executor(executor, **_executor_options(executor, spec)),
        dest_url=row.dest_url,
        run_id=row.id,
        on_progress=on_progress,
        read_ahead_items=DEFAULT_READ_AHEAD_ITEMS,
        rollover_bytes=None,
        journal=journal,
        carry=carry,
    ).execute()
    return _reduced(result, spec, row.run_input, row.dest_url)


def _reduced(result: MapRunResult, spec: MapSpec, run_input: Any, dest_url: str) -> MapRunResult:
    """Run the pipeline's reduce step over a SUCCEEDED Map Run's results."""
    if not spec.reduce or result.status != RunStatus.SUCCEEDED or not result.manifest_url:
        return result
    batcher = spec.item_batcher
    context = ReduceContext(
        run_id=result.run_id,
        manifest_url=result.manifest_url,
        destination=dest_url,
        source=spec.source_url(),
        run_input=run_input,
        batch_input=batcher.batch_input if batcher else None,
    )
    log.info("map run %s: reduce step %s", result.run_id, spec.reduce)
    result.reduce = run_reduce(spec.reduce, context)
    if not result.reduce.succeeded:
        log.error("map run %s: reduce step failed: %s", result.run_id, result.reduce.cause)
    return result


def run_context(spec: MapSpec, run_id: str, run_input: Any, dest_url: str) -> dict[str, Any]:
    """The ``$$`` object of a run-level template (ItemBatcher.BatchInput).

    ``Execution`` and ``StateMachine`` as in AWS's context object, plus a shardmap extension,
    ``$$.Shardmap.Source`` / ``.Destination`` / ``.RunId``, so that a pipeline can send its
    workers where to write (``ThumbnailsTo.$: $$.Shardmap.Destination``) and ``--dest`` moves
    those outputs with the results.
    """
    return {
        "Execution": {"Name": run_id, "Input": run_input, "StartTime": _aws_timestamp()},
        "StateMachine": {"Name": spec.name},
        "Shardmap": {"Source": spec.source_url(), "Destination": dest_url, "RunId": run_id},
    }


def _aws_timestamp() -> str:
    """Now as the context object writes times: ISO 8601, UTC, milliseconds, a ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def map_run_arn(spec: MapSpec, run_id: str) -> str:
    return f"arn:aws:states:{REGION}:{ACCOUNT}:mapRun:{spec.name}/{spec.label or 'Map'}:{run_id}"


def _executor_options(executor: Any, spec: MapSpec) -> dict[str, Any]:
    if isinstance(executor, str | type(None)) and spec.max_concurrency:
        return {"max_workers": spec.max_concurrency}
    return {}


def _resolve_paths(spec: MapSpec, run_input: Any, context: Any = None) -> MapSpec:
    """Replace every ``...Path`` field with the value it selects from the run input, and build
    BatchInput once (its ``$$`` paths read ``context``, see :func:`run_context`)."""

    def value(path: str, field: str) -> Any:
        try:
            return compile_path(path, field)(run_input, None)
        except PathNotFound:
            raise SpecError(field, f"path {path} selected nothing in the run input") from None

    changes: dict[str, Any] = {}
    for name, alias in (
        ("max_concurrency", "MaxConcurrencyPath"),
        ("tolerated_failure_percentage", "ToleratedFailurePercentagePath"),
        ("tolerated_failure_count", "ToleratedFailureCountPath"),
    ):
        path = getattr(spec, f"{name}_path")
        if path:
            changes[name], changes[f"{name}_path"] = value(path, alias), None
    if spec.item_batcher:
        batcher = spec.item_batcher.model_dump(exclude_none=True)
        for name, alias in (
            ("max_items_per_batch", "ItemBatcher.MaxItemsPerBatchPath"),
            ("max_input_bytes_per_batch", "ItemBatcher.MaxInputBytesPerBatchPath"),
        ):
            if batcher.get(f"{name}_path"):
                batcher[name] = value(batcher.pop(f"{name}_path"), alias)
        if batcher.get("batch_input") is not None:
            build = compile_template(batcher["batch_input"], "ItemBatcher.BatchInput")
            try:
                batcher["batch_input"] = build(run_input, context or {})
            except PathNotFound as exc:
                raise SpecError("ItemBatcher.BatchInput", f"path {exc} selected nothing") from None
        changes["item_batcher"] = batcher
    reader = spec.item_reader
    if reader and reader.reader_config.max_items_path:
        config = reader.reader_config.model_dump(exclude_none=True)
        config["max_items"] = value(
            config.pop("max_items_path"), "ItemReader.ReaderConfig.MaxItemsPath"
        )
        changes["item_reader"] = {**reader.model_dump(exclude_none=True), "reader_config": config}
    return spec.replace(**changes) if changes else spec


# ---------------------------------------------------------------------------------------------
# planning


def _reader_config(spec: MapSpec) -> ReaderConfig:
    assert spec.item_reader is not None
    config = spec.item_reader.reader_config
    input_type = spec.input_type
    return ReaderConfig(
        input_type=input_type or "JSON",
        csv_header_location=config.csv_header_location,
        csv_headers=config.csv_headers,
        csv_delimiter=config.csv_delimiter,
        items_pointer=config.items_pointer,
        manifest_type=config.manifest_type,
        transformation=config.transformation,
        inner_input_type=config.input_type if input_type in ("LISTING", "MANIFEST") else None,
        allowed_locations=spec.allowed_locations,
    )


def _source_items(spec: MapSpec, run_input: Any) -> tuple[Iterator[Any], str]:
    """The raw item values and ``$$.Map.Item.Source``."""
    if spec.item_reader is None:
        items = compile_path(spec.items_path or "$", "ItemsPath")(run_input, None)
        if isinstance(items, dict):
            return (KeyedValue(k, v) for k, v in items.items()), "STATE_DATA"
        if not isinstance(items, list):
            raise SpecError(
                "ItemsPath", f"must select an array or an object, found {type(items).__name__}"
            )
        return iter(items), "STATE_DATA"
    url = spec.source_url()
    if not url:
        raise SpecError("Source", "no item source: give --source or ItemReader.Parameters")
    reader = get_reader(_reader_config(spec))
    return reader.iter_items(url), reader.source_name(url)


def _selected(
    spec: MapSpec, run_input: Any, values: Iterator[Any], source: str
) -> Iterator[tuple[int, Any]]:
    """``(index, item)`` after MaxItems and ItemSelector; selection errors become Failed."""
    max_items = spec.item_reader.reader_config.max_items if spec.item_reader else None
    if max_items is not None:
        values = itertools.islice(values, max_items)
    build = compile_template(spec.item_selector, "ItemSelector") if spec.item_selector else None
    for index, value in enumerate(values):
        key = None
        if isinstance(value, KeyedValue):
            key, value = value.key, value.value
            if build is None:
                yield index, {"Key": key, "Value": value}
                continue
        if build is None:
            yield index, value
            continue
        try:
            yield index, build(run_input, context_object(index, value, key, source))
        except PathNotFound as exc:
            cause = f"ItemSelector: the JSONPath {exc} selected nothing for item {index}"
            yield index, Failed("States.Runtime", cause)


def plan_batches(spec: MapSpec, run_input: Any) -> Iterator[Batch]:
    """Every batch of the run, in source order (reader -> MaxItems -> ItemSelector -> batcher)."""
    raw, source = _source_items(spec, run_input)
    guard = ReadGuard(raw)  # a read error mid-batch must not take the items read with it
    values: Iterator[Any] = guard.items
    batcher = spec.item_batcher
    if (
        batcher is not None
        and batcher.max_items_per_batch
        and batcher.max_input_bytes_per_batch is None
        and spec.item_selector is None
        and not _may_yield_pairs(spec)
    ):
        # The common case needs no per-item Python work: slice the stream in C.
        max_items = spec.item_reader.reader_config.max_items if spec.item_reader else None
        if max_items is not None:
            values = itertools.islice(values, max_items)
        return guard.guarded(
            _sliced_batches(values, batcher.max_items_per_batch, batcher.batch_input)
        )
    return guard.guarded(
        batch_items(
            _selected(spec, run_input, values, source),
            max_items=batcher.max_items_per_batch if batcher else None,
            max_bytes=batcher.max_input_bytes_per_batch if batcher else None,
            batch_input=batcher.batch_input if batcher else None,
            batched=batcher is not None,
        )
    )


def _may_yield_pairs(spec: MapSpec) -> bool:
    """Whether items can be JSON-object pairs (KeyedValue), which need converting."""
    if spec.item_reader is None:
        return True  # ItemsPath may select an object
    config = spec.item_reader.reader_config
    return config.input_type in (None, "JSON")


def _sliced_batches(values: Iterator[Any], size: int, batch_input: Any) -> Iterator[Batch]:
    chunks = iter(lambda: list(itertools.islice(values, size)), [])
    for number, chunk in enumerate(chunks):
        yield Batch(number, number * size, chunk, batch_input)


_DONE = object()


#: Observers of named points in a run's life. Production has none (a checkpoint costs one
#: empty loop); the crash-point tests add one that kills the driver at a chosen point.
_checkpoint_observers: list[Callable[[str], None]] = []


def _checkpoint(name: str) -> None:
    for observer in _checkpoint_observers:
        observer(name)


@dataclass(frozen=True)
class _RunNames:
    """The ARNs and child names a run's records carry (the run and a later export agree)."""

    run_id: str
    map_run_arn: str
    child_machine_arn: str
    execution_prefix: str

    @classmethod
    def of(cls, spec: MapSpec, run_id: str) -> _RunNames:
        machine, label = spec.name, spec.label or "Map"
        return cls(
            run_id,
            map_run_arn(spec, run_id),
            f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{machine}/{label}",
            f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{machine}/{label}",
        )

    def record(
        self, *, number: int, first_index: int, item_count: int, **fields: Any
    ) -> ChildRecord:
        name = child_name(self.run_id, number, first_index, item_count)
        return ChildRecord(
            name=name,
            execution_arn=f"{self.execution_prefix}:{name}",
            state_machine_arn=self.child_machine_arn,
            input=None,
            first_index=first_index,
            item_count=item_count,
            **fields,
        )


def _new_writer(
    spec: MapSpec, names: _RunNames, dest_url: str, rollover_bytes: int | None
) -> ResultWriter:
    writer_config = spec.result_writer.writer_config if spec.result_writer else None
    return ResultWriter(
        dest_url,
        names.run_id,
        names.map_run_arn,
        transformation=writer_config.transformation if writer_config else "NONE",
        output_type=writer_config.output_type if writer_config else "JSON",
        rollover_bytes=rollover_bytes or AWS_ROLLOVER_BYTES,
    )


def _export_journal(
    journal: Journal, spec: MapSpec, names: _RunNames, dest_url: str, rollover_bytes: int | None
) -> ResultWriterDetails:
    """Write every journaled record (manifest last), then give the run its final status."""
    row = journal.run()
    writer = _new_writer(spec, names, dest_url, rollover_bytes)
    try:
        for batch in journal.iter_final():
            writer.write(
                names.record(
                    number=batch["number"],
                    first_index=batch["first_index"],
                    item_count=batch["item_count"],
                    status=BatchStatus(batch["status"]),
                    input_json=batch["input_json"],
                    output_json=batch["output_json"],
                    error=batch["error"],
                    cause=batch["cause"],
                    start_date=_datetime(batch["start_date"]),
                    stop_date=_datetime(batch["stop_date"]),
                    redrive_count=batch["redrive_count"],
                )
            )
        _checkpoint("export:files-written")
    except BaseException:
        writer.abort()
        raise
    details = writer.close()
    _checkpoint("export:manifest-written")
    _remove_stale_result_files(details.manifest_url)
    journal.update_run(status=row.outcome, exported=1, manifest_url=details.manifest_url)
    journal.commit(force=True)
    _checkpoint("export:done")
    return details


@contextlib.contextmanager
def _stop_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
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


def _datetime(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _remove_stale_result_files(manifest_url: str) -> None:
    """After a redrive, drop result files an earlier export wrote that the manifest no longer
    lists (the manifest is already published, so a crash here leaves only harmless extras)."""
    import json
    import posixpath

    import fsspec

    fs, manifest_path = fsspec.core.url_to_fs(manifest_url)
    with fs.open(manifest_path, "rb") as f:
        manifest = json.load(f)
    listed = {
        posixpath.basename(entry["Key"])
        for files in manifest["ResultFiles"].values()
        for entry in files
    }
    folder = posixpath.dirname(manifest_path)
    for path in fs.ls(folder, detail=False):
        name = posixpath.basename(path.rstrip("/"))
        if _RESULT_FILE.match(name) and name not in listed:
            fs.rm(path)


_RESULT_FILE = re.compile(r"^(SUCCEEDED|FAILED|PENDING)_\d+\.jsonl?$")


@dataclass
class _Carry:
    """What a resumed or redriven run takes over from its journal."""

    keep: dict[int, tuple[str, str, int]] = field(default_factory=dict)  # done: not run again
    check: dict[int, str] = field(default_factory=dict)  # run again: fingerprint must match
    redrive_count: int = 0

    @classmethod
    def from_journal(cls, journal: Journal, done: tuple[str, ...], redrive_count: int) -> _Carry:
        """Batches in a ``done`` state are kept; every other journaled batch runs again."""
        states = journal.batch_states()
        return cls(
            keep={n: s for n, s in states.items() if s[0] in done},
            check={n: s[1] for n, s in states.items() if s[0] not in done and s[1]},
            redrive_count=redrive_count,
        )


def _source_changed(batch: Batch) -> ReaderError:
    return ReaderError(
        "the item source",
        f"batch {batch.number} no longer holds the items it held when the run was "
        "planned: the source changed since the run started; start a new run",
        f"item {batch.first_index}",
    )


class _Planner(threading.Thread):
    """Reads and batches ahead of the loop into a bounded queue; counts what it planned.

    It also encodes each child input once (the journal, the fingerprint check and the result
    record all need the JSON text) and, on resume, skips the batches that are already done
    after checking the source still yields the same inputs.
    """

    def __init__(
        self, batches: Iterator[Batch], max_queued: int, carry: _Carry, fingerprints: bool
    ) -> None:
        super().__init__(name="shardmap-planner", daemon=True)
        self.batches = batches
        self.queue: queue.Queue[Any] = queue.Queue(max_queued)
        self.carry = carry
        self.fingerprints = fingerprints
        self.items = 0
        self.executions = 0
        self.error: BaseException | None = None
        #: The batch being filled when the source failed: read, never run (recorded PENDING).
        self.unfinished: Batch | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            for batch in self.batches:
                self.items += batch.size
                self.executions += 1
                if batch.ref is not None:  # the worker builds the input: check it on return
                    if self.fingerprints and self._ref_already_done(batch):
                        continue
                    self.queue.put(batch)
                    continue
                batch.input_json = dumps(batch.child_input())
                if self.fingerprints and self._already_done(batch):
                    continue
                self.queue.put(batch)
        except UnfinishedBatch as exc:
            self.items += exc.batch.size
            self.executions += 1
            self.unfinished, self.error = exc.batch, exc.error
        except BaseException as exc:  # reported by the loop as the run's error
            self.error = exc
        finally:
            self.done.set()
            self.queue.put(_DONE)

    def _ref_already_done(self, batch: Batch) -> bool:
        kept = self.carry.keep.get(batch.number)
        if kept is None:
            batch.expected = self.carry.check.get(batch.number)
        return kept is not None

    def _already_done(self, batch: Batch) -> bool:
        assert batch.input_json is not None
        batch.fingerprint = fingerprint(batch.input_json)
        kept = self.carry.keep.get(batch.number)
        expected = kept[1] if kept else self.carry.check.get(batch.number)
        if expected is not None and expected != batch.fingerprint:
            raise _source_changed(batch)
        return kept is not None


# ---------------------------------------------------------------------------------------------
# the loop


@dataclass
class _Child:
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


class _MapRun:
    def __init__(
        self,
        spec: MapSpec,
        *,
        run_input: Any,
        executor: Executor,
        dest_url: str,
        run_id: str,
        on_progress: Callable[[RunProgress], None] | None,
        read_ahead_items: int,
        rollover_bytes: int | None,
        journal: Journal | None = None,
        carry: _Carry | None = None,
        shard_reading: bool | None = None,
    ) -> None:
        self.spec = spec
        self.shard_reading = shard_reading
        self.sharded = False
        self.journal = journal
        self.carry = carry or _Carry()
        self.dest_url = dest_url
        self.run_input = run_input
        self.executor = executor
        self.run_id = run_id
        self.on_progress = on_progress
        self.read_ahead_items = read_ahead_items
        self.names = _RunNames.of(spec, run_id)
        self.map_run_arn = self.names.map_run_arn
        self.rollover_bytes = rollover_bytes
        # Without a journal, records stream straight to the result files; with one, they are
        # exported from the journal when the run ends (write then publish).
        self.writer = self._new_writer() if journal is None else None
        if journal is not None:
            journal.begin(self.carry.redrive_count)
        self.items = Counts()
        self.executions = Counts()
        self.failed_items = 0
        self._restore_counts()
        self.in_flight: dict[Future, _Child] = {}
        self.interrupted: list[_Child] = []  # submitted, but the submit call was interrupted
        # OversizedOutput FAIL (AWS): a child output over 256 KiB fails its batch.
        self.output_limit = AWS_MAX_OUTPUT_BYTES if spec.oversized_output == "FAIL" else None
        self.oversized_outputs = 0
        #: Set (to the signal's name) by SIGINT/SIGTERM: the loop stops at its next turn.
        self.stop_requested: str | None = None
        self.error_exit_code: int | None = None
        self.in_worker_call = False
        self.waiting: list[tuple[float, int, _Child]] = []  # retry backoff heap
        self._sequence = itertools.count()
        self.error: str | None = None
        self.cause: str | None = None
        self.checked_inputs = 0
        self.held: Batch | None = None
        self.planner_finished = False
        self.warnings: list[str] = list(spec.aws_warnings())

    def _new_writer(self) -> ResultWriter:
        return _new_writer(self.spec, self.names, self.dest_url, self.rollover_bytes)

    def _restore_counts(self) -> None:
        """Start from what the journal says is already done (resume and redrive)."""
        for status, _, size in self.carry.keep.values():
            if status == "SUCCEEDED":
                self.items.succeeded += size
                self.executions.succeeded += 1
            elif status == "TIMED_OUT":
                self.items.timed_out += size
                self.executions.timed_out += 1
                self.failed_items += size
            else:
                self.items.failed += size
                self.executions.failed += 1
                self.failed_items += size
            self.items.results_written += size
            self.executions.results_written += 1

    # -- entry -------------------------------------------------------------------------
    def execute(self) -> MapRunResult:
        started, clock = datetime.now(UTC), time.monotonic()
        self.started_clock = clock
        self.worker = self._worker_callable()
        batches = self._plan()
        batcher = self.spec.item_batcher
        per_batch = (batcher.max_items_per_batch or 1) if batcher else 1
        self.planner = _Planner(
            batches,
            max(64, self.read_ahead_items // per_batch),
            self.carry,
            fingerprints=self.journal is not None,
        )
        status = RunStatus.SUCCEEDED
        with _stop_signals(self._on_stop_signal):
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
                if self.writer is not None:
                    details = self.writer.close()
            stop = datetime.now(UTC)
            if self.journal is not None:
                details = self._export(status, stop)
        return MapRunResult(
            run_id=self.run_id,
            map_run_arn=self.map_run_arn,
            status=status,
            item_counts=self.items,
            execution_counts=self.executions,
            manifest_url=details.manifest_url,
            output=details.map_state_output(self.map_run_arn),
            start_date=started,
            stop_date=stop,
            error=self.error,
            cause=self.cause,
            warnings=self.warnings,
            shard_reading=self.sharded,
            error_exit_code=self.error_exit_code,
        )

    def _plan(self) -> Iterator[Batch]:
        """Batches read on the driver, or refs the workers read (shard-parallel reading)."""
        wanted = self.shard_reading
        if wanted is None:
            wanted = bool(getattr(self.executor, "reads_shards", False))
        if not wanted:
            return plan_batches(self.spec, self.run_input)
        reason = why_not_sharded(self.spec)
        if reason is None:
            batches = shard_batches(
                self.spec,
                self.run_input,
                _reader_config(self.spec),
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
                    _Child(batch, datetime.now(UTC)),
                    BatchStatus.FAILED,
                    batch.error,
                    batch.cause or "",
                )
                continue
            self._count_start(batch)
            self._submit(_Child(batch, datetime.now(UTC)))

    def _warn_if_too_big_for_aws(self, input_json: str) -> None:
        self.checked_inputs += 1
        size = len(input_json.encode())
        if size > AWS_MAX_CHILD_INPUT_BYTES and not any("256 KiB" in w for w in self.warnings):
            message = (
                f"a child input is {size} bytes; AWS rejects child inputs over 256 KiB "
                "(lower ItemBatcher.MaxItemsPerBatch or set MaxInputBytesPerBatch)"
            )
            self.warnings.append(message)
            log.warning(message)

    def _warn_if_output_too_big_for_aws(self, output_json: str) -> None:
        """OversizedOutput WARN: keep the output, but say (once, then in the count) that AWS
        would fail this child with States.DataLimitExceeded."""
        if len(output_json) <= AWS_MAX_OUTPUT_BYTES // 4:
            return
        size = len(output_json.encode())
        if size <= AWS_MAX_OUTPUT_BYTES:
            return
        self.oversized_outputs += 1
        message = (
            f"{self.oversized_outputs} child output(s) over AWS's 256 KiB limit (the latest "
            f"{size:,} bytes); on AWS these children fail with States.DataLimitExceeded"
        )
        self.warnings = [w for w in self.warnings if "child output(s) over" not in w]
        self.warnings.append(message)
        if self.oversized_outputs == 1:
            log.warning(message)

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
        if item is _DONE:
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
        self.items.running += batch.size
        self.executions.running += 1

    def _submit(self, child: _Child) -> None:
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
                if self.checked_inputs < 16:  # a sample: a dumps per child would cost the hot path
                    self._warn_if_too_big_for_aws(dumps(child_input))
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
    def _finished(self, child: _Child, future: Future) -> None:
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
            self._warn_if_output_too_big_for_aws(outcome.output_json or "")
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
            if self.checked_inputs < 16:
                self._warn_if_too_big_for_aws(outcome.input_json)
        if self.journal is not None:
            found = fingerprint(outcome.input_json)
            if batch.expected is not None and batch.expected != found:
                self._fail_from_planner(_source_changed(batch))
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

    def _failed_attempt(self, child: _Child, error: str, cause: str) -> None:
        for number, retrier in enumerate(self.spec.retry):
            if retrier.matches(error):  # the first matching retrier decides (AWS)
                used = child.retries.get(number, 0)
                if used < retrier.max_attempts:
                    child.retries[number] = used + 1
                    ready = time.monotonic() + retrier.delay(used + 1, random.random())
                    heapq.heappush(self.waiting, (ready, next(self._sequence), child))
                    return
                break
        status = BatchStatus.TIMED_OUT if error == "States.Timeout" else BatchStatus.FAILED
        self._final(child, status, error, cause)

    def _final(
        self,
        child: _Child,
        status: BatchStatus,
        error: str | None = None,
        cause: str | None = None,
        output_json: str | None = None,
    ) -> None:
        batch = child.batch
        self._keep(child, status, error, cause, output_json)
        size = batch.size
        self.items.running -= size
        self.executions.running -= 1
        if status == BatchStatus.SUCCEEDED:
            self.items.succeeded += size
            self.executions.succeeded += 1
        elif status == BatchStatus.TIMED_OUT:
            self.items.timed_out += size
            self.executions.timed_out += 1
            self.failed_items += size
        elif status == BatchStatus.ABORTED:
            self.items.aborted += size
            self.executions.aborted += 1
        else:
            self.items.failed += size
            self.executions.failed += 1
            self.failed_items += size
        self.items.results_written += size
        self.executions.results_written += 1

    def _keep(
        self,
        child: _Child,
        status: BatchStatus,
        error: str | None,
        cause: str | None,
        output_json: str | None,
    ) -> None:
        """Hand a finished (or pending) child to the journal, or straight to the writer."""
        if self.journal is None:
            assert self.writer is not None
            self.writer.write(self._record(child, status, error, cause, output_json))
            return
        batch = child.batch
        pending = status == BatchStatus.PENDING
        self.journal.final(
            number=batch.number,
            first_index=batch.first_index,
            item_count=batch.size,
            print_=batch.fingerprint or "",
            status=str(status),
            input_json=batch.input_json or dumps(batch.child_input()),
            output_json=output_json,
            error=error,
            cause=cause,
            start_date=None if pending else child.first_start,
            stop_date=None if pending else datetime.now(UTC),
            seconds=child.seconds,
            redrive_count=self.carry.redrive_count,
        )

    def _record(
        self,
        child: _Child,
        status: BatchStatus,
        error: str | None,
        cause: str | None,
        output_json: str | None,
    ) -> ChildRecord:
        batch = child.batch
        pending = status == BatchStatus.PENDING
        return self._child_record(
            number=batch.number,
            first_index=batch.first_index,
            item_count=batch.size,
            status=status,
            input_json=batch.input_json or dumps(batch.child_input()),
            output_json=output_json,
            error=error,
            cause=cause,
            start_date=None if pending else child.first_start,
            stop_date=None if pending else datetime.now(UTC),
            redrive_count=self.carry.redrive_count,
        )

    def _child_record(
        self, *, number: int, first_index: int, item_count: int, **fields: Any
    ) -> ChildRecord:
        return self.names.record(
            number=number, first_index=first_index, item_count=item_count, **fields
        )

    # -- results from the journal ------------------------------------------------------------
    def _export(self, status: RunStatus, stop: datetime) -> ResultWriterDetails:
        """Record the outcome, write every journaled record in AWS's layout (manifest last),
        and only then mark the run with its final status: a crash anywhere in between leaves
        a RUNNING run whose ``outcome`` says what :func:`export` (or resume) must finish."""
        assert self.journal is not None
        self.journal.update_run(
            outcome=str(status),
            error=self.error,
            cause=self.cause,
            stop_date=stop.isoformat(),
            total_items=self.planner.items,
            total_batches=self.planner.executions,
            plan_complete=int(self.planner.done.is_set()),
        )
        self.journal.commit(force=True)
        _checkpoint("export:outcome-recorded")
        return _export_journal(
            self.journal, self.spec, self.names, self.dest_url, self.rollover_bytes
        )

    # -- thresholds and stopping -------------------------------------------------------------
    def _check_thresholds(self, final: bool = False) -> None:
        if self.error is not None or self.failed_items == 0:
            return
        spec = self.spec
        count, percentage = spec.tolerated_failure_count, spec.tolerated_failure_percentage
        if count is None and percentage is None:
            count = 0  # AWS default: any failed item fails the run
        exceeded = count is not None and self.failed_items > count
        if not exceeded and percentage is not None:
            if percentage == 0:
                exceeded = True
            elif self._planner_drained() or self.planner.done.is_set() or final:
                total = self.planner.items
                exceeded = total > 0 and self.failed_items * 100.0 / total > percentage
        if exceeded:
            self.error, self.cause = THRESHOLD_ERROR, THRESHOLD_CAUSE

    def _stop_everything(self) -> None:
        """Fail fast: running children become ABORTED, unstarted ones PENDING (AWS)."""
        self.items.pending = self.executions.pending = 0  # recounted as PENDING records go out
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
        self._keep(_Child(batch, datetime.now(UTC)), BatchStatus.PENDING, None, None, None)
        self.items.pending += batch.size
        self.executions.pending += 1

    def _report_progress(self) -> None:
        planned_items = self.planner.items
        self.items.total = max(planned_items, self.items.total)
        self.executions.total = max(self.planner.executions, self.executions.total)
        if self.error is None:
            started = (
                self.items.succeeded + self.items.failed + self.items.timed_out + self.items.running
            )
            self.items.pending = max(0, planned_items - started - self.items.aborted)
            started_exec = (
                self.executions.succeeded
                + self.executions.failed
                + self.executions.timed_out
                + self.executions.running
            )
            self.executions.pending = max(
                0, self.planner.executions - started_exec - self.executions.aborted
            )
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
                    self.items,
                    self.executions,
                    self.planner.done.is_set(),
                    time.monotonic() - self.started_clock,
                    self.executor.describe(),
                )
            )
