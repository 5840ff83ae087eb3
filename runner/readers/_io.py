"""Thin URL handling for readers: URL in, ``(fs, path)`` out; gzip/zstd opened transparently.

All storage access goes through fsspec, so ``s3://``, local paths and ``memory://`` work alike.
Missing buckets, keys and files become :class:`runner.errors.InputNotFound` naming the URL.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator, Mapping
from typing import IO, Any

import fsspec
from fsspec.core import url_to_fs

from runner.errors import (
    InputNotFound,
    ReaderError,
    ShardmapError,
    SourceUnavailable,
    storage_error,
)

__all__ = [
    "BOM",
    "compression_of",
    "filesystem",
    "is_local_disk",
    "open_binary",
    "open_text",
    "protocols",
    "url_of",
]

#: UTF-8's byte-order mark: not part of a text file's first line.
BOM = b"\xef\xbb\xbf"

# What a storage or decompression stream raises mid-read: network and disk errors (OSError),
# truncated gzip (EOFError), corrupt gzip (zlib.error), corrupt zstd (zstandard.ZstdError).
_READ_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error)
try:
    import zstandard

    _READ_ERRORS += (zstandard.ZstdError,)
except ImportError:  # zstd support is optional in fsspec
    pass

_COMPRESSION = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}


def compression_of(url: str) -> str | None:
    """``gzip``/``zstd`` from the file name, else ``None``."""
    lower = url.lower()
    for suffix, name in _COMPRESSION.items():
        if lower.endswith(suffix):
            return name
    return None


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None):
    """``(fs, path)`` for ``url``."""
    return url_to_fs(url, **dict(storage_options or {}))


@contextlib.contextmanager
def open_binary(
    url: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    decompress: bool = True,
    block_size: int = 8 * 1024 * 1024,
) -> Iterator[IO[bytes]]:
    """Open ``url`` for streaming reads, decompressing ``.gz``/``.zst`` unless told not to.

    Raises :class:`InputNotFound` for a missing bucket/key/file, :class:`ReaderError` for
    other storage failures, always naming the URL.
    """
    compression = compression_of(url) if decompress else None
    try:
        fs, path = filesystem(url, storage_options)
        raw = (
            fs.open(path, "rb") if is_local_disk(fs) else fs.open(path, "rb", block_size=block_size)
        )
    except OSError as exc:  # missing, permission, network: the one table decides which
        if "does not exist" in str(exc) and not isinstance(exc, PermissionError):
            raise InputNotFound(url) from exc  # some servers' spelling of NoSuchBucket
        raise storage_error(exc, url) from exc
    try:
        with raw:
            if compression is None:
                yield raw
            else:
                with fsspec.compression.compr[compression](raw, mode="rb") as stream:
                    yield stream
    except ShardmapError:
        raise
    except _READ_ERRORS as exc:  # raised while the caller reads: name the file, keep the cause
        failure = storage_error(exc, url) if isinstance(exc, OSError) else None
        if isinstance(failure, SourceUnavailable | InputNotFound):
            raise failure from exc  # the network or the disk, not the data
        what = f"{compression} data is corrupt or truncated" if compression else "read failed"
        raise ReaderError(url, f"{what}: {type(exc).__name__}: {exc}") from exc


@contextlib.contextmanager
def open_text(
    url: str, storage_options: Mapping[str, Any] | None = None, *, newline: str | None = None
) -> Iterator[IO[str]]:
    """Like :func:`open_binary` but decoded as UTF-8 (a BOM is dropped)."""
    import io

    with open_binary(url, storage_options) as raw:
        yield io.TextIOWrapper(raw, encoding="utf-8-sig", newline=newline)


def protocols(fs: Any) -> frozenset[str]:
    """Every protocol name of the fsspec filesystem ``fs`` (fsspec gives one or a tuple)."""
    proto = fs.protocol
    return frozenset(proto) if isinstance(proto, tuple | list) else frozenset((proto,))


def is_local_disk(fs: Any) -> bool:
    """Whether ``fs`` is this machine's file system (fsspec's ``file``/``local``): its paths
    are OS paths, folders must exist before a file is written in them, and reads need no
    read-ahead buffer of fsspec's. Memory and object stores are not.

    >>> is_local_disk(filesystem("/tmp")[0]), is_local_disk(filesystem("memory://x")[0])
    (True, False)
    """
    return not protocols(fs).isdisjoint(("file", "local"))


def url_of(fs: Any, path: str) -> str:
    """The URL that :func:`filesystem` maps back to ``path`` on ``fs``: a local path as it is,
    any other with its protocol again (fsspec's paths drop it: ``bucket/key``).

    >>> fs, path = filesystem("memory://data/a.csv")
    >>> url_of(fs, path), url_of(filesystem("/tmp")[0], "/tmp/a.csv")
    ('memory:///data/a.csv', '/tmp/a.csv')
    """
    return path if is_local_disk(fs) else fs.unstrip_protocol(path)
