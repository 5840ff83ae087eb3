"""The run API: :func:`run` a Map, :func:`resume` one whose driver died, :func:`redrive` the
failures of one that ended, :func:`export` the results of one that ended but was not written.
Each resolves what the run needs (spec, destination, executor, journal) and hands it to the
loop (:class:`runner.engine.loop.MapRun`); the reduce step runs after a SUCCEEDED Map Run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from runner.engine.loop import DEFAULT_READ_AHEAD_ITEMS, MapRun, RunOptions
from runner.engine.planner import Carry, resolve_paths, run_context
from runner.engine.records import RunNames, export_journal, map_run_arn
from runner.errors import redact_url
from runner.executors import Executor, get_executor
from runner.journal import Journal, JournalError, RunRow, default_state_dir
from runner.readers.infer import infer_item_reader
from runner.reduce import ReduceContext, run_reduce
from runner.registry import resolve_worker
from runner.spec import MapSpec
from runner.status import map_run_result
from runner.types import MapRunResult, RunProgress, RunStatus

log = logging.getLogger("shardmap")


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
    executor_options: Mapping[str, Any] | None = None,
) -> MapRunResult:
    """Run a Distributed Map described by ``spec`` and write AWS-layout results.

    ``source``/``dest``/``worker`` override the spec's. Returns a :class:`MapRunResult`;
    a run that ends FAILED is reported there, not raised. The run is journaled under
    ``state_dir`` (``$SHARDMAP_STATE_DIR`` or ``.shardmap/``) so it can be resumed after a
    crash (:func:`resume`) and redriven (:func:`redrive`); ``journal=False`` turns the journal
    off and streams records straight to the result files. ``shard_reading`` makes the
    workers read the items of their batches from storage (:mod:`runner.shards`); by default it
    is on for executors that read shards (Dask) when the source allows it.
    ``executor_options`` go to the executor named by ``executor`` (say, ``{"scheduler":
    "tcp://..."}`` for Dask). Resume and redrive reuse the run's read-ahead, rollover and
    shard-reading settings, which the journal keeps.

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
    resolved = resolve_paths(spec, run_input, run_context(spec, run_id, run_input, dest_url))
    executor_name = executor if isinstance(executor, str) else None
    # A missing extra or an unknown executor fails before anything is journaled.
    chosen = get_executor(executor, **_executor_options(executor, resolved, executor_options))
    options = RunOptions(read_ahead_items, rollover_bytes, shard_reading)
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
            options=dataclasses.asdict(options),
        )
    try:
        result = MapRun(
            resolved,
            run_input=run_input,
            executor=chosen,
            dest_url=dest_url,
            run_id=run_id,
            on_progress=on_progress,
            options=options,
            journal=journal_,
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
    executor_options: Mapping[str, Any] | None = None,
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
        carry = Carry.from_journal(journal, done, row.redrive_count)
        return _continue(row, journal, carry, executor, executor_options, on_progress)


def redrive(
    run_id: str,
    *,
    state_dir: str | None = None,
    executor: str | Executor | None = None,
    on_progress: Callable[[RunProgress], None] | None = None,
    source: str | None = None,
    dest: str | None = None,
    executor_options: Mapping[str, Any] | None = None,
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
        carry = Carry.from_journal(journal, ("SUCCEEDED",), row.redrive_count + 1)
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
        return _continue(row, journal, carry, executor, executor_options, on_progress)


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


def _finish_export(row: RunRow, journal: Journal) -> MapRunResult:
    spec = MapSpec.from_dict(row.spec)
    names = RunNames.of(spec, row.id)
    rollover = RunOptions.of(row).rollover_bytes
    details = export_journal(journal, spec, names, row.dest_url, rollover)
    result = map_run_result(journal)  # counts as DescribeMapRun gives them: one definition
    result.output = details.map_state_output(row.map_run_arn)
    return _reduced(result, spec, row.run_input, row.dest_url)


def _continue(
    row: RunRow,
    journal: Journal,
    carry: Carry,
    executor: str | Executor | None,
    executor_options: Mapping[str, Any] | None,
    on_progress: Callable[[RunProgress], None] | None,
) -> MapRunResult:
    spec = MapSpec.from_dict(row.spec)
    executor = executor if executor is not None else row.executor
    result = MapRun(
        spec,
        run_input=row.run_input,
        executor=get_executor(executor, **_executor_options(executor, spec, executor_options)),
        dest_url=row.dest_url,
        run_id=row.id,
        on_progress=on_progress,
        options=RunOptions.of(row),
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


def _executor_options(
    executor: Any, spec: MapSpec, given: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Options for an executor named (not given as an object): MaxConcurrency sizes it."""
    if not isinstance(executor, str | type(None)):
        if given:
            raise TypeError("executor_options apply to an executor given by name")
        return {}
    options = {"max_workers": spec.max_concurrency} if spec.max_concurrency else {}
    return {**options, **(given or {})}
