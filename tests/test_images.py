"""The images workload end to end: sample photos on S3 (SeaweedFS), pipelines/images.yaml,
the image-thumbnails worker, its error policy, the CLI and notebooks/images.ipynb.

One module-scoped run over a 60-photo sample (plus its 8 bad objects) serves the checks that
only read its results; every count is checked against the generator's ground truth.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import sqlite3
import subprocess
import sys
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import botocore.exceptions
import fsspec
import nbformat
import pytest
from click.testing import CliRunner
from PIL import Image, ImageChops, ImageStat

import workers.images
from runner import MapSpec, RunStatus, WorkerError, load_results, run
from runner.cli import main
from tests.notebooks import execute_notebook
from workers.images import STORAGE_ERROR, thumbnail_key, thumbnails
from workers.images_sample import images_sample

ROOT = Path(__file__).parent.parent
PIPELINE = ROOT / "pipelines" / "images.yaml"
NOTEBOOK = ROOT / "notebooks" / "images.ipynb"
SAMPLE_COUNT = 60
PREFIX = "photos/"
# EXIF orientation -> the transpose that makes the stored pixels upright (the EXIF spec's table).
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


# -- one S3 run shared by the read-only checks -------------------------------------------------
class S3Run:
    def __init__(self, bucket: str, summary: dict[str, Any], result: Any, state_dir: Path):
        self.bucket = bucket
        self.summary = summary
        self.result = result
        self.state_dir = state_dir
        self.frame = load_results(result.manifest_url)
        self.outputs = list(self.frame["output"])
        self.processed = [o for o in self.outputs if o and o["status"] == "processed"]


@pytest.fixture(scope="module")
def s3_run(s3_server, tmp_path_factory) -> S3Run:
    bucket = f"images-{os.getpid()}"
    s3_server.client().create_bucket(Bucket=bucket)
    summary = images_sample(f"s3://{bucket}/{PREFIX}", count=SAMPLE_COUNT)
    state_dir = tmp_path_factory.mktemp("images-state")  # the autouse state_dir is per test
    result = run(
        MapSpec.load(PIPELINE),
        source=f"s3://{bucket}/{PREFIX}",
        dest=f"s3://{bucket}/out",
        executor="threads",
        state_dir=str(state_dir),
    )
    return S3Run(bucket, summary, result, state_dir)


def test_the_run_matches_the_ground_truth(s3_run: S3Run) -> None:
    truth, result = s3_run.summary, s3_run.result
    assert truth["images"] == SAMPLE_COUNT
    assert truth["objects"] == SAMPLE_COUNT + truth["corrupt"] + truth["non_image"] + 1
    assert truth["oversized"] == 1
    assert result.status == RunStatus.SUCCEEDED, (result.error, result.cause)
    assert result.item_counts.total == result.item_counts.succeeded == truth["objects"]
    # One output per item, in the order of Items: load_results pairs them by position.
    assert len(s3_run.outputs) == truth["objects"]
    for item, output in zip(s3_run.frame["item"], s3_run.outputs, strict=True):
        assert output["key"] == item["Key"]
    assert len(s3_run.processed) == truth["images"]
    rejected = [o for o in s3_run.outputs if o["status"] == "rejected"]
    by_rule = {
        rule: sorted(o["key"] for o in rejected if o["rule"] == rule) for rule in truth["bad_keys"]
    }
    # The sample's keys are relative to where it was written; S3 keys to the bucket.
    assert by_rule == {
        rule: sorted(PREFIX + k for k in keys) for rule, keys in truth["bad_keys"].items()
    }
    assert len(rejected) == sum(len(keys) for keys in truth["bad_keys"].values())
    assert all(o["reason"].startswith(o["key"] + ": ") for o in rejected)
    assert Counter(o["format"] for o in s3_run.processed) == Counter(truth["by_format"])


def test_exif_fields_hash_and_colours(s3_run: S3Run) -> None:
    truth, processed = s3_run.summary, s3_run.processed
    orientations = [o["exif"]["orientation"] or 1 for o in processed]
    assert sum(1 for o in orientations if o >= 2) == truth["rotated"] > 0
    assert sum(1 for o in orientations if o >= 5) == truth["swapped"] > 0
    cameras = [o for o in processed if o["exif"]["make"]]
    assert len(cameras) == truth["with_camera"] > 0
    assert all(o["exif"]["model"] and o["exif"]["datetime_original"] for o in cameras)
    for output in processed:
        assert len(output["phash"]) == 16 and int(output["phash"], 16) >= 0
        colours = output["colours"]
        assert 1 <= len(colours) <= 5
        assert all(len(c["hex"]) == 7 and c["hex"].startswith("#") for c in colours)
        shares = [c["share"] for c in colours]
        assert shares == sorted(shares, reverse=True) and abs(sum(shares) - 1) < 0.01


def test_thumbnails_exist_and_keep_the_upright_aspect(s3_run: S3Run) -> None:
    fs = fsspec.filesystem("s3")
    written = {path.split("/out/", 1)[1] for path in fs.find(f"{s3_run.bucket}/out/thumbnails")}
    expected = {t["key"] for o in s3_run.processed for t in o["thumbnails"]}
    assert written == expected and len(expected) == 2 * SAMPLE_COUNT
    for output in s3_run.processed:
        assert [t["size"] for t in output["thumbnails"]] == [128, 512]
        width, height = _upright_size(output)
        for thumb in output["thumbnails"]:
            picture = _open(fs, f"{s3_run.bucket}/out/{thumb['key']}")
            assert picture.size == (thumb["width"], thumb["height"])
            assert max(picture.size) == min(thumb["size"], max(width, height))
            # The upright photo's aspect, up to rounding to whole pixels.
            assert abs(picture.width * height - picture.height * width) <= max(width, height)


def test_exif_orientation_is_applied(s3_run: S3Run) -> None:
    fs = fsspec.filesystem("s3")
    turned = [o for o in s3_run.processed if (o["exif"]["orientation"] or 1) >= 2]
    assert len(turned) == s3_run.summary["rotated"] > 0
    swapped = [o for o in turned if o["exif"]["orientation"] >= 5 and o["width"] != o["height"]]
    assert swapped
    for output in swapped:  # a landscape stored with orientation 6 is a portrait thumbnail
        thumb = output["thumbnails"][0]
        assert (thumb["width"] > thumb["height"]) == (output["height"] > output["width"])
    for output in turned:  # and its pixels are the stored ones turned by the EXIF table
        stored = _open(fs, f"{s3_run.bucket}/{output['key']}").convert("RGB")
        thumb = _open(fs, f"{s3_run.bucket}/out/{output['thumbnails'][0]['key']}").convert("RGB")
        upright = stored.transpose(UPRIGHT[output["exif"]["orientation"]]).resize(thumb.size)
        right, as_stored = (
            _difference(thumb, upright),
            _difference(thumb, stored.resize(thumb.size)),
        )
        assert right < 12 and right < as_stored, (output["key"], right, as_stored)


def _upright_size(output: dict[str, Any]) -> tuple[int, int]:
    if (output["exif"]["orientation"] or 1) >= 5:  # turned a quarter: width and height swap
        return output["height"], output["width"]
    return output["width"], output["height"]


def _open(fs: Any, path: str) -> Image.Image:
    return Image.open(io.BytesIO(fs.cat_file(path)))


def _difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


# -- keys, settings and the error policy (no S3 needed) ----------------------------------------
@pytest.mark.parametrize(
    "key",
    ["../../etc/passwd", "/abs/photo.jpg", "a\\..\\..\\b.jpg", "a/./b.jpg", "x//y.jpg", "..", ""],
)
def test_thumbnail_keys_cannot_escape(key: str) -> None:
    made = thumbnail_key(key, 128)
    assert made.startswith("thumbnails/128/") and made.endswith(".jpg")
    assert posixpath.normpath(made) == made  # nothing for a path join to collapse
    assert ".." not in made.split("/") and "\\" not in made


def test_thumbnail_keys_stay_distinct() -> None:
    keys = ["a/../b.jpg", "a/%2E%2E/b.jpg", "a/_/b.jpg", "a//b.jpg", "a/b.jpg", "a\\b.jpg"]
    assert len({thumbnail_key(key, 128) for key in keys}) == len(keys)
    assert (
        thumbnail_key("2021-alps/IMG_0001.jpg", 512) == "thumbnails/512/2021-alps/IMG_0001.jpg.jpg"
    )


def test_hostile_keys_write_only_under_the_thumbnails_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 keys may hold ``..``, a leading ``/`` or backslashes (AWS accepts them; SeaweedFS does
    not), so the bytes are served by a stand-in for S3 and the writes land in a local folder."""
    photo = io.BytesIO()
    Image.new("RGB", (300, 200), "teal").save(photo, "PNG")
    monkeypatch.setattr(workers.images, "_read", lambda url: photo.getvalue())
    keys = ["../../escape.png", "/abs.png", "a\\..\\..\\b.png", "a/./../c.png", "x//y.png"]
    dest = tmp_path / "dest" / "out"
    outputs = thumbnails(
        {
            "BatchInput": {"ThumbnailsTo": str(dest)},
            "Items": [{"Key": key, "Source": "S3://bucket"} for key in keys],
        }
    )
    assert [o["status"] for o in outputs] == ["processed"] * len(keys)
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert len(written) == 2 * len(keys)
    assert all(p.is_relative_to(dest / "thumbnails") for p in written), written


def test_local_keys_that_leave_the_folder_are_not_read(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (40, 30), "red").save(tmp_path / "secret.png")
    outputs = thumbnails(
        {
            "BatchInput": {
                "ThumbnailsTo": str(tmp_path / "out"),
                "Source": str(tmp_path / "photos"),
            },
            "Items": [{"Key": "../secret.png"}, {"Key": "/etc/hostname"}],
        }
    )
    assert [(o["status"], o["rule"]) for o in outputs] == [("rejected", "unsafe_key")] * 2
    assert not (tmp_path / "out").exists()


def test_formats_and_limits_come_from_batch_input(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (64, 48), "blue").save(photos / "a.gif")
    Image.new("RGB", (64, 48), "blue").save(photos / "b.png")
    Image.new("RGB", (400, 300), "blue").save(photos / "c.png")
    items = [
        {"Key": name, "Size": (photos / name).stat().st_size, "Source": str(photos)}
        for name in ("a.gif", "b.png", "c.png")
    ]
    settings = {"ThumbnailsTo": str(tmp_path / "out"), "Formats": ["png"], "MaxPixels": 10_000}
    outputs = thumbnails({"BatchInput": settings, "Items": items})
    assert [(o["status"], o.get("rule")) for o in outputs] == [
        ("rejected", "format"),
        ("processed", None),
        ("rejected", "oversized"),
    ]
    assert "GIF is not an allowed format" in outputs[0]["reason"]
    small = {"ThumbnailsTo": str(tmp_path / "out"), "MaxBytes": 10, "ThumbnailSizes": [32]}
    outputs = thumbnails({"BatchInput": small, "Items": items[1:2]})
    assert outputs[0]["rule"] == "oversized" and "MaxBytes" in outputs[0]["reason"]


@pytest.mark.parametrize(
    "batch_input",
    [{"ThumbnailsTo": "x", "MaxPixel": 5}, {"ThumbnailsTo": "x", "Formats": ["JPG"]}, {}],
    ids=["typo", "unknown-format", "no-destination"],
)
def test_bad_settings_fail_the_batch(batch_input: dict[str, Any]) -> None:
    item = {"Key": "a.jpg", "Source": "/nowhere"}
    with pytest.raises(WorkerError) as caught:
        thumbnails({"BatchInput": batch_input, "Items": [item]})
    assert caught.value.error == "Images.InvalidBatchInput"


@pytest.mark.parametrize(
    "error",
    [
        botocore.exceptions.EndpointConnectionError(endpoint_url="http://s3.invalid"),
        ConnectionResetError("connection reset by peer"),
        PermissionError("Access Denied"),
        OSError("[Errno 5] Input/output error"),
        FileNotFoundError("photos/a.jpg"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_storage_errors_raise_instead_of_rejecting(
    error: Exception, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    class Unreachable:
        def cat_file(self, path: str) -> bytes:
            raise error

    monkeypatch.setattr(fsspec.core, "url_to_fs", lambda url: (Unreachable(), url))
    event = {
        "BatchInput": {"ThumbnailsTo": str(tmp_path)},
        "Items": [{"Key": "a.jpg", "Source": "S3://b"}],
    }
    with pytest.raises(WorkerError) as caught:
        thumbnails(event)
    assert caught.value.error == STORAGE_ERROR
    cause = json.loads(caught.value.cause)
    assert cause["errorType"] == type(error).__name__
    assert cause["errorMessage"].startswith("cannot read s3://b/a.jpg")


def test_a_missing_bucket_fails_the_batch_after_retries(s3_run: S3Run) -> None:
    pipeline = MapSpec.load(PIPELINE)
    (retrier,) = pipeline.retry
    assert retrier.error_equals == (STORAGE_ERROR,) and retrier.max_attempts >= 1
    data = pipeline.to_dict()
    del data["ItemSelector"]["Source.$"]
    data["ItemSelector"]["Source"] = "S3://no-such-bucket-for-images"
    data["ItemReader"]["ReaderConfig"] = {"MaxItems": 25}  # one batch
    data["Retry"][0]["IntervalSeconds"] = 0.01  # the pipeline's retrier, without the waiting
    spec = MapSpec.from_dict(data)
    result = run(
        spec,
        source=f"s3://{s3_run.bucket}/photos/",
        dest=f"s3://{s3_run.bucket}/failing",
        executor="threads",
    )
    assert result.status == RunStatus.FAILED
    assert result.execution_counts.failed == 1
    frame = load_results(result.manifest_url)
    assert set(frame["status"]) == {"FAILED"} and set(frame["error"]) == {STORAGE_ERROR}
    cause = json.loads(frame["cause"].iloc[0])
    assert "no-such-bucket-for-images" in cause["errorMessage"]
    with closing(sqlite3.connect(_journal(result.run_id))) as db:
        attempts = db.execute("SELECT status, error FROM attempt ORDER BY attempt").fetchall()
    assert attempts == [("FAILED", STORAGE_ERROR)] * (retrier.max_attempts + 1)


def _journal(run_id: str) -> str:
    return str(Path(os.environ["SHARDMAP_STATE_DIR"]) / "runs" / f"{run_id}.sqlite")


# -- the generator, the CLI and the notebook ---------------------------------------------------
def test_the_sample_is_the_same_for_the_same_seed(tmp_path: Path) -> None:
    first = images_sample(str(tmp_path / "a"), count=12)
    again = images_sample(str(tmp_path / "b"), count=12)
    other = images_sample(str(tmp_path / "c"), count=12, seed=8)
    assert first == again and first["objects"] == 20 and other["objects"] == 20
    assert _contents(tmp_path / "a") == _contents(tmp_path / "b")
    assert len(_contents(tmp_path / "a")) == 20
    assert _contents(tmp_path / "a") != _contents(tmp_path / "c")


def _contents(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_the_cli_samples_and_runs_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # relative --source and --dest, as a user would type them
    cli = CliRunner()
    sampled = cli.invoke(
        main, ["sample", "images", "photos", "--count", "10"], catch_exceptions=False
    )
    assert sampled.exit_code == 0, sampled.output
    summary = json.loads(sampled.output.split("\n", 1)[1])
    ran = cli.invoke(
        main,
        ["run", str(PIPELINE), "--source", "photos", "--dest", "results"],
        catch_exceptions=False,
    )
    assert ran.exit_code == 0, ran.output
    assert f"items: {summary['objects']} succeeded, 0 failed" in ran.output
    manifest = _manifest_from(ran.output)
    outputs = list(load_results(manifest)["output"])
    assert Counter(o["status"] for o in outputs) == {"processed": 10, "rejected": 8}
    thumbs = sorted((tmp_path / "results" / "thumbnails" / "128").rglob("*.jpg"))
    assert len(thumbs) == 10


def _manifest_from(output: str) -> str:
    return next(
        line.split("manifest: ", 1)[1] for line in output.splitlines() if "manifest: " in line
    )


def test_the_committed_notebook_has_no_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, cell.source[:60]


@pytest.mark.parametrize("chosen_by", ["run-id", "manifest"])
def test_the_notebook_shows_the_run(
    chosen_by: str, s3_run: S3Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel inherits this environment: the S3 endpoint and credentials, and the run.
    if chosen_by == "run-id":
        monkeypatch.setenv("SHARDMAP_STATE_DIR", str(s3_run.state_dir))
        monkeypatch.setenv("SHARDMAP_RUN_ID", s3_run.result.run_id)
    else:  # the state directory of this test is empty: only the manifest can find the run
        monkeypatch.setenv("SHARDMAP_MANIFEST", s3_run.result.manifest_url)
    ran = execute_notebook(NOTEBOOK, tmp_path)
    notebook, outputs, stdout = ran.notebook, ran.outputs, ran.stdout
    truth = s3_run.summary
    bad = truth["objects"] - truth["images"]
    assert (
        f"{truth['objects']} objects: {truth['images']} processed, {bad} rejected, 0 in" in stdout
    )
    assert f"{truth['with_camera']} with a camera, {truth['rotated']} to rotate" in stdout
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    for tag in ("plot-contact-sheet", "plot-formats"):
        (cell,) = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert len(images) == 1, f"{tag} drew no image: {cell.outputs}"
    (table,) = [c for c in notebook.cells if "table-rejected" in c.metadata.get("tags", [])]
    text = "".join(o.get("data", {}).get("text/plain", "") for o in table.outputs)
    for keys in truth["bad_keys"].values():
        assert all(key in text for key in keys), text


# -- the full sample -----------------------------------------------------------------------------
@pytest.mark.slow
def test_the_full_sample_from_the_command_line(s3_server, bucket: str) -> None:
    """1,000 photos on S3 through ``shardmap run --executor processes``, in a fresh process as
    a user would start it. (Worker processes come from a fork server: forked straight from the
    driver they could inherit OpenSSL's lock held by the planner's S3 listing and hang.)"""
    summary = images_sample(f"s3://{bucket}/photos/")
    assert summary["images"] == 1000
    command = [sys.executable, "-m", "runner", "run", str(PIPELINE), "--executor", "processes"]
    command += ["--source", f"s3://{bucket}/photos/", "--dest", f"s3://{bucket}/out"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as expired:  # show how far it got
        pytest.fail(f"shardmap run did not finish: {expired.stdout!r} {expired.stderr!r}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"items: {summary['objects']} succeeded, 0 failed" in done.stdout
    manifest = _manifest_from(done.stdout)
    outputs = list(load_results(manifest)["output"])
    assert len(outputs) == summary["objects"]
    rules = Counter(o["rule"] for o in outputs if o["status"] == "rejected")
    assert rules == {kind: summary[kind] for kind in ("corrupt", "non_image", "oversized")}
    processed = [o for o in outputs if o["status"] == "processed"]
    assert Counter(o["format"] for o in processed) == Counter(summary["by_format"])
    orientations = [o["exif"]["orientation"] or 1 for o in processed]
    assert sum(1 for o in orientations if o >= 2) == summary["rotated"]
    thumbs = fsspec.filesystem("s3").find(f"{bucket}/out/thumbnails")
    assert len(thumbs) == 2 * summary["images"]
