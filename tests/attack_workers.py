"""Hostile workers for tests/test_attacks.py: importable by name, so every executor can run them.

Each misbehaves only for a batch holding an item that asks it to, so a run shows the bad batch
beside good ones. ``BatchInput.dir``, where given, receives a ``started-<n>`` file as a batch
starts: a test waits for that file instead of sleeping, so it knows the batch is running.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any


def _mark_started(event: dict[str, Any]) -> None:
    folder = (event.get("BatchInput") or {}).get("dir")
    if folder:
        Path(folder, f"started-{event['Items'][0]['n']}").touch()


def exits(event: dict[str, Any]) -> list[Any]:
    """``sys.exit(BatchInput.code)`` for a batch holding an item with ``exit: true``."""
    if any(item.get("exit") for item in event["Items"]):
        sys.exit((event.get("BatchInput") or {}).get("code", 0))
    return [item["n"] for item in event["Items"]]


def interrupts(event: dict[str, Any]) -> list[Any]:
    """Raises KeyboardInterrupt for a batch holding an item with ``interrupt: true``."""
    if any(item.get("interrupt") for item in event["Items"]):
        raise KeyboardInterrupt
    return [item["n"] for item in event["Items"]]


def big_output(event: dict[str, Any]) -> Any:
    """Returns ``BatchInput.bytes`` characters for a batch holding an item with ``big: true``."""
    if any(item.get("big") for item in event["Items"]):
        return "x" * event["BatchInput"]["bytes"]
    return [item["n"] for item in event["Items"]]


def a_set(event: dict[str, Any]) -> Any:
    """Output that JSON cannot hold."""
    return {item["n"] for item in event["Items"]}


def slow_when_marked(event: dict[str, Any]) -> list[Any]:
    """Marks its start, then sleeps ``BatchInput.seconds`` for a batch with ``slow: true``."""
    _mark_started(event)
    if any(item.get("slow") for item in event["Items"]):
        time.sleep(event["BatchInput"]["seconds"])
    return [item["n"] for item in event["Items"]]
