"""The trigger ledger: the durable record of which object version started which run.

One SQLite file (WAL, ``synchronous=FULL``) in the state directory. A row per
(trigger, bucket, key, version) is inserted by :meth:`Ledger.claim` in one transaction
(``INSERT ... ON CONFLICT DO NOTHING``): whoever inserts it starts the run, and every later
sighting of the same version (an SQS redelivery, a relisting, a restarted service) finds the row
and starts nothing. The service deletes an SQS message only after its claims are committed, so a
crash between the two costs a redelivery, never an event.

Row states::

    CLAIMED ──► RUNNING ──► SUCCEEDED | FAILED | ABORTED      (notified 0 ──► 1)
    SKIPPED     (there before a polling service first looked: never a run)

A claim whose run never began (a crash right after the claim) is started at the next service
start; a RUNNING row whose driver died is resumed (``runner.engine.resume``). A FAILED run stays
FAILED here and in ``shardmap runs``: it is redriven by a person (``shardmap redrive RUN``),
never retried silently. The poller's high-water marks live here too.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.triggers.events import ObjectCreated

__all__ = ["Claim", "Ledger", "Mark"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS started (
    trigger TEXT NOT NULL,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    version TEXT NOT NULL,          -- ObjectCreated.version: v:<id>, s:<sequencer>, e:<etag>...
    run_id TEXT NOT NULL UNIQUE,
    pipeline TEXT NOT NULL,
    object TEXT NOT NULL,           -- the ObjectCreated as JSON
    status TEXT NOT NULL,           -- CLAIMED, RUNNING, SUCCEEDED, FAILED, ABORTED, SKIPPED
    claimed_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error TEXT,
    cause TEXT,
    manifest_url TEXT,
    counts TEXT,                    -- itemCounts as JSON
    notified INTEGER NOT NULL DEFAULT 0,
    notify_attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (trigger, bucket, key, version)
);
CREATE INDEX IF NOT EXISTS started_status ON started(status);
CREATE TABLE IF NOT EXISTS watermark (
    bucket TEXT NOT NULL,
    prefix TEXT NOT NULL,
    floor TEXT NOT NULL,            -- objects last modified before it are never started
    high TEXT NOT NULL,             -- the newest LastModified seen
    PRIMARY KEY (bucket, prefix)
);
"""

FINISHED = ("SUCCEEDED", "FAILED", "ABORTED")


@dataclass(frozen=True)
class Claim:
    """A ledger row."""

    trigger: str
    run_id: str
    pipeline: str
    object: ObjectCreated
    status: str
    error: str | None = None
    cause: str | None = None
    manifest_url: str | None = None
    counts: dict[str, Any] | None = None
    notified: bool = False
    notify_attempts: int = 0
    claimed_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True)
class Mark:
    floor: str
    high: str


class Ledger:
    """The ledger file; one connection shared by the service's threads under a lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit (isolation_level=None): each statement is its own transaction, so a claim
        # is committed before claim() returns and the caller acts on it.
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a claim survives a power cut, not just kill
        self.db.execute("PRAGMA busy_timeout=10000")
        self.db.executescript(_SCHEMA)
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- claims ------------------------------------------------------------------------------
    def claim(
        self, trigger: str, obj: ObjectCreated, pipeline: str, status: str = "CLAIMED"
    ) -> str | None:
        """The run id to start, or None when this trigger already claimed this version.
        ``status="SKIPPED"`` records a version that must never start a run."""
        run_id = obj.run_id(trigger)
        with self.lock:
            cursor = self.db.execute(
                "INSERT INTO started (trigger, bucket, key, version, run_id, pipeline, object,"
                " status, claimed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (trigger, obj.bucket, obj.key, obj.version, run_id, pipeline, obj.to_json(),
                 status, time.time()),
            )  # fmt: skip
            return run_id if cursor.rowcount == 1 else None

    def running(self, run_id: str) -> None:
        self._update(run_id, status="RUNNING", started_at=time.time())

    def finished(
        self,
        run_id: str,
        status: str,
        *,
        error: str | None = None,
        cause: str | None = None,
        manifest_url: str | None = None,
        counts: dict[str, Any] | None = None,
    ) -> None:
        self._update(
            run_id,
            status=status,
            finished_at=time.time(),
            error=error,
            cause=cause,
            manifest_url=manifest_url,
            counts=json.dumps(counts) if counts is not None else None,
        )

    def notified(self, run_id: str, ok: bool) -> None:
        with self.lock:
            self.db.execute(
                "UPDATE started SET notified = ?, notify_attempts = notify_attempts + 1"
                " WHERE run_id = ?",
                (int(ok), run_id),
            )

    def _update(self, run_id: str, **fields: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in fields)
        with self.lock:
            self.db.execute(
                f"UPDATE started SET {columns} WHERE run_id = ?", (*fields.values(), run_id)
            )

    # -- reading -----------------------------------------------------------------------------
    def get(self, run_id: str) -> Claim | None:
        rows = self._select("WHERE run_id = ?", (run_id,))
        return rows[0] if rows else None

    def unfinished(self) -> list[Claim]:
        """Claims whose run has not ended (to start or resume after a restart), oldest first."""
        return self._select("WHERE status IN ('CLAIMED', 'RUNNING') ORDER BY claimed_at")

    def unnotified(self, max_attempts: int) -> list[Claim]:
        return self._select(
            "WHERE status IN ('SUCCEEDED', 'FAILED', 'ABORTED') AND notified = 0"
            " AND notify_attempts < ? ORDER BY finished_at",
            (max_attempts,),
        )

    def all(self) -> list[Claim]:
        return self._select("ORDER BY claimed_at")

    def counts(self) -> dict[str, int]:
        with self.lock:
            rows = self.db.execute("SELECT status, COUNT(*) FROM started GROUP BY status")
            return {status: count for status, count in rows}

    def _select(self, where: str, params: tuple[Any, ...] = ()) -> list[Claim]:
        with self.lock:
            rows = self.db.execute(f"SELECT * FROM started {where}", params).fetchall()
        return [
            Claim(
                trigger=row["trigger"],
                run_id=row["run_id"],
                pipeline=row["pipeline"],
                object=ObjectCreated.from_json(row["object"]),
                status=row["status"],
                error=row["error"],
                cause=row["cause"],
                manifest_url=row["manifest_url"],
                counts=json.loads(row["counts"]) if row["counts"] else None,
                notified=bool(row["notified"]),
                notify_attempts=row["notify_attempts"],
                claimed_at=row["claimed_at"],
                started_at=row["started_at"],
                finished_at=row["finished_at"],
            )
            for row in rows
        ]

    # -- the poller's high-water marks -------------------------------------------------------
    def mark(self, bucket: str, prefix: str) -> Mark | None:
        with self.lock:
            row = self.db.execute(
                "SELECT floor, high FROM watermark WHERE bucket = ? AND prefix = ?",
                (bucket, prefix),
            ).fetchone()
        return Mark(row[0], row[1]) if row else None

    def set_mark(self, bucket: str, prefix: str, mark: Mark) -> None:
        with self.lock:
            self.db.execute(
                "INSERT INTO watermark (bucket, prefix, floor, high) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(bucket, prefix) DO UPDATE SET floor = excluded.floor,"
                " high = excluded.high",
                (bucket, prefix, mark.floor, mark.high),
            )
