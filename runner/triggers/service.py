"""The trigger service: events in, exactly one run per object version and trigger out.

::

    SQS long-poll / ListObjectsV2 ──► parse_message / from_listing ──► match patterns
        ──► ledger.claim (committed) ──► delete the SQS message ──► run pool ──► engine.run
        ──► ledger.finished ──► notify (SNS / webhook) ──► ledger.notified

- **Exactly-once starts.** A run starts only for a claim this process inserted; the run id is
  derived from (trigger, bucket, key, version), and a run id's journal can be created once, so
  even a bug that raced two starts would fail the second one.
- **Restarts.** :meth:`TriggerService.recover` runs first: claims whose run never began start
  now, runs whose driver died are resumed from their journal (batches already done are not run
  again), runs that ended but were not recorded are recorded, and unsent notifications are sent.
- **Failures are visible, not retried.** A FAILED run stays FAILED in the ledger and in
  ``shardmap runs``; ``shardmap redrive RUN`` reruns its failed batches.
- **Backpressure.** With ``max_waiting_runs`` claims waiting for a run slot the service stops
  receiving; SQS keeps the rest.
- **SIGTERM/SIGINT** stop receiving, let running runs finish and leave waiting claims for the
  next start.
- **Scope.** A run reads the uploaded object by its exact key, and a manifest pipeline reads
  only files inside the trigger's ``manifest_locations`` (default: the watched bucket and
  prefix); anything else the manifest names fails the run (States.ItemReaderFailed) unread.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from runner.errors import ShardmapError
from runner.journal import Journal, delete_run, find_run
from runner.spec import MapSpec
from runner.status import map_run_result
from runner.triggers.config import Trigger, TriggerConfig, load_config
from runner.triggers.events import ObjectCreated, Refused, from_listing, parse_message, safe_text
from runner.triggers.ledger import Claim, Ledger, Mark
from runner.triggers.notify import message_for, send
from runner.triggers.patterns import matches
from runner.types import MapRunResult

__all__ = ["TriggerService", "serve"]

log = logging.getLogger("shardmap.triggers")

LEDGER_FILE = "triggers.sqlite"
NOTIFY_ATTEMPTS = 10  # per run, across restarts; then the run is left unnotified (logged)


class TriggerService:
    """One service over one config. Use as a context manager; :meth:`serve` loops.

    >>> with TriggerService(load_config("triggers.yaml")) as service:  # doctest: +SKIP
    ...     service.serve()
    """

    def __init__(self, config: TriggerConfig, *, session: Any = None) -> None:
        self.config = config
        self.specs: dict[str, MapSpec] = config.load_pipelines()
        self.state_dir = config.resolved_state_dir()
        self.limits = config.limits.event_limits()
        self.session = session
        self.ledger: Ledger | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.futures: dict[str, Future[None]] = {}
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self.refused = 0  # events refused since start (each also logged)

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> TriggerService:
        Path(self.state_dir).mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(Path(self.state_dir) / LEDGER_FILE)
        self.pool = ThreadPoolExecutor(
            self.config.limits.max_concurrent_runs, thread_name_prefix="trigger-run"
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self, wait: bool = True) -> None:
        if self.pool is not None:
            # Runs not yet begun stay CLAIMED in the ledger; the next start begins them.
            self.pool.shutdown(wait=wait, cancel_futures=True)
            self.pool = None
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None

    @property
    def _ledger(self) -> Ledger:
        if self.ledger is None:
            raise RuntimeError("use TriggerService as a context manager")
        return self.ledger

    def _session(self) -> Any:
        import boto3

        if self.session is None:  # our own session: boto3's default one caches credentials
            self.session = boto3.session.Session()
        return self.session

    def _client(self, service: str) -> Any:
        return self._session().client(service)

    # -- the loop ----------------------------------------------------------------------------
    def serve(self, once: bool = False) -> None:
        """Recover, then take events until :meth:`stop` (or SIGTERM); ``once``: one round,
        then wait for the runs it started and return."""
        self.recover()
        source = self.config.source
        while not self.stop_event.is_set():
            if self.waiting() >= self.config.limits.max_waiting_runs:
                self.stop_event.wait(0.2)  # backpressure: let runs drain before taking more
                continue
            try:
                if source.sqs is not None:
                    self.receive_sqs()
                else:
                    self.poll_listing()
            except Exception:  # a source outage must not end the service; log and go on
                log.exception("trigger: receiving events failed; trying again")
                self.stop_event.wait(1.0)
            self.notify_pending()
            if once:
                break
            if source.poll is not None:
                self.stop_event.wait(source.poll.interval_seconds)
        self.wait_for_runs()

    def stop(self) -> None:
        self.stop_event.set()

    def waiting(self) -> int:
        with self._lock:
            return sum(1 for future in self.futures.values() if not future.done())

    def wait_for_runs(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                pending = [f for f in self.futures.values() if not f.done()]
            if not pending:
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            pending[0].exception(timeout=left)
        self.notify_pending()

    # -- sources -----------------------------------------------------------------------------
    def receive_sqs(self) -> int:
        """One long-poll of the queue; returns the number of messages taken."""
        sqs_config = self.config.source.sqs
        assert sqs_config is not None
        sqs = self._client("sqs")
        response = sqs.receive_message(
            QueueUrl=sqs_config.queue_url,
            MaxNumberOfMessages=sqs_config.max_messages,
            WaitTimeSeconds=sqs_config.wait_seconds,
            VisibilityTimeout=sqs_config.visibility_timeout,
        )
        messages = response.get("Messages", [])
        done = []
        for message in messages:
            origin = f"sqs message {safe_text(message.get('MessageId'), 60)}"
            try:
                self.handle_message(message.get("Body", ""), origin)
            except Exception:  # not deleted: SQS redelivers it after the visibility timeout
                log.exception("trigger: %s not handled; it will be redelivered", origin)
                continue
            done.append(message)
        # Claims are committed by now: deleting cannot lose an event, a crash before it only
        # brings a redelivery that finds the claims.
        for start in range(0, len(done), 10):
            entries = [
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                for n, m in enumerate(done[start : start + 10])
            ]
            result = sqs.delete_message_batch(QueueUrl=sqs_config.queue_url, Entries=entries)
            for failure in result.get("Failed", []):
                log.warning("trigger: SQS delete failed (%s); redelivery is harmless", failure)
        return len(messages)

    def poll_listing(self) -> int:
        """List the bucket prefix once and dispatch what is new; returns the runs started.

        Only the server's clock is used (LastModified), never ours. ``floor``: objects older
        are never started (with ``since: now``, the newest object of the first listing; those
        of the first listing sharing its second are recorded SKIPPED, since LastModified has
        one-second precision). ``high``: the newest LastModified seen; objects older than
        ``high - grace_seconds`` are not considered again (a multipart upload's LastModified is
        its start, so it may land late), and the ledger drops the ones already claimed.
        """
        poll = self.config.source.poll
        assert poll is not None
        ledger, s3 = self._ledger, self._client("s3")
        origin = f"listing s3://{poll.bucket}/{poll.prefix}"
        entries = [
            entry
            for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=poll.bucket, Prefix=poll.prefix
            )
            for entry in page.get("Contents", [])
            if isinstance(entry.get("LastModified"), datetime)
        ]
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        newest = max((entry["LastModified"] for entry in entries), default=epoch)
        mark = ledger.mark(poll.bucket, poll.prefix)
        if mark is None and poll.since == "now":
            for entry in entries:
                if entry["LastModified"] == newest:
                    self._skip(entry, origin)
            ledger.set_mark(poll.bucket, poll.prefix, Mark(newest.isoformat(), newest.isoformat()))
            return 0
        mark = mark or Mark(epoch.isoformat(), epoch.isoformat())
        floor, high = datetime.fromisoformat(mark.floor), datetime.fromisoformat(mark.high)
        since = max(floor, high - timedelta(seconds=poll.grace_seconds))
        started = 0
        for entry in sorted(entries, key=lambda e: e["LastModified"]):
            if entry["LastModified"] < since:
                continue
            try:
                obj = from_listing(poll.bucket, entry, self.limits)
            except Refused as exc:
                self._refuse(origin, exc.reason)
                continue
            started += len(self.dispatch(obj, origin))
        ledger.set_mark(
            poll.bucket, poll.prefix, Mark(floor.isoformat(), max(high, newest).isoformat())
        )
        return started

    def _skip(self, entry: dict[str, Any], origin: str) -> None:
        """Record an object that was there before the service: it must never start a run."""
        poll = self.config.source.poll
        assert poll is not None
        try:
            obj = from_listing(poll.bucket, entry, self.limits)
        except Refused:
            return
        event = obj.to_event()
        for trigger in self.config.triggers:
            pipeline = trigger.pipeline_for(obj.key)
            if pipeline and matches(trigger.pattern, event):
                self._ledger.claim(trigger.name, obj, pipeline, status="SKIPPED")

    # -- events ------------------------------------------------------------------------------
    def handle_message(self, body: str | bytes, origin: str) -> list[str]:
        """Parse, check, match, claim and start; returns the run ids started."""
        parsed = parse_message(body, self.limits)
        for reason in parsed.refused:
            self._refuse(origin, reason)
        for note in parsed.ignored:
            log.info("trigger: %s ignored: %s", origin, note)
        started = []
        for obj in parsed.objects:
            started += self.dispatch(obj, origin)
        return started

    def _refuse(self, origin: str, reason: str) -> None:
        self.refused += 1
        log.warning("trigger: refused %s: %s", origin, reason)

    def dispatch(self, obj: ObjectCreated, origin: str) -> list[str]:
        """Start one run per trigger whose pattern matches ``obj`` (at most once per version)."""
        event = obj.to_event()
        started = []
        for trigger in self.config.triggers:
            if not matches(trigger.pattern, event):
                continue
            pipeline = trigger.pipeline_for(obj.key)
            if pipeline is None:
                segment = trigger.pipeline_from_key_segment
                allowed = ", ".join(trigger.allowed_pipelines)
                self._refuse(
                    origin,
                    f"trigger {trigger.name}: key {safe_text(obj.key)!r} names no allowed "
                    f"pipeline at segment {segment} (allowed: {allowed})",
                )
                continue
            run_id = self._ledger.claim(trigger.name, obj, pipeline)
            if run_id is None:
                log.info(
                    "trigger %s: s3://%s/%s (%s) already started; not again",
                    trigger.name, obj.bucket, safe_text(obj.key), obj.version,
                )  # fmt: skip
                continue
            log.info(
                "trigger %s: s3://%s/%s (%s) starts pipeline %s as run %s",
                trigger.name, obj.bucket, safe_text(obj.key), obj.version, pipeline, run_id,
            )  # fmt: skip
            self._submit(run_id)
            started.append(run_id)
        return started

    def _submit(self, run_id: str) -> None:
        if self.pool is None:
            raise RuntimeError("use TriggerService as a context manager")
        future = self.pool.submit(self._execute, run_id)
        with self._lock:
            self.futures = {k: f for k, f in self.futures.items() if not f.done()}
            self.futures[run_id] = future

    # -- runs --------------------------------------------------------------------------------
    def recover(self) -> None:
        """Finish what a previous process left: start, resume or record every unfinished claim
        and send the notifications it did not send."""
        unfinished = self._ledger.unfinished()
        if unfinished:
            log.info("trigger: recovering %d unfinished claim(s)", len(unfinished))
        for claim in unfinished:
            self._submit(claim.run_id)
        self.notify_pending()

    def _trigger(self, name: str) -> Trigger | None:
        return next((t for t in self.config.triggers if t.name == name), None)

    def _execute(self, run_id: str) -> None:
        """Run (or resume, or just record) the run of one claim. Never raises."""
        ledger = self._ledger
        claim = ledger.get(run_id)
        if claim is None:
            return
        try:
            result = self._run_or_resume(claim)
        except Exception as exc:  # never retried by itself: visible as FAILED, like a run
            log.exception("trigger %s: run %s could not start", claim.trigger, run_id)
            ledger.finished(run_id, "FAILED", error=type(exc).__name__, cause=str(exc)[:2000])
        else:
            if result is not None:
                reduce_failed = result.reduce is not None and not result.reduce.succeeded
                status = "FAILED" if reduce_failed else str(result.status)
                ledger.finished(
                    run_id,
                    status,
                    error=result.error or (result.reduce.error if result.reduce else None),
                    cause=result.cause or (result.reduce.cause if result.reduce else None),
                    manifest_url=result.manifest_url,
                    counts=result.item_counts.to_aws(),
                )
                level = logging.INFO if status == "SUCCEEDED" else logging.WARNING
                log.log(level, "trigger %s: run %s %s", claim.trigger, run_id, status)
        self._notify(run_id)

    def _run_or_resume(self, claim: Claim) -> MapRunResult:
        from runner import resume, run  # the public API; imported late, as the CLI does

        trigger = self._trigger(claim.trigger)
        if trigger is None:
            raise ShardmapError(f"trigger {claim.trigger!r} is no longer in the config")
        spec = self.specs.get(claim.pipeline)
        if spec is None or claim.pipeline not in trigger.pipelines():
            raise ShardmapError(f"pipeline {claim.pipeline!r} is no longer allowed")
        row = find_run(self.state_dir, claim.run_id)
        if row is not None and row.status == "RUNNING":
            log.info("trigger %s: resuming run %s", claim.trigger, claim.run_id)
            self._ledger.running(claim.run_id)
            return resume(claim.run_id, state_dir=self.state_dir)
        if row is not None:  # it ended; only the ledger missed it
            with Journal.open(self.state_dir, claim.run_id, readonly=True) as journal:
                return map_run_result(journal)
        # No run row: no journal, or one created but never written (killed inside
        # Journal.create), which would keep the run id from being used again.
        delete_run(self.state_dir, claim.run_id)
        self._ledger.running(claim.run_id)
        obj = claim.object
        if spec.input_type == "MANIFEST":
            # What an uploaded manifest names stays inside what this trigger watches (or its
            # manifest_locations): never local files, never another bucket by default.
            scope = trigger.manifest_scope(obj.bucket, self.config.source)
            spec = spec.replace(allowed_locations=scope)
        return run(
            spec,
            run_input=obj.run_input(trigger.name),
            source=obj.url if trigger.source == "object" else None,
            dest=trigger.dest,
            executor=trigger.executor,
            run_id=claim.run_id,
            state_dir=self.state_dir,
        )

    # -- notifications -----------------------------------------------------------------------
    def _notify(self, run_id: str) -> None:
        claim = self._ledger.get(run_id)
        trigger = self._trigger(claim.trigger) if claim else None
        if claim is None or claim.status not in ("SUCCEEDED", "FAILED", "ABORTED"):
            return
        if trigger is None or not trigger.notify:
            self._ledger.notified(run_id, True)
            return
        message = message_for(claim)
        ok = True
        for name in trigger.notify:
            try:
                send(self.config.notify[name], message, session=self._session())
            except Exception as exc:
                ok = False  # target names only: URLs and ARNs may carry secrets
                log.error("trigger %s: notifying %s of run %s failed: %s", claim.trigger, name,
                          run_id, safe_text(str(exc), 200))  # fmt: skip
        self._ledger.notified(run_id, ok)

    def notify_pending(self) -> None:
        for claim in self._ledger.unnotified(NOTIFY_ATTEMPTS):
            with self._lock:
                future = self.futures.get(claim.run_id)
            if future is None or future.done():
                self._notify(claim.run_id)


def serve(config_path: str, *, once: bool = False, state_dir: str | None = None) -> TriggerService:
    """``shardmap trigger serve CONFIG``: run the service until SIGTERM or SIGINT.

    ``state_dir`` (``--state-dir``) applies when the config names none.
    """
    config = load_config(config_path)
    if state_dir is not None and config.state_dir is None:
        config = config.model_copy(update={"state_dir": os.path.abspath(state_dir)})
    service = TriggerService(config)
    with service:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: service.stop())
        sqs, poll = config.source.sqs, config.source.poll
        where = sqs.queue_url if sqs else f"s3://{poll.bucket}/{poll.prefix}" if poll else "?"
        log.info(
            "trigger: serving %d trigger(s) from %s; state in %s",
            len(config.triggers), where, service.state_dir,
        )  # fmt: skip
        service.serve(once=once)
        log.info("trigger: stopped")
    return service
