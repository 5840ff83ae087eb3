"""The Step Functions backend against moto's server: deploy, start, follow, results, policy.

What moto 5.2.5 can do, with ``execute_state_machine`` on (its ASL interpreter) and the
Docker-free ("simple") Lambda backend:

- IAM, STS, Lambda and S3 as far as deploy needs them (create/get/update).
- Parse and run a Distributed Map *without* ItemBatcher and *without* ResultWriter.WriterConfig
  (it rejects both at CreateStateMachine), reading JSON/CSV items with ItemReader.
- ListMapRuns / DescribeMapRun with item and execution counts, ResultWriterDetails in the
  Map state's output and an (empty) manifest.json where the ResultWriter points.

What it cannot do: run our Lambda code (the simple backend echoes each invocation's payload, so
the worker never runs; its outputs are the child inputs), write result files (the manifest lists
none), enforce tolerated-failure thresholds, or RedriveExecution (not implemented). Those parts
are tested against AWS's documented shapes instead (a stubbed client, the handler tests).
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from click.testing import CliRunner

from runner import MapSpec, SpecError, load_results
from runner.aws import deploy as deploy_module
from runner.aws import stepfunctions
from runner.aws.deploy import deploy, package, policy_for, resource_names
from runner.cli import main
from tests.motoserver import moto_api
from tests.motoserver import moto_server as start_moto

REGION = "us-east-1"
ITEMS = [{"n": n} for n in range(5)]


@pytest.fixture(scope="module")
def moto_server():
    with start_moto() as url:
        yield url


@pytest.fixture
def aws(moto_server, monkeypatch, s3fs_clear_cache):
    """A fresh moto account, with state machines executed and Lambda without Docker."""
    moto_api(f"{moto_server}/moto-api/reset", {})
    moto_api(
        f"{moto_server}/moto-api/config",
        {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}},
    )
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="data")
    s3.put_object(Bucket="data", Key="in/items.json", Body=json.dumps(ITEMS).encode())
    return s3


def _spec(**extra: Any) -> MapSpec:
    data: dict[str, Any] = {
        "Name": "moto-map",
        "Worker": "echo",
        "Source": "s3://data/in/items.json",
        "MaxConcurrency": 2,
        "ResultWriter": {"Destination": "s3://data/results"},
    }
    data.update(extra)
    return MapSpec.from_dict(data)


def moto_compatible(definition: dict[str, Any]) -> dict[str, Any]:
    """Drop ResultWriter.WriterConfig, which moto's ASL parser rejects (AWS requires nothing
    else of it: NONE/JSON are AWS's defaults)."""
    definition = json.loads(json.dumps(definition))
    for state in definition["States"].values():
        if state.get("Type") == "Map":
            state.get("ResultWriter", {}).pop("WriterConfig", None)
    return definition


# -- deploy ------------------------------------------------------------------------------------


@pytest.fixture
def frozen_code(monkeypatch):
    """The package as it is now: other work may edit the tree while a test deploys twice."""
    code = package()
    monkeypatch.setattr(deploy_module, "package", lambda: code)
    return code


def test_deploy_creates_everything_then_is_idempotent(aws, frozen_code):
    first = deploy(_spec(), name="moto-map", adapt=moto_compatible)
    names = resource_names("moto-map")
    assert sorted(first.actions) == sorted(
        [
            f"created role {names.lambda_role}",
            f"put policy of role {names.lambda_role}",
            f"created function {names.function}",
            f"created role {names.states_role}",
            f"put policy of role {names.states_role}",
            "created state machine moto-map",
        ]
    )
    assert first.state_machine_arn == (
        f"arn:aws:states:{REGION}:123456789012:stateMachine:moto-map"
    )
    again = deploy(_spec(), name="moto-map", adapt=moto_compatible)
    assert again.actions == ()
    assert again.function_arn == first.function_arn

    changed = deploy(_spec(MaxConcurrency=3), name="moto-map", adapt=moto_compatible)
    assert changed.actions == ("updated state machine moto-map",)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    deployed = json.loads(
        sfn.describe_state_machine(stateMachineArn=first.state_machine_arn)["definition"]
    )
    assert deployed["States"]["Map"]["MaxConcurrency"] == 3

    lam = boto3.client("lambda", region_name=REGION)
    config = lam.get_function_configuration(FunctionName=names.function)
    assert config["Handler"] == "runner.aws.handler.lambda_handler"
    assert config["Environment"]["Variables"] == {"SHARDMAP_WORKER": "echo"}
    iam = boto3.client("iam", region_name=REGION)
    granted = iam.get_role_policy(RoleName=names.states_role, PolicyName="shardmap")
    assert granted["PolicyDocument"] == policy_for(
        changed.definition, state_machine_arn=changed.state_machine_arn
    )
    trust = iam.get_role(RoleName=names.states_role)["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "states.amazonaws.com"}


def test_deploy_updates_the_function_when_the_worker_changes(aws, frozen_code, monkeypatch):
    deploy(_spec(), name="moto-map", adapt=moto_compatible)
    changed = deploy(_spec(Worker="fail-some"), name="moto-map", adapt=moto_compatible)
    assert changed.actions == (
        f"updated configuration of function {resource_names('moto-map').function}",
    )
    monkeypatch.setattr(deploy_module, "package", lambda: frozen_code + b"\0")
    recoded = deploy(_spec(Worker="fail-some"), name="moto-map", adapt=moto_compatible)
    assert recoded.actions == (f"updated code of function {resource_names('moto-map').function}",)


def test_package_holds_the_code_and_the_worker_registry():
    import io
    import zipfile

    data = package()
    assert package() == data  # deterministic: an unchanged tree is not redeployed
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "runner/aws/handler.py" in names and "workers/basic.py" in names
    assert "pipelines/demo.yaml" in names
    assert any(name.endswith(".dist-info/entry_points.txt") for name in names)
    assert not any("__pycache__" in name for name in names)


def test_local_source_or_destination_cannot_be_deployed():
    with pytest.raises(SpecError, match="reads items from S3"):
        deploy(_spec(Source="data/items.json"), name="x", region=REGION)
    with pytest.raises(SpecError, match="writes to S3"):
        deploy(_spec(ResultWriter={"Destination": "out"}), name="x", region=REGION)
    unknown = {"MaxItemsPerBatch": 2, "BatchInput": {"To.$": "$$.Shardmap.Elsewhere"}}
    with pytest.raises(SpecError, match=r"BatchInput.To.\$: \$\$.Shardmap.Elsewhere"):
        deploy(_spec(ItemBatcher=unknown), name="x", region=REGION)


def test_shardmap_context_paths_become_what_aws_knows():
    """Pipelines send workers $$.Shardmap.Source/Destination; AWS has no such context."""
    from runner.aws.deploy import aws_spec

    batcher = {
        "MaxItemsPerBatch": 2,
        "BatchInput": {
            "Dest.$": "$$.Shardmap.Destination",
            "Base.$": "$$.Shardmap.Source",
            "Run.$": "$$.Shardmap.RunId",
            "Date.$": "$.date",
        },
    }
    spec = aws_spec(_spec(ItemBatcher=batcher))
    assert spec.item_batcher is not None
    assert spec.item_batcher.batch_input == {
        "Dest": "s3://data/results",
        "Base": "s3://data/in/items.json",
        "Run.$": "$$.Execution.Name",
        "Date.$": "$.date",
    }


def test_moto_rejects_item_batcher_and_writer_config(aws):
    """The gap, pinned: if moto learns these, the adapt= workaround can go."""
    spec = _spec(ItemBatcher={"MaxItemsPerBatch": 2})
    with pytest.raises(Exception, match="ItemBatcher"):
        deploy(spec, name="batched")
    with pytest.raises(Exception, match="WriterConfig"):
        deploy(_spec(), name="with-writer-config")


# -- run -----------------------------------------------------------------------------------


def test_start_follow_and_read_results(aws):
    deployment = deploy(_spec(), name="moto-map", adapt=moto_compatible)
    execution_arn = stepfunctions.start(deployment)
    snapshots = list(stepfunctions.follow(execution_arn, interval=0.2, timeout=60))
    final = snapshots[-1]
    assert final.done and final.status == "SUCCEEDED"
    assert final.map_run is not None
    assert final.map_run["itemCounts"]["succeeded"] == len(ITEMS)
    progress = final.progress()
    assert progress.executor == "stepfunctions"
    assert progress.items.succeeded == progress.items.total == len(ITEMS)

    result = stepfunctions.result(execution_arn)
    assert result.succeeded
    assert result.item_counts.succeeded == len(ITEMS)
    assert result.execution_counts.total == len(ITEMS)
    assert result.map_run_arn.startswith("arn:aws:states:us-east-1:123456789012:mapRun:moto-map/")
    assert result.manifest_url == f"s3://data/results/{result.run_id}/manifest.json"
    manifest = json.loads(
        aws.get_object(Bucket="data", Key=f"results/{result.run_id}/manifest.json")["Body"].read()
    )
    assert manifest["MapRunArn"] == result.map_run_arn
    frame = load_results(result.manifest_url)  # moto lists no result files: no rows
    assert frame.empty
    assert result.output == {
        "MapRunArn": result.map_run_arn,
        "ResultWriterDetails": {"Bucket": "data", "Key": f"results/{result.run_id}/manifest.json"},
    }


def with_reduce_task(definition: dict[str, Any]) -> dict[str, Any]:
    """moto's form of the pipeline with a reduce Task after the Map (its Lambda echoes)."""
    definition = moto_compatible(definition)
    task = definition["States"]["Map"]["ItemProcessor"]["States"]["Worker"]
    definition["States"]["Map"].pop("End")
    definition["States"]["Map"]["Next"] = "Reduce"
    definition["States"]["Reduce"] = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": task["Parameters"]["FunctionName"], "Payload": {"sum": 10}},
        "OutputPath": "$.Payload",
        "End": True,
    }
    return definition


def test_result_finds_the_manifest_when_a_reduce_step_follows(aws):
    deployment = deploy(_spec(), name="moto-reduce", adapt=with_reduce_task)
    execution_arn = stepfunctions.start(deployment)
    result = stepfunctions.wait(execution_arn, interval=0.2, timeout=60, reduce="sum-up")
    assert result.succeeded
    assert result.reduce is not None and result.reduce.output == {"sum": 10}
    assert result.manifest_url == f"s3://data/results/{result.run_id}/manifest.json"
    assert result.item_counts.succeeded == len(ITEMS)


def test_run_deploys_starts_and_waits(aws):
    seen = []
    result = stepfunctions.run(
        _spec(), name="moto-run", on_progress=seen.append, interval=0.2, adapt=moto_compatible
    )
    assert result.succeeded and result.item_counts.succeeded == len(ITEMS)
    assert seen and seen[-1].items.succeeded == len(ITEMS)


def test_follow_falls_back_to_describe_execution_without_map_runs(monkeypatch):
    class NoMapRuns:
        calls = 0

        def describe_execution(self, executionArn):
            self.calls += 1
            return {"status": "RUNNING" if self.calls < 2 else "SUCCEEDED"}

        def list_map_runs(self, executionArn):
            from botocore.exceptions import ClientError

            raise ClientError(
                {"Error": {"Code": "UnknownOperationException", "Message": "no"}}, "ListMapRuns"
            )

    client = NoMapRuns()
    monkeypatch.setattr(stepfunctions, "_client", lambda *a: client)
    arn = "arn:aws:states:us-east-1:123456789012:execution:sm:run"
    snapshots = list(stepfunctions.follow(arn, interval=0.01))
    assert [s.status for s in snapshots] == ["RUNNING", "SUCCEEDED"]
    assert all(s.map_run is None for s in snapshots)
    assert snapshots[-1].progress().items.total == 0


def test_redrive_calls_redrive_execution(monkeypatch):
    arn = "arn:aws:states:us-east-1:123456789012:execution:moto-map:run-1"
    client = boto3.client(
        "stepfunctions", region_name=REGION, aws_access_key_id="a", aws_secret_access_key="b"
    )
    stubber = Stubber(client)
    from datetime import UTC, datetime

    when = datetime(2025, 2, 4, tzinfo=UTC)
    stubber.add_response("redrive_execution", {"redriveDate": when}, {"executionArn": arn})
    monkeypatch.setattr(stepfunctions, "_client", lambda *a: client)
    with stubber:
        assert stepfunctions.redrive(arn) == when
        stubber.assert_no_pending_responses()


def test_reduce_handler_reads_the_manifest_on_s3(aws, monkeypatch):
    """The reduce Lambda gets the Map state's output and reads the results it points at."""
    from runner.aws.handler import reduce_handler
    from runner.results import ResultWriter
    from runner.types import BatchStatus, ChildRecord

    arn = "arn:aws:states:us-east-1:123456789012:mapRun:sm/Map:run-1"
    writer = ResultWriter("s3://data/results", "run-1", arn)
    for number in range(2):
        writer.write(
            ChildRecord(
                name=f"c{number}", execution_arn=f"e{number}", state_machine_arn="sm",
                status=BatchStatus.SUCCEEDED, input={"Items": []}, first_index=number,
                item_count=1, output=[number + 1, 10],
            )
        )  # fmt: skip
    details = writer.close()
    monkeypatch.setenv("SHARDMAP_REDUCE", "tests.workers_for_tests:total_of_outputs")
    monkeypatch.setenv("SHARDMAP_BATCH_INPUT", json.dumps({"k": 1}))
    output = reduce_handler(details.map_state_output(arn), None)
    assert output == {"sum": 23, "count": 4, "dest": "s3://data/results", "batch_input": {"k": 1}}


# -- CLI -----------------------------------------------------------------------------------


def _cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_deploy_and_run_on_stepfunctions(aws, tmp_path, frozen_code):
    # Without ItemBatcher and ResultWriter the generated definition is one moto parses as is.
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        "Name: cli-map\nWorker: echo\nSource: s3://data/in/items.json\nMaxConcurrency: 2\n"
    )
    done = _cli("deploy", str(pipeline), "--name", "cli-map", "--region", REGION)
    assert done.exit_code == 0, done.output
    assert "arn:aws:states:us-east-1:123456789012:stateMachine:cli-map" in done.output
    again = _cli("deploy", str(pipeline), "--name", "cli-map", "--region", REGION)
    assert "up to date" in again.output

    ran = _cli(
        "run", str(pipeline), "--executor", "stepfunctions", "--name", "cli-map",
        "--region", REGION,
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    assert "Map Run SUCCEEDED" in ran.output
    assert f"{len(ITEMS)} succeeded" in ran.output


def test_cli_redrive_takes_an_execution_arn(monkeypatch):
    """An ARN is redriven on AWS (RedriveExecution, which moto lacks) and followed."""
    from datetime import UTC, datetime

    from runner import Counts, MapRunResult, RunStatus

    arn = "arn:aws:states:us-east-1:123456789012:execution:cli-map:run-1"
    calls = []
    now = datetime.now(UTC)
    finished = MapRunResult(
        run_id="r", map_run_arn="arn:aws:states:us-east-1:123456789012:mapRun:cli-map/Map:r",
        status=RunStatus.SUCCEEDED, item_counts=Counts(succeeded=5, total=5),
        execution_counts=Counts(succeeded=5, total=5), manifest_url=None, output=None,
        start_date=now, stop_date=now,
    )  # fmt: skip
    monkeypatch.setattr(
        stepfunctions, "redrive", lambda execution_arn: calls.append(("redrive", execution_arn))
    )
    monkeypatch.setattr(
        stepfunctions,
        "wait",
        lambda execution_arn, **kw: calls.append(("wait", execution_arn)) or finished,
    )
    done = _cli("redrive", arn)
    assert done.exit_code == 0, done.output
    assert calls == [("redrive", arn), ("wait", arn)]
    assert "Map Run SUCCEEDED" in done.output


# -- the IAM policy ------------------------------------------------------------------------


def _granted(policy: dict[str, Any], action: str, resource: str, prefix: str | None = None) -> bool:
    for statement in policy["Statement"]:
        if statement["Effect"] != "Allow" or action not in statement["Action"]:
            continue
        if not any(fnmatch.fnmatchcase(resource, pattern) for pattern in statement["Resource"]):
            continue
        condition = statement.get("Condition")
        if condition is None:
            return True
        allowed = condition["StringLike"]["s3:prefix"]
        if prefix is not None and any(fnmatch.fnmatchcase(prefix, p) for p in allowed):
            return True
    return False


def _needs(definition: dict[str, Any], machine: str) -> list[tuple[str, str, str | None]]:
    """What running ``definition`` calls, read off the definition itself."""
    account_part = machine.split(":stateMachine:")[0]
    name = machine.rsplit(":", 1)[1]
    child = f"{account_part}:execution:{name}/Map:0b6a7c1e-1111-2222-3333-444455556666"
    needs: list[tuple[str, str, str | None]] = [
        ("states:StartExecution", machine, None),
        ("states:DescribeExecution", child, None),
        ("states:StopExecution", child, None),
        ("states:RedriveExecution", child, None),
    ]
    for state in definition["States"].values():
        if state["Type"] == "Task":
            needs.append(("lambda:InvokeFunction", state["Parameters"]["FunctionName"], None))
        if state["Type"] != "Map":
            continue
        for task in state["ItemProcessor"]["States"].values():
            function = task["Parameters"]["FunctionName"]
            needs += [("lambda:InvokeFunction", function, None),
                      ("lambda:InvokeFunction", f"{function}:$LATEST", None)]  # fmt: skip
        reader = state["ItemReader"]
        params = reader["Parameters"]
        if reader["Resource"].endswith("listObjectsV2"):
            needs.append(("s3:ListBucket", f"arn:aws:s3:::{params['Bucket']}", params["Prefix"]))
        else:
            needs.append(("s3:GetObject", f"arn:aws:s3:::{params['Bucket']}/{params['Key']}", None))
        writer = state["ResultWriter"]["Parameters"]
        key = f"{writer['Prefix']}/0b6a7c1e/manifest.json"
        needs += [("s3:PutObject", f"arn:aws:s3:::{writer['Bucket']}/{key}", None)]
    return needs


@pytest.mark.parametrize(
    "source",
    ["s3://data/in/items.json", "s3://data/in/", "s3://data/in/rows.csv"],
)
def test_policy_grants_what_the_definition_needs_and_no_star_action(source):
    spec = _spec(Source=source, ItemBatcher={"MaxItemsPerBatch": 2})
    from runner.aws.deploy import aws_spec

    spec = aws_spec(spec)
    function = "arn:aws:lambda:us-east-1:123456789012:function:shardmap-moto-map-worker"
    definition = spec.to_asl(function_arn=function)
    machine = "arn:aws:states:us-east-1:123456789012:stateMachine:moto-map"
    policy = policy_for(definition, state_machine_arn=machine)

    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        for action in statement["Action"]:
            assert "*" not in action, statement
    for action, resource, prefix in _needs(definition, machine):
        assert _granted(policy, action, resource, prefix), (action, resource, prefix)
    # least privilege: nothing outside the source, the destination and this machine
    assert not _granted(policy, "s3:GetObject", "arn:aws:s3:::data/secret.txt")
    assert not _granted(policy, "s3:PutObject", "arn:aws:s3:::data/in/items.json")
    assert not _granted(policy, "s3:ListBucket", "arn:aws:s3:::other", "in/")
    other_machine = machine.replace("moto-map", "other")
    assert not _granted(policy, "states:StartExecution", other_machine)
    assert not _granted(policy, "lambda:InvokeFunction", function.replace("worker", "other"))
    if source.endswith("/"):
        assert not _granted(policy, "s3:ListBucket", "arn:aws:s3:::data", "elsewhere/")


def test_policy_grants_the_reduce_function():
    function = "arn:aws:lambda:us-east-1:123456789012:function:shardmap-moto-map-worker"
    definition = with_reduce_task(_spec().to_asl(function_arn=function))
    reducer = function.replace("worker", "reduce")
    definition["States"]["Reduce"]["Parameters"]["FunctionName"] = reducer
    machine = "arn:aws:states:us-east-1:123456789012:stateMachine:moto-map"
    policy = policy_for(definition, state_machine_arn=machine)
    for action, resource, prefix in _needs(definition, machine):
        assert _granted(policy, action, resource, prefix), (action, resource, prefix)
    assert _granted(policy, "lambda:InvokeFunction", reducer)


def test_policy_needs_fixed_s3_locations_or_explicit_grants():
    definition = _spec().to_asl(function_arn="arn:aws:lambda:us-east-1:123456789012:function:f")
    reader = definition["States"]["Map"]["ItemReader"]
    reader["Parameters"] = {"Bucket": "data", "Key.$": "$.key"}
    machine = "arn:aws:states:us-east-1:123456789012:stateMachine:moto-map"
    with pytest.raises(SpecError, match="Key"):
        policy_for(definition, state_machine_arn=machine)


def test_lambda_role_grants_logs_source_and_destination():
    from runner.aws.deploy import lambda_policy_for

    policy = lambda_policy_for(
        _spec(Source="s3://data/in/"), function_names=["f"], region=REGION,
        account="123456789012", partition="aws",
    )  # fmt: skip
    assert all("*" not in a for s in policy["Statement"] for a in s["Action"])
    assert _granted(policy, "s3:GetObject", "arn:aws:s3:::data/in/a.txt")
    assert _granted(policy, "s3:PutObject", "arn:aws:s3:::data/results/thumbs/a.png")
    assert not _granted(policy, "s3:PutObject", "arn:aws:s3:::data/in/a.txt")
    group = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/f"
    assert _granted(policy, "logs:PutLogEvents", f"{group}:log-stream:x")


def test_deploy_module_imports_boto3_lazily():
    code = "import runner.aws, runner.aws.deploy, runner.aws.stepfunctions, sys; " \
        "print('boto3' in sys.modules)"  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
    assert deploy_module.HANDLER == "runner.aws.handler.lambda_handler"
