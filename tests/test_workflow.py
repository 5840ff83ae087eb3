"""Whole state machines on the engine: a workflow of the kind AWS's blog posts show, run end
to end on the local executor and on a real Dask LocalCluster, over CSV in a real S3 server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runner.errors import SpecError
from runner.workflow import run_state_machine

INVOKE = "arn:aws:states:::lambda:invoke"
FN = "arn:aws:lambda:us-east-1:123456789012:function:"
RESOURCES = {
    FN + "big": "tests.workflow_workers:big_order",
    FN + "small": "tests.workflow_workers:small_order",
    FN + "summarize": "tests.workflow_workers:summarize",
}

CHILD = {
    "QueryLanguage": "JSONata",
    "StartAt": "Route",
    "States": {
        "Route": {
            "Type": "Choice",
            "Choices": [{"Condition": "{% $number($states.input.amount) >= 100 %}", "Next": "Big"}],
            "Default": "Small",
        },
        "Big": {
            "Type": "Task",
            "Resource": INVOKE,
            "Arguments": {
                "FunctionName": FN + "big",
                "Payload": {
                    "id": "{% $states.input.id %}",
                    "amount": "{% $number($states.input.amount) %}",
                },
            },
            "Output": "{% $states.result.Payload %}",
            "Catch": [
                {
                    "ErrorEquals": ["States.ALL"],
                    "Next": "Rejected",
                    "Assign": {"why": "{% $states.errorOutput.Cause %}"},
                }
            ],
            "End": True,
        },
        "Small": {
            "Type": "Task",
            "Resource": INVOKE,
            "Arguments": {
                "FunctionName": FN + "small",
                "Payload": {
                    "id": "{% $states.input.id %}",
                    "amount": "{% $number($states.input.amount) %}",
                },
            },
            "Output": "{% $states.result.Payload %}",
            "End": True,
        },
        "Rejected": {"Type": "Fail", "Error": "Rejected", "Cause": "{% $why %}"},
    },
}


def definition() -> dict[str, Any]:
    return {
        "Comment": "Orders from S3 CSV: route each, refuse blocked big ones, summarize",
        "StartAt": "Prepare",
        "States": {
            "Prepare": {"Type": "Pass", "Parameters": {"bucket.$": "$.bucket",
                                                        "key": "in/orders.csv"},
                        "Next": "Orders"},
            "Orders": {
                "Type": "Map",
                "Label": "orders",
                "ItemReader": {
                    "Resource": "arn:aws:states:::s3:getObject",
                    "ReaderConfig": {"InputType": "CSV", "CSVHeaderLocation": "FIRST_ROW"},
                    "Parameters": {"Bucket.$": "$.bucket", "Key.$": "$.key"},
                },
                "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED",
                                                      "ExecutionType": "STANDARD"}, **CHILD},
                "ToleratedFailurePercentage": 50,
                "ResultWriter": {"Resource": "arn:aws:states:::s3:putObject",
                                 "Parameters": {"Bucket.$": "$.bucket", "Prefix": "results"}},
                "ResultPath": "$.map",
                "Next": "Summarize",
            },
            "Summarize": {
                "Type": "Task", "Resource": INVOKE,
                "Parameters": {"FunctionName": FN + "summarize",
                               "Payload.$": "$.map.ResultWriterDetails"},
                "OutputPath": "$.Payload",
                "End": True,
            },
        },
    }  # fmt: skip


ORDERS = [("o1", 20), ("o2", 150), ("bad3", 500), ("o4", 99), ("o5", 100), ("o6", 5)]
EXPECTED = {
    "succeeded": 5,
    "failed": 1,
    "errors": ["Rejected"],
    "orders": [["o1", "small", 20], ["o2", "big", 150], ["o4", "small", 99],
               ["o5", "big", 100], ["o6", "small", 5]],
}  # fmt: skip


@pytest.fixture
def orders_bucket(bucket, s3_client):
    body = "id,amount\n" + "".join(f"{i},{a}\n" for i, a in ORDERS)
    s3_client.put_object(Bucket=bucket, Key="in/orders.csv", Body=body.encode())
    return bucket


def _check(outcome: Any, bucket: str, s3_client: Any) -> None:
    execution = outcome.execution
    assert (execution.status, execution.error) == ("SUCCEEDED", None), execution.cause
    assert execution.output == EXPECTED
    [map_run] = outcome.map_runs
    failed = json.loads(
        s3_client.get_object(Bucket=bucket, Key=_failed_key(s3_client, bucket))["Body"].read()
    )
    [record] = failed
    assert record["Error"] == "Rejected"
    # the child's Catch assigned the Task's cause (the worker's own) and its Fail state used it
    assert record["Cause"] == "order bad3 is on the blocklist"
    assert map_run.item_counts.failed == 1


def _failed_key(s3_client: Any, bucket: str) -> str:
    keys = [
        o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket, Prefix="results/")["Contents"]
    ]
    return next(key for key in keys if "FAILED_" in key)


def test_blog_style_workflow_runs_end_to_end_locally(orders_bucket, s3_client):
    outcome = run_state_machine(
        definition(), {"bucket": orders_bucket}, resources=RESOURCES, executor="local"
    )
    _check(outcome, orders_bucket, s3_client)


@pytest.mark.slow
def test_blog_style_workflow_gives_the_same_output_on_dask(
    orders_bucket, s3_client, dask_scheduler
):
    outcome = run_state_machine(
        definition(), {"bucket": orders_bucket}, resources=RESOURCES, executor="dask"
    )
    _check(outcome, orders_bucket, s3_client)


def test_an_unmapped_task_is_refused_before_the_run():
    resources = {k: v for k, v in RESOURCES.items() if not k.endswith("small")}
    with pytest.raises(SpecError) as refused:
        run_state_machine(definition(), {"bucket": "b"}, resources=resources)
    assert refused.value.path == "States.Orders.ItemProcessor.States.Small.Resource"


def test_a_callback_task_is_refused_before_the_run():
    machine = {
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": INVOKE + ".waitForTaskToken",
                "Parameters": {"FunctionName": FN + "small"},
                "End": True,
            }
        },
    }
    with pytest.raises(SpecError) as refused:
        run_state_machine(machine, {}, resources=RESOURCES)
    assert refused.value.path == "States.T.Resource"


def test_a_task_outside_any_map_runs_its_worker_with_lambdas_result_shape():
    machine = {
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": INVOKE,
                "Parameters": {"FunctionName": FN + "small", "Payload": {"id": "x", "amount": 1}},
                "ResultSelector": {"status.$": "$.StatusCode", "route.$": "$.Payload.route"},
                "End": True,
            }
        },
    }
    outcome = run_state_machine(machine, {}, resources=RESOURCES)
    assert outcome.execution.output == {"status": 200, "route": "small"}
    assert outcome.map_runs == []


def _invoke(*args: str) -> Any:
    from click.testing import CliRunner

    from runner.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_runs_a_state_machine_and_prints_its_output(orders_bucket, tmp_path):
    machine = tmp_path / "orders.asl.json"
    machine.write_text(json.dumps(definition()))
    mapped = [arg for arn, worker in RESOURCES.items() for arg in ("--resource", f"{arn}={worker}")]
    result = _invoke(
        "run",
        str(machine),
        "--input",
        json.dumps({"bucket": orders_bucket}),
        "--executor",
        "inline",
        *mapped,
    )
    assert result.exit_code == 0, result.output
    assert "Map Run SUCCEEDED" in result.output
    printed = result.output[result.output.index("{") :]
    assert json.loads(printed) == EXPECTED


def test_cli_exits_1_with_the_executions_error(tmp_path):
    machine = tmp_path / "fail.asl.json"
    machine.write_text(
        json.dumps(
            {
                "StartAt": "F",
                "States": {"F": {"Type": "Fail", "Error": "Nope", "Cause": "as documented"}},
            }
        )
    )
    result = _invoke("run", str(machine))
    assert result.exit_code == 1
    assert "Execution FAILED: Nope: as documented" in result.output


def _items_machine(processor: dict[str, Any], key: str = "Iterator", **map_fields: Any) -> dict:
    return {"StartAt": "M", "States": {"M": {
        "Type": "Map",
        "ItemReader": {"Resource": "arn:aws:states:::s3:getObject",
                       "ReaderConfig": {"InputType": "JSON"},
                       "Parameters": {"Bucket.$": "$.bucket", "Key": "in/items.json"}},
        key: {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"},
              **processor},
        **map_fields, "End": True}}}  # fmt: skip


@pytest.fixture
def items_bucket(bucket, s3_client):
    body = json.dumps([{"n": 1}, {"n": 2}, {"n": 3}])
    s3_client.put_object(Bucket=bucket, Key="in/items.json", Body=body.encode())
    return bucket


def test_a_pass_child_in_a_legacy_iterator_runs_with_the_maps_result_fields(items_bucket):
    """Reproduction: Pass children were refused, the legacy Iterator not recognised and the
    Map's ResultSelector/OutputPath dropped. A Map without a ResultWriter outputs the
    children's outputs in item order."""
    child = {
        "StartAt": "P",
        "States": {"P": {"Type": "Pass", "Parameters": {"twice.$": "$.n"}, "End": True}},
    }
    machine = _items_machine(child, ResultSelector={"all.$": "$[*].twice"}, OutputPath="$.all")
    outcome = run_state_machine(machine, {"bucket": items_bucket}, executor="inline")
    assert outcome.execution.status == "SUCCEEDED", outcome.execution.cause
    assert outcome.execution.output == [1, 2, 3]
    [map_run] = outcome.map_runs
    assert map_run.item_counts.succeeded == 3


def test_a_failing_map_run_is_caught_by_the_maps_catch(items_bucket):
    child = {"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "Bad", "Cause": "c"}}}
    machine = _items_machine(
        child,
        key="ItemProcessor",
        Catch=[{"ErrorEquals": ["States.ALL"], "Next": "Handled", "ResultPath": "$.error"}],
    )
    machine["States"]["M"].pop("End")
    machine["States"]["M"]["Next"] = "Done"
    machine["States"]["Handled"] = {
        "Type": "Pass",
        "Result": "handled",
        "ResultPath": "$.note",
        "End": True,
    }
    machine["States"]["Done"] = {"Type": "Succeed"}
    outcome = run_state_machine(machine, {"bucket": items_bucket}, executor="inline")
    execution = outcome.execution
    assert execution.status == "SUCCEEDED"
    assert execution.output["note"] == "handled"
    assert execution.output["error"]["Error"] == "States.ExceedToleratedFailureThreshold"


def test_an_interpreted_child_runs_in_pool_processes(items_bucket):
    """The child travels to pool workers as its `asl:` reference and is compiled there."""
    child = {"StartAt": "P", "States": {
        "P": {"Type": "Pass", "Parameters": {"n.$": "$.n", "pid.$": "States.Format('{}', 1)"},
              "Next": "W"},
        "W": {"Type": "Task", "Resource": INVOKE, "OutputPath": "$.Payload",
              "Parameters": {"FunctionName": FN + "small", "Payload": {"id.$": "$.n",
                                                                      "amount.$": "$.n"}},
              "End": True}}}  # fmt: skip
    machine = _items_machine(child, key="ItemProcessor")
    outcome = run_state_machine(
        machine, {"bucket": items_bucket}, resources=RESOURCES, executor="processes"
    )
    assert outcome.execution.status == "SUCCEEDED", outcome.execution.cause
    assert outcome.execution.output == [{"id": n, "amount": n, "route": "small"} for n in (1, 2, 3)]


def test_a_child_reference_resolves_to_the_same_compiled_worker():
    from runner.childmachine import child_reference
    from runner.registry import resolve_worker

    child = {"StartAt": "P", "States": {"P": {"Type": "Pass", "Result": "done", "End": True}}}
    reference = child_reference(child, {})
    assert reference.startswith("asl:")
    worker = resolve_worker(reference)
    assert worker is resolve_worker(reference)
    assert worker({"any": 1}) == "done"


def test_a_failing_interpreted_child_reports_its_error_and_cause():
    from runner.child import run_child
    from runner.childmachine import child_reference

    child = {"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "E", "Cause": "why"}}}
    outcome = run_child(child_reference(child, {}), {"x": 1})
    assert (outcome.ok, outcome.error, outcome.cause) == (False, "E", "why")
