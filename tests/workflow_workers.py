"""Workers for the whole-state-machine tests (tests/test_workflow.py), by module:function."""

from __future__ import annotations

from typing import Any

from runner.errors import WorkerError


def big_order(event: dict[str, Any]) -> dict[str, Any]:
    """Approve a big order; ids starting with ``bad`` are refused."""
    if str(event["id"]).startswith("bad"):
        raise WorkerError("Orders.Refused", f"order {event['id']} is on the blocklist")
    return {"id": event["id"], "amount": event["amount"], "route": "big"}


def small_order(event: dict[str, Any]) -> dict[str, Any]:
    return {"id": event["id"], "amount": event["amount"], "route": "small"}


def summarize(details: dict[str, Any]) -> dict[str, Any]:
    """Read the Map Run's results from the manifest the ResultWriter wrote (its Bucket/Key)."""
    from runner import load_results

    frame = load_results(f"s3://{details['Bucket']}/{details['Key']}")
    done = frame[frame["status"] == "SUCCEEDED"]
    outputs = sorted((row["id"], row["route"], row["amount"]) for row in done["output"])
    return {
        "succeeded": len(done),
        "failed": int((frame["status"] == "FAILED").sum()),
        "errors": sorted(set(frame.loc[frame["status"] == "FAILED", "error"])),
        "orders": [list(order) for order in outputs],
    }
