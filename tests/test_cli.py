"""The shardmap command: exit codes, ad-hoc map over S3, pipelines, workers, validate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import fsspec
from click.testing import CliRunner

from runner import load_results
from runner.cli import main

ROOT = Path(__file__).parent.parent


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def manifest_from(output: str) -> str:
    return next(
        line.split("manifest: ", 1)[1] for line in output.splitlines() if "manifest: " in line
    )


def test_map_over_an_s3_prefix_with_object_stats(s3_server, bucket: str, s3_client) -> None:
    for n in range(25):
        s3_client.put_object(
            Bucket=bucket, Key=f"photos/{n:03d}.txt", Body=b"x" * n, ContentType="text/plain"
        )
    result = invoke(
        "map",
        f"s3://{bucket}/photos/",
        "--worker",
        "object-stats",
        "--dest",
        f"s3://{bucket}/results",
        "--batch-size",
        "10",
    )
    assert result.exit_code == 0, result.output
    frame = load_results(manifest_from(result.output))
    assert len(frame) == 25
    sizes = {row["Key"]: row["Size"] for row in frame["output"]}
    assert sizes["photos/007.txt"] == 7
    assert {row["ContentType"] for row in frame["output"]} == {"text/plain"}
    assert all(row["Etag"].startswith('"') for row in frame["output"])


def test_exit_codes(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"n": n, "fail": n == 5}) + "\n" for n in range(20)))
    ok = invoke(
        "map",
        str(items),
        "--worker",
        "fail-some",
        "--dest",
        str(tmp_path / "a"),
        "--batch-size",
        "5",
        "--tolerate",
        "30",
    )
    assert ok.exit_code == 0, ok.output
    failed = invoke(
        "map",
        str(items),
        "--worker",
        "fail-some",
        "--dest",
        str(tmp_path / "b"),
        "--batch-size",
        "5",
    )
    assert failed.exit_code == 1
    assert "States.ExceedToleratedFailureThreshold" in failed.output
    unknown = invoke("map", str(items), "--worker", "nope", "--dest", str(tmp_path / "c"))
    assert unknown.exit_code == 2 and "WorkerNotFound" in unknown.output
    missing = invoke(
        "map", str(tmp_path / "missing.jsonl"), "--worker", "echo", "--dest", str(tmp_path / "d")
    )
    assert missing.exit_code == 2 and "missing.jsonl" in missing.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"n": 1}\n{"n": \n')
    broken = invoke("map", str(bad), "--worker", "echo", "--dest", str(tmp_path / "e"))
    assert broken.exit_code == 2 and "line 2" in broken.output
    usage = invoke("map", str(items), "--worker", "echo", "--dest", "x", "--tolerate", "120")
    assert usage.exit_code == 2


def test_run_pipeline_with_overrides(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert invoke("sample", "demo", str(data), "--count", "120").exit_code == 0
    result = invoke(
        "run",
        str(ROOT / "pipelines/demo.yaml"),
        "--source",
        str(data),
        "--dest",
        str(tmp_path / "out"),
    )
    assert result.exit_code == 0, result.output
    frame = load_results(manifest_from(result.output))
    assert len(frame) == 120 and (frame["status"] == "SUCCEEDED").all()
    assert {o["ContentType"] for o in frame["output"]} == {
        "text/plain",
        "application/json",
        "text/csv",
    }


def test_run_an_asl_definition_with_resource_mapping(tmp_path: Path) -> None:
    items = tmp_path / "items.json"
    items.write_text(json.dumps([{"n": n} for n in range(30)]))
    machine = {
        "StartAt": "M",
        "States": {
            "M": {
                "Type": "Map",
                "ItemReader": {
                    "Resource": "arn:aws:states:::s3:getObject",
                    "ReaderConfig": {"InputType": "JSON"},
                },
                "ItemBatcher": {"MaxItemsPerBatch": 7},
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": "T",
                    "States": {
                        "T": {
                            "Type": "Task",
                            "Resource": "arn:aws:lambda:us-east-1:1:function:echo",
                            "End": True,
                        }
                    },
                },
                "End": True,
            }
        },
    }
    path = tmp_path / "machine.json"
    path.write_text(json.dumps(machine))
    result = invoke(
        "run",
        str(path),
        "--source",
        str(items),
        "--dest",
        str(tmp_path / "out"),
        "--resource",
        "arn:aws:lambda:us-east-1:1:function:echo=echo",
    )
    assert result.exit_code == 0, result.output
    assert list(load_results(manifest_from(result.output))["output"]) == [
        {"n": n} for n in range(30)
    ]


def test_workers_and_validate() -> None:
    listed = invoke("workers")
    assert "object-stats" in listed.output and "echo" in listed.output
    valid = invoke("validate", str(ROOT / "pipelines/demo.yaml"), "--asl")
    assert valid.exit_code == 0 and '"Mode": "DISTRIBUTED"' in valid.output


def test_validate_reports_typos(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("Worker: echo\nItemBatcher:\n  MaxItemPerBatch: 4\n")
    result = invoke("validate", str(bad))
    assert result.exit_code == 2
    assert "SpecError: ItemBatcher.MaxItemPerBatch: unknown field" in result.output


def test_console_script_prints_plain_progress_and_summary(tmp_path: Path) -> None:
    items = tmp_path / "items.csv"
    with fsspec.open(str(items), "w") as f:
        f.write("n,name\n" + "".join(f"{n},item{n}\n" for n in range(50)))
    shardmap = Path(sys.executable).parent / "shardmap"
    done = subprocess.run(
        [
            str(shardmap),
            "map",
            str(items),
            "--worker",
            "echo",
            "--dest",
            str(tmp_path / "out"),
            "--batch-size",
            "10",
        ],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Map Run SUCCEEDED" in done.stdout and "50 succeeded" in done.stdout
    frame = load_results(manifest_from(done.stdout))
    assert frame["output"][3] == {"n": "3", "name": "item3"}  # CSV fields stay strings (AWS)
