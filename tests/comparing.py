"""Comparing two runs' results item by item, apart from timestamps, ids and tracebacks."""

from __future__ import annotations

import json
from typing import Any

from runner import load_results


def comparable(manifest_url: str) -> list[tuple[Any, ...]]:
    """Per-item results without timestamps and ids (and the traceback text of causes)."""
    frame = load_results(manifest_url)
    rows = []
    for row in frame.itertuples():
        cause = row.cause
        if isinstance(cause, str) and cause.startswith("{"):
            cause = json.loads(cause)["errorMessage"]
        rows.append((int(row.index), json.dumps(row.item), json.dumps(row.output), row.status,
                     row.error if isinstance(row.error, str) else None,
                     cause if isinstance(cause, str) else None))  # fmt: skip
    return rows
