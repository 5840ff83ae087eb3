"""Genomics (workers/genomics.py, pipelines/genomics.yaml): the FASTQ checks, QC figures against
an independent count, and the pipeline on real S3 recovering the variants the generator planted
in real reads, all at once and as one run per step; a corrupt sample fails alone."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import sqlite3
import subprocess
import sys
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pysam
import pytest

from runner import MapSpec, RunStatus, WorkerError, load_results, run
from runner.registry import resolve_worker
from tests.notebooks import execute_notebook
from workers import genomics
from workers.genomics import (
    BAD_FASTQ,
    BAD_MANIFEST,
    FILES,
    INVALID_BATCH_INPUT,
    MISSING_INPUT,
    STEPS,
    BadFastq,
    Settings,
    fastq_stats,
    load_calls,
    read_fastq,
    read_pairs,
)
from workers.genomics_sample import MARGIN, SPACING, genomics_sample

ROOT = Path(__file__).parent.parent
PIPELINE = ROOT / "pipelines" / "genomics.yaml"
NOTEBOOK = ROOT / "notebooks" / "genomics.ipynb"
PLOTS = ("plot-qc", "plot-variants", "plot-recall")
SAMPLE_FILES = {name for names in FILES.values() for name in names}
RECORD = "@r{n}\nACGTN\n+\nIIII#\n"


# -- the contract the Snakefile builds on -----------------------------------------------------


def test_every_step_is_a_registered_worker_writing_its_documented_files() -> None:
    assert STEPS == tuple(FILES) == ("qc", "map", "sort", "index", "call")
    names = {f"genomics-{step}": step for step in STEPS} | {"genomics-sample": "sample"}
    for name, step in names.items():
        expected = genomics.map_reads if step == "map" else getattr(genomics, step)
        assert resolve_worker(name) is expected, name
    assert resolve_worker("genomics-reduce") is genomics.reduce
    spec = MapSpec.load(PIPELINE)
    assert (spec.worker, spec.reduce) == ("genomics-sample", "genomics-reduce")
    assert spec.item_batcher is not None and spec.item_batcher.max_items_per_batch == 1
    (not_retried, _) = spec.retry
    assert BAD_FASTQ in not_retried.error_equals and not_retried.max_attempts == 0


# -- FASTQ and settings -----------------------------------------------------------------------


def _fastq(path: Path, text: str, compress: bool = True) -> Path:
    path.write_bytes(gzip.compress(text.encode(), mtime=0) if compress else text.encode())
    return path


GOOD = "".join(RECORD.format(n=n) for n in (1, 2))
BROKEN = [  # (file text, line, record, reason)
    (GOOD + "r3\nACGT\n+\nIIII\n", 9, 3, "header does not start with '@': 'r3'"),
    (GOOD + "@r3\nACXT\n+\nIIII\n", 10, 3, "sequence has 'X' at column 3"),
    (GOOD + "@r3\nACGT\n-\nIIII\n", 11, 3, "separator line does not start with '+'"),
    (GOOD + "@r3\nACGT\n+\nIII\n", 12, 3, "quality has 3 characters, sequence 4"),
    (GOOD + "@r3\nACGT\n+\nII I\n", 12, 3, "quality has characters outside '!'..'~'"),
    (GOOD + "@r3\nACGT\n", 9, 3, "the file ends inside the record (no '+' separator line)"),
    (GOOD + "@r3\n", 9, 3, "the file ends inside the record (no sequence line)"),
    (GOOD + "@ r3\nACGT\n+\nIIII\n", 9, 3, "the header has no read name"),
]


@pytest.mark.parametrize(("text", "line", "record", "reason"), BROKEN)
def test_a_broken_fastq_names_the_file_line_record_and_reason(
    text: str, line: int, record: int, reason: str, tmp_path: Path
) -> None:
    path = _fastq(tmp_path / "x_1.fq.gz", text)
    with pytest.raises(BadFastq) as caught:
        list(read_fastq(path, "s3://bucket/reads/x_1.fq.gz"))
    error = caught.value
    assert error.error == BAD_FASTQ
    assert (error.url, error.line, error.record) == ("s3://bucket/reads/x_1.fq.gz", line, record)
    assert reason in error.reason
    assert (
        error.cause == f"s3://bucket/reads/x_1.fq.gz, line {line} (record {record}): {error.reason}"
    )
    # The error crosses process (and Dask) boundaries whole.
    assert pickle.loads(pickle.dumps(error)).cause == error.cause


def test_plain_fastq_blank_lines_and_crlf_are_read(tmp_path: Path) -> None:
    path = _fastq(tmp_path / "x.fq", GOOD.replace("\n", "\r\n") + "\n\n", compress=False)
    reads = list(read_fastq(path))
    assert [(r.name, r.sequence, r.quality, r.line) for r in reads] == [
        ("r1", "ACGTN", "IIII#", 1),
        ("r2", "ACGTN", "IIII#", 5),
    ]


def test_a_truncated_gzip_stream_is_bad_fastq_not_a_storage_error(tmp_path: Path) -> None:
    whole = gzip.compress((GOOD * 200).encode(), mtime=0)
    path = tmp_path / "x_1.fq.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BadFastq, match="the gzip stream is broken"):
        list(read_fastq(path))


def test_mates_must_match_by_name_and_count(tmp_path: Path) -> None:
    one = _fastq(tmp_path / "a_1.fq.gz", GOOD)
    renamed = _fastq(tmp_path / "a_2.fq.gz", RECORD.format(n=1) + RECORD.format(n=9))
    with pytest.raises(BadFastq) as caught:
        list(read_pairs(one, renamed))
    assert (caught.value.url, caught.value.line, caught.value.record) == (str(renamed), 5, 2)
    assert "'r9' is not the mate of 'r2'" in caught.value.reason
    short = _fastq(tmp_path / "b_2.fq.gz", RECORD.format(n=1))
    with pytest.raises(BadFastq, match="record 2 has no mate") as caught:
        list(read_pairs(one, short))
    assert caught.value.url == str(one)
    slashed = _fastq(tmp_path / "c_2.fq.gz", GOOD.replace("@r1", "@r1/2").replace("@r2", "@r2/2"))
    assert len(list(read_pairs(one, slashed))) == 2  # /1 and /2 suffixes are mates


def test_settings_refuse_typos_and_resolve_keys_against_the_manifest_folder() -> None:
    settings = Settings.from_batch_input({"Dest": "s3://b/out/", "Base": "S3://b/in/samples.csv"})
    assert (settings.dest, settings.base) == ("s3://b/out", "s3://b/in")
    assert settings.reference == "s3://b/in/reference/lambda_virus.fa"
    assert (
        Settings.from_batch_input(
            {"Dest": "out", "Base": "in", "Reference": "s3://refs/hg.fa"}
        ).reference
        == "s3://refs/hg.fa"
    )
    for batch_input, message in [
        ({"Dest": "out", "Base": "in", "Refrence": "x.fa"}, "Refrence"),
        ({"Base": "in"}, "Dest is required"),
        ({"Dest": "out"}, "Base is required"),
        ({"Dest": "out", "Base": "in", "MinQual": "20"}, "MinQual"),
    ]:
        with pytest.raises(WorkerError, match=message) as caught:
            Settings.from_batch_input(batch_input)
        assert caught.value.error == INVALID_BATCH_INPUT


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"sample": "../up", "r1": "a", "r2": "b"}, "sample name '../up' must be"),
        ({"sample": "s1", "r1": "a"}, "has no r2"),
        ("s1,a,b", "not a samples.csv row"),
    ],
)
def test_a_bad_manifest_row_fails_its_batch(item: Any, message: str, tmp_path: Path) -> None:
    event = {"BatchInput": {"Dest": str(tmp_path), "Base": str(tmp_path)}, "Items": [item]}
    with pytest.raises(WorkerError, match=message) as caught:
        genomics.qc(event)
    assert caught.value.error == BAD_MANIFEST


def test_missing_inputs_say_what_is_missing(tmp_path: Path) -> None:
    batch = {"Dest": str(tmp_path / "out"), "Base": str(tmp_path)}
    item = {"sample": "s1", "r1": "reads/s1_1.fq.gz", "r2": "reads/s1_2.fq.gz"}
    with pytest.raises(WorkerError, match="listed for sample s1 in samples") as caught:
        genomics.qc({"BatchInput": batch, "Items": [item]})
    assert caught.value.error == MISSING_INPUT
    assert str(tmp_path / "reads" / "s1_1.fq.gz") in str(caught.value)
    with pytest.raises(WorkerError, match=r"aligned\.bam: no such file \(run genomics-map first\)"):
        genomics.sort({"BatchInput": batch, "Items": [item]})


# -- the sample generator ---------------------------------------------------------------------


def _digests(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_the_sample_is_deterministic_and_plants_spaced_callable_variants(tmp_path: Path) -> None:
    one = genomics_sample(str(tmp_path / "a"), count=2, seed=3)
    assert one == genomics_sample(str(tmp_path / "b"), count=2, seed=3)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    genomics_sample(str(tmp_path / "c"), count=2, seed=4)
    assert _digests(tmp_path / "a") != _digests(tmp_path / "c")

    assert one["samples"] == ["sample01", "sample02"] and one["objects"] == 6
    assert sum(one["pairs"].values()) == 10_000 and one["corrupt"] is None
    assert (tmp_path / "a" / "samples.csv").read_text().splitlines() == [
        "sample,r1,r2",
        "sample01,reads/sample01_1.fq.gz,reads/sample01_2.fq.gz",
        "sample02,reads/sample02_1.fq.gz,reads/sample02_2.fq.gz",
    ]
    title, *lines = (tmp_path / "a" / "reference" / "lambda_virus.fa").read_text().splitlines()
    genome = "".join(lines)
    assert title.startswith(">lambda_virus ")
    assert len(genome) == one["reference"]["length"]
    for name in one["samples"]:
        planted = [v for v in one["truth"] if v["sample"] == name]
        kinds = Counter("snp" if len(v["ref"]) == len(v["alt"]) else "indel" for v in planted)
        assert 12 <= kinds["snp"] <= 18 and 2 <= kinds["indel"] <= 3, kinds
        positions = [v["pos"] for v in planted]
        assert positions == sorted(positions)
        assert min(np.diff(positions)) >= SPACING
        assert positions[0] > MARGIN and positions[-1] < len(genome) - MARGIN
        for variant in planted:
            start = variant["pos"] - 1
            assert genome[start : start + len(variant["ref"])] == variant["ref"]
            ref, alt = variant["ref"], variant["alt"]
            if len(ref) == len(alt):  # a SNP
                assert len(ref) == 1 and ref != alt
            else:  # an indel, VCF-style: one anchor base, then 1-3 bases deleted or inserted
                assert ref[0] == alt[0] and 1 <= abs(len(ref) - len(alt)) <= 3
                assert min(len(ref), len(alt)) == 1


def test_too_many_samples_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="between 1 and 8"):
        genomics_sample(str(tmp_path), count=9)


# -- the pipeline, on S3 ----------------------------------------------------------------------


@dataclass
class S3Run:
    bucket: str
    data: str
    dest: str
    summary: dict[str, Any]
    result: Any
    state_dir: Path
    client: Any

    def keys(self, prefix: str) -> set[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        return {o["Key"] for page in pages for o in page.get("Contents", [])}

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    @property
    def good(self) -> list[str]:
        return [name for name in self.summary["samples"] if name != self.corrupt["sample"]]

    @property
    def corrupt(self) -> dict[str, Any]:
        return self.summary["corrupt"]


def _run(data: str, dest: str, **options: Any) -> Any:
    return run(
        MapSpec.load(PIPELINE), source=f"{data}/samples.csv", dest=dest, executor="threads",
        **options,
    )  # fmt: skip


@pytest.fixture(scope="module")
def s3_run(s3_server: Any, tmp_path_factory: pytest.TempPathFactory) -> S3Run:
    client = s3_server.client()
    bucket = f"genomics-{os.getpid()}"
    client.create_bucket(Bucket=bucket)
    data, dest = f"s3://{bucket}/cohort", f"s3://{bucket}/results"
    summary = genomics_sample(data, corrupt=True)
    state_dir = tmp_path_factory.mktemp("state")
    result = _run(data, dest, state_dir=str(state_dir))
    return S3Run(bucket, data, dest, summary, result, state_dir, client)


def _truth(summary: dict[str, Any], name: str) -> set[tuple[int, str, str]]:
    return {(v["pos"], v["ref"], v["alt"]) for v in summary["truth"] if v["sample"] == name}


def _passed(url: str) -> set[tuple[int, str, str]]:
    return {(c["pos"], c["ref"], c["alt"]) for c in load_calls(url) if c["filter"] == "PASS"}


def test_the_run_recovers_the_planted_variants(s3_run: S3Run) -> None:
    result = s3_run.result
    assert result.status == RunStatus.SUCCEEDED, (result.error, result.cause)
    assert (result.item_counts.succeeded, result.item_counts.failed) == (4, 1)
    found = planted = true = 0
    for name in s3_run.good:
        calls = _passed(f"{s3_run.dest}/genomics/{name}/calls.vcf.gz")
        truth = _truth(s3_run.summary, name)
        found, planted, true = found + len(calls), planted + len(truth), true + len(calls & truth)
    recall, precision = true / planted, true / found
    seconds = (result.stop_date - result.start_date).total_seconds()
    print(f"recall {recall:.3f} precision {precision:.3f} ({true}/{planted}, {found} calls)")
    print(f"run of {result.item_counts.total} samples on S3: {seconds:.1f} s")
    assert recall >= 0.9 and precision >= 0.9, (recall, precision)
    # Indels included: they are planted where they have one representation, so they match.
    indels = {v for name in s3_run.good for v in _truth(s3_run.summary, name) if len(v[1]) > 1}
    assert indels


def test_each_sample_folder_holds_exactly_the_step_outputs(s3_run: S3Run) -> None:
    for name in s3_run.good:
        keys = s3_run.keys(f"results/genomics/{name}/")
        assert keys == {f"results/genomics/{name}/{file}" for file in SAMPLE_FILES}
    assert s3_run.keys(f"results/genomics/{s3_run.corrupt['sample']}/") == set()
    assert "results/genomics/summary.json" in s3_run.keys("results/genomics/")


def test_bams_carry_header_read_group_and_an_index(s3_run: S3Run, tmp_path: Path) -> None:
    name = s3_run.good[0]
    for file in ("aligned.bam", "sorted.bam", "sorted.bam.bai"):
        (tmp_path / file).write_bytes(s3_run.get(f"results/genomics/{name}/{file}"))
    with pysam.AlignmentFile(str(tmp_path / "aligned.bam")) as bam:
        header = bam.header.to_dict()
        reads = list(bam)
    assert header["RG"] == [{"ID": name, "SM": name, "LB": name}]
    assert header["SQ"] == [{"SN": "lambda_virus", "LN": s3_run.summary["reference"]["length"]}]
    assert header["PG"][0]["ID"] == "mappy"
    assert len(reads) == 2 * s3_run.summary["pairs"][name]  # one record per read
    assert all(r.get_tag("RG") == name for r in reads)
    assert sum(r.is_read1 for r in reads) == sum(r.is_read2 for r in reads)
    with pysam.AlignmentFile(str(tmp_path / "sorted.bam")) as bam:
        assert bam.header.to_dict()["HD"]["SO"] == "coordinate"
        assert bam.count("lambda_virus", 20_000, 20_100) > 0  # the index answers a region
        mapped = bam.mapped
    qc_map = json.loads(s3_run.get(f"results/genomics/{name}/map.json"))
    assert mapped == qc_map["mapped"] and 0.85 < qc_map["mapped_fraction"] < 1


def test_qc_figures_match_an_independent_count(s3_run: S3Run, tmp_path: Path) -> None:
    name = s3_run.good[1]
    report = json.loads(s3_run.get(f"results/genomics/{name}/qc.json"))
    assert report["pairs"] == s3_run.summary["pairs"][name]
    for key in ("r1", "r2"):
        local = tmp_path / f"{key}.fq.gz"
        local.write_bytes(s3_run.get(f"cohort/reads/{name}_{key[1]}.fq.gz"))
        with pysam.FastxFile(str(local)) as reads:
            pairs = [(r.sequence, r.quality) for r in reads]
        lengths = np.array([len(s) for s, _ in pairs])
        quality = np.concatenate([np.frombuffer(q.encode(), np.uint8) - 33 for _, q in pairs])
        gc = np.array([(s.count("G") + s.count("C")) / (len(s) - s.count("N")) for s, _ in pairs])
        stats = report["files"][key]
        assert stats["url"] == f"{s3_run.data}/reads/{name}_{key[1]}.fq.gz"
        assert stats["reads"] == len(pairs) == report["pairs"]
        assert stats["bases"] == lengths.sum()
        assert stats["length"]["min"] == lengths.min() and stats["length"]["max"] == lengths.max()
        assert stats["length"]["mean"] == pytest.approx(lengths.mean())
        assert dict(map(tuple, stats["length"]["histogram"])) == dict(Counter(lengths.tolist()))
        assert stats["mean_quality"] == pytest.approx(quality.mean())
        assert stats["q30_fraction"] == pytest.approx((quality >= 30).mean())
        assert stats["gc"]["mean"] == pytest.approx(100 * gc.mean())
        assert (
            stats["gc"]["histogram"]
            == np.bincount(np.round(gc * 100).astype(int), minlength=101).tolist()
        )
    # fastq_stats is what the worker ran: the same figures from the local copy.
    assert fastq_stats(local, stats["url"]) == stats


def test_a_corrupt_sample_fails_alone_with_a_clear_error_and_is_not_retried(
    s3_run: S3Run,
) -> None:
    frame = load_results(s3_run.result.manifest_url)
    failed = frame[frame["status"] == "FAILED"]
    assert len(failed) == 1 and set(frame["status"]) == {"SUCCEEDED", "FAILED"}
    corrupt = s3_run.corrupt
    (record,) = failed.to_dict("records")
    assert record["error"] == BAD_FASTQ
    url = f"{s3_run.data}/{corrupt['file']}"
    assert record["cause"] == (
        f"{url}, line {corrupt['line']} (record {corrupt['record']}): {corrupt['reason']}"
    )
    journal = s3_run.state_dir / "runs" / f"{s3_run.result.run_id}.sqlite"
    with closing(sqlite3.connect(journal)) as db:
        attempts = db.execute("SELECT error FROM attempt WHERE status = 'FAILED'").fetchall()
    assert attempts == [(BAD_FASTQ,)]  # MaxAttempts 0 for bad data: one attempt only


def test_the_summary_covers_every_sample_and_names_the_failed_one(s3_run: S3Run) -> None:
    summary = json.loads(s3_run.get("results/genomics/summary.json"))
    assert summary["run_id"] == s3_run.result.run_id
    assert sorted(summary["samples"]) == s3_run.good
    for name, entry in summary["samples"].items():
        assert entry["qc"]["pairs"] == s3_run.summary["pairs"][name]
        assert set(entry["qc"]["files"]) == {"r1", "r2"}
        assert 0.85 < entry["mapped_fraction"] < 1
        calls = load_calls(f"{s3_run.dest}/genomics/{name}/calls.vcf.gz")
        assert entry["variants"]["variants"] == len(calls)
        assert entry["variants"]["passed"] == sum(c["filter"] == "PASS" for c in calls)
    ((failed),) = summary["failed"]
    assert failed["sample"] == s3_run.corrupt["sample"] and failed["error"] == BAD_FASTQ
    output = s3_run.result.reduce.output
    assert output["failed"] == [s3_run.corrupt["sample"]]
    assert output["summary"] == f"{s3_run.dest}/genomics/summary.json"


@pytest.mark.slow
def test_one_run_per_step_gives_the_same_calls(s3_run: S3Run, tmp_path: Path) -> None:
    """The Snakefile's way: qc, map, sort, index, call as five runs over one manifest (the
    first from the command line, as Snakemake starts it)."""
    dest = f"s3://{s3_run.bucket}/steps"
    command = [sys.executable, "-m", "runner", "run", str(PIPELINE), "--worker", "genomics-qc"]
    command += ["--source", f"{s3_run.data}/samples.csv", "--dest", dest, "--executor", "threads"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 failed" in done.stdout and "reduce genomics-reduce" in done.stdout
    errors = {}
    for step in STEPS[1:]:
        result = _run(s3_run.data, dest, worker=f"genomics-{step}")
        assert result.status == RunStatus.SUCCEEDED, (step, result.error, result.cause)
        frame = load_results(result.manifest_url)
        (errors[step],) = frame.loc[frame["status"] == "FAILED", "error"]
    # The corrupt sample fails on its FASTQ, then each later step misses its input.
    assert errors == {
        "map": BAD_FASTQ,
        "sort": MISSING_INPUT,
        "index": MISSING_INPUT,
        "call": MISSING_INPUT,
    }
    for name in s3_run.good:
        chained = load_calls(f"{dest}/genomics/{name}/calls.vcf.gz")
        whole = load_calls(f"{s3_run.dest}/genomics/{name}/calls.vcf.gz")
        assert chained == whole and whole
        for file in ("aligned.bam", "qc.json", "map.json"):  # no temp paths in them
            assert s3_run.get(f"steps/genomics/{name}/{file}") == s3_run.get(
                f"results/genomics/{name}/{file}"
            ), file
    summary = json.loads(s3_run.get("steps/genomics/summary.json"))
    assert all({"qc", "mapped_fraction", "variants"} <= set(s) for s in summary["samples"].values())


# -- the notebook -----------------------------------------------------------------------------


def test_the_committed_notebook_has_no_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, cell.source[:60]


@pytest.mark.slow
def test_the_notebook_plots_qc_variant_quality_and_recall(
    s3_run: S3Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps(s3_run.summary))
    # The kernel inherits this environment: the S3 endpoint and credentials, and the run.
    monkeypatch.setenv("SHARDMAP_GENOMICS_DEST", s3_run.dest)
    monkeypatch.setenv("SHARDMAP_GENOMICS_TRUTH", str(truth))
    ran = execute_notebook(NOTEBOOK, tmp_path)
    notebook, outputs, stdout = ran.notebook, ran.outputs, ran.stdout
    assert (
        f"{len(s3_run.good)} samples, 1 failed: {s3_run.corrupt['sample']} ({BAD_FASTQ})" in stdout
    )
    found = planted = true = 0
    for name in s3_run.good:
        calls = _passed(f"{s3_run.dest}/genomics/{name}/calls.vcf.gz")
        truth_set = _truth(s3_run.summary, name)
        found, planted, true = (
            found + len(calls),
            planted + len(truth_set),
            true + len(calls & truth_set),
        )
    assert f"recall {true / planted:.3f}, precision {true / found:.3f}" in stdout
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    for tag in PLOTS:
        (cell,) = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert len(images) == 1, f"{tag} drew no image: {cell.outputs}"
