"""MapSpec: loading, validation messages with field paths, ASL round trips, AWS-limit warnings."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from runner.asl import lambda_arn
from runner.errors import SpecError
from runner.spec import MapSpec

PIPELINES = sorted(Path(__file__).parent.parent.joinpath("pipelines").glob("*.yaml"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"ToleratedFailurePercentage": 120},
            "ToleratedFailurePercentage: must be between 0 and 100",
        ),
        (
            {"ToleratedFailurePercentage": -1},
            "ToleratedFailurePercentage: must be between 0 and 100",
        ),
        ({"ToleratedFailureCount": -2}, "ToleratedFailureCount: must be 0 or greater"),
        ({"ItemBatcher": {"MaxItemPerBatch": 3}}, "ItemBatcher.MaxItemPerBatch: unknown field"),
        ({"ItemBatcher": {}}, "ItemBatcher: needs MaxItemsPerBatch or MaxInputBytesPerBatch"),
        ({"ItemBatcher": {"MaxItemsPerBatch": 0}}, "ItemBatcher.MaxItemsPerBatch: Input should be"),
        (
            {"ItemBatcher": {"MaxItemsPerBatch": 2, "MaxItemsPerBatchPath": "$.n"}},
            "ItemBatcher.MaxItemsPerBatch: use either MaxItemsPerBatch or MaxItemsPerBatchPath",
        ),
        (
            {"ItemReader": {"ReaderConfig": {"InputType": "XML"}}},
            "ItemReader.ReaderConfig.InputType: must be one of",
        ),
        (
            {"ItemReader": {"ReaderConfig": {"CSVHeaderLocation": "GIVEN"}}},
            "ItemReader.ReaderConfig.CSVHeaders: required when CSVHeaderLocation is GIVEN",
        ),
        (
            {"ItemReader": {"ReaderConfig": {"MaxItems": 0}}},
            "ItemReader.ReaderConfig.MaxItems: must be between 1 and 100,000,000",
        ),
        (
            {"ItemReader": {"ReaderConfig": {"CSVDelimiter": "COLON"}}},
            "ItemReader.ReaderConfig.CSVDelimiter: must be one of",
        ),
        (
            {"Retry": [{"ErrorEquals": ["States.ALL", "X"]}]},
            "Retry.0.ErrorEquals: States.ALL must appear alone, in the last retrier",
        ),
        (
            {"Retry": [{"ErrorEquals": ["States.ALL"]}, {"ErrorEquals": ["X"]}]},
            "Retry.0.ErrorEquals: States.ALL must appear alone",
        ),
        (
            {"Retry": [{"ErrorEquals": ["X"], "JitterStrategy": "HALF"}]},
            "Retry.0.JitterStrategy: must be one of",
        ),
        ({"Retry": [{"ErrorEquals": ["X"], "BackoffRate": 0.5}]}, "Retry.0.BackoffRate"),
        ({"Label": "x" * 41}, "Label:"),
        (
            {"ResultWriter": {"WriterConfig": {"OutputType": "CSV"}}},
            "ResultWriter.WriterConfig.OutputType: must be one of",
        ),
        (
            {"ItemsPath": "$.a", "ItemReader": {}},
            "ItemsPath: cannot be used together with ItemReader",
        ),
        ([1, 2], "a pipeline must be a mapping"),
    ],
)
def test_validation_errors_name_the_field_and_rule(data, message: str) -> None:
    with pytest.raises(SpecError) as info:
        MapSpec.from_dict(data)
    assert str(info.value).startswith(message), str(info.value)


def test_fractional_percentage_and_round_trips() -> None:
    spec = MapSpec.from_dict(
        {
            "Worker": "echo",
            "ToleratedFailurePercentage": 2.5,
            "ItemBatcher": {"MaxItemsPerBatch": 10, "BatchInput": {"a": 1}},
            "Retry": [{"ErrorEquals": ["States.ALL"], "MaxDelaySeconds": 5}],
        }
    )
    assert spec.tolerated_failure_percentage == 2.5
    assert MapSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_aws_limit_breaches_are_warnings_not_errors() -> None:
    spec = MapSpec.from_dict({"ItemBatcher": {"MaxInputBytesPerBatch": 300_000}})
    assert any("262144" in w for w in spec.aws_warnings())
    assert MapSpec.from_dict({"ItemBatcher": {"MaxInputBytesPerBatch": 1000}}).aws_warnings() == []


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_every_pipeline_round_trips_through_asl(path: Path) -> None:
    spec = MapSpec.from_yaml(path)
    asl = spec.to_asl()
    state = asl["States"]["Map"]
    assert state["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    back = MapSpec.from_asl(asl, resources={lambda_arn(spec.worker): spec.worker})
    for field in (
        "item_selector",
        "item_batcher",
        "max_concurrency",
        "retry",
        "timeout_seconds",
        "tolerated_failure_percentage",
        "tolerated_failure_count",
        "worker",
    ):
        assert getattr(back, field) == getattr(spec, field), field


def test_asl_of_items_from_the_input_has_no_reader_even_with_a_source() -> None:
    # AWS rejects ItemsPath beside ItemReader; the source then only reaches the workers.
    spec = MapSpec.from_dict({"Worker": "echo", "Source": "s3://b/data/", "ItemsPath": "$.Parts"})
    state = spec.to_asl()["States"]["Map"]
    assert state["ItemsPath"] == "$.Parts" and "ItemReader" not in state


def test_asl_with_s3_parameters_becomes_urls(tmp_path: Path) -> None:
    machine = {
        "StartAt": "Process",
        "States": {
            "Process": {
                "Type": "Map",
                "ItemReader": {
                    "Resource": "arn:aws:states:::s3:getObject",
                    "ReaderConfig": {"InputType": "CSV", "CSVHeaderLocation": "FIRST_ROW"},
                    "Parameters": {"Bucket": "data", "Key": "in/rows.csv"},
                },
                "ItemBatcher": {"MaxItemsPerBatch": 50},
                "MaxConcurrency": 10,
                "ToleratedFailurePercentage": 5,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"},
                    "StartAt": "Fn",
                    "States": {
                        "Fn": {
                            "Type": "Task",
                            "Resource": "arn:aws:states:::lambda:invoke",
                            "Parameters": {
                                "FunctionName": "arn:aws:lambda:us-east-1:1:function:f",
                                "Payload.$": "$",
                            },
                            "Retry": [{"ErrorEquals": ["States.TaskFailed"], "MaxAttempts": 4}],
                            "TimeoutSeconds": 30,
                            "End": True,
                        }
                    },
                },
                "ResultWriter": {
                    "Resource": "arn:aws:states:::s3:putObject",
                    "Parameters": {"Bucket": "out", "Prefix": "runs"},
                    "WriterConfig": {"Transformation": "COMPACT", "OutputType": "JSONL"},
                },
                "End": True,
            }
        },
    }
    path = tmp_path / "machine.json"
    path.write_text(json.dumps(machine))
    spec = MapSpec.load(path, resources={"arn:aws:lambda:us-east-1:1:function:f": "echo"})
    assert spec.worker == "echo" and spec.source_url() == "s3://data/in/rows.csv"
    assert spec.result_writer.destination_url() == "s3://out/runs"
    assert spec.result_writer.writer_config.output_type == "JSONL"
    assert spec.execution_type == "EXPRESS" and spec.timeout_seconds == 30
    assert spec.retry[0].max_attempts == 4
    with pytest.raises(SpecError, match="--resource ARN=WORKER"):
        MapSpec.load(path)
    machine["States"]["Process"]["ItemBatcher"]["MaxItemPerBatch"] = 3
    path.write_text(json.dumps(machine))
    with pytest.raises(
        SpecError, match=r"States\.Process\.ItemBatcher\.MaxItemPerBatch: unknown field"
    ):
        MapSpec.load(path, resources={"arn:aws:lambda:us-east-1:1:function:f": "echo"})


def test_asl_needs_exactly_one_distributed_map() -> None:
    with pytest.raises(SpecError, match="exactly one Distributed Map"):
        MapSpec.from_asl({"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}})


def test_yaml_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("Worker: [unclosed\n")
    with pytest.raises(SpecError, match=r"bad\.yaml: not valid YAML"):
        MapSpec.from_yaml(bad)
    with pytest.raises(SpecError, match="no such pipeline file"):
        MapSpec.from_yaml(tmp_path / "missing.yaml")
