"""The run journal: one SQLite file per Map Run (WAL), the durable truth of a run.

It holds what the run was asked to do (spec, run input, destination), the plan as it is made
(each batch's item range and a fingerprint of its input), every batch's state changes and
attempts, and each finished child's input and output. That is what makes ``status``,
crash-resume and ``redrive`` possible:

- **Write then publish.** Outcomes go to the journal first; result files are exported from it
  when the run ends, the manifest last. A crash before export loses nothing (resume exports),
  a crash during export is repaired by exporting again, and since a batch has one row, no item
  is ever written twice.
- **Commits are grouped** (every ``commit_seconds``) to keep the journal off the hot path. A
  crash loses at most the last group: those batches run again on resume, their results are
  still written once.

Only the engine writes a journal; ``status``, ``report``, notebooks, triggers, the Snakefile's
helpers and the CLI read it, through this module's read API: :func:`list_runs` (every run),
:func:`find_run` (a run's row), :meth:`Journal.batches`, :meth:`Journal.attempts`,
:meth:`Journal.counts` and :meth:`Journal.failure_summary`, and :func:`delete_run` (a run's
journal with its ``-wal``/``-shm`` files). This is the only module that opens SQLite or touches
journal files; the schema below is private to it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runner.errors import JournalError, JournalUnavailable, redact_url
from runner.settings import DEFAULT_STATE_DIR, settings

__all__ = [
    "DEFAULT_STATE_DIR",  # runner.settings', re-exported
    "AttemptRow",
    "BatchRow",
    "Journal",
    "JournalError",  # runner.errors', re-exported: the journal raises them
    "JournalUnavailable",
    "RunRow",
    "default_state_dir",
    "delete_run",
    "find_run",
    "fingerprint",
    "journal_path",
    "journaled_spec",
    "list_runs",
]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS run (
    id TEXT PRIMARY KEY,
    schema_version INTEGER NOT NULL,
    map_run_arn TEXT NOT NULL,
    spec TEXT NOT NULL,            -- MapSpec.to_dict() as JSON
    run_input TEXT NOT NULL,
    dest_url TEXT NOT NULL,
    executor TEXT,
    options TEXT,                  -- how the driver runs it (read-ahead, rollover...) as JSON
    status TEXT NOT NULL,          -- RunStatus; final only once the results are written
    outcome TEXT,                  -- the decided RunStatus while its results are being written
    error TEXT,
    cause TEXT,
    start_date TEXT NOT NULL,
    stop_date TEXT,
    total_items INTEGER NOT NULL DEFAULT 0,
    total_batches INTEGER NOT NULL DEFAULT 0,
    plan_complete INTEGER NOT NULL DEFAULT 0,
    redrive_count INTEGER NOT NULL DEFAULT 0,
    manifest_url TEXT,
    exported INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,
    heartbeat REAL
);
CREATE TABLE IF NOT EXISTS batch (
    number INTEGER PRIMARY KEY,
    first_index INTEGER NOT NULL,
    item_count INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,     -- of the child input: a resumed run checks it re-reads the same
    status TEXT NOT NULL,          -- BatchStatus
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    cause TEXT,
    start_date TEXT,
    stop_date TEXT,
    seconds REAL,                  -- worker time of the last attempt
    redrive_count INTEGER NOT NULL DEFAULT 0,
    input_json TEXT,
    output_json TEXT
);
CREATE TABLE IF NOT EXISTS attempt (
    batch INTEGER NOT NULL,
    redrive INTEGER NOT NULL,
    attempt INTEGER NOT NULL,      -- counts on across resumes and redrives
    started REAL NOT NULL,
    stopped REAL,
    status TEXT NOT NULL,
    error TEXT,
    seconds REAL,
    PRIMARY KEY (batch, attempt)
);
CREATE INDEX IF NOT EXISTS batch_status ON batch(status);
"""

FINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED", "PENDING")

# Buffered writes, in the order they are flushed (a batch's start before its end).
_WRITES = (
    (
        "started",
        "INSERT INTO batch (number, first_index, item_count, fingerprint, status, attempts,"
        " start_date) VALUES (?, ?, ?, ?, 'RUNNING', 1, ?) ON CONFLICT(number) DO UPDATE SET"
        " status = 'RUNNING', attempts = attempts + 1,"
        " start_date = COALESCE(start_date, excluded.start_date)",
    ),
    (
        "attempt",
        "INSERT INTO attempt (batch, redrive, attempt, started, status)"
        " VALUES (?, ?, ?, ?, 'RUNNING')",
    ),
    (
        "ended",
        "UPDATE attempt SET stopped = ?, status = ?, error = ?, seconds = ?"
        " WHERE batch = ? AND attempt = ?",
    ),
    (
        "final",
        "INSERT INTO batch (number, first_index, item_count, fingerprint, status, error, cause,"
        " start_date, stop_date, seconds, redrive_count, input_json, output_json)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(number) DO UPDATE SET"
        " status = excluded.status, error = excluded.error, cause = excluded.cause,"
        " fingerprint = CASE WHEN excluded.fingerprint != '' THEN excluded.fingerprint"
        " ELSE fingerprint END,"
        " start_date = COALESCE(excluded.start_date, start_date),"
        " stop_date = excluded.stop_date, seconds = excluded.seconds,"
        " redrive_count = excluded.redrive_count, input_json = excluded.input_json,"
        " output_json = excluded.output_json",
    ),
)


def journaled_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` (pipeline-file form) as the journal keeps it: ``user:password@`` masked in the
    URLs it names (``Source``, ``ItemReader.Parameters``, ``ResultWriter``), since a journal is
    a file anyone with the state directory reads. Resuming such a run needs the URL again.

    >>> journaled_spec({"Source": "https://me:pw@host/a.csv"})["Source"]
    'https://***@host/a.csv'
    """
    masked = dict(spec)
    if isinstance(masked.get("Source"), str):
        masked["Source"] = redact_url(masked["Source"])
    for block, fields in (
        ("ItemReader", ("Parameters",)),
        ("ResultWriter", ("Destination", "Parameters")),
    ):
        if isinstance(masked.get(block), dict):
            masked[block] = {
                name: _redact_strings(value) if name in fields else value
                for name, value in masked[block].items()
            }
    return masked


def _redact_strings(value: Any) -> Any:
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, dict):
        return {key: _redact_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_strings(item) for item in value]
    return value


def default_state_dir() -> str:
    """``$SHARDMAP_STATE_DIR``, else ``.shardmap`` in the working directory
    (:mod:`runner.settings`)."""
    return settings().state_dir


def fingerprint(input_json: str) -> str:
    return hashlib.blake2b(input_json.encode(), digest_size=12).hexdigest()


@dataclass(frozen=True)
class RunRow:
    """The ``run`` row: what ``status`` and ``resume`` need to know about a run."""

    id: str
    map_run_arn: str
    spec: dict[str, Any]
    run_input: Any
    dest_url: str
    executor: str | None
    status: str
    error: str | None
    cause: str | None
    start_date: str
    stop_date: str | None
    total_items: int
    total_batches: int
    plan_complete: bool
    redrive_count: int
    manifest_url: str | None
    exported: bool
    pid: int | None
    heartbeat: float | None
    #: The status the run ended with, while its results are not yet written (status is then
    #: still RUNNING, so nothing claims results that do not exist); ``None`` otherwise.
    outcome: str | None = None
    #: How the driver runs it beyond its spec (the engine's RunOptions), for resume/redrive.
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def unexported(self) -> bool:
        """The run has ended but its result files and manifest are not (all) written."""
        return self.outcome is not None and not self.exported

    @property
    def driver_alive(self) -> bool:
        """Whether the process that runs it is alive (same machine) and beating."""
        if self.status != "RUNNING" or not self.pid:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, but someone else's
            pass
        return self.heartbeat is not None and time.time() - self.heartbeat < 30


@dataclass(frozen=True)
class BatchRow:
    """A ``batch`` row without its input and output JSON: one child execution's state.

    Dates are ISO 8601 text (``None`` before the batch started or while it runs); ``seconds``
    is the worker time of its last attempt.
    """

    number: int
    first_index: int
    item_count: int
    status: str
    attempts: int
    error: str | None
    start_date: str | None
    stop_date: str | None
    seconds: float | None
    redrive_count: int


@dataclass(frozen=True)
class AttemptRow:
    """An ``attempt`` row: one try of a batch, retries included (``started``/``stopped`` are
    Unix times; ``seconds`` the worker's own time, ``None`` when it timed out or is running)."""

    batch: int
    redrive: int
    attempt: int
    started: float
    stopped: float | None
    status: str
    error: str | None
    seconds: float | None


def journal_path(state_dir: str | Path, run_id: str) -> Path:
    """Where run ``run_id``'s journal is (or would be) under ``state_dir``."""
    return Path(state_dir) / "runs" / f"{run_id}.sqlite"


def find_run(state_dir: str | Path, run_id: str) -> RunRow | None:
    """Run ``run_id``'s row, or ``None`` when it has no journal or its journal holds no run
    yet (a process died inside :meth:`Journal.create`). Opens the journal read-only.

    >>> find_run(".shardmap", "no-such-run") is None
    True
    """
    if not journal_path(state_dir, run_id).exists():
        return None
    try:
        with Journal.open(state_dir, run_id, readonly=True) as journal:
            return journal.run()
    except (JournalError, OSError, ValueError, sqlite3.DatabaseError):
        return None


def delete_run(state_dir: str | Path, run_id: str) -> bool:
    """Remove run ``run_id``'s journal, its ``-wal`` and ``-shm`` files included, so that a new
    run may take the same id. Returns whether there was a journal.

    Raises
    ------
    JournalError
        The run's driver is still alive.
    """
    row = find_run(state_dir, run_id)
    if row is not None and row.driver_alive:
        raise JournalError(f"run {run_id} is still running in process {row.pid}")
    path = journal_path(state_dir, run_id)
    existed = path.exists()
    # The write-ahead log first: a new journal must never meet a stale log of the old one.
    for name in (f"{path.name}-wal", f"{path.name}-shm", path.name):
        path.with_name(name).unlink(missing_ok=True)
    return existed


def list_runs(state_dir: str | Path | None = None) -> list[RunRow]:
    """Every run with a journal under ``state_dir``, newest first."""
    state_dir = state_dir or default_state_dir()
    folder = Path(state_dir) / "runs"
    rows = []
    for path in folder.glob("*.sqlite") if folder.is_dir() else ():
        try:
            with Journal.open(state_dir, path.stem, readonly=True) as journal:
                rows.append(journal.run())
        except (JournalError, sqlite3.DatabaseError):
            continue  # a journal being created right now, or not ours
    return sorted(rows, key=lambda row: row.start_date, reverse=True)


class Journal:
    """One run's journal. Use :meth:`create` for a new run, :meth:`open` for an existing one."""

    def __init__(
        self,
        path: Path,
        connection: sqlite3.Connection,
        commit_seconds: float,
        readonly: bool = False,
    ) -> None:
        self.path = path
        self.db = connection
        self.commit_seconds = commit_seconds
        self.readonly = readonly
        self._last_commit = time.monotonic()
        self._buffer: dict[str, list[tuple[Any, ...]]] = {kind: [] for kind, _ in _WRITES}
        self._redrive = 0
        self._attempts: dict[int, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        state_dir: str | Path,
        *,
        run_id: str,
        map_run_arn: str,
        spec: dict[str, Any],
        run_input: Any,
        dest_url: str,
        executor: str | None,
        options: dict[str, Any] | None = None,
        commit_seconds: float = 0.5,
    ) -> Journal:
        path = journal_path(state_dir, run_id)
        if path.exists():
            raise JournalError(f"run {run_id} already has a journal at {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        journal = cls(path, _connect(path), commit_seconds)
        journal.db.executescript(_SCHEMA)
        journal.db.execute(
            "INSERT INTO run (id, schema_version, map_run_arn, spec, run_input, dest_url, executor,"
            " options, status, start_date, pid, heartbeat)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'RUNNING', ?, ?, ?)",
            (
                run_id,
                SCHEMA_VERSION,
                map_run_arn,
                json.dumps(journaled_spec(spec)),
                json.dumps(run_input),
                redact_url(dest_url),
                executor,
                json.dumps(options or {}),
                _now(),
                os.getpid(),
                time.time(),
            ),
        )
        journal.db.commit()
        return journal

    @classmethod
    def open(
        cls,
        state_dir: str | Path,
        run_id: str,
        *,
        readonly: bool = False,
        commit_seconds: float = 0.5,
    ) -> Journal:
        path = journal_path(state_dir, run_id)
        if not path.exists():
            known = ", ".join(r.id for r in list_runs(state_dir)[:5]) if not readonly else ""
            hint = f"; recent runs: {known}" if known else ""
            raise JournalError(f"no journal for run {run_id!r} under {state_dir}{hint}")
        journal = cls(path, _connect(path, readonly=readonly), commit_seconds, readonly)
        if not readonly:
            journal._migrate()
        return journal

    def _migrate(self) -> None:
        """Journals written before a column existed get it (schema version 1 throughout)."""
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(run)")}
        if "outcome" not in columns:
            self.db.execute("ALTER TABLE run ADD COLUMN outcome TEXT")
            self.db.commit()

    def close(self) -> None:
        if not self.readonly:
            self.commit(force=True)
        self.db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def commit(self, force: bool = False) -> None:
        """Commit if ``commit_seconds`` passed (or ``force``); beats the driver's heartbeat.

        Batch changes are buffered and written together at commit: one ``executemany`` per
        kind instead of a statement per event keeps the journal off the hot path. What a crash
        loses is what a lost transaction would lose: the batches since, which resume runs again.
        """
        now = time.monotonic()
        if force or now - self._last_commit >= self.commit_seconds:
            try:
                self._flush()
                self.db.execute("UPDATE run SET heartbeat = ?", (time.time(),))
                self.db.commit()
            except sqlite3.OperationalError as exc:  # disk full, read-only, I/O error
                raise JournalUnavailable(
                    f"cannot write the run journal {self.path}: {exc}; the run stops here and "
                    "`shardmap resume` finishes it once the journal can be written"
                ) from exc
            self._last_commit = now

    # -- the run row -------------------------------------------------------------------------
    def run(self) -> RunRow:
        row = self.db.execute("SELECT * FROM run").fetchone()
        if row is None:
            raise JournalError(f"{self.path} holds no run")
        data = dict(row)
        data.pop("schema_version")
        data["spec"] = json.loads(data["spec"])
        data["run_input"] = json.loads(data["run_input"])
        data["plan_complete"] = bool(data["plan_complete"])
        data["exported"] = bool(data["exported"])
        data["options"] = json.loads(data.get("options") or "{}")
        return RunRow(**data)

    def update_run(self, **fields: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in fields)
        self.db.execute(f"UPDATE run SET {columns}", tuple(fields.values()))

    def claim(self) -> RunRow:
        """Take over a run for resume/redrive; refuses while its own driver is still alive."""
        row = self.run()
        if row.driver_alive and row.pid != os.getpid():
            raise JournalError(f"run {row.id} is still running in process {row.pid}")
        self.update_run(pid=os.getpid(), heartbeat=time.time())
        self.db.commit()
        return row

    # -- batches -----------------------------------------------------------------------------
    def batch_states(self) -> dict[int, tuple[str, str, int]]:
        """Batch number -> (status, fingerprint, item count) for every journaled batch."""
        rows = self.db.execute("SELECT number, status, fingerprint, item_count FROM batch")
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def begin(self, redrive_count: int) -> None:
        """Prepare to journal attempts of this (re)drive; attempts keep counting across crashes."""
        self._redrive = redrive_count
        rows = self.db.execute("SELECT batch, MAX(attempt) FROM attempt GROUP BY batch")
        self._attempts = {batch: attempt for batch, attempt in rows}

    def started(self, number: int, first_index: int, item_count: int, print_: str) -> None:
        """A batch was submitted (first attempt or retry)."""
        attempt = self._attempts.get(number, 0) + 1
        self._attempts[number] = attempt
        self._buffer["started"].append((number, first_index, item_count, print_, _now()))
        self._buffer["attempt"].append((number, self._redrive, attempt, time.time()))
        self.commit()

    def attempt_ended(
        self, number: int, status: str, error: str | None, seconds: float | None
    ) -> None:
        attempt = self._attempts.get(number, 0)
        self._buffer["ended"].append((time.time(), status, error, seconds, number, attempt))

    def final(
        self,
        *,
        number: int,
        first_index: int,
        item_count: int,
        print_: str,
        status: str,
        input_json: str,
        output_json: str | None,
        error: str | None,
        cause: str | None,
        start_date: datetime | None,
        stop_date: datetime | None,
        seconds: float | None,
        redrive_count: int,
    ) -> None:
        """A batch reached a final state (or PENDING): store what its result record needs."""
        self._buffer["final"].append(
            (
                number,
                first_index,
                item_count,
                print_,
                status,
                error,
                cause,
                _iso(start_date),
                _iso(stop_date),
                seconds,
                redrive_count,
                input_json,
                output_json,
            )
        )
        self.commit()

    def _flush(self) -> None:
        """Write the buffered changes in the order they depend on each other."""
        for kind, sql in _WRITES:
            rows = self._buffer[kind]
            if rows:
                self.db.executemany(sql, rows)
                rows.clear()

    def iter_final(self) -> Iterator[sqlite3.Row]:
        """Every batch with a result record, in batch order (what the export writes)."""
        placeholders = ", ".join("?" for _ in FINAL)
        yield from self.db.execute(
            f"SELECT * FROM batch WHERE status IN ({placeholders}) ORDER BY number", FINAL
        )

    def counts(self) -> dict[str, tuple[int, int]]:
        """Status -> (batches, items)."""
        rows = self.db.execute(
            "SELECT status, COUNT(*), SUM(item_count) FROM batch GROUP BY status"
        )
        return {r[0]: (r[1], r[2] or 0) for r in rows}

    def batches(self) -> list[BatchRow]:
        """Every journaled batch, in batch order (batches planned but never started are not
        journaled until the run ends; they are then PENDING)."""
        columns = ", ".join(f.name for f in dataclasses.fields(BatchRow))
        rows = self.db.execute(f"SELECT {columns} FROM batch ORDER BY number")
        return [BatchRow(*row) for row in rows]

    def attempts(self) -> list[AttemptRow]:
        """Every attempt of every batch, in the order they started."""
        columns = ", ".join(f.name for f in dataclasses.fields(AttemptRow))
        rows = self.db.execute(f"SELECT {columns} FROM attempt ORDER BY rowid")
        return [AttemptRow(*row) for row in rows]

    def failure_summary(self) -> list[tuple[str, int, int]]:
        """``(error, batches, items)`` of FAILED and TIMED_OUT batches, most items first."""
        rows = self.db.execute(
            "SELECT error, COUNT(*), SUM(item_count) FROM batch "
            "WHERE status IN ('FAILED', 'TIMED_OUT') GROUP BY error ORDER BY 3 DESC"
        )
        return [(r[0] or "", r[1], r[2] or 0) for r in rows]


def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    else:
        db = sqlite3.connect(path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a committed transaction survives a process crash (SIGKILL);
        # only an OS crash or power loss can lose the last group, which resume re-runs.
        db.execute("PRAGMA synchronous=NORMAL")
    db.row_factory = sqlite3.Row
    return db


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None
