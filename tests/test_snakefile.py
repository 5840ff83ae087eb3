"""The top-level Snakefile, run end to end by ``snakemake -c2`` in a temporary working directory:
locally, on S3 (SeaweedFS) through snakemake-storage-plugin-s3, and with a corrupt sample."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner import load_results
from tests.s3server import ACCESS_KEY, SECRET_KEY

ROOT = Path(__file__).parent.parent
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
STEPS = ("qc", "map", "sort", "index", "call")


def snakemake(workdir: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run snakemake on the repository's Snakefile in ``workdir``; its output (it must pass)."""
    done = subprocess.run(
        [str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "-c2", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    return output


def test_the_dag_of_every_workload(tmp_path: Path) -> None:
    out = snakemake(tmp_path, "-n", "all", "--quiet", "rules")
    for rule, jobs in [("sample", 4), ("run", 5), ("genomics_step", 5), ("genomics_report", 1)]:
        assert any(line.split() == [rule, str(jobs)] for line in out.splitlines()), out


@pytest.mark.slow
def test_demo_and_genomics_on_local_files(tmp_path: Path, state_dir: Path) -> None:
    small = ("--config", "demo={count: 150}")
    out = snakemake(tmp_path, "demo", "genomics", *small)
    base = tmp_path / "snakemake-out"
    demo = load_results(str(base / "results/smk-demo/manifest.json"))
    assert len(demo) == 150 and set(demo.status) == {"SUCCEEDED"}
    for step in STEPS:
        frame = load_results(str(base / f"results/smk-genomics-{step}/manifest.json"))
        assert set(frame.status) == {"SUCCEEDED"} and len(frame) == 4, step
    for sample in ("sample01", "sample04"):
        assert (base / f"results/genomics/{sample}/calls.vcf.gz").stat().st_size > 0
    report = json.loads((base / "reports/genomics/report.json").read_text())
    assert report["failed"] == []
    assert report["overall"]["recall"] >= 0.9, report["overall"]
    assert report["overall"]["precision"] >= 0.9, report["overall"]
    for figure in ("qc.png", "variants.png"):
        assert (base / "reports/genomics" / figure).read_bytes().startswith(b"\x89PNG")
    assert "recall" in out
    # The runs are journaled under $SHARDMAP_STATE_DIR (conftest), by their fixed ids.
    journals = {path.stem for path in (state_dir / "runs").glob("*.sqlite")}
    assert {"smk-demo", *(f"smk-genomics-{step}" for step in STEPS)} <= journals

    assert "Nothing to be done" in snakemake(tmp_path, "demo", "genomics", *small)
    # A rerun takes the same run id: the earlier journal and results make way.
    results = base / "results/smk-demo/SUCCEEDED_0.json"
    first = results.read_text()
    snakemake(tmp_path, "demo", "--forcerun", "run", *small)
    assert results.read_text() != first  # the records' dates
    assert len(load_results(str(base / "results/smk-demo/manifest.json"))) == 150


@pytest.mark.slow
def test_inputs_and_outputs_on_s3(tmp_path: Path, s3_server, s3_client, bucket: str) -> None:
    # The plugin gets its endpoint on the command line and its keys from its own variables
    # (Snakemake logs its command line); no AWS_* variable is set. The Snakefile hands both to
    # the shardmap runs, which otherwise would not find the server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "SNAKEMAKE_STORAGE_S3_ACCESS_KEY": ACCESS_KEY,
        "SNAKEMAKE_STORAGE_S3_SECRET_KEY": SECRET_KEY,
    }
    out = snakemake(
        tmp_path,
        "demo",
        "genomics",
        "--config",
        f"base=s3://{bucket}/cohort",
        "demo={count: 60}",
        "--default-storage-provider",
        "s3",
        "--storage-s3-endpoint-url",
        s3_server.endpoint_url,
        env=env,
    )
    logs = "".join(path.read_text() for path in (tmp_path / ".snakemake/log").glob("*.log"))
    assert SECRET_KEY not in out + logs
    keys = {
        item["Key"]
        for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for item in page.get("Contents", ())
    }
    expected = {
        "cohort/samples/demo.json",
        "cohort/samples/genomics.json",
        "cohort/data/genomics/samples.csv",
        "cohort/data/genomics/reads/sample01_1.fq.gz",
        "cohort/results/smk-demo/manifest.json",
        "cohort/results/genomics/sample01/sorted.bam.bai",
        "cohort/results/genomics/sample04/calls.vcf.gz",
        "cohort/reports/genomics/report.json",
        "cohort/reports/genomics/qc.png",
        *(f"cohort/results/smk-genomics-{step}/manifest.json" for step in STEPS),
    }
    assert expected <= keys, sorted(expected - keys)
    assert sum(key.startswith("cohort/data/demo/") for key in keys) == 60
    # Snakemake neither downloaded nor uploaded anything: the jobs used the bucket directly.
    assert not (tmp_path / "snakemake-out").exists()
    assert not [p for p in (tmp_path / ".snakemake/storage").rglob("*") if p.is_file()]
    body = s3_client.get_object(Bucket=bucket, Key="cohort/reports/genomics/report.json")["Body"]
    report = json.loads(body.read())
    assert report["overall"]["recall"] >= 0.9 and report["overall"]["precision"] >= 0.9


@pytest.mark.slow
def test_a_corrupt_sample_fails_and_the_others_finish(tmp_path: Path) -> None:
    snakemake(tmp_path, "genomics", "--config", "genomics={count: 2, corrupt: true}")
    base = tmp_path / "snakemake-out"
    summary = json.loads((base / "samples/genomics.json").read_text())
    broken = summary["corrupt"]["sample"]
    assert broken == "sample03"
    for step in STEPS:  # pipelines/genomics.yaml tolerates one failed sample
        frame = load_results(str(base / f"results/smk-genomics-{step}/manifest.json"))
        status = {row.item["sample"]: row.status for row in frame.itertuples()}
        assert status == {"sample01": "SUCCEEDED", "sample02": "SUCCEEDED", broken: "FAILED"}
    assert (base / "results/smk-genomics-qc/FAILED_0.json").exists()
    report = json.loads((base / "reports/genomics/report.json").read_text())
    [failed] = report["failed"]
    assert failed["sample"] == broken and failed["run"] == "smk-genomics-qc"
    assert failed["error"] == "Genomics.BadFastq"
    assert summary["corrupt"]["file"] in failed["cause"]
    assert report["overall"]["recall"] >= 0.9 and report["overall"]["precision"] >= 0.9
