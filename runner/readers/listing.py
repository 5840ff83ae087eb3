"""The ``listObjectsV2`` item reader: every object under an S3 prefix (or a local directory).

Items have exactly AWS's shape (key spelled ``Etag``, ``LastModified`` in epoch seconds)::

    {"Etag": "\\"<md5 hex>\\"", "Key": "data/a.csv", "LastModified": 1718000000,
     "Size": 12, "StorageClass": "STANDARD"}

Sharding: one shard per listing page (``page_size`` keys, S3's maximum of 1,000). A shard
carries ``start_after`` (the last key of the page before it) plus the page's last key and key
count, so any process can re-read that page on its own with ``ListObjectsV2(StartAfter=...)``.
``StartAfter`` is used rather than the opaque continuation token because it is documented to
stay valid forever. If a re-read page no longer matches what was planned (objects added or
removed since), the reader fails instead of shifting item indices under the engine's feet.
The page last planned is kept in memory, so the ordinary plan-then-read loop lists each page
once.

Local directories stand in for a bucket: keys are paths relative to the directory with ``/``
separators, walked in S3's key order (UTF-8 byte order, which is what S3 lists in), ``Etag`` is
the quoted MD5 of the content (what S3 reports for a single-part upload, so every file is read
once), ``LastModified`` the mtime. Only regular files are items: a directory is not an object
(S3 has zero-byte ``dir/`` keys only when someone created them), and symlinked directories are
not followed, so a link loop cannot hang a listing.

With ``Transformation: LOAD_AND_FLATTEN`` each listed object (zero-byte ``.../`` folder keys
skipped) is read with the reader of ``inner_input_type`` and its items are emitted in listing
order; each object is one shard. Objects are read by exact key (:mod:`runner.readers.s3keys`):
a key such as ``a?versionId=x`` is that object, never version ``x`` of ``a``; a key no request
can name exactly (a ``.`` or ``..`` segment) fails the read, naming the key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import os
from collections.abc import Generator, Iterator, Mapping
from typing import Any, ClassVar, Protocol

from runner.errors import InputNotFound, ReaderError, SpecError, redact_url
from runner.readers.base import ItemReader, ReaderConfig, Recent, Shard, get_reader
from runner.readers.s3keys import object_url, unsafe_key

__all__ = ["ListingReader"]

_listed_pages = Recent(keep=2)  # pages this worker process listed last

_FLATTEN_INPUT_TYPES = ("CSV", "JSON", "JSONL", "PARQUET")


class ListingReader(ItemReader):
    """Objects under ``s3://bucket[/prefix]`` or a local directory, as AWS listing items.

    >>> reader = ListingReader(ReaderConfig(input_type="LISTING"))
    >>> [item["Key"] for item in reader.iter_items("s3://bucket/logs/")]  # doctest: +SKIP
    ['logs/2024-01-01.gz', 'logs/2024-01-02.gz']
    """

    input_type: ClassVar[str] = "LISTING"
    page_size: int = 1000  # keys per shard; S3's own maximum per ListObjectsV2 call

    def __init__(self, config: ReaderConfig) -> None:
        super().__init__(config)
        self._client: Any = None
        self._last_page: tuple[tuple[str, str | None], list[Any]] | None = None
        self._inner: ItemReader | None = None
        if config.transformation == "LOAD_AND_FLATTEN":
            self._inner = get_reader(_inner_config(config))

    def __getstate__(self) -> dict[str, Any]:
        # A boto3 client does not pickle and the page cache is only worth keeping in-process.
        return {**self.__dict__, "_client": None, "_last_page": None}

    # -- hooks -------------------------------------------------------------------------
    def plan_shards(self, url: str) -> Iterator[Shard]:
        """One shard per listing page, or per listed object under LOAD_AND_FLATTEN."""
        if self._inner is not None:
            yield from self._plan_objects(url)
            return
        start_after: str | None = None
        for number, page in enumerate(self._lister(url).pages(start_after=None)):
            last_key = _key(page[-1])
            extra = {"start_after": start_after, "last_key": last_key, "count": len(page)}
            self._last_page = ((url, start_after), page)
            yield Shard(url=url, number=number, extra=extra)
            start_after = last_key

    def read_shard(self, shard: Shard) -> Iterator[Any]:
        """The listing items of one page, or the items of one object under LOAD_AND_FLATTEN."""
        if self._inner is not None:
            yield from self._inner.iter_items(shard.url)
            return
        lister = self._lister(shard.url)
        for entry in self._page_of(shard, lister):
            yield lister.item(entry)

    def page_entries(self, shard: Shard) -> list[Any]:
        """The raw entries of one listing page, checked against the plan (opaque, picklable)."""
        return self._page_of(shard, self._lister(shard.url))

    def page_items(self, shard: Shard, entries: list[Any]) -> list[dict[str, Any]]:
        """AWS listing items of some of a page's entries (a local file is hashed here)."""
        lister = self._lister(shard.url)
        return [lister.item(entry) for entry in entries]

    # -- shard reading: pages, counted by the driver's listing -------------------------
    def plan_ranges(self, url: str, shard_bytes: int) -> list[Shard] | None:
        """The listing's pages (1,000 keys each; a worker re-lists its page by
        ``StartAfter``). ``None`` under LOAD_AND_FLATTEN: only reading every object counts
        its items."""
        if self._inner is not None:
            return None
        return list(self.plan_shards(url))

    def read_range(self, shard: Shard, offset: int, skip: int, take: int, line: int) -> list[Any]:
        """Items ``skip .. skip+take`` of a page. A worker lists each page once, not once per
        batch, and builds only this batch's items (for a local folder, where files are hashed)."""
        page = _listed_pages.get((shard.url, shard.number), lambda: self.page_entries(shard))
        return self.page_items(shard, page[skip : skip + take])

    def source_name(self, url: str) -> str:
        """``S3://bucket`` for a listing (AWS names the bucket, not the prefix)."""
        if url.startswith("s3://"):
            return "S3://" + _split_s3(url)[0]
        return url

    # -- internals ---------------------------------------------------------------------
    def _plan_objects(self, url: str) -> Iterator[Shard]:
        lister = self._lister(url)
        number = 0
        for page in lister.pages(start_after=None):
            for entry in page:
                key, size = _key(entry), lister.size(entry)
                if key.endswith("/") and size == 0:  # a console "folder", not data
                    continue
                extra = {"listing": url, "key": key, "size": size}
                problem = unsafe_key(key) if isinstance(lister, _S3Lister) else None
                if problem:
                    where = f"object {number}"
                    raise ReaderError(url, f"key {key!r} cannot be read exactly: {problem}", where)
                yield Shard(url=lister.object_url(key), number=number, extra=extra)
                number += 1

    def _page_of(self, shard: Shard, lister: _Lister) -> list[Any]:
        start_after = shard.extra.get("start_after")
        cached = self._last_page
        if cached is not None and cached[0] == (shard.url, start_after):
            return cached[1]
        count = shard.extra.get("count", self.page_size)
        # S3 may return short pages, so gather the planned number of keys across responses.
        with contextlib.closing(lister.pages(start_after=start_after)) as pages:
            entries = (entry for page in pages for entry in page)
            page = list(itertools.islice(entries, count))
        expected = (count, shard.extra.get("last_key"))
        found = (len(page), _key(page[-1]) if page else None)
        if found != expected:
            raise ReaderError(
                shard.url,
                f"the listing changed since it was planned: expected {expected[0]} keys "
                f"ending at {expected[1]!r}, found {found[0]} ending at {found[1]!r}",
                position=f"page {shard.number}",
            )
        return page

    def _lister(self, url: str) -> _Lister:
        if url.startswith("s3://"):
            if self._client is None:
                self._client = _s3_client(self.config.storage_options)
            return _S3Lister(url, self._client, self.page_size)
        if "://" in url and not url.startswith("file://"):
            rule = (
                f"a listing needs s3://bucket[/prefix] or a local directory (got {redact_url(url)})"
            )
            raise SpecError("ItemReader.Parameters", rule)
        return _LocalLister(url, self.page_size)


def _key(entry: Any) -> str:
    return entry["Key"] if isinstance(entry, dict) else entry[0]


def _inner_config(config: ReaderConfig) -> ReaderConfig:
    inner = config.inner_input_type
    if inner not in _FLATTEN_INPUT_TYPES:
        raise SpecError(
            "ItemReader.ReaderConfig.InputType",
            f"LOAD_AND_FLATTEN needs one of {', '.join(_FLATTEN_INPUT_TYPES)} (got {inner!r})",
        )
    return dataclasses.replace(
        config, input_type=inner, transformation="NONE", inner_input_type=None
    )


# -- S3 --------------------------------------------------------------------------------------
def _split_s3(url: str) -> tuple[str, str]:
    bucket, _, prefix = url[len("s3://") :].partition("/")
    return bucket, prefix


def _s3_client(storage_options: Mapping[str, Any]) -> Any:
    """A boto3 S3 client from the default credential chain, honouring s3fs-style options.

    ``storage_options`` uses fsspec/s3fs spellings (``key``, ``secret``, ``token``,
    ``endpoint_url``, ``client_kwargs``, ``profile``) so one set of options serves every reader.
    """
    import boto3

    options = dict(storage_options or {})
    kwargs = dict(options.get("client_kwargs") or {})
    renames = {
        "key": "aws_access_key_id",
        "secret": "aws_secret_access_key",
        "token": "aws_session_token",
        "endpoint_url": "endpoint_url",
    }
    kwargs.update({renames[name]: options[name] for name in renames if name in options})
    # A private session: boto3's default session is not safe to share across threads.
    return boto3.session.Session(profile_name=options.get("profile")).client("s3", **kwargs)


class _Lister(Protocol):
    """What the reader needs from a listing: S3's (entries are dicts) or a folder's (tuples)."""

    def pages(self, start_after: str | None) -> Generator[list[Any], None, None]: ...
    def item(self, entry: Any) -> dict[str, Any]: ...
    def size(self, entry: Any) -> int: ...
    def object_url(self, key: str) -> str: ...


class _S3Lister:
    """ListObjectsV2 pages of one bucket/prefix; entries are finished AWS items."""

    def __init__(self, url: str, client: Any, page_size: int) -> None:
        self.url = url
        self.bucket, self.prefix = _split_s3(url)
        self.client = client
        self.page_size = page_size

    def pages(self, start_after: str | None) -> Generator[list[Any], None, None]:
        from botocore.exceptions import BotoCoreError, ClientError

        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix}
        if start_after is not None:
            params["StartAfter"] = start_after
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(**params, PaginationConfig={"PageSize": self.page_size})
        try:
            for page in pages:
                contents = page.get("Contents") or []
                if contents:
                    yield [_listing_item(obj) for obj in contents]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                raise InputNotFound(self.url, f"no such bucket: {self.bucket}") from exc
            raise ReaderError(self.url, f"cannot list objects: {exc}") from exc
        except BotoCoreError as exc:
            raise ReaderError(self.url, f"cannot list objects: {exc}") from exc

    @staticmethod
    def item(entry: dict[str, Any]) -> dict[str, Any]:
        return entry

    @staticmethod
    def size(entry: dict[str, Any]) -> int:
        return entry["Size"]

    def object_url(self, key: str) -> str:
        # Keys are keys: s3fs would read s3://bucket/a?versionId=x as version x of object a.
        return object_url(self.bucket, key)


def _listing_item(obj: Mapping[str, Any]) -> dict[str, Any]:
    """boto3's ``Contents`` entry in the shape Step Functions hands to ItemSelector."""
    return {
        "Etag": obj["ETag"],
        "Key": obj["Key"],
        "LastModified": int(obj["LastModified"].timestamp()),
        "Size": int(obj["Size"]),
        "StorageClass": obj.get("StorageClass", "STANDARD"),
    }


# -- local directories -----------------------------------------------------------------------
class _LocalLister:
    """A directory walked as if it were a bucket; entries are ``(key, path)`` pairs.

    Stat and MD5 wait for :meth:`item`, so planning touches names only and the hashing
    happens on whichever worker reads the shard.
    """

    def __init__(self, url: str, page_size: int) -> None:
        self.url = url
        self.root = url[len("file://") :] if url.startswith("file://") else url
        self.page_size = page_size

    def pages(self, start_after: str | None) -> Generator[list[Any], None, None]:
        if not os.path.isdir(self.root):
            if os.path.exists(self.root):
                raise ReaderError(self.url, "a local listing needs a directory, not a file")
            raise InputNotFound(self.url, "no such directory")
        page: list[tuple[str, str]] = []
        for entry in _walk(self.root, "", start_after):
            page.append(entry)
            if len(page) == self.page_size:
                yield page
                page = []
        if page:
            yield page

    def item(self, entry: tuple[str, str]) -> dict[str, Any]:
        key, path = entry
        try:
            stat = os.stat(path)
            etag = _md5_of(path)
        except FileNotFoundError as exc:
            raise InputNotFound(path, "listed file disappeared before it was read") from exc
        return {
            "Etag": f'"{etag}"',
            "Key": key,
            "LastModified": int(stat.st_mtime),
            "Size": stat.st_size,
            "StorageClass": "STANDARD",
        }

    @staticmethod
    def size(entry: tuple[str, str]) -> int:
        return os.path.getsize(entry[1])

    def object_url(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))


def _walk(root: str, rel: str, start_after: str | None) -> Iterator[tuple[str, str]]:
    """Files under ``root/rel`` as ``(key, path)`` in S3 key order, keys > ``start_after``.

    Sorting a directory's entries with ``/`` appended to subdirectory names yields the global
    byte order of full keys (``a-c`` < ``a/b`` < ``a0``), so a depth-first walk streams keys
    already sorted. Subtrees wholly at or before ``start_after`` are skipped unopened.
    """
    with os.scandir(os.path.join(root, rel) if rel else root) as scan:
        names = [
            (entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name, entry)
            for entry in scan
        ]
    for name, entry in sorted(names, key=lambda pair: pair[0]):
        key = rel + name
        if name.endswith("/"):
            if start_after is None or key > start_after or start_after.startswith(key):
                yield from _walk(root, key, start_after)
        elif (start_after is None or key > start_after) and entry.is_file():
            yield key, entry.path


def _md5_of(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
