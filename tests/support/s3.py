"""A real S3-protocol server on loopback: moto's standalone server (`moto[server]`), in a child
process the tests can stop and start again, as a store that goes away for a while."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from bench.servers import free_port

REGION = "us-east-1"


class S3Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> S3Server:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"{self.url}/moto-api/", timeout=1)
                return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the S3 server did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        """Gone, as a store that crashed: connections are refused, and what it held is lost."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def create_bucket(self, name: str | None = None) -> str:
        """A new, empty bucket (moto takes any credentials); its name."""
        name = name or f"imagehook-{secrets.token_hex(4)}"
        httpx.put(f"{self.url}/{name}", timeout=5).raise_for_status()
        return name

    def keys(self, bucket: str) -> list[str]:
        """Every object's key in the bucket, and every multipart upload left unfinished."""
        listing = httpx.get(f"{self.url}/{bucket}", params={"list-type": "2"}, timeout=5).text
        uploads = httpx.get(f"{self.url}/{bucket}", params={"uploads": ""}, timeout=5).text
        return sorted(part.split("</Key>")[0] for part in (listing + uploads).split("<Key>")[1:])

    def environment(self) -> dict[str, str]:
        """What an AWS client needs to use this server."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "imagehook-test",
            "AWS_SECRET_ACCESS_KEY": "imagehook-test-secret",
        }


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server().start()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in server.environment().items():
            patch.setenv(name, value)  # read by obstore, in this process and in gateways it starts
        yield server
    server.stop()


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    """A fresh bucket for one test."""
    return s3_server.create_bucket()
