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

__all__ = ["compression_of", "filesystem", "open_binary", "open_text"]

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
            fs.open(path, "rb", block_size=block_size) if not _is_local(fs) else fs.open(path, "rb")
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


def _is_local(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
