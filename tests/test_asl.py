"""ASL: export (`MapSpec.to_asl`, its reduce Task), the strict checks, asl-validator, `shardmap asl`
and `shardmap cost`, and hand-written Distributed Map definitions run locally with the same
batches, thresholds and result files as their pipeline-file equivalents."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import fsspec
import pytest
import yaml
from click.testing import CliRunner

from runner import MapSpec, RunStatus, load_results, run
from runner.asl import lambda_arn
from runner.aws.checks import (
    AslValidatorMissing,
    Problem,
    asl_validator,
    check_asl,
    errors_only,
)
from runner.cli import main
from runner.errors import SpecError
from runner.report import estimate_for_items

ROOT = Path(__file__).parent.parent


def _is_pipeline(path: Path) -> bool:
    data = yaml.safe_load(path.read_text())
    return isinstance(data, dict) and "Worker" in data  # not e.g. a trigger config


# Globbed, so pipelines added later are checked too.
PIPELINES = [p for p in sorted(ROOT.joinpath("pipelines").glob("*.yaml")) if _is_pipeline(p)]
W = "tests.workers_for_tests"
WORKER_ARN = "arn:aws:lambda:us-east-1:123456789012:function:process-batch"
REDUCE_ARN = "arn:aws:lambda:us-east-1:123456789012:function:reduce-results"

needs_validator = pytest.mark.skipif(
    not (ROOT / "tools" / "node_modules" / "asl-validator").is_dir(),
    reason="npm ci --prefix tools installs asl-validator (the README's test command does)",
)


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def distributed_map(**fields: Any) -> dict[str, Any]:
    """A state machine as AWS users write it: one Distributed Map, a Lambda child Task."""
    state: dict[str, Any] = {
        "Type": "Map",
        "ItemReader": {
            "Resource": "arn:aws:states:::s3:getObject",
            "ReaderConfig": {"InputType": "JSONL"},
            "Parameters": {"Bucket": "amzn-s3-demo-bucket", "Key": "input/items.jsonl"},
        },
        "ItemProcessor": {
            "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            "StartAt": "ProcessBatch",
            "States": {
                "ProcessBatch": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::lambda:invoke",
                    "Parameters": {"FunctionName": WORKER_ARN, "Payload.$": "$"},
                    "OutputPath": "$.Payload",
                    "End": True,
                }
            },
        },
        "ResultWriter": {
            "Resource": "arn:aws:states:::s3:putObject",
            "Parameters": {"Bucket": "amzn-s3-demo-bucket", "Prefix": "results"},
        },
        "End": True,
    }
    state.update(fields)
    return {"Comment": "hand-written", "StartAt": "ProcessItems", "States": {"ProcessItems": state}}


def the_map(definition: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in definition["States"].values() if s["Type"] == "Map")


# -- every pipeline exports to a valid state machine -------------------------------------------


@needs_validator
@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_every_pipeline_passes_asl_validator_and_the_strict_checks(path: Path) -> None:
    spec = MapSpec.from_yaml(path)
    definition = spec.to_asl(
        function_arn=WORKER_ARN, reduce_arn=REDUCE_ARN if spec.reduce else None
    )
    assert asl_validator(definition) == []
    assert errors_only(check_asl(definition)) == []
    # With S3 locations (as deploy gives them) only shardmap's own $$.Shardmap paths remain
    # to resolve; nothing is missing.
    s3 = spec.replace(source="s3://data/in/", result_writer={"Destination": "s3://data/out"})
    definition = s3.to_asl()
    assert asl_validator(definition) == []
    for problem in check_asl(definition):
        assert problem.severity == "warning" and "$$.Shardmap." in problem.message, problem
    if spec.reduce:
        assert definition["States"]["Reduce"]["Type"] == "Task"


@needs_validator
def test_asl_validator_reports_its_own_findings_with_paths() -> None:
    definition = distributed_map(ItemBatcher={"MaxItemsPerBatch": "ten"})
    (problem,) = asl_validator(definition)
    assert problem.path == "States.ProcessItems.ItemBatcher.MaxItemsPerBatch"
    assert "must be integer" in problem.message and problem.source == "asl-validator"
    missing = distributed_map(Next="Nowhere")
    del missing["States"]["ProcessItems"]["End"]
    assert any("Nowhere" in p.message for p in asl_validator(missing))


@needs_validator
def test_a_fractional_percentage_is_valid_as_on_aws() -> None:
    # asl-validator's schema wants a whole number; Step Functions takes 2.5.
    definition = distributed_map(ToleratedFailurePercentage=2.5)
    assert asl_validator(definition) == [] and check_asl(definition) == []
    over = distributed_map(ToleratedFailurePercentage=100.5)
    assert [p.path for p in check_asl(over)] == ["States.ProcessItems.ToleratedFailurePercentage"]


def test_the_checks_are_importable_from_runner_aws_lazily() -> None:
    import runner.aws

    assert runner.aws.check_asl is check_asl and runner.aws.asl_validator is asl_validator
    assert {"check_asl", "asl_validator", "Problem", "lambda_handler"} <= set(runner.aws.__all__)


def test_a_missing_validator_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHARDMAP_TOOLS_DIR", str(tmp_path))
    with pytest.raises(AslValidatorMissing, match="npm ci --prefix tools"):
        asl_validator(distributed_map())


# -- the strict checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "change", "path", "message", "suggestion"),
    [
        (
            "ItemBatcher",
            {"MaxItemPerBatch": 10},
            "States.ProcessItems.ItemBatcher.MaxItemPerBatch",
            "unknown field",
            "MaxItemsPerBatch",
        ),
        (
            "ItemReader.ReaderConfig",
            {"InputType": "Jsonl"},
            "States.ProcessItems.ItemReader.ReaderConfig.InputType",
            '"Jsonl" is not one of CSV, JSON, JSONL, PARQUET, MANIFEST',
            "JSONL",
        ),
        (
            "ItemReader.ReaderConfig",
            {"InputType": "XML"},
            "States.ProcessItems.ItemReader.ReaderConfig.InputType",
            '"XML" is not one of',
            None,
        ),
        (
            "ItemReader.ReaderConfig",
            {"CSVDelimeter": "TAB"},
            "States.ProcessItems.ItemReader.ReaderConfig.CSVDelimeter",
            "unknown field",
            "CSVDelimiter",
        ),
        (
            "ItemReader.ReaderConfig",
            {"MaxItem": 10},
            "States.ProcessItems.ItemReader.ReaderConfig.MaxItem",
            "unknown field",
            "MaxItems",
        ),
        (
            "ResultWriter.WriterConfig",
            {"OutputType": "CSV"},
            "States.ProcessItems.ResultWriter.WriterConfig.OutputType",
            '"CSV" is not one of JSON, JSONL',
            None,
        ),
        (
            "ResultWriter.WriterConfig",
            {"Transformation": "FLATTENED"},
            "States.ProcessItems.ResultWriter.WriterConfig.Transformation",
            '"FLATTENED" is not one of NONE, COMPACT, FLATTEN',
            "FLATTEN",
        ),
        (
            "ResultWriter.WriterConfig",
            {"OutputTyp": "JSON"},
            "States.ProcessItems.ResultWriter.WriterConfig.OutputTyp",
            "unknown field",
            "OutputType",
        ),
        (
            "ResultWriter",
            {"Parameters": {"Bucket": "b", "Prefx": "results"}},
            "States.ProcessItems.ResultWriter.Parameters.Prefx",
            "unknown field",
            "Prefix",
        ),
        (
            "ItemReader",
            {"Resource": "arn:aws:states:::s3:listObjectV2"},
            "States.ProcessItems.ItemReader.Resource",
            '"arn:aws:states:::s3:listObjectV2" is not one of',
            "arn:aws:states:::s3:listObjectsV2",
        ),
        (
            "ItemReader",
            {"InputType": "CSV"},
            "States.ProcessItems.ItemReader.InputType",
            "belongs inside ItemReader.ReaderConfig",
            None,
        ),
    ],
)
def test_strict_checks_name_the_path_and_the_nearest_valid_key(
    block: str, change: dict[str, Any], path: str, message: str, suggestion: str | None
) -> None:
    definition = distributed_map(ItemBatcher={"MaxItemsPerBatch": 10})
    target = the_map(definition)
    for key in block.split("."):
        target = target.setdefault(key, {})
    target.update(change)
    problems = errors_only(check_asl(definition))
    assert problems, "the strict checks must catch it"
    (problem,) = [p for p in problems if p.path == path]
    assert problem.message.startswith(message), problem
    assert problem.suggestion == suggestion
    assert str(problem).startswith(f"{path}: {message}")
    if suggestion:
        assert str(problem).endswith(f"(did you mean {suggestion}?)")


@needs_validator
def test_asl_validator_alone_lets_these_through() -> None:
    # What the strict checks exist for (asl-validator 4.0.0, tools/package-lock.json).
    definition = distributed_map(ItemBatcher={"MaxItemsPerBatch": 10, "MaxItemPerBatch": 3})
    state = the_map(definition)
    state["ItemReader"]["ReaderConfig"] = {"InputType": "XML", "CSVDelimeter": "TAB"}
    state["ResultWriter"]["WriterConfig"] = {"OutputType": "CSV"}
    assert asl_validator(definition) == []
    assert {p.path.rsplit(".", 1)[1] for p in check_asl(definition)} == {
        "MaxItemPerBatch",
        "InputType",
        "CSVDelimeter",
        "OutputType",
    }


def test_misplaced_fields_and_rules_between_fields() -> None:
    definition = distributed_map(BatchInput={"a": 1}, ItemBatcher={"BatchInput": {"b": 2}})
    state = the_map(definition)
    state["ItemReader"]["ReaderConfig"] = {"InputType": "CSV", "CSVHeaderLocation": "GIVEN"}
    found = {p.path: p.message for p in check_asl(definition)}
    prefix = "States.ProcessItems"
    assert found[f"{prefix}.BatchInput"] == "belongs inside ItemBatcher"
    assert found[f"{prefix}.ItemBatcher"].startswith("needs MaxItemsPerBatch")
    assert found[f"{prefix}.ItemReader.ReaderConfig.CSVHeaders"].startswith("required when")

    flatten = distributed_map()
    the_map(flatten)["ItemReader"]["ReaderConfig"]["Transformation"] = "LOAD_AND_FLATTEN"
    (problem,) = check_asl(flatten)
    assert problem.message == "LOAD_AND_FLATTEN needs s3:listObjectsV2"

    inline = distributed_map()
    the_map(inline)["ItemProcessor"]["ProcessorConfig"] = {"Mode": "INLINE"}
    paths = {p.path for p in check_asl(inline)}
    assert {f"{prefix}.ItemReader", f"{prefix}.ResultWriter"} <= paths

    too_big = distributed_map(ItemBatcher={"MaxInputBytesPerBatch": 300_000})
    (problem,) = check_asl(too_big)
    assert problem.message == "must be at most 262,144"


def test_nested_maps_are_checked_with_their_full_path() -> None:
    outer = {
        "StartAt": "Outer",
        "States": {
            "Outer": {
                "Type": "Parallel",
                "Branches": [distributed_map(ItemBatcher={"MaxItemPerBatch": 2})],
                "End": True,
            }
        },
    }
    inner = "States.Outer.Branches.0.States.ProcessItems.ItemBatcher"
    assert [(p.path, p.suggestion) for p in check_asl(outer)] == [
        (f"{inner}.MaxItemPerBatch", "MaxItemsPerBatch"),
        (inner, None),  # needs MaxItemsPerBatch or ...
    ]


def test_local_only_settings_are_warnings() -> None:
    spec = MapSpec.from_dict(
        {
            "Worker": "echo",
            "Source": "local-folder/",
            "ItemReader": {"Resource": "arn:aws:states:::s3:listObjectsV2"},
            "ItemBatcher": {
                "MaxItemsPerBatch": 5,
                "BatchInput": {"Dest.$": "$$.Shardmap.Destination"},
            },
            "ResultWriter": {"Destination": "local-results"},
        }
    )
    problems = check_asl(spec.to_asl())
    assert errors_only(problems) == []
    assert [p.path for p in problems] == [
        "States.Map.ItemReader.Parameters",
        "States.Map.ResultWriter.Parameters",
        "States.Map.ItemBatcher.BatchInput.Dest.$",
    ]
    assert all(isinstance(p, Problem) and p.severity == "warning" for p in problems)


# -- the reduce step ---------------------------------------------------------------------------


def _reduce_spec(**fields: Any) -> MapSpec:
    data = {
        "Name": "totals",
        "Worker": "echo",
        "Reduce": f"{W}:total_of_outputs",
        "Source": "s3://data/in/items.jsonl",
        "ItemReader": {"ReaderConfig": {"InputType": "JSONL"}},
        "ItemBatcher": {"MaxItemsPerBatch": 10},
        "ResultWriter": {"Destination": "s3://data/results"},
    }
    data.update(fields)
    return MapSpec.from_dict(data)


@needs_validator
def test_the_reduce_step_is_a_task_after_the_map_getting_its_writer_output() -> None:
    spec = _reduce_spec()
    definition = spec.to_asl(function_arn=WORKER_ARN, reduce_arn=REDUCE_ARN)
    assert definition["StartAt"] == "Map"
    state = definition["States"]["Map"]
    assert state["Next"] == "Reduce" and "End" not in state
    assert state["ResultWriter"]["Parameters"] == {"Bucket": "data", "Prefix": "results"}
    reduce = definition["States"]["Reduce"]
    assert reduce["Type"] == "Task" and reduce["End"] is True
    assert reduce["Resource"] == "arn:aws:states:::lambda:invoke"
    # The Map state's whole output, {"MapRunArn", "ResultWriterDetails": {"Bucket", "Key"}}.
    assert reduce["Parameters"] == {"FunctionName": REDUCE_ARN, "Payload.$": "$"}
    assert reduce["OutputPath"] == "$.Payload"
    assert asl_validator(definition) == [] and check_asl(definition) == []
    # without an ARN: a placeholder, like the worker's
    placeholder = spec.to_asl()["States"]["Reduce"]["Parameters"]["FunctionName"]
    assert placeholder == lambda_arn(spec.reduce)


def test_the_reduce_task_maps_back_to_reduce_through_resources(caplog) -> None:
    spec = _reduce_spec()
    definition = spec.to_asl(function_arn=WORKER_ARN, reduce_arn=REDUCE_ARN)
    both = {WORKER_ARN: "echo", REDUCE_ARN: spec.reduce}
    back = MapSpec.from_asl(definition, resources=both)
    assert back.reduce == spec.reduce and back.worker == "echo"
    assert back.to_asl(function_arn=WORKER_ARN, reduce_arn=REDUCE_ARN) == definition
    # a qualified ARN maps like its function
    definition["States"]["Reduce"]["Parameters"]["FunctionName"] = f"{REDUCE_ARN}:$LATEST"
    assert MapSpec.from_asl(definition, resources=both).reduce == spec.reduce
    with caplog.at_level(logging.WARNING, logger="runner.asl"):
        unmapped = MapSpec.from_asl(definition, resources={WORKER_ARN: "echo"})
    assert unmapped.reduce is None
    assert "--resource ARN=REDUCER" in caplog.text


def test_reduce_arn_needs_a_reduce_step() -> None:
    with pytest.raises(SpecError, match="no Reduce"):
        _reduce_spec(Reduce=None).to_asl(reduce_arn=REDUCE_ARN)
    assert "Reduce" not in _reduce_spec(Reduce=None).to_asl()["States"]


def test_a_hand_written_reduce_runs_locally(tmp_path: Path) -> None:
    source = _jsonl(tmp_path / "items.jsonl", [{"n": n} for n in range(40)])
    definition = distributed_map(ItemBatcher={"MaxItemsPerBatch": 10})
    definition["States"]["ProcessItems"].pop("End")
    definition["States"]["ProcessItems"]["Next"] = "SumUp"
    definition["States"]["SumUp"] = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": REDUCE_ARN, "Payload.$": "$"},
        "End": True,
    }
    resources = {WORKER_ARN: f"{W}:slow_double", REDUCE_ARN: f"{W}:total_of_outputs"}
    spec = MapSpec.from_asl(definition, resources=resources)
    result = run(spec, source=source, dest=str(tmp_path / "out"), executor="inline")
    assert result.succeeded and result.reduce is not None
    assert result.reduce.output["sum"] == sum(2 * n for n in range(40))


# -- CLI: shardmap asl, shardmap cost ----------------------------------------------------------


def test_asl_command_prints_the_state_machine() -> None:
    pipeline = str(ROOT / "pipelines" / "demo.yaml")
    result = invoke("asl", pipeline, "--function-arn", WORKER_ARN)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == MapSpec.from_yaml(pipeline).to_asl(function_arn=WORKER_ARN)
    task = printed["States"]["Map"]["ItemProcessor"]["States"]["Worker"]
    assert task["Parameters"]["FunctionName"] == WORKER_ARN


@needs_validator
@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_asl_check_passes_for_every_pipeline(path: Path) -> None:
    result = invoke("asl", str(path), "--check")
    assert result.exit_code == 0, result.output
    assert "asl-validator and strict checks passed" in result.stderr
    assert "error:" not in result.stderr
    json.loads(result.stdout)


@needs_validator
def test_asl_check_fails_with_the_problems(tmp_path: Path) -> None:
    definition = distributed_map(ItemBatcher={"MaxItemPerBatch": 3})
    path = tmp_path / "machine.json"
    path.write_text(json.dumps(definition))
    result = invoke("asl", str(path), "--check")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == definition
    assert (
        "error: States.ProcessItems.ItemBatcher.MaxItemPerBatch: unknown field "
        "(did you mean MaxItemsPerBatch?) [shardmap]" in result.stderr
    )
    assert "ItemBatcher: needs MaxItemsPerBatch or MaxInputBytesPerBatch" in result.stderr
    assert "2 error(s)" in result.stderr
    usage = invoke("asl", str(path), "--function-arn", WORKER_ARN)
    assert usage.exit_code == 2 and "apply to pipeline files" in usage.stderr


def test_asl_command_reduce_arn(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("Worker: echo\nReduce: total\nResultWriter: {Destination: s3://b/r}\n")
    result = invoke("asl", str(pipeline), "--reduce-arn", REDUCE_ARN)
    assert result.exit_code == 0, result.output
    reduce = json.loads(result.stdout)["States"]["Reduce"]
    assert reduce["Parameters"]["FunctionName"] == REDUCE_ARN
    bad = invoke("asl", str(ROOT / "pipelines" / "demo.yaml"), "--reduce-arn", REDUCE_ARN)
    assert bad.exit_code == 2 and "no Reduce" in bad.stderr


def test_cost_command_uses_the_report_model() -> None:
    pipeline = str(ROOT / "pipelines" / "demo.yaml")  # 100 items per batch, STANDARD
    args = ["cost", pipeline, "--items", "1130", "--seconds-per-batch", "2.5", "--memory-mb", "512"]
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    expected = estimate_for_items(MapSpec.from_yaml(pipeline), 1130, 2.5, 512)
    assert data["cost"]["children"] == expected.children == 12
    assert data["cost"]["standard_lambda_usd"] == pytest.approx(expected.standard_lambda_usd)
    assert data["cost"]["express_lambda_usd"] == pytest.approx(expected.express_lambda_usd)
    assert data["execution_type"] == "STANDARD" and data["items"] == 1130

    text = invoke(*args)
    assert text.exit_code == 0, text.output
    assert "1,130 items in 12 child executions" in text.stdout
    assert "Standard + Lambda" in text.stdout and "this pipeline's ExecutionType" in text.stdout
    assert "36 state transitions" in text.stdout  # 3 per child


def test_cost_command_needs_a_batch_size_for_byte_batching(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("Worker: echo\nItemBatcher: {MaxInputBytesPerBatch: 4096}\n")
    result = invoke("cost", str(pipeline), "--items", "1000")
    assert result.exit_code == 2 and "--items-per-batch" in result.stderr
    result = invoke("cost", str(pipeline), "--items", "1000", "--items-per-batch", "50", "--json")
    assert json.loads(result.stdout)["cost"]["children"] == 20


# -- hand-written ASL runs locally as its pipeline-file twin -----------------------------------


def _jsonl(path: Path, items: list[Any]) -> str:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return str(path)


def _twin(definition: dict[str, Any], worker: str, source: str, dest: str) -> MapSpec:
    """The pipeline-file form of ``definition``, written by hand from the same settings."""
    state = the_map(definition)
    data: dict[str, Any] = {
        "Name": "twin",
        "Worker": worker,
        "Source": source,
        "ItemReader": {"ReaderConfig": state["ItemReader"]["ReaderConfig"]},
        "ResultWriter": {"Destination": dest},
    }
    for key in ("ItemBatcher", "MaxConcurrency", "ToleratedFailurePercentage",
                "ToleratedFailureCount"):  # fmt: skip
        if key in state:
            data[key] = state[key]
    if "WriterConfig" in state["ResultWriter"]:
        data["ResultWriter"]["WriterConfig"] = state["ResultWriter"]["WriterConfig"]
    return MapSpec.from_dict(data)


def _records(manifest_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Result records by kind, without what differs between runs (ARNs, dates, run ids)."""
    with fsspec.open(manifest_url) as f:
        manifest = json.load(f)
    base = manifest_url.rsplit("/", 1)[0]
    out: dict[str, list[tuple[Any, ...]]] = {}
    for kind, entries in manifest["ResultFiles"].items():
        rows = []
        for entry in entries:
            name = entry["Key"].rsplit("/", 1)[1]
            with fsspec.open(f"{base}/{name}") as f:
                text = f.read().decode()
            values = (
                json.loads(text)
                if text.lstrip().startswith("[")
                else [json.loads(line) for line in text.splitlines() if line]
            )
            for value in values:
                if isinstance(value, dict) and "Status" in value:
                    rows.append(
                        (
                            name,
                            value["Name"].split("-", 1)[1],  # b<batch>-i<first>-n<count>
                            value["Status"],
                            value.get("Input"),
                            value.get("Output"),
                            value.get("Error"),
                        )
                    )
                else:  # COMPACT / FLATTEN: outputs only
                    rows.append((name, json.dumps(value)))
        out[kind] = sorted(rows, key=str)
    return out


def _run_both(
    tmp_path: Path, definition: dict[str, Any], worker: str, items: list[Any], **options: Any
):
    """Run ``definition`` (through a JSON file, as `shardmap run machine.json` loads it) and its
    pipeline-file twin over the same items; return both results."""
    source = _jsonl(tmp_path / "items.jsonl", items)
    machine = tmp_path / "machine.asl.json"
    machine.write_text(json.dumps(definition, indent=2))
    from_file = MapSpec.load(machine, resources={WORKER_ARN: worker})
    asl = run(from_file, source=source, dest=str(tmp_path / "asl"), **options)
    yaml_spec = _twin(definition, worker, source, str(tmp_path / "yaml"))
    yaml = run(yaml_spec, **options)
    return asl, yaml


def _same_outcome(asl: Any, yaml: Any, *, exact: bool = True) -> None:
    """Same outcome and result files; ``exact=False`` for fail-fast runs, where how many
    batches ran before the threshold was crossed depends on timing: then the same batches
    (names and inputs, whatever their status) and the same failures."""
    assert (asl.status, asl.error, asl.cause) == (yaml.status, yaml.error, yaml.cause)
    if exact:
        assert asl.item_counts == yaml.item_counts
        assert asl.execution_counts == yaml.execution_counts
        assert _records(asl.manifest_url) == _records(yaml.manifest_url)
        return
    assert asl.item_counts.total == yaml.item_counts.total
    assert asl.execution_counts.total == yaml.execution_counts.total
    mine, theirs = _records(asl.manifest_url), _records(yaml.manifest_url)
    batches = {row[1]: row[3] for rows in mine.values() for row in rows}
    assert batches == {row[1]: row[3] for rows in theirs.values() for row in rows}
    failed = {row[1]: row[5] for row in mine["FAILED"] if row[2] == "FAILED"}
    other = {row[1]: row[5] for row in theirs["FAILED"] if row[2] == "FAILED"}
    both = failed.keys() & other.keys()
    assert both and {failed[name] for name in both} == {other[name] for name in both}


def _batch_sizes(manifest_url: str, kind: str = "SUCCEEDED") -> list[int]:
    rows = _records(manifest_url)[kind]
    return sorted((len(json.loads(row[3])["Items"]) for row in rows), reverse=True)


def test_asl_batching_1130_items_in_batches_of_100(tmp_path: Path) -> None:
    definition = distributed_map(ItemBatcher={"MaxItemsPerBatch": 100}, MaxConcurrency=4)
    items = [{"n": n} for n in range(1130)]
    asl, yaml = _run_both(tmp_path, definition, f"{W}:double", items, executor="threads")
    assert asl.status == RunStatus.SUCCEEDED
    assert _batch_sizes(asl.manifest_url) == [100] * 11 + [30]
    assert asl.execution_counts.succeeded == 12 and asl.item_counts.total == 1130
    _same_outcome(asl, yaml)
    frame = load_results(asl.manifest_url)
    assert list(frame["index"]) == list(range(1130))
    assert [o["double"] for o in frame["output"]] == [2 * n for n in range(1130)]


def test_asl_batching_by_bytes_with_batch_input(tmp_path: Path) -> None:
    batcher = {"MaxInputBytesPerBatch": 2048, "BatchInput": {"k": "v"}}
    definition = distributed_map(ItemBatcher=batcher)
    items = [{"n": n, "pad": "x" * (n * 7 % 300)} for n in range(300)]
    asl, yaml = _run_both(tmp_path, definition, f"{W}:double", items, executor="inline")
    assert asl.succeeded
    rows = _records(asl.manifest_url)["SUCCEEDED"]
    assert len(rows) > 1
    for row in rows:
        assert len(row[3].encode()) <= 2048
        assert json.loads(row[3])["BatchInput"] == {"k": "v"}
    _same_outcome(asl, yaml)


def _five_percent_failing() -> list[dict[str, Any]]:
    # 1,000 items in batches of 10: every 20th batch holds a failing item -> 5% of items fail.
    return [{"n": n, "fail": (n // 10) % 20 == 7 and n % 10 == 0} for n in range(1000)]


def test_asl_failures_within_the_tolerated_percentage(tmp_path: Path) -> None:
    definition = distributed_map(
        ItemBatcher={"MaxItemsPerBatch": 10}, ToleratedFailurePercentage=10
    )
    asl, yaml = _run_both(
        tmp_path, definition, f"{W}:fail_marked", _five_percent_failing(), executor="inline"
    )
    assert asl.status == RunStatus.SUCCEEDED
    assert asl.item_counts.failed == 50 and asl.item_counts.succeeded == 950
    records = _records(asl.manifest_url)
    assert {row[0] for row in records["FAILED"]} == {"FAILED_0.json"}
    assert [row[5] for row in records["FAILED"]] == ["ValueError"] * 5
    assert records["PENDING"] == []
    _same_outcome(asl, yaml)


def test_asl_exceeding_the_tolerated_percentage_fails_fast_with_pending(tmp_path: Path) -> None:
    definition = distributed_map(
        ItemBatcher={"MaxItemsPerBatch": 10}, ToleratedFailurePercentage=1, MaxConcurrency=2
    )
    asl, yaml = _run_both(
        tmp_path, definition, f"{W}:fail_marked", _five_percent_failing(), executor="inline"
    )
    assert asl.status == RunStatus.FAILED
    assert asl.error == "States.ExceedToleratedFailureThreshold"
    assert asl.cause == "The specified tolerated failure threshold was exceeded"
    records = _records(asl.manifest_url)
    assert records["PENDING"], "unstarted batches must be written as PENDING"
    assert {row[2] for row in records["PENDING"]} == {"PENDING"}
    assert {row[0] for row in records["PENDING"]} == {"PENDING_0.json"}
    frame = load_results(asl.manifest_url)
    assert sorted(frame["index"]) == list(range(1000))  # every item, exactly once
    _same_outcome(asl, yaml, exact=False)


def test_asl_tolerated_failure_count(tmp_path: Path) -> None:
    items = [{"n": n, "fail": n in (3, 17)} for n in range(40)]
    for count, status in ((2, RunStatus.SUCCEEDED), (1, RunStatus.FAILED)):
        definition = distributed_map(
            ItemBatcher={"MaxItemsPerBatch": 1}, ToleratedFailureCount=count, MaxConcurrency=1
        )
        here = tmp_path / str(count)
        here.mkdir()
        asl, yaml = _run_both(here, definition, f"{W}:fail_marked", items, executor="inline")
        assert asl.status == status
        if status == RunStatus.FAILED:
            assert asl.error == "States.ExceedToleratedFailureThreshold"
        _same_outcome(asl, yaml, exact=status == RunStatus.SUCCEEDED)


@pytest.mark.parametrize(
    ("transformation", "output_type"),
    [("NONE", "JSONL"), ("COMPACT", "JSON"), ("FLATTEN", "JSONL")],
)
def test_asl_result_writer_config(tmp_path: Path, transformation: str, output_type: str) -> None:
    definition = distributed_map(
        ItemBatcher={"MaxItemsPerBatch": 4}, ToleratedFailureCount=4, MaxConcurrency=1
    )
    writer = the_map(definition)["ResultWriter"]
    writer["WriterConfig"] = {"Transformation": transformation, "OutputType": output_type}
    items = [{"n": n, "fail": n == 9} for n in range(18)]
    asl, yaml = _run_both(tmp_path, definition, f"{W}:fail_marked", items, executor="inline")
    assert asl.status == RunStatus.SUCCEEDED
    with fsspec.open(asl.manifest_url) as f:
        manifest = json.load(f)
    assert manifest["MapRunArn"] == asl.map_run_arn
    assert manifest["DestinationBucket"] == str(tmp_path / "asl")
    files = {
        kind: [e["Key"].rsplit("/", 1)[1] for e in v] for kind, v in manifest["ResultFiles"].items()
    }
    suffix = output_type.lower()
    assert files == {
        "FAILED": [f"FAILED_0.{suffix}"],
        "PENDING": [],
        "SUCCEEDED": [f"SUCCEEDED_0.{suffix}"],
    }
    records = _records(asl.manifest_url)
    # failed records stay NONE (full records) whatever the Transformation
    assert [(row[2], row[5]) for row in records["FAILED"]] == [("FAILED", "ValueError")]
    succeeded = records["SUCCEEDED"]
    if transformation == "NONE":
        assert len(succeeded) == 4 and all(row[2] == "SUCCEEDED" for row in succeeded)
    elif transformation == "COMPACT":
        assert len(succeeded) == 4 and all(len(row) == 2 for row in succeeded)
    else:  # FLATTEN: one value per item of the succeeded batches
        assert sorted(json.loads(row[1]) for row in succeeded) == [
            n for n in range(18) if n // 4 != 2
        ]
    _same_outcome(asl, yaml)


def test_asl_runs_on_s3_as_written(s3_server, s3_client, bucket: str) -> None:
    # No overrides: items and results where the definition's Parameters say.
    body = "".join(json.dumps({"n": n, "fail": n == 7}) + "\n" for n in range(25))
    s3_client.put_object(Bucket=bucket, Key="input/items.jsonl", Body=body.encode())
    definition = distributed_map(ItemBatcher={"MaxItemsPerBatch": 5}, ToleratedFailureCount=5)
    state = the_map(definition)
    state["ItemReader"]["Parameters"]["Bucket"] = bucket
    state["ResultWriter"]["Parameters"]["Bucket"] = bucket
    result = run(MapSpec.from_asl(definition, resources={WORKER_ARN: f"{W}:fail_marked"}))
    assert result.status == RunStatus.SUCCEEDED
    assert result.manifest_url == f"s3://{bucket}/results/{result.run_id}/manifest.json"
    assert result.output == {
        "MapRunArn": result.map_run_arn,
        "ResultWriterDetails": {"Bucket": bucket, "Key": f"results/{result.run_id}/manifest.json"},
    }
    frame = load_results(result.manifest_url)
    assert (frame["status"] == "FAILED").sum() == 5 and len(frame) == 25


def test_shardmap_run_an_asl_file_with_resource(tmp_path: Path) -> None:
    source = _jsonl(tmp_path / "items.jsonl", _five_percent_failing())
    definition = distributed_map(
        ItemBatcher={"MaxItemsPerBatch": 10}, ToleratedFailurePercentage=10.0
    )
    machine = tmp_path / "machine.json"
    machine.write_text(json.dumps(definition))
    dest = tmp_path / "out"
    args = ["run", str(machine), "--source", source, "--dest", str(dest), "--executor", "inline"]
    result = invoke(*args, "--resource", f"{WORKER_ARN}={W}:fail_marked")
    assert result.exit_code == 0, result.output
    assert "Map Run SUCCEEDED" in result.stdout
    assert "items: 950 succeeded, 50 failed" in result.stdout
    manifest = next(
        line.split("manifest: ", 1)[1]
        for line in result.stdout.splitlines()
        if "manifest: " in line
    )
    assert {row[0] for row in _records(manifest)["FAILED"]} == {"FAILED_0.json"}
    # a threshold of 1 % fails the run: exit 1
    tight = copy.deepcopy(definition)
    the_map(tight)["ToleratedFailurePercentage"] = 1
    machine.write_text(json.dumps(tight))
    failed = invoke(*args, "--resource", f"{WORKER_ARN}={W}:fail_marked")
    assert failed.exit_code == 1
    assert "States.ExceedToleratedFailureThreshold" in failed.stdout
    missing = invoke(*args)
    assert missing.exit_code == 2 and "--resource ARN=WORKER" in missing.stderr
