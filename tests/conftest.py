"""Shared fixtures: a real S3 server (SeaweedFS) on loopback for the whole session, and real
Dask LocalClusters."""

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


# -- Dask: real LocalClusters of two single-threaded worker processes --------------------------
def _local_cluster():
    from distributed import LocalCluster

    return LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")


@pytest.fixture(scope="module")
def cluster():
    """One LocalCluster per test module that asks for it; yields ``(cluster, client)``."""
    from distributed import Client

    with _local_cluster() as local, Client(local) as client:
        yield local, client


@pytest.fixture
def dask_scheduler(cluster, monkeypatch):
    """The shared cluster's address, also given to runs as ``SHARDMAP_DASK_SCHEDULER``."""
    local, _ = cluster
    monkeypatch.setenv("SHARDMAP_DASK_SCHEDULER", local.scheduler_address)
    return local.scheduler_address


@pytest.fixture
def own_cluster(monkeypatch):
    """A cluster of its own for a test that kills workers, used through
    ``SHARDMAP_DASK_SCHEDULER``; yields ``(cluster, client)``. LocalCluster closes a worker's
    nanny for good when that worker is gone again ``lost-worker-timeout`` (15 s) after an
    earlier death, so kills in one shared cluster can strand later tests with one worker."""
    from distributed import Client

    with _local_cluster() as local, Client(local) as client:
        monkeypatch.setenv("SHARDMAP_DASK_SCHEDULER", local.scheduler_address)
        yield local, client
