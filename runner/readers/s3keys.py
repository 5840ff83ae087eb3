"""Object keys read as keys: a URL for ``(bucket, key)`` that every reader opens exactly.

An S3 key may hold any character, but an ``s3://`` URL is parsed on its way to a request:
s3fs cuts ``?versionId=`` out of a path (``S3FileSystem.split_path``, so ``s3://b/a?versionId=x``
opens object ``a``), fsspec's ``url_to_fs`` cuts ``::`` (URL chaining) and drops a trailing
``/``. No escape inside ``s3://`` survives that, so :func:`object_url` gives the plain
``s3://bucket/key`` when s3fs reads it back as exactly that object (nearly every key), and
otherwise ``s3key://bucket/<the key, percent-encoded>``: :class:`ExactKeyS3FileSystem`
(registered with fsspec as ``s3key`` by :mod:`runner.readers.base`) decodes it back to the key
and reads through s3fs with that ``Bucket`` and ``Key``, nothing parsed.

Keys with a ``.`` or ``..`` segment are refused (:func:`unsafe_key`): HTTP clients and servers
normalise such paths, so no request names that object exactly (SeaweedFS refuses them; others
may serve a different object, or another bucket's).

>>> object_url("data", "in/a.csv")
's3://data/in/a.csv'
>>> object_url("data", "in/a?versionId=x")
's3key://data/in%2Fa%3FversionId%3Dx'
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, unquote

from s3fs import S3FileSystem

__all__ = [
    "EXACT_PROTOCOL",
    "ExactKeyS3FileSystem",
    "object_url",
    "split_object_url",
    "unsafe_key",
    "valid_bucket",
]

EXACT_PROTOCOL = "s3key"
MAX_KEY_BYTES = 1024  # S3's longest key
# Bucket names as S3 allows them (legacy names may hold capitals and '_'); no '/', no '..'.
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


def unsafe_key(key: str) -> str | None:
    """Why ``key`` cannot be read exactly as an S3 key, or ``None`` when it can.

    >>> unsafe_key("in/../secret"), unsafe_key("in/a?versionId=x")
    ("a '..' segment", None)
    """
    if not key:
        return "an empty key"
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        return f"longer than S3's {MAX_KEY_BYTES} bytes"
    for segment in key.split("/"):
        if segment in (".", ".."):
            return f"a {segment!r} segment"
    return None


def valid_bucket(bucket: str) -> bool:
    """Whether ``bucket`` is a bucket name (no ``/``, no ``..``, no scheme, no ARN)."""
    return bool(_BUCKET.match(bucket)) and ".." not in bucket


def object_url(bucket: str, key: str) -> str:
    """A URL that the readers open as object ``key`` of ``bucket``, exactly.

    Raises ``ValueError`` for a bucket that is not a bucket name or an :func:`unsafe_key`.
    """
    if not valid_bucket(bucket):
        raise ValueError(f"not a bucket name: {bucket!r}")
    reason = unsafe_key(key)
    if reason:
        raise ValueError(f"key {key!r}: {reason}")
    if _reads_back(key):
        return f"s3://{bucket}/{key}"
    return f"{EXACT_PROTOCOL}://{bucket}/{quote(key, safe='')}"


def split_object_url(url: str) -> tuple[str, str]:
    """``(bucket, key)`` of an :func:`object_url` (``s3://`` read the way s3fs reads it)."""
    scheme, _, rest = url.partition("://")
    bucket, _, key = rest.partition("/")
    if scheme == EXACT_PROTOCOL:
        return bucket, unquote(key)
    return bucket, key.partition("?versionId=")[0]


def _reads_back(key: str) -> bool:
    """Whether ``s3://bucket/<key>`` reaches s3fs as this very key.

    ``?`` (s3fs's ``?versionId=``, and a query to ``urlsplit``), ``#`` (a fragment to
    ``urlsplit``), ``::`` (fsspec's URL chaining) and a trailing ``/`` (stripped by fsspec) do not.
    """
    return not (key.endswith("/") or "::" in key or "?" in key or "#" in key)


class ExactKeyS3FileSystem(S3FileSystem):
    """s3fs, but a path is ``bucket/<percent-encoded key>``: the key is never parsed.

    Only reading by path is meant (open, info, size, cat); listings return s3fs's own paths.
    """

    protocol = (EXACT_PROTOCOL,)

    def split_path(self, path: str) -> tuple[str, str, str | None]:
        bucket, _, encoded = self._strip_protocol(path).lstrip("/").partition("/")
        return bucket, unquote(encoded), None

    @staticmethod
    def _get_kwargs_from_urls(urlpath: str) -> dict[str, Any]:
        return {}  # s3fs would turn on version_aware for a '?versionId=' in the URL
