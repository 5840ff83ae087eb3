"""Shared fixtures: a real S3 server (SeaweedFS) on loopback for the whole session."""

from __future__ import annotations

import itertools
import os

import pytest

from tests.s3server import start_seaweedfs

_bucket_numbers = itertools.count()


@pytest.fixture(scope="session")
def s3_server():
    server = start_seaweedfs()
    saved = {key: os.environ.get(key) for key in server.env}
    os.environ.update(server.env)  # boto3, s3fs and pyarrow all honour these
    try:
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@pytest.fixture
def s3_client(s3_server):
    return s3_server.client()


@pytest.fixture
def bucket(s3_server, s3_client) -> str:
    """A fresh, empty bucket per test."""
    name = f"test-{os.getpid()}-{next(_bucket_numbers)}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3fs_clear_cache():
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    yield
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    """Where a reader test puts its data: a local folder or an S3 bucket. Yields a base URL."""
    if request.param == "local":
        yield str(tmp_path)
    else:
        request.getfixturevalue("s3_server")
        yield "s3://" + request.getfixturevalue("bucket")


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    """Every test journals into its own state directory, never the checkout's .shardmap/."""
    path = tmp_path / "state"
    monkeypatch.setenv("SHARDMAP_STATE_DIR", str(path))
    return path
