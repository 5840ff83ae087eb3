"""The Lambda handler runs AWS-shaped child inputs through the local executor's code path."""

from __future__ import annotations

import json

import pytest

from runner import MapSpec, WorkerNotFound, load_results, run
from runner.aws import lambda_handler
from runner.aws.handler import ChildFailed, child_failure
from runner.child import run_child

W = "tests.workers_for_tests"


@pytest.fixture
def worker_env(monkeypatch):
    def use(worker: str) -> None:
        monkeypatch.setenv("SHARDMAP_WORKER", worker)

    return use


def test_batch_with_batch_input(worker_env):
    worker_env(f"{W}:where_to_write")
    event = {"BatchInput": {"To": "s3://bucket/out"}, "Items": [{"n": 1}, {"n": 2}]}
    assert lambda_handler(event, None) == [{"To": "s3://bucket/out"}] * 2


def test_batch_without_batch_input_and_a_registered_name(worker_env):
    worker_env("echo")
    assert lambda_handler({"Items": [{"n": 1}, {"n": 2}]}, None) == [{"n": 1}, {"n": 2}]


def test_single_item_without_item_batcher(worker_env):
    worker_env(f"{W}:single")
    assert lambda_handler({"n": 7}, None) == {"seen": {"n": 7}}


def test_failing_item_raises_the_workers_error_name(worker_env):
    worker_env(f"{W}:fail_marked")
    event = {"BatchInput": {}, "Items": [{"n": 1}, {"n": 2, "fail": True}]}
    with pytest.raises(ChildFailed) as caught:
        lambda_handler(event, None)
    # The Lambda runtime reports type(exc).__name__ as errorType: Step Functions' Error.
    assert type(caught.value).__name__ == "ValueError"
    assert str(caught.value) == "item n=2 is marked to fail"
    cause = json.loads(caught.value.cause)
    assert cause["errorType"] == "ValueError"
    assert any("fail_marked" in line for line in cause["stackTrace"])


def test_error_names_match_the_local_executor(worker_env, tmp_path):
    """A failing batch has the same Error on Lambda as in a local run's results."""
    items = [{"n": 0}, {"n": 1, "fail": True}]
    spec = MapSpec.from_dict(
        {
            "Name": "same-errors",
            "Worker": f"{W}:fail_marked",
            "ItemsPath": "$.items",
            "ItemBatcher": {"MaxItemsPerBatch": 2, "BatchInput": {}},
            "ToleratedFailurePercentage": 100,
        }
    )
    result = run(spec, run_input={"items": items}, dest=str(tmp_path), executor="inline")
    local_error = load_results(result.manifest_url)["error"].dropna().unique().tolist()
    worker_env(f"{W}:fail_marked")
    with pytest.raises(ChildFailed) as caught:
        lambda_handler({"BatchInput": {}, "Items": items}, None)
    assert local_error == [type(caught.value).__name__] == ["ValueError"]


def test_worker_error_picks_a_dotted_error_name(worker_env):
    worker_env(f"{W}:single")
    with pytest.raises(ChildFailed) as caught:
        lambda_handler({"n": 3, "fail": True}, None)
    assert type(caught.value).__name__ == "Custom.Failure"
    assert caught.value.error == "Custom.Failure"
    assert "item 3 failed on purpose" in str(caught.value)


def test_output_that_is_not_json_is_a_marshal_error(worker_env):
    worker_env(f"{W}:not_json")
    with pytest.raises(ChildFailed) as caught:
        lambda_handler({"Items": [{"n": 1}]}, None)
    assert type(caught.value).__name__ == "Runtime.MarshalError"


def test_columnar_worker_gets_a_table(worker_env):
    worker_env(f"{W}:column_sum")
    event = {"BatchInput": {"tag": "x"}, "Items": [{"n": 1}, {"n": 2}, {"n": 4}]}
    assert lambda_handler(event, None) == {"rows": 3, "sum": 7, "batch_input": {"tag": "x"}}


def test_unknown_worker_fails_the_child(worker_env):
    worker_env("no-such-worker")
    with pytest.raises(ChildFailed) as caught:
        lambda_handler({"Items": [{"n": 1}]}, None)
    assert type(caught.value).__name__ == "WorkerNotFound"


def test_missing_worker_variable(monkeypatch):
    monkeypatch.delenv("SHARDMAP_WORKER", raising=False)
    with pytest.raises(WorkerNotFound, match="SHARDMAP_WORKER"):
        lambda_handler({"Items": []}, None)


def test_failure_classes_are_reused_and_carry_the_message():
    one = child_failure("States.Timeout", None)
    two = child_failure("States.Timeout", '{"errorMessage": "late"}')
    assert type(one) is type(two)
    assert str(two) == "late" and two.cause == '{"errorMessage": "late"}'
    assert run_child(f"{W}:single", {"n": 1}).ok
