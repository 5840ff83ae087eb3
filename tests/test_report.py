"""The run report and its AWS cost model (prices: us-east-1 list prices, see runner/report.py)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from runner import MapSpec, RunStatus, run
from runner.journal import Journal
from runner.report import (
    build_report,
    estimate_cost,
    estimate_for_items,
    format_report,
    report_to_dict,
)
from tests.test_engine import spec_for, write_jsonl

W = "tests.workers_for_tests"


# -- the cost model, by hand -------------------------------------------------------------------


def test_estimate_cost_by_hand() -> None:
    # 2 children, one of them retried once: 3 Lambda attempts of 0.4 ms, 123.4 ms and 1 s.
    cost = estimate_cost(2, 3, [0.0004, 0.1234, 1.0])
    assert cost.retries == 1
    # Standard: 3 transitions per child (dispatch, enter Task, leave Task) + 1 per retry.
    assert cost.state_transitions == 7
    assert cost.standard_usd == pytest.approx(7 * 0.000025)
    assert cost.dispatch_usd == pytest.approx(2 * 0.000025)
    # Lambda: 1 + 124 + 1000 ms (1 ms rounding up) at 1 GB; 3 requests.
    assert cost.lambda_requests == 3
    assert cost.lambda_billed_ms == 1125
    assert cost.lambda_gb_seconds == pytest.approx(1.125)
    assert cost.lambda_usd == pytest.approx(3 * 0.0000002 + 1.125 * 0.0000166667)
    # Express, each attempt standing for a child: 100 + 200 + 1000 ms at 64 MB.
    assert cost.express_requests == 2
    assert cost.express_memory_mb == 64
    assert cost.express_billed_seconds == pytest.approx(1.3)
    assert cost.express_gb_hours == pytest.approx(1.3 * 64 / 1024 / 3600)
    assert cost.express_usd == pytest.approx(2 * 0.000001 + 1.3 / 16 / 3600 * 0.06)
    assert cost.standard_lambda_usd == pytest.approx(0.000175 + 0.0000193500375)
    assert cost.express_lambda_usd == pytest.approx(0.00005 + 0.0000033541667 + 0.0000193500375)


def test_express_duration_rounds_up_to_100_ms_per_child() -> None:
    cost = estimate_cost(4, 4, [0.01] * 4, child_seconds=[0.1, 0.1001, 0.25, 0.0])
    # 100 ms stays 100 ms; 100.1 ms bills 200; 250 ms bills 300; nothing bills less than 100 ms.
    assert cost.express_billed_seconds == pytest.approx(0.1 + 0.2 + 0.3 + 0.1)
    assert cost.express_gb_hours == pytest.approx(0.7 * 0.0625 / 3600)


def test_express_memory_is_billed_in_64_mb_steps() -> None:
    def billed(mb: float) -> int:
        return estimate_cost(1, 1, [1.0], express_memory_mb=mb).express_memory_mb

    assert billed(50.25) == 64  # the default: 50 MB + a 256 KiB child input
    assert billed(64) == 64
    assert billed(64.5) == 128
    assert billed(129) == 192
    cost = estimate_cost(1, 1, [1.0], express_memory_mb=100)
    assert cost.express_gb_hours == pytest.approx(1.0 * 128 / 1024 / 3600)


def test_lambda_duration_rounds_up_to_1_ms_at_the_memory_size() -> None:
    # 4.001 s is 4001.0000000000005 ms in floating point: still 4001 ms.
    cost = estimate_cost(3, 3, [4.001, 0.0001, 0.0015], memory_mb=1536)
    assert cost.lambda_billed_ms == 4001 + 1 + 2
    assert cost.lambda_gb_seconds == pytest.approx(4.004 * 1.5)
    assert cost.lambda_usd == pytest.approx(3 * 0.0000002 + 4.004 * 1.5 * 0.0000166667)


def test_estimate_cost_with_no_children_is_free() -> None:
    cost = estimate_cost(0, 0, [])
    assert cost.standard_lambda_usd == cost.express_lambda_usd == 0


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((2, 1, [1.0]), {}, "children <= attempts"),
        ((1, 2, [1.0]), {}, "1 values for 2 attempts"),
        ((1, 1, [1.0]), {"child_seconds": [1.0, 2.0]}, "2 values for 1 children"),
        ((1, 1, [1.0], 100), {}, "128 to 10240 MB"),
        ((1, 1, [1.0], 10241), {}, "128 to 10240 MB"),
    ],
)
def test_estimate_cost_rejects_inconsistent_input(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        estimate_cost(*args, **kwargs)


def test_estimate_for_items_counts_one_child_per_batch() -> None:
    batched = MapSpec.from_dict({"Worker": "echo", "ItemBatcher": {"MaxItemsPerBatch": 100}})
    cost = estimate_for_items(batched, 1001, 0.25)
    assert cost.children == cost.attempts == 11
    assert cost.state_transitions == 33
    assert cost.lambda_billed_ms == 11 * 250
    assert cost.express_billed_seconds == pytest.approx(11 * 0.3)  # 250 ms -> 300 ms
    assert cost == estimate_cost(11, 11, [0.25] * 11)

    unbatched = MapSpec.from_dict({"Worker": "echo"})
    assert estimate_for_items(unbatched, 1001, 0.01).children == 1001


def test_estimate_for_items_is_instant_for_huge_sources() -> None:
    spec = MapSpec.from_dict({"Worker": "echo"})
    started = time.perf_counter()
    cost = estimate_for_items(spec, 100_000_000, 0.05, memory_mb=512)
    assert time.perf_counter() - started < 0.5
    assert cost.state_transitions == 300_000_000
    assert cost.standard_usd == pytest.approx(7500.0)
    assert cost.lambda_gb_seconds == pytest.approx(100_000_000 * 0.05 * 0.5)


def test_estimate_for_items_needs_a_batch_size_it_can_know() -> None:
    spec = MapSpec.from_dict({"Worker": "echo", "ItemBatcher": {"MaxInputBytesPerBatch": 1024}})
    with pytest.raises(ValueError, match="items_per_batch"):
        estimate_for_items(spec, 100, 1.0)
    assert estimate_for_items(spec, 100, 1.0, items_per_batch=8).children == 13


# -- reports of real runs ----------------------------------------------------------------------


def test_report_of_a_run_with_failures_and_retries(tmp_path: Path) -> None:
    # Items 7 and 55 fail, so batches 0 and 5 (of 10) fail, each after one retry 0.1 s later.
    items = [{"n": n, "fail": n in (7, 55)} for n in range(100)]
    source = write_jsonl(str(tmp_path / "items.jsonl"), items)
    spec = spec_for(
        source,
        str(tmp_path / "out"),
        f"{W}:fail_marked",
        ItemBatcher={"MaxItemsPerBatch": 10},
        ToleratedFailurePercentage=50,
        Retry=[{"ErrorEquals": ["States.ALL"], "MaxAttempts": 1, "IntervalSeconds": 0.1}],
    )
    result = run(spec, executor="threads")
    assert result.status == RunStatus.SUCCEEDED

    report = build_report(None, result.run_id)  # None: $SHARDMAP_STATE_DIR, as run() used
    assert report.status == "SUCCEEDED" and report.execution_type == "STANDARD"
    assert (report.items, report.succeeded, report.failed) == (100, 80, 20)
    assert report.timed_out == report.aborted == report.pending == report.running == 0
    assert report.batches == 10
    assert (report.attempts, report.retries) == (12, 2)
    assert report.failures_by_error == [("ValueError", 2, 20)]
    assert report.wall_seconds > 0.1  # a retry waited 0.1 s
    assert report.items_per_second == pytest.approx(100 / report.wall_seconds)
    assert report.p50_seconds is not None and report.max_seconds is not None
    assert 0 < report.p50_seconds <= report.p90_seconds <= report.p99_seconds
    assert report.p99_seconds <= report.max_seconds

    cost = report.cost
    assert (cost.children, cost.attempts, cost.state_transitions) == (10, 12, 32)
    # Each failed child ran 0.1 s longer than its retry wait: 200 ms billed, the others 100 ms.
    assert cost.express_billed_seconds >= 8 * 0.1 + 2 * 0.2 - 1e-9
    assert cost.lambda_billed_ms >= 12

    text = format_report(report)
    assert "ValueError: 2 batches, 20 items" in text
    assert "80 succeeded, 20 failed" in text
    assert "Standard + Lambda" in text and "Express + Lambda" in text
    assert "$0.00\n" not in text and "$0.00 " not in text  # tiny amounts keep their digits

    data = json.loads(json.dumps(report_to_dict(report)))
    assert data["failures_by_error"] == [{"error": "ValueError", "batches": 2, "items": 20}]
    assert data["cost"]["state_transitions"] == 32


def test_report_of_a_run_stopped_by_its_threshold(tmp_path: Path) -> None:
    items = [{"n": n, "fail": n % 10 == 3} for n in range(200)]
    source = write_jsonl(str(tmp_path / "items.jsonl"), items)
    spec = spec_for(
        source,
        str(tmp_path / "out"),
        f"{W}:slow_double",
        ItemBatcher={"MaxItemsPerBatch": 5},
        ToleratedFailurePercentage=1,
        MaxConcurrency=4,
    )
    result = run(spec, executor="threads")
    assert result.status == RunStatus.FAILED

    report = build_report(None, result.run_id, memory_mb=2048)
    assert report.error == "States.ExceedToleratedFailureThreshold"
    finished = report.succeeded + report.failed + report.timed_out + report.aborted
    assert finished + report.pending == report.items == 200
    assert report.pending > 0
    assert report.cost.memory_mb == 2048
    assert report.cost.children == report.attempts  # no Retry: one attempt per child
    assert "States.ExceedToleratedFailureThreshold" in format_report(report)
    # Aborted attempts have no journaled end: they count until the run stopped, not until now.
    assert report.max_seconds is not None and report.max_seconds <= report.wall_seconds
    time.sleep(0.05)
    assert build_report(None, result.run_id, memory_mb=2048) == report


def test_report_of_a_run_that_has_not_started_a_batch(state_dir: Path) -> None:
    journal = Journal.create(
        state_dir,
        run_id="r-running",
        map_run_arn="arn:aws:states:local:000000000000:mapRun:test/r-running:r-running",
        spec={"Worker": "echo", "ExecutionType": "EXPRESS"},
        run_input={},
        dest_url=str(state_dir / "results"),
        executor="inline",
    )
    journal.close()
    report = build_report(str(state_dir), "r-running")
    assert report.status == "RUNNING" and report.stop_date is None
    assert report.wall_seconds >= 0 and report.items_per_second == 0
    assert report.p50_seconds is None and report.attempts == 0
    assert report.cost.standard_lambda_usd == 0
    text = format_report(report)
    assert "none started" in text
    assert re.search(r"Express \+ Lambda +\$0\.00 +<- this pipeline's ExecutionType", text)
