"""A real S3 API on loopback for the tests: moto's threaded server (`moto[server]`), never on port 5000.

pyarrow talks to S3 over HTTP itself (it does not use boto), so moto's in-process mock would do
nothing for it: the server is real, and pyarrow, Ray's storage layer and every Ray worker reach it
through `AWS_ENDPOINT_URL`. Stopping and starting it again keeps its buckets (moto keeps them in
this process's memory), which is what an outage test needs.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import contextmanager
from typing import Iterator

import pyarrow.fs as pafs

from trainables.storage_fs import read_all

ACCESS_KEY = "testing-access-key"
SECRET_KEY = "s3-secret-never-recorded-7f3a"  # tests look for this value in every file and MLflow record


class S3Server:
    def __init__(self):
        self.port = 0
        self._server = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The AWS environment that points pyarrow (and any subprocess) at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true"}

    def start(self) -> None:
        """Start on a free port the first time, and on the same port after a `stop`."""
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        if self.port:
            wait_until(lambda: _port_free(self.port), 60, f"port {self.port} to be free again")
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        assert self.port != 5000
        wait_until(self.up, 30, "the S3 server to answer")

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # werkzeug closes the listening socket: connections are refused from now
            self._server = None

    def up(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
            return True
        except OSError:
            return False

    def filesystem(self) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(endpoint_override=self.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                                 region="us-east-1", allow_bucket_creation=True)

    def create_bucket(self, name: str) -> str:
        self.filesystem().create_dir(name)
        return name

    def files(self, prefix: str) -> list[str]:
        """Every file under bucket/prefix."""
        infos = self.filesystem().get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
        return [i.path for i in infos if i.type == pafs.FileType.File]

    def read(self, path: str) -> bytes:
        return read_all(self.filesystem(), path)


class _AccessLog(logging.Handler):
    def __init__(self, lines: list[str]):
        super().__init__()
        self.lines = lines

    def emit(self, record):
        self.lines.append(record.getMessage())


@contextmanager
def access_log() -> Iterator[list[str]]:
    """The requests the server answers while the block runs, one line each (werkzeug's access log, which
    `start` otherwise silences; the method is colored, so look for "GET /" without the quote)."""
    log, lines = logging.getLogger("werkzeug"), []
    handler, level = _AccessLog(lines), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_until(condition, timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)  # polling a condition, with a deadline


def apply_env(server: S3Server) -> dict[str, str | None]:
    """Point this process and its subprocesses at the server; returns what to restore."""
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    return saved


def restore_env(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
