"""A real S3-compatible server for the store tests: moto's standalone server on loopback.

Test modules import the fixtures they need::

    from tests.s3_server import s3_server  # noqa: F401  (a pytest fixture)
"""

from __future__ import annotations

import contextlib
import logging
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow.fs as pafs
import pytest

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    """Where the server listens, and how to reach a bucket on it."""

    host: str
    port: int
    bucket: str

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def uri(self, prefix: str) -> str:
        """A store URI for ``prefix`` in the bucket, credentials included as options."""
        return (
            f"s3://{self.bucket}/{prefix}?endpoint_override={self.endpoint}&scheme=http"
            f"&region={REGION}&access_key={ACCESS_KEY}&secret_key={SECRET_KEY}"
        )

    def filesystem(self) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            region=REGION,
            endpoint_override=self.endpoint,
            scheme="http",
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_s3(bucket: str = "streamlearn-test") -> Iterator[S3Server]:
    """Start moto's S3 server on 127.0.0.1, create ``bucket``, stop it afterwards."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        info = S3Server("127.0.0.1", port, bucket)
        fs = pafs.S3FileSystem(
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            region=REGION,
            endpoint_override=info.endpoint,
            scheme="http",
            allow_bucket_creation=True,
        )
        fs.create_dir(bucket)
        yield info
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server per test module."""
    with running_s3() as server:
        yield server


@pytest.fixture
def s3_uri(s3_server: S3Server) -> str:
    """A fresh, empty store prefix on the module's S3 server."""
    return s3_server.uri(f"stores/{uuid.uuid4().hex[:10]}")


@pytest.fixture(params=["local", "s3"])
def store_uri(request: pytest.FixtureRequest, tmp_path) -> str:
    """A model store's URI, once on the local disk and once on the S3 server."""
    if request.param == "local":
        return str(tmp_path / "models")
    return request.getfixturevalue("s3_uri")
