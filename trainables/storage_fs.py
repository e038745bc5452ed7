"""The one place a storage location (a local path or a URI such as s3://bucket/x) becomes a pyarrow
filesystem: shard reads, the sweep's state file, Tune's and Train's checkpoints and the driver's
reads of them all come through `resolve`, and a whole file is read through `read_all`.

An S3 location gets its endpoint and credentials from the usual AWS environment (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, ... : pyarrow's `from_uri` reads
them, a directly built `S3FileSystem()` would ignore the endpoint), and retries every request with
exponential backoff for at most `STORE_RETRY_ENV` seconds in all (default 60) before the call fails.
The filesystem pickles without its credentials (each process reads its own environment) and keeps
its retries when Ray ships it to a worker, which a plain `S3FileSystem` would drop.
"""

from __future__ import annotations

import math
import os
import re

import pyarrow as pa
import pyarrow.fs as pafs

from trainables.errors import UserError

STORE_RETRY_ENV = "FACE_ORCHESTRATOR_STORE_RETRY_S"
DEFAULT_RETRY_S = 60.0
CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 60.0
_BASE_DELAY_S = 0.025  # the AWS SDK's default strategy waits 25 ms x 2**n before retry n (n >= 1)
_USERINFO = re.compile(r"^(\w[\w+.-]*://)[^/@]*@")
_CREDENTIAL_QUERY = {"access_key", "secret_key", "session_token"}  # pyarrow's S3 URI options that hold one


def retry_budget_s() -> float:
    try:
        return max(0.0, float(os.environ.get(STORE_RETRY_ENV, DEFAULT_RETRY_S)))
    except ValueError:
        raise UserError(f"{STORE_RETRY_ENV}={os.environ[STORE_RETRY_ENV]!r} is not a number of seconds: "
                        "set it to e.g. 60, or unset it") from None


def max_attempts(budget_s: float) -> int:
    """The most attempts whose backoffs add up to at most `budget_s` (25 ms x (2**n - 2) for n attempts)."""
    return max(1, int(math.floor(math.log2(budget_s / _BASE_DELAY_S + 2))))


def _retrying_kwargs() -> dict:
    """Bounded retries, and timeouts for a server that accepts and then hangs (a URI's own timeouts win)."""
    return {"retry_strategy": pafs.AwsDefaultS3RetryStrategy(max_attempts=max_attempts(retry_budget_s())),
            "connect_timeout": CONNECT_TIMEOUT_S, "request_timeout": REQUEST_TIMEOUT_S}


class RetryingS3FileSystem(pafs.S3FileSystem):
    """An S3FileSystem that pickles as its options without credentials, and is rebuilt with bounded
    retries in the process that unpickles it."""

    def __init__(self, options: dict):
        self._options = {k: v for k, v in options.items() if k not in ("access_key", "secret_key", "session_token")}
        given = {k: v for k, v in self._options.items() if not (k.endswith("_timeout") and v is not None and v < 0)}
        super().__init__(**{**_retrying_kwargs(), **given})

    def __reduce__(self):
        return RetryingS3FileSystem, (self._options,)


def without_userinfo(uri: str) -> str:
    return _USERINFO.sub(r"\1", uri)


def without_credentials(uri: str) -> str:
    """`uri` without its user:password@ and without the query parameters pyarrow takes credentials from."""
    base, mark, query = without_userinfo(uri).partition("?")
    kept = [p for p in query.split("&") if p and p.split("=", 1)[0].lower() not in _CREDENTIAL_QUERY]
    return base + (mark + "&".join(kept) if kept else "")


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path in it) of a local path or a pyarrow URI (s3://bucket/x, file:///data/x, gs://...)."""
    location = str(location)
    if "://" not in location:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(location))
    shown = without_credentials(location)
    if location.startswith("s3://") and shown != location.rstrip("?&"):
        raise UserError(f"{shown} was given with credentials in the URI: put them in AWS_ACCESS_KEY_ID and "
                        "AWS_SECRET_ACCESS_KEY instead (they reach every Ray worker from there)")
    try:
        fs, path = pafs.FileSystem.from_uri(location)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as err:
        raise UserError(f"cannot open {shown}: {one_line(err)}; check the URI, AWS_ENDPOINT_URL and the "
                        "credentials for it") from None
    if isinstance(fs, pafs.S3FileSystem):
        fs = RetryingS3FileSystem(fs.__reduce__()[1][0])
    return fs, path


def ray_storage(location: str) -> tuple[str, pafs.FileSystem | None]:
    """What Ray's RunConfig(storage_path=, storage_filesystem=) takes for a location: a local path as it is,
    a URI as its path in our filesystem (Ray wants the path without its scheme when given a filesystem)."""
    if "://" not in str(location):
        return str(location), None
    fs, path = resolve(location)
    return path, fs


def check_answers(fs: pafs.FileSystem, path: str, location: str) -> None:
    """One request to the store (retried for the bounded time); a UserError naming `location` if it fails."""
    try:
        fs.get_file_info(path)
    except OSError as err:
        raise UserError(f"the store at {without_userinfo(location)} does not answer ({one_line(err)}); the trial is "
                        "retried from its last checkpoint (or continue with --resume once the store answers)") from None


def read_all(fs: pafs.FileSystem, path: str) -> bytes:
    """A whole file, in one request to an object store. A random-access file knows its size and reads it with
    one ranged GET; an input stream's read() takes 256 KiB at a time, each its own GET (a 90 MB file:
    360 requests, 27 s from an S3 server on loopback against 0.3 s)."""
    with fs.open_input_file(path) as handle:
        return handle.read()


def one_line(err: BaseException) -> str:
    """An exception's text on one line, without the AWS SDK's repeated details."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:300]
