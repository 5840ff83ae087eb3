"""The error tree and its one translation table, ``errors.storage_error``.

The table is exercised with the exceptions storage really raises: botocore's and aiohttp's own
classes (an aiohttp connection refused by a real closed port), s3fs's translation of S3 error
codes, and OS errors from real system calls (``/dev/full``, a refused socket, a missing file).
Every name the table matches by name has a case here, so a name added to it without a test, or
misspelt, fails.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from pathlib import Path

import botocore.exceptions
import fsspec
import pytest
import s3fs.errors
import urllib3.exceptions

from runner import errors
from runner.errors import (
    EXIT_BAD_INPUT,
    EXIT_UNAVAILABLE,
    AslValidatorMissing,
    InputNotFound,
    JournalError,
    JournalUnavailable,
    PatternError,
    ReaderError,
    ShardmapError,
    SourceUnavailable,
    SpecError,
    WriterError,
    storage_error,
)

URL = "s3://bucket/data.csv"


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _refused_socket() -> ConnectionRefusedError:
    try:
        socket.create_connection(("127.0.0.1", _closed_port()), timeout=5).close()
    except ConnectionRefusedError as exc:
        return exc
    raise AssertionError("a closed port accepted a connection")


def _aiohttp_refused() -> BaseException:
    """aiohttp's ClientConnectorError, raised by aiohttp itself for a refused connection."""
    aiohttp = pytest.importorskip("aiohttp")

    async def get() -> BaseException:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.get(f"http://127.0.0.1:{_closed_port()}/x"):
                    pass
            except aiohttp.ClientConnectorError as exc:
                return exc
        raise AssertionError("a closed port answered")

    return asyncio.run(get())


def _aiohttp(name: str, *args: object) -> Callable[[], BaseException]:
    def make() -> BaseException:
        aiohttp = pytest.importorskip("aiohttp")
        return getattr(aiohttp, name)(*args)

    return make


def _client_error(code: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": f"{code} (from S3)"}}, "GetObject"
    )


def _s3fs(code: str) -> BaseException:
    """What s3fs raises for an S3 error code: its OSError translation, the ClientError chained."""
    translated = s3fs.errors.translate_boto_error(_client_error(code))
    assert translated.__cause__ is not None
    return translated


def _pool() -> urllib3.HTTPConnectionPool:
    return urllib3.HTTPConnectionPool("s3.invalid", 443)


def _disk_full() -> OSError:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    try:
        with open("/dev/full", "wb", buffering=0) as full:
            full.write(b"x")
    except OSError as exc:
        return exc
    raise AssertionError("/dev/full took a write")


def _missing_file(tmp: Path) -> OSError:
    try:
        with fsspec.open(f"file://{tmp}/no/such/file.csv", "rb") as f:
            f.read()
    except FileNotFoundError as exc:
        return exc
    raise AssertionError("a missing file opened")


#: Every exception class the table recognises by name, built as its library builds it.
UNREACHABLE: dict[str, Callable[[], BaseException]] = {
    "EndpointConnectionError": lambda: botocore.exceptions.EndpointConnectionError(
        endpoint_url="https://s3.invalid"
    ),
    "ConnectTimeoutError": lambda: botocore.exceptions.ConnectTimeoutError(
        endpoint_url="https://s3.invalid"
    ),
    "ReadTimeoutError": lambda: botocore.exceptions.ReadTimeoutError(
        endpoint_url="https://s3.invalid"
    ),
    "ConnectionClosedError": lambda: botocore.exceptions.ConnectionClosedError(
        endpoint_url="https://s3.invalid"
    ),
    "ProxyConnectionError": lambda: botocore.exceptions.ProxyConnectionError(
        proxy_url="http://proxy.invalid:3128"
    ),
    "ClientConnectorError": _aiohttp_refused,
    "ClientConnectionError": _aiohttp("ClientConnectionError", "connection lost"),
    "ServerDisconnectedError": _aiohttp("ServerDisconnectedError"),
    "ServerTimeoutError": _aiohttp("ServerTimeoutError", "timeout on reading data"),
    "NewConnectionError": lambda: urllib3.exceptions.NewConnectionError(
        _pool()._new_conn(), "Failed to establish a new connection"
    ),
    "MaxRetryError": lambda: urllib3.exceptions.MaxRetryError(_pool(), "/data.csv", None),
}


def test_every_name_the_table_matches_is_tested_with_its_real_class() -> None:
    assert set(UNREACHABLE) == errors._UNREACHABLE_NAMES
    for name, make in UNREACHABLE.items():
        assert type(make()).__name__ == name


@pytest.mark.parametrize("name", sorted(UNREACHABLE))
@pytest.mark.parametrize("writing", [False, True], ids=["read", "write"])
def test_unreachable_services_are_exit_3(name: str, writing: bool) -> None:
    original = UNREACHABLE[name]()
    error = storage_error(original, URL, writing=writing)
    assert type(error) is (WriterError if writing else SourceUnavailable)
    assert error.exit_code == EXIT_UNAVAILABLE
    assert "cannot reach the storage service" in str(error)
    assert name in str(error)  # the message says what failed


def test_unreachable_is_found_anywhere_in_the_chain() -> None:
    """fsspec and s3fs wrap what botocore raised; the cause decides."""
    cause = botocore.exceptions.EndpointConnectionError(endpoint_url="https://s3.invalid")
    try:
        try:
            raise cause
        except botocore.exceptions.BotoCoreError as exc:
            raise OSError("s3fs gave up") from exc
    except OSError as wrapped:
        error = storage_error(wrapped, URL)
    assert isinstance(error, SourceUnavailable)
    assert "EndpointConnectionError" in str(error)


@pytest.mark.parametrize("writing", [False, True], ids=["read", "write"])
def test_a_refused_socket_and_a_timeout_are_unreachable(writing: bool) -> None:
    for original in (_refused_socket(), TimeoutError("timed out")):
        error = storage_error(original, URL, writing=writing)
        assert error.exit_code == EXIT_UNAVAILABLE
        assert "cannot reach the storage service" in str(error)


DENIED: dict[str, Callable[[], BaseException]] = {
    "EACCES": lambda: OSError(errno.EACCES, "Permission denied", "/data/out"),
    "EPERM": lambda: OSError(errno.EPERM, "Operation not permitted", "/data/out"),
    "EROFS": lambda: OSError(errno.EROFS, "Read-only file system", "/data/out"),
    **{f"s3 {code}": (lambda code=code: _s3fs(code)) for code in sorted(errors._DENIED_NAMES)},
    **{
        f"boto {code}": (lambda code=code: _client_error(code))
        for code in sorted(errors._DENIED_NAMES)
    },
}


@pytest.mark.parametrize("case", sorted(DENIED))
@pytest.mark.parametrize("writing", [False, True], ids=["read", "write"])
def test_access_denied_is_exit_3(case: str, writing: bool) -> None:
    error = storage_error(DENIED[case](), URL, writing=writing)
    assert type(error) is (WriterError if writing else SourceUnavailable)
    assert error.exit_code == EXIT_UNAVAILABLE
    assert "access denied" in str(error)


@pytest.mark.parametrize(
    "make",
    [_disk_full, lambda: OSError(errno.EDQUOT, "Disk quota exceeded")],
    ids=["ENOSPC", "EDQUOT"],
)
def test_a_full_disk_fails_the_writer_with_exit_3(make: Callable[[], OSError]) -> None:
    original = make()
    error = storage_error(original, "/data/out", writing=True)
    assert type(error) is WriterError and error.exit_code == EXIT_UNAVAILABLE
    assert "no space left on the device" in str(error)
    assert type(storage_error(original, "/data/in")) is SourceUnavailable


def test_missing_input_is_input_not_found(tmp_path: Path) -> None:
    for original in (
        _missing_file(tmp_path),
        _s3fs("NoSuchKey"),
        _s3fs("NoSuchBucket"),
        _client_error("NoSuchKey"),
        _client_error("NoSuchBucket"),
    ):
        error = storage_error(original, URL)
        assert type(error) is InputNotFound, original
        assert isinstance(error, FileNotFoundError) and error.exit_code == EXIT_BAD_INPUT
        # Writing where nothing exists yet is the writer's failure, never "input not found".
        written = storage_error(original, URL, writing=True)
        assert type(written) is WriterError and written.exit_code == EXIT_UNAVAILABLE


def test_anything_else_is_bad_input_when_reading() -> None:
    error = storage_error(ValueError("not a CSV row"), URL)
    assert type(error) is ReaderError and error.exit_code == EXIT_BAD_INPUT
    assert "ValueError: not a CSV row" in str(error)


def test_credentials_never_reach_the_message() -> None:
    url = "https://me:s3cret@example.com/data.csv"
    original = botocore.exceptions.EndpointConnectionError(endpoint_url=url)
    for writing in (False, True):
        assert "s3cret" not in str(storage_error(original, url, writing=writing))


# -- the tree ----------------------------------------------------------------------------------


def test_errors_that_live_elsewhere_are_the_trees_own() -> None:
    """Moved into errors.py; the old modules re-export them, so old imports keep working."""
    from runner.aws import AslValidatorMissing as lazy
    from runner.aws.checks import AslValidatorMissing as from_checks
    from runner.journal import JournalError as from_journal
    from runner.journal import JournalUnavailable as unavailable_from_journal
    from runner.triggers.patterns import PatternError as from_patterns

    assert from_journal is JournalError and unavailable_from_journal is JournalUnavailable
    assert from_checks is lazy is AslValidatorMissing
    assert from_patterns is PatternError
    for cls in (JournalError, JournalUnavailable, AslValidatorMissing, PatternError):
        assert cls.__module__ == "runner.errors"
    assert issubclass(PatternError, SpecError) and issubclass(JournalUnavailable, JournalError)
    assert JournalUnavailable.exit_code == EXIT_UNAVAILABLE


def test_the_docstring_draws_every_class_of_the_tree() -> None:
    """Every ShardmapError subclass of runner/ appears in the drawing of errors.py."""
    import runner.aws.checks
    import runner.executors.procpool
    import runner.journal
    import runner.triggers.patterns  # noqa: F401  (their classes must be defined to be found)

    def subclasses(cls: type) -> set[type]:
        found = set()
        for sub in cls.__subclasses__():
            found |= {sub} | subclasses(sub)
        return found

    ours = {c for c in subclasses(ShardmapError) if c.__module__.startswith("runner.")}
    drawing = (errors.__doc__ or "").split("::", 1)[1].split("Every class carries")[0]
    drawn = {line.split("── ", 1)[1].split()[0].rstrip("*") for line in drawing.splitlines()
             if "── " in line}  # fmt: skip
    assert {c.__name__ for c in ours} == drawn
    outside = {c.__name__ for c in ours if c.__module__ != "runner.errors"}
    assert outside == {"WorkerProcessDied", "TaskExited"}  # the two the drawing stars
