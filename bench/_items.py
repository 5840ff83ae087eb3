"""The JSONL dataset the map benchmarks share, so their figures compare the same work."""

from __future__ import annotations

import json
from pathlib import Path


def write_items(path: Path, count: int) -> Path:
    """``count`` small JSON items, one per line; an existing file of that size is reused."""
    if path.exists() and sum(1 for _ in path.open()) == count:
        return path
    with path.open("w") as f:
        for n in range(count):
            f.write(json.dumps({"id": n, "name": f"item-{n}", "value": n * 0.5}) + "\n")
    return path
