"""Workers used by the tests. Importable by name, so process pools and Dask can run them."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from runner import WorkerError, worker

_lock = threading.Lock()
_running = 0
peak_running = 0


def double(event: dict[str, Any]) -> list[Any]:
    """Each item's ``n`` doubled, one output per item."""
    return [{"n": item["n"], "double": item["n"] * 2} for item in event["Items"]]


def fail_marked(event: dict[str, Any]) -> list[Any]:
    """Raise when any item has ``fail: true``."""
    for item in event["Items"]:
        if item.get("fail"):
            raise ValueError(f"item n={item['n']} is marked to fail")
    return [item["n"] for item in event["Items"]]


def single(item: dict[str, Any]) -> dict[str, Any]:
    """Unbatched worker: gets the lone item."""
    if item.get("fail"):
        raise WorkerError("Custom.Failure", f"item {item['n']} failed on purpose")
    return {"seen": item}


def flaky(event: dict[str, Any]) -> list[Any]:
    """Fails the first ``BatchInput.failures`` attempts of each batch (state kept in files)."""
    settings = event["BatchInput"]
    marker = Path(settings["dir"]) / f"batch-{event['Items'][0]['n']}"
    attempts = int(marker.read_text()) if marker.exists() else 0
    marker.write_text(str(attempts + 1))
    if attempts < settings["failures"]:
        raise WorkerError(settings.get("error", "Flaky.Error"), f"attempt {attempts + 1} fails")
    return [attempts + 1]


def sleepy(event: dict[str, Any]) -> list[Any]:
    """Sleeps ``BatchInput.seconds`` when an item asks to (``slow: true``)."""
    if any(item.get("slow") for item in event["Items"]):
        time.sleep(event["BatchInput"]["seconds"])
    return [item["n"] for item in event["Items"]]


def count_concurrency(event: dict[str, Any]) -> list[Any]:
    """Tracks the peak number of batches running at once in this process."""
    global _running, peak_running
    with _lock:
        _running += 1
        peak_running = max(peak_running, _running)
    time.sleep(0.02)
    with _lock:
        _running -= 1
    return [os.getpid()] * len(event["Items"])


@worker(columnar=True)
def column_sum(table: Any, batch_input: Any) -> dict[str, Any]:
    """Columnar worker: sums column ``n`` of its pyarrow Table."""
    import pyarrow.compute as pc

    return {"rows": table.num_rows, "sum": pc.sum(table["n"]).as_py(), "batch_input": batch_input}


def not_json(event: dict[str, Any]) -> Any:
    return {"bad": object()}


def hang(event: dict[str, Any]) -> list[Any]:
    """Never returns in time when an item says ``hang: true`` (a stuck batch)."""
    if any(item.get("hang") for item in event["Items"]):
        time.sleep(3600)
    return [item["n"] for item in event["Items"]]


def slow_double(event: dict[str, Any]) -> list[Any]:
    """``double`` that takes a few milliseconds per batch, so a run lasts long enough to kill,
    and fails batches holding an item with ``fail: true``. ``BatchInput.sleep`` (seconds)
    stretches a run further."""
    time.sleep((event.get("BatchInput") or {}).get("sleep", 0.01))
    for item in event["Items"]:
        if item.get("fail"):
            raise ValueError(f"item n={item['n']} is marked to fail")
    return [item["n"] * 2 for item in event["Items"]]


def fixable(event: dict[str, Any]) -> list[Any]:
    """Fails items marked ``fail`` until the file ``BatchInput.fixed`` exists (the cause fixed)."""
    fixed = Path(event["BatchInput"]["fixed"]).exists()
    for item in event["Items"]:
        if item.get("fail") and not fixed:
            raise ValueError(f"item n={item['n']} cannot be processed yet")
    return [item["n"] for item in event["Items"]]


def die_once(event: dict[str, Any]) -> list[Any]:
    """SIGKILLs its own process the first time it meets an item with ``die: true``."""
    import signal

    for item in event["Items"]:
        marker = Path(event["BatchInput"]["dir"]) / f"died-{item['n']}"
        if item.get("die") and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
    return [item["n"] for item in event["Items"]]


def total_of_outputs(context: Any) -> dict[str, Any]:
    """A reducer: the sum of every succeeded output (lists of numbers), and where it ran."""
    values = [value for output in context.outputs() for value in output]
    return {"sum": sum(values), "count": len(values), "dest": context.destination,
            "batch_input": context.batch_input}  # fmt: skip


def failing_reducer(context: Any) -> Any:
    raise RuntimeError(f"cannot reduce {context.run_id}")


def where_to_write(event: dict[str, Any]) -> list[Any]:
    """Echo BatchInput once per item, to show what the workers were told."""
    return [event["BatchInput"] for _ in event["Items"]]
