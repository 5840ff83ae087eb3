"""What a run leaves behind: the names its records carry, where finished batches go (the journal,
or straight to the result files without one), the export from the journal in AWS's layout, and
the checkpoints crash tests stop at.

Export order is what makes a crash harmless: the outcome is journaled first, then every record
is written, the manifest last, and only then does the run take its final status. A run whose
driver died anywhere in between is RUNNING with an ``outcome``; ``export``/``resume`` finish it.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import fsspec

from runner.batcher import Batch, encode_input
from runner.journal import Journal
from runner.results import ResultWriter, ResultWriterDetails, child_name
from runner.spec import MapSpec
from runner.types import BatchStatus, ChildRecord

ACCOUNT, REGION = "000000000000", "local"
AWS_ROLLOVER_BYTES = 5 * 1024**3  # ResultWriter starts a new file past 5 GB, as AWS does

#: Observers of named points in a run's life. Production has none (a checkpoint costs one
#: empty loop); the crash-point tests add one that kills the driver at a chosen point.
checkpoint_observers: list[Callable[[str], None]] = []


def checkpoint(name: str) -> None:
    for observer in checkpoint_observers:
        observer(name)


def map_run_arn(spec: MapSpec, run_id: str) -> str:
    return f"arn:aws:states:{REGION}:{ACCOUNT}:mapRun:{spec.name}/{spec.label or 'Map'}:{run_id}"


@dataclass(frozen=True)
class RunNames:
    """The ARNs and child names a run's records carry (the run and a later export agree)."""

    run_id: str
    map_run_arn: str
    child_machine_arn: str
    execution_prefix: str

    @classmethod
    def of(cls, spec: MapSpec, run_id: str) -> RunNames:
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


def new_writer(
    spec: MapSpec, names: RunNames, dest_url: str, rollover_bytes: int | None
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


class RunRecords:
    """Where a run's finished (and pending) batches go. Without a journal, records stream
    straight to the result files; with one, they are journaled and exported when the run ends
    (write, then publish)."""

    def __init__(
        self,
        spec: MapSpec,
        names: RunNames,
        dest_url: str,
        *,
        rollover_bytes: int | None,
        journal: Journal | None,
        redrive_count: int,
    ) -> None:
        self.spec, self.names, self.dest_url = spec, names, dest_url
        self.rollover_bytes = rollover_bytes
        self.journal = journal
        self.redrive_count = redrive_count
        self.writer = new_writer(spec, names, dest_url, rollover_bytes) if journal is None else None

    def keep(
        self,
        batch: Batch,
        status: BatchStatus,
        *,
        error: str | None,
        cause: str | None,
        output_json: str | None,
        start_date: datetime | None,
        seconds: float | None,
    ) -> None:
        """One batch's final record; a PENDING one has neither start nor stop date."""
        pending = status == BatchStatus.PENDING
        fields: dict[str, Any] = dict(
            number=batch.number,
            first_index=batch.first_index,
            item_count=batch.size,
            input_json=batch.input_json or encode_input(batch),
            output_json=output_json,
            error=error,
            cause=cause,
            start_date=None if pending else start_date,
            stop_date=None if pending else datetime.now(UTC),
            redrive_count=self.redrive_count,
        )
        if self.journal is None:
            assert self.writer is not None
            self.writer.write(self.names.record(status=status, **fields))
            return
        self.journal.final(
            print_=batch.fingerprint or "", status=str(status), seconds=seconds, **fields
        )

    def close_stream(self) -> ResultWriterDetails | None:
        """Finish the streamed result files (no journal), manifest last; ``None`` otherwise."""
        return self.writer.close() if self.writer is not None else None

    def export(self, **outcome: Any) -> ResultWriterDetails:
        """Journal the run's ``outcome`` (status, error, cause, stop_date, totals), then write
        every journaled record and give the run its final status."""
        assert self.journal is not None
        self.journal.update_run(**outcome)
        self.journal.commit(force=True)
        checkpoint("export:outcome-recorded")
        return export_journal(
            self.journal, self.spec, self.names, self.dest_url, self.rollover_bytes
        )


def export_journal(
    journal: Journal, spec: MapSpec, names: RunNames, dest_url: str, rollover_bytes: int | None
) -> ResultWriterDetails:
    """Write every journaled record (manifest last), then give the run its final status."""
    row = journal.run()
    writer = new_writer(spec, names, dest_url, rollover_bytes)
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
        checkpoint("export:files-written")
    except BaseException:
        writer.abort()
        raise
    details = writer.close()
    checkpoint("export:manifest-written")
    _remove_stale_result_files(details.manifest_url)
    journal.update_run(status=row.outcome, exported=1, manifest_url=details.manifest_url)
    journal.commit(force=True)
    checkpoint("export:done")
    return details


def _datetime(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


_RESULT_FILE = re.compile(r"^(SUCCEEDED|FAILED|PENDING)_\d+\.jsonl?$")


def _remove_stale_result_files(manifest_url: str) -> None:
    """After a redrive, drop result files an earlier export wrote that the manifest no longer
    lists (the manifest is already published, so a crash here leaves only harmless extras)."""
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
