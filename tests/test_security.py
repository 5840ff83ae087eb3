"""Security suite (issue 21): hostile manifests, hostile keys, hostile trigger config, secrets.

Everything goes through the public surfaces (``shardmap`` through click's CliRunner,
``runner.run``, ``TriggerService``) on a real SeaweedFS server and loopback HTTP servers. A
"secret" is a file, object or URL holding a marker that must never show up in any result file,
journal or output; an HTTP server counts its requests, so "refused unread" is checked, not
assumed.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.server
import json
import threading
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from click.testing import CliRunner

from runner import MapSpec, load_results, run
from runner.cli import main
from runner.errors import SpecError
from runner.journal import Journal
from runner.triggers.config import from_dict, load_config
from runner.triggers.service import TriggerService

pytestmark = pytest.mark.usefixtures("s3fs_clear_cache")

SECRET = f"TOPSECRET-{uuid.uuid4().hex}"
SECRET_LINE = (json.dumps({"secret": SECRET}) + "\n").encode()
ATHENA = {"Resource": "arn:aws:states:::s3:getObject",
          "ReaderConfig": {"InputType": "JSONL", "ManifestType": "ATHENA_DATA"}}  # fmt: skip
INVENTORY = {"Resource": "arn:aws:states:::s3:getObject",
             "ReaderConfig": {"ManifestType": "S3_INVENTORY"}}  # fmt: skip


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def leaks(*roots: Path, marker: str = SECRET) -> list[str]:
    """Every file under ``roots`` holding ``marker`` (result files, journals, WAL files...)."""
    return [
        str(path)
        for root in roots
        if root.exists()
        for path in root.rglob("*")
        if path.is_file() and marker.encode() in path.read_bytes()
    ]


def pipeline(tmp_path: Path, source: str, reader: dict[str, Any], **fields: Any) -> Path:
    path = tmp_path / f"pipeline-{uuid.uuid4().hex[:8]}.yaml"
    spec = {"Name": "security", "Worker": "echo", "Source": source, "ItemReader": reader,
            "ItemBatcher": {"MaxItemsPerBatch": 10},
            "ResultWriter": {"Destination": str(tmp_path / "results")}, **fields}  # fmt: skip
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


class FileServer:
    """An http.server on loopback serving ``files``; keeps every request path (and can demand
    basic auth)."""

    def __init__(self, files: dict[str, bytes], auth: tuple[str, str] | None = None) -> None:
        self.hits: list[str] = []
        owner = self
        expected = "Basic " + base64.b64encode(":".join(auth).encode()).decode() if auth else None

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, body: bool) -> None:
                owner.hits.append(self.path)
                if expected and self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                data = files.get(self.path.lstrip("/"))
                if data is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer(body=True)

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://{self.base}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def secret_site():
    site = FileServer({"secret.jsonl": SECRET_LINE})
    yield site
    site.close()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A secret file outside every folder a manifest in these tests lives in."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.jsonl").write_bytes(SECRET_LINE)
    return folder / "secret.jsonl"


@pytest.fixture
def other_bucket(s3_client, bucket: str) -> str:
    """Another bucket the same credentials can read, holding a secret."""
    name = f"{bucket}-other"
    s3_client.create_bucket(Bucket=name)
    s3_client.put_object(Bucket=name, Key="secret.jsonl", Body=SECRET_LINE)
    return name


# -- manifests through `shardmap run` -------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    ["local-path", "file-url", "http-url", "other-bucket", "dotdot-key", "chained-url", "escape"],
)
def test_an_athena_manifest_on_s3_names_only_objects_of_its_own_bucket(
    kind, tmp_path, state_dir, s3_client, bucket, other_bucket, outside, secret_site
):
    s3_client.put_object(Bucket=bucket, Key="unload/part-0", Body=b'{"n": 1}\n')
    s3_client.put_object(Bucket=bucket, Key="secret.jsonl", Body=SECRET_LINE)
    hostile, shown = {
        "local-path": (str(outside), str(outside)),
        "file-url": (f"file://{outside}", str(outside)),
        "http-url": (secret_site.url("secret.jsonl"), secret_site.url("secret.jsonl")),
        "other-bucket": (f"s3://{other_bucket}/secret.jsonl", f"s3://{other_bucket}/secret"),
        "dotdot-key": ("../secret.jsonl", "'..' segment"),
        "chained-url": (f"s3://{bucket}/unload/part-0::file://{outside}", "chains URLs"),
        "escape": (f"{outside}\x1b]0;owned\x07", f"{outside}\\x1b]0;owned\\x07"),
    }[kind]
    manifest = f"s3://{bucket}/results/q-1-manifest.csv"
    body = f"s3://{bucket}/unload/part-0\n\n{hostile}\n".encode()
    s3_client.put_object(Bucket=bucket, Key="results/q-1-manifest.csv", Body=body)

    result = invoke("run", str(pipeline(tmp_path, manifest, ATHENA)))

    assert result.exit_code == 2, result.output
    assert "States.ItemReaderFailed" in result.output
    assert f"{manifest}, line 3" in result.output  # the blank line 2 still counts
    assert shown in result.output
    assert "\x1b" not in result.output  # a manifest's control characters never reach a terminal
    assert leaks(tmp_path / "results", state_dir) == []
    assert secret_site.hits == []  # refused before anything was opened


@pytest.mark.parametrize(
    "kind",
    ["absolute-path", "file-url", "dotdot", "symlink", "s3-url", "http-url", "folder", "nul"],
)
def test_a_local_athena_manifest_names_only_files_in_its_own_folder(
    kind, tmp_path, state_dir, outside, secret_site, request
):
    folder = tmp_path / "upload"
    (folder / "sub").mkdir(parents=True)
    (folder / "part-0").write_bytes(b'{"n": 1}\n')
    (folder / "link.jsonl").symlink_to(outside)
    hostile = {
        "absolute-path": str(outside),
        "file-url": f"file://{outside}",
        "dotdot": "sub/../../outside/secret.jsonl",
        "symlink": "link.jsonl",
        "s3-url": "s3://some-bucket/secret.jsonl",
        "http-url": secret_site.url("secret.jsonl"),
        "folder": "sub",
        "nul": f"part-0\0{outside}",
    }[kind]
    if kind == "s3-url":
        bucket = request.getfixturevalue("bucket")
        request.getfixturevalue("s3_client").put_object(
            Bucket=bucket, Key="secret.jsonl", Body=SECRET_LINE
        )
        hostile = f"s3://{bucket}/secret.jsonl"
    manifest = folder / "q-manifest.csv"
    manifest.write_text(f"part-0\n{hostile}\n")

    result = invoke("run", str(pipeline(tmp_path, str(manifest), ATHENA)))

    assert result.exit_code == 2, result.output
    assert f"{manifest}, line 2" in result.output
    assert leaks(tmp_path / "results", state_dir) == []
    assert secret_site.hits == []


def _inventory_csv(rows: list[list[str]]) -> bytes:
    return gzip.compress("".join(",".join(f'"{v}"' for v in row) + "\n" for row in rows).encode())


def _inventory(destination: str | None, keys: list[str]) -> bytes:
    manifest: dict[str, Any] = {
        "sourceBucket": "src", "fileFormat": "CSV", "fileSchema": "Bucket, Key, Size",
        "files": [{"key": key, "size": 1, "MD5checksum": "0" * 32} for key in keys],
    }  # fmt: skip
    if destination is not None:
        manifest["destinationBucket"] = destination
    return json.dumps(manifest).encode()


@pytest.mark.parametrize(
    ("destination", "key", "shown"),
    [
        ("arn:aws:s3:::{other}", "inv/data/1.csv.gz", "files[0] (destinationBucket {other})"),
        ("{other}", "inv/data/1.csv.gz", "outside the allowed locations"),
        ("{other}/../{own}", "inv/data/1.csv.gz", "is not a bucket name"),
        (None, "inv/../../{other}/inv/data/1.csv.gz", "'..' segment"),
        (None, "inv/./data/1.csv.gz", "'.' segment"),
    ],
)
def test_an_inventory_on_s3_reads_its_own_bucket_only(
    destination, key, shown, tmp_path, state_dir, s3_client, bucket, other_bucket
):
    secret_rows = _inventory_csv([["src", SECRET, "1"]])
    s3_client.put_object(Bucket=other_bucket, Key="inv/data/1.csv.gz", Body=secret_rows)
    s3_client.put_object(
        Bucket=bucket, Key="inv/data/1.csv.gz", Body=_inventory_csv([["s", "k", "1"]])
    )
    names = {"other": other_bucket, "own": bucket}
    destination = destination.format(**names) if destination else None
    body = _inventory(destination, [key.format(**names)])
    s3_client.put_object(Bucket=bucket, Key="inv/cfg/2024-01-01T00-00Z/manifest.json", Body=body)
    manifest = f"s3://{bucket}/inv/cfg/2024-01-01T00-00Z/manifest.json"

    result = invoke("run", str(pipeline(tmp_path, manifest, INVENTORY)))

    assert result.exit_code == 2, result.output
    assert f"{manifest}, files[0]" in result.output
    assert shown.format(**names) in result.output
    assert leaks(tmp_path / "results", state_dir) == []


@pytest.mark.parametrize("key", ["outside/secret.csv.gz", "/ABS/outside/secret.csv.gz"])
def test_a_local_inventory_key_never_resolves_above_its_folder(key, tmp_path, state_dir):
    # The old reader looked for a key in each parent folder in turn, up to the root.
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.csv.gz").write_bytes(_inventory_csv([["src", SECRET, "1"]]))
    folder = tmp_path / "inv" / "cfg" / "2024-01-01T00-00Z"
    folder.mkdir(parents=True)
    key = key.replace("/ABS", str(tmp_path))
    (folder / "manifest.json").write_bytes(_inventory("dest", [key]))

    result = invoke("run", str(pipeline(tmp_path, str(folder / "manifest.json"), INVENTORY)))

    assert result.exit_code == 2, result.output
    if key.startswith("/"):
        assert (
            f"{folder / 'manifest.json'}, files[0]: key {key!r} is not a relative" in result.output
        )
    else:  # looked for in the manifest's folder only, where it is not
        assert f"{folder / 'outside' / 'secret.csv.gz'}: no such" in result.output
    assert leaks(tmp_path / "results", state_dir) == []


def test_a_local_inventory_reads_its_data_folder_as_s3_inventory_lays_it_out(tmp_path):
    config = tmp_path / "dest" / "src" / "cfg"
    (config / "data").mkdir(parents=True)
    (config / "data" / "1.csv.gz").write_bytes(_inventory_csv([["src", "photos/a.jpg", "12"]]))
    (config / "2024-01-01T00-00Z").mkdir()
    manifest = config / "2024-01-01T00-00Z" / "manifest.json"
    manifest.write_bytes(_inventory("dest", ["src/cfg/data/1.csv.gz"]))

    result = invoke("run", str(pipeline(tmp_path, str(manifest), INVENTORY)))

    assert result.exit_code == 0, result.output
    frame = load_results(next(line.split("manifest: ", 1)[1] for line in
                              result.output.splitlines() if "manifest: " in line))  # fmt: skip
    assert [row["Key"] for row in frame["output"]] == ["photos/a.jpg"]


def test_allowed_locations_widen_the_scope_only_where_asked(
    tmp_path, state_dir, s3_client, bucket, other_bucket, outside
):
    s3_client.put_object(Bucket=bucket, Key="unload/part-0", Body=b'{"n": 1}\n')
    body = f"s3://{bucket}/unload/part-0\ns3://{other_bucket}/secret.jsonl\n".encode()
    s3_client.put_object(Bucket=bucket, Key="q-manifest.csv", Body=body)
    manifest = f"s3://{bucket}/q-manifest.csv"
    path = pipeline(tmp_path, manifest, ATHENA)

    widened = invoke("run", str(path), "--allow-manifest-location", f"s3://{other_bucket}/")
    assert widened.exit_code == 0, widened.output
    assert leaks(tmp_path / "results")  # the user asked for it: the other bucket was read

    # AllowedLocations without SAME_AS_MANIFEST: only what is listed, not even the own bucket
    narrowed = invoke(
        "run", str(pipeline(tmp_path, manifest, ATHENA, AllowedLocations=[f"s3://{other_bucket}/"]))
    )
    assert narrowed.exit_code == 2, narrowed.output
    assert f"{manifest}, line 1: s3://{bucket}/unload/part-0 is outside" in narrowed.output

    # a local folder allows what is inside it, not what is beside it
    s3_client.put_object(Bucket=bucket, Key="q2-manifest.csv", Body=f"{outside}\n".encode())
    local = invoke("run", str(pipeline(tmp_path, f"s3://{bucket}/q2-manifest.csv", ATHENA)),
                   "--allow-manifest-location", str(outside.parent / "elsewhere"))  # fmt: skip
    assert local.exit_code == 2, local.output
    ok = invoke("run", str(pipeline(tmp_path, f"s3://{bucket}/q2-manifest.csv", ATHENA)),
                "--allow-manifest-location", str(outside.parent))  # fmt: skip
    assert ok.exit_code == 0, ok.output


@pytest.mark.parametrize(
    ("locations", "rule"),
    [
        (["s3://b/p/../q/"], "'.' or '..' segment"),
        (["https://user:pw@host/data/"], "credentials"),
        (["s3://b/x::file:///etc/"], "'::'"),
        (["s3://bad/bucket..name/"], None),
        (["s3://a..b/"], "not a bucket name"),
        ([""], "empty"),
        ([" s3://b/"], "padded"),
    ],
)
def test_allowed_locations_are_checked_not_dropped(locations, rule):
    data = {"Worker": "echo", "Source": "s3://b/m.csv", "ItemReader": ATHENA,
            "AllowedLocations": locations}  # fmt: skip
    if rule is None:  # a key prefix may hold dots; only '.'/'..' segments are refused
        assert MapSpec.from_dict(data).allowed_locations == tuple(locations)
        return
    with pytest.raises(SpecError, match=rule) as info:
        MapSpec.from_dict(data)
    assert info.value.path.startswith("AllowedLocations")


def test_allowed_locations_on_a_reader_that_names_no_files_is_an_error():
    with pytest.raises(SpecError, match="only a MANIFEST") as info:
        MapSpec.from_dict({"Worker": "echo", "Source": "s3://b/a.csv",
                           "AllowedLocations": ["s3://other/"]})  # fmt: skip
    assert info.value.path == "AllowedLocations"
    result = invoke("run", "--help")
    assert "--allow-manifest-location" in result.output


# -- keys are keys ---------------------------------------------------------------------------

HOSTILE_KEYS = [
    "keys/a?versionId=x",  # s3fs: version x of keys/a
    "keys/a::b",  # fsspec: URL chaining
    "keys/a#fragment",
    "keys/%2e%2e",  # a literal key, never decoded
    "keys/a%3FversionId%3Dx",
    "keys/sp ace é ✓",
    "keys/ctl\x01char",
    "keys/" + "/".join(["s" * 200] * 4) + "/long",  # about 830 bytes
]


def _put_distinct(s3_client, bucket: str, keys: list[str]) -> dict[str, bytes]:
    """Objects whose bodies differ in size and content, plus ``keys/a`` they could be taken for."""
    bodies = {"keys/a": b'{"key": "keys/a"}\n'}
    for n, key in enumerate(keys, start=1):
        bodies[key] = (json.dumps({"key": key}) + " " * n + "\n").encode()
    for key, body in bodies.items():
        s3_client.put_object(Bucket=bucket, Key=key, Body=body)
    return bodies


def test_object_stats_reads_each_key_as_itself(tmp_path, s3_client, bucket):
    bodies = _put_distinct(s3_client, bucket, HOSTILE_KEYS)
    result = invoke("map", f"s3://{bucket}/keys/", "--worker", "object-stats",
                    "--dest", str(tmp_path / "results"), "--batch-size", "3")  # fmt: skip
    assert result.exit_code == 0, result.output
    frame = load_results(next(line.split("manifest: ", 1)[1] for line in
                              result.output.splitlines() if "manifest: " in line))  # fmt: skip
    stats = {row["Key"]: row for row in frame["output"]}
    assert set(stats) == set(bodies)
    for key, body in bodies.items():
        assert stats[key]["Size"] == len(body), key
        assert stats[key]["Etag"] == f'"{hashlib.md5(body).hexdigest()}"', key


def test_object_stats_keeps_local_keys_inside_the_folder(tmp_path, outside):
    folder = tmp_path / "objects"
    folder.mkdir()
    (folder / "ok.txt").write_bytes(b"12345")
    (folder / "link").symlink_to(outside)
    spec = MapSpec.from_dict({
        "Worker": "object-stats", "ToleratedFailurePercentage": 100,
        "ItemBatcher": {"MaxItemsPerBatch": 1, "BatchInput": {"Source": str(folder)}},
        "ResultWriter": {"Destination": str(tmp_path / "results")},
    })  # fmt: skip
    keys = ["ok.txt", "../outside/secret.jsonl", "link", str(outside), "a/../../outside/x"]
    result = run(spec, run_input=[{"Key": key} for key in keys])
    frame = load_results(result.manifest_url).sort_values("index")
    assert list(frame["status"]) == ["SUCCEEDED"] + ["FAILED"] * 4
    assert set(frame["error"].dropna()) == {"ObjectStats.UnsafeKey"}
    assert frame.iloc[0]["output"]["Size"] == 5


def test_load_and_flatten_reads_each_listed_key_as_itself(tmp_path, s3_client, bucket):
    bodies = _put_distinct(s3_client, bucket, HOSTILE_KEYS)
    spec = MapSpec.from_dict({
        "Worker": "echo", "Source": f"s3://{bucket}/keys/",
        "ItemReader": {
            "Resource": "arn:aws:states:::s3:listObjectsV2",
            "ReaderConfig": {"InputType": "JSONL", "Transformation": "LOAD_AND_FLATTEN"},
        },
        "ItemBatcher": {"MaxItemsPerBatch": 100},
        "ResultWriter": {"Destination": str(tmp_path / "results")},
    })  # fmt: skip
    result = run(spec, executor="inline")
    assert result.succeeded, result.cause
    items = list(load_results(result.manifest_url)["output"])
    assert sorted(item["key"] for item in items) == sorted(bodies)


# -- the trigger service ---------------------------------------------------------------------

ATHENA_PIPELINE = {"Name": "manifests", "Worker": "echo", "ItemReader": ATHENA,
                   "ItemBatcher": {"MaxItemsPerBatch": 10}}  # fmt: skip
JSONL_PIPELINE = {"Name": "uploads", "Worker": "echo",
                  "ItemReader": {"ReaderConfig": {"InputType": "JSONL"}},
                  "ItemBatcher": {"MaxItemsPerBatch": 10}}  # fmt: skip


def trigger_config(
    tmp_path: Path,
    *,
    bucket: str,
    poll: bool = True,
    pipeline_data: dict[str, Any] = ATHENA_PIPELINE,
    **trigger: Any,
) -> dict[str, Any]:
    folder = tmp_path / "pipelines"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "p.yaml").write_text(json.dumps(pipeline_data))
    source = (
        {"poll": {"bucket": bucket, "prefix": "uploads/", "since": "beginning"}}
        if poll else {"sqs": {"queue_url": "http://127.0.0.1:9/unused"}}
    )  # fmt: skip
    return {
        "state_dir": str(tmp_path / "state"),
        "pipelines_dir": str(folder),
        "pipelines": {"p": "p.yaml"},
        "source": source,
        "triggers": [{"name": "t", "pipeline": "p", "dest": str(tmp_path / "results"),
                      "pattern": {"detail": {"object": {"key": [{"prefix": "uploads/"}]}}},
                      **trigger}],
    }  # fmt: skip


def serve_once(config: dict[str, Any]) -> dict[str, Any]:
    """One polling round; returns the ledger's claims by key."""
    with TriggerService(from_dict(config)) as service:
        service.serve(once=True)
        assert service.ledger is not None
        return {claim.object.key: claim for claim in service.ledger.all()}


def test_a_triggered_manifest_stays_inside_the_watched_bucket_and_prefix(
    tmp_path, s3_client, bucket, other_bucket, outside, secret_site
):
    s3_client.put_object(Bucket=bucket, Key="uploads/data/part-0", Body=b'{"n": 1}\n')
    s3_client.put_object(Bucket=bucket, Key="private/secret.jsonl", Body=SECRET_LINE)
    part = f"s3://{bucket}/uploads/data/part-0"
    hostile = {
        "uploads/ok-manifest.csv": None,
        "uploads/same-bucket-manifest.csv": f"s3://{bucket}/private/secret.jsonl",
        "uploads/other-bucket-manifest.csv": f"s3://{other_bucket}/secret.jsonl",
        "uploads/local-manifest.csv": str(outside),
        "uploads/file-manifest.csv": f"file://{outside}",
        "uploads/http-manifest.csv": secret_site.url("secret.jsonl"),
        "uploads/relative-manifest.csv": "../private/secret.jsonl",
    }
    for key, line in hostile.items():
        body = part + "\n" + (line + "\n" if line else "")
        s3_client.put_object(Bucket=bucket, Key=key, Body=body.encode())

    claims = serve_once(trigger_config(tmp_path, bucket=bucket))

    assert claims["uploads/ok-manifest.csv"].status == "SUCCEEDED"
    for key, line in hostile.items():
        if line is None:
            continue
        claim = claims[key]
        assert (claim.status, claim.error) == ("FAILED", "States.ItemReaderFailed"), key
        assert f"s3://{bucket}/{key}, line 2" in claim.cause, claim.cause
    assert leaks(tmp_path / "results", tmp_path / "state") == []
    assert secret_site.hits == []


def test_a_triggered_inventory_cannot_point_at_another_bucket(
    tmp_path, s3_client, bucket, other_bucket
):
    s3_client.put_object(Bucket=other_bucket, Key="uploads/data/1.csv.gz",
                         Body=_inventory_csv([["src", SECRET, "1"]]))  # fmt: skip
    s3_client.put_object(Bucket=bucket, Key="uploads/cfg/date/manifest.json",
                         Body=_inventory(other_bucket, ["uploads/data/1.csv.gz"]))  # fmt: skip
    pipeline_data = {**ATHENA_PIPELINE, "ItemReader": INVENTORY}
    claims = serve_once(trigger_config(tmp_path, bucket=bucket, pipeline_data=pipeline_data))
    claim = claims["uploads/cfg/date/manifest.json"]
    assert (claim.status, claim.error) == ("FAILED", "States.ItemReaderFailed")
    assert "files[0]" in claim.cause and f"s3://{other_bucket}/uploads/data/1.csv.gz" in claim.cause
    assert leaks(tmp_path / "results", tmp_path / "state") == []


def _notification(bucket: str, key: str, *, encoded: bool = False) -> str:
    """An S3 event notification of a new object; S3 sends keys URL-encoded."""
    sent = key if encoded else quote_plus(key, safe="/")
    record = {
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": sent, "size": 10, "eTag": "e1"}},
    }
    return json.dumps({"Records": [record]})  # fmt: skip


def test_sqs_triggers_default_to_the_pattern_prefix_and_manifest_locations_widen_it(
    tmp_path, s3_client, bucket
):
    s3_client.put_object(Bucket=bucket, Key="shared/part-0", Body=b'{"n": 1}\n')
    s3_client.put_object(Bucket=bucket, Key="uploads/m-manifest.csv",
                         Body=f"s3://{bucket}/shared/part-0\n".encode())  # fmt: skip

    def outcome(config: dict[str, Any]) -> Any:
        with TriggerService(from_dict(config)) as service:
            service.handle_message(_notification(bucket, "uploads/m-manifest.csv"), "test")
            service.wait_for_runs()
            assert service.ledger is not None
            return service.ledger.all()[0]

    narrow = outcome(trigger_config(tmp_path / "a", bucket=bucket, poll=False))
    assert narrow.status == "FAILED" and f"s3://{bucket}/uploads/" in narrow.cause
    wide = outcome(trigger_config(tmp_path / "b", bucket=bucket, poll=False,
                                  manifest_locations=[f"s3://{bucket}/shared/"]))  # fmt: skip
    assert wide.status == "SUCCEEDED", wide.cause


def test_a_trigger_reads_the_uploaded_key_as_itself(tmp_path, s3_client, bucket):
    bodies = {
        "uploads/a.jsonl": b'{"who": "a"}\n',
        "uploads/a.jsonl?versionId=x": b'{"who": "versionId"}\n',
        "uploads/a.jsonl::b": b'{"who": "chained"}\n',
        "uploads/a.jsonl#b": b'{"who": "fragment"}\n',
    }
    for key, body in bodies.items():
        s3_client.put_object(Bucket=bucket, Key=key, Body=body)
    claims = serve_once(trigger_config(tmp_path, bucket=bucket, pipeline_data=JSONL_PIPELINE))
    assert set(claims) == set(bodies)
    for key, body in bodies.items():
        assert claims[key].status == "SUCCEEDED", (key, claims[key].cause)
        frame = load_results(claims[key].manifest_url)
        assert list(frame["output"]) == [json.loads(body)], key


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("uploads/../private/x.jsonl", "'..' segment"),
        ("uploads/%2e%2e/private/x.jsonl", "'..' segment"),  # as sent: '..' URL-encoded
        ("uploads/./x.jsonl", "'.' segment"),
        ("/uploads/x.jsonl", "absolute"),
        ("uploads/x\r\n.jsonl", "control"),
        ("uploads/\u202ex.jsonl", "format character"),
        ("uploads/" + "x" * 1100, "longer than"),
    ],
)
def test_a_trigger_refuses_hostile_keys(key, reason, tmp_path, bucket, caplog):
    config = trigger_config(tmp_path, bucket=bucket, poll=False, pipeline_data=JSONL_PIPELINE)
    body = _notification(bucket, key, encoded="%" in key)
    with TriggerService(from_dict(config)) as service:
        assert service.handle_message(body, "test") == []
        assert service.refused == 1
        assert service.ledger is not None and service.ledger.all() == []
    assert any(reason in record.getMessage() for record in caplog.records), reason


@pytest.mark.parametrize(
    ("locations", "rule"),
    [
        (["file:///etc/"], "s3:// only"),
        (["/etc/"], "s3:// only"),
        (["https://host/x/"], "s3:// only"),
        (["s3://a..b/"], "s3:// only"),
        (["s3://user:pw@b/"], "s3:// only"),
        (["s3://b/x/../y/"], "'.' or '..' segment"),
        (["s3://b/x::file:///etc/"], "without '::'"),
        (["s3://b/x\n"], "control character"),
    ],
)
def test_hostile_manifest_locations_in_a_trigger_config_are_refused(locations, rule, tmp_path):
    config = trigger_config(tmp_path, bucket="b", manifest_locations=locations)
    with pytest.raises(SpecError, match=rule) as info:
        from_dict(config)
    assert info.value.path == "triggers.0.manifest_locations"


def test_a_trigger_config_cannot_widen_scope_through_its_pipelines(tmp_path):
    data = {**ATHENA_PIPELINE, "AllowedLocations": ["file:///", "s3://anything/"]}
    config = trigger_config(tmp_path, bucket="b", pipeline_data=data)
    with pytest.raises(SpecError, match="manifest_locations") as info:
        TriggerService(from_dict(config))
    assert info.value.path == "pipelines.p.AllowedLocations"
    # and the other guards of a hostile config still hold
    escaping = {**trigger_config(tmp_path, bucket="b"), "pipelines": {"p": "../../etc/passwd"}}
    with pytest.raises(SpecError, match="outside pipelines_dir"):
        from_dict(escaping)
    imported = trigger_config(
        tmp_path, bucket="b", pipeline_data={**ATHENA_PIPELINE, "Worker": "os:system"}
    )
    with pytest.raises(SpecError, match="Worker"):
        TriggerService(from_dict(imported))
    path = tmp_path / "triggers.yaml"
    path.write_text(json.dumps(trigger_config(tmp_path, bucket="b")))
    assert load_config(path).triggers[0].manifest_locations is None


# -- credentials in URLs ---------------------------------------------------------------------

PASSWORD = f"pw-{uuid.uuid4().hex}"


@pytest.fixture
def private_site():
    site = FileServer({"items.jsonl": b'{"n": 1}\n{"n": 2}\n'}, auth=("reader", PASSWORD))
    yield site
    site.close()


def test_credentials_in_a_source_url_reach_no_file_and_no_output(tmp_path, state_dir, private_site):
    source = f"http://reader:{PASSWORD}@{private_site.base}/items.jsonl"
    path = pipeline(tmp_path, "unused.jsonl", {"ReaderConfig": {"InputType": "JSONL"}})

    ok = invoke("run", str(path), "--source", source, "--run-id", "with-password")
    assert ok.exit_code == 0, ok.output
    assert PASSWORD not in ok.output
    assert leaks(tmp_path / "results", state_dir, marker=PASSWORD) == []
    with Journal.open(state_dir, "with-password", readonly=True) as journal:
        assert journal.run().spec["Source"] == f"http://***@{private_site.base}/items.jsonl"

    missing = invoke("run", str(path), "--source", source.replace("items", "missing"))
    assert missing.exit_code in (2, 3), missing.output
    assert PASSWORD not in missing.output
    assert leaks(tmp_path / "results", state_dir, marker=PASSWORD) == []


def test_resuming_a_run_whose_source_had_credentials_asks_for_them(
    tmp_path, state_dir, private_site
):
    source = f"http://reader:{PASSWORD}@{private_site.base}/items.jsonl"
    path = pipeline(tmp_path, source, {"ReaderConfig": {"InputType": "JSONL"}},
                    ItemBatcher={"MaxItemsPerBatch": 1})  # fmt: skip
    assert invoke("run", str(path), "--run-id", "r1").exit_code == 0
    # Pretend the driver died mid-run: running, one batch unfinished.
    with Journal.open(state_dir, "r1") as journal:
        journal.update_run(status="RUNNING", outcome=None, pid=None)
        journal.db.execute("UPDATE batch SET status = 'RUNNING' WHERE number = 1")

    refused = invoke("resume", "r1")
    assert refused.exit_code == 2, refused.output
    assert "credentials" in refused.output and "--source" in refused.output
    assert PASSWORD not in refused.output

    wrong = invoke("resume", "r1", "--source", f"http://reader:{PASSWORD}@elsewhere/x.jsonl")
    assert wrong.exit_code == 2, wrong.output

    resumed = invoke("resume", "r1", "--source", source)
    assert resumed.exit_code == 0, resumed.output
    assert PASSWORD not in resumed.output
    assert leaks(tmp_path / "results", state_dir, marker=PASSWORD) == []
