"""The MANIFEST item reader: S3 inventory reports and Athena UNLOAD results.

``ManifestType: S3_INVENTORY`` -- the URL is an inventory ``manifest.json``::

    {"sourceBucket": "src", "destinationBucket": "arn:aws:s3:::dest", "fileFormat": "CSV",
     "fileSchema": "Bucket, Key, Size, LastModifiedDate",
     "files": [{"key": "inv/src/cfg/data/1.csv.gz", "size": 123, "MD5checksum": "..."}]}

Every row of every listed CSV file (gzip, no header row) is an item keyed by the
``fileSchema`` names, all values strings as in the file (keys stay URL-encoded as the inventory
writes them). Only ``fileFormat: CSV`` is read; ORC and Parquet inventories are refused.
File keys are bucket keys: for an ``s3://`` manifest they are objects of ``destinationBucket``
(the manifest's own bucket if that is missing), read by exact key. For a local (or other
non-S3) manifest they resolve against the manifest's directory, and failing that against each
of its parent directories, so both a folder holding manifest and data side by side and a local
mirror of the whole destination bucket work.

``ManifestType: ATHENA_DATA`` -- the URL is an Athena UNLOAD ``<query-id>-manifest.csv``: one
data-file URL per line. Each file is read with ``inner_input_type`` (CSV, JSONL or PARQUET);
UNLOAD writes CSV without a header row, so CSV needs ``CSVHeaders``. Relative lines (only
seen in hand-made local manifests) resolve against the manifest's directory.

Either way each referenced file is one shard, and files are read in manifest order; planning
reads the manifest only.

**Scope.** A manifest is data, often uploaded by someone else, so what it names must stay inside
``AllowedLocations`` (:class:`Scope`; default ``SAME_AS_MANIFEST``): for an ``s3://`` manifest its
own bucket (an inventory's ``destinationBucket`` must be that bucket, Athena lines ``s3://`` URLs
in it); for a local manifest its own folder tree, resolved (no ``..`` or symlink out of it), and
for an inventory also ``<config>/data/`` beside its ``<config>/<date>/manifest.json``, where S3
inventory puts the data files. Anything else is a :class:`ReaderError` naming the manifest, the
line or ``files[i]`` entry and the location, raised while planning, before any file is opened.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
from collections.abc import Iterator
from typing import Any, ClassVar
from urllib.parse import unquote

from runner.errors import ReaderError, SpecError
from runner.readers._io import filesystem, is_local_disk, open_binary, url_of
from runner.readers.base import ItemReader, ReaderConfig, Shard, get_reader
from runner.readers.json import check_depth
from runner.readers.s3keys import object_url, split_object_url, unsafe_key, valid_bucket
from runner.spec import SAME_AS_MANIFEST

__all__ = ["ManifestReader", "Scope"]

_ATHENA_INPUT_TYPES = ("CSV", "JSONL", "PARQUET")
_ARN_PREFIX = "arn:aws:s3:::"
_WIDEN = "list it in the pipeline's AllowedLocations (or `shardmap run --allow-manifest-location`)"


class ManifestReader(ItemReader):
    """Items of the data files an S3 inventory or Athena UNLOAD manifest points at.

    >>> config = ReaderConfig(input_type="MANIFEST", manifest_type="S3_INVENTORY")
    >>> next(ManifestReader(config).iter_items("s3://inv/src/cfg/2024-06-01T01-00Z/manifest.json"))
    ... # doctest: +SKIP
    {'Bucket': 'src', 'Key': 'photos/1.jpg', 'Size': '52341', 'LastModifiedDate': '2024-05-...'}
    """

    input_type: ClassVar[str] = "MANIFEST"

    def __init__(self, config: ReaderConfig) -> None:
        super().__init__(config)
        if config.manifest_type == "ATHENA_DATA":
            self._athena_reader = get_reader(_athena_config(config))
        elif config.manifest_type != "S3_INVENTORY":
            raise SpecError(
                "ItemReader.ReaderConfig.ManifestType",
                f"must be S3_INVENTORY or ATHENA_DATA (got {config.manifest_type!r})",
            )

    # -- hooks -------------------------------------------------------------------------
    def plan_shards(self, url: str) -> Iterator[Shard]:
        """One shard per data file named by the manifest, in manifest order."""
        if self.config.manifest_type == "S3_INVENTORY":
            fields, file_urls = _inventory_files(url, self.config)
            extra = {"manifest": url, "fields": fields}
        else:
            file_urls = _athena_files(url, self.config)
            extra = {"manifest": url}
        for number, file_url in enumerate(file_urls):
            yield Shard(url=file_url, number=number, extra=extra)

    def read_shard(self, shard: Shard) -> Iterator[Any]:
        """The items of one data file."""
        if self.config.manifest_type == "S3_INVENTORY":
            # The schema travels in the shard, so a worker never re-reads the manifest.
            reader = get_reader(_inventory_csv_config(self.config, shard.extra["fields"]))
        else:
            reader = self._athena_reader
        yield from reader.iter_items(shard.url)


# -- configuration of the readers of the data files -------------------------------------------
def _inner(config: ReaderConfig, input_type: str, **changes: Any) -> ReaderConfig:
    return dataclasses.replace(
        config, input_type=input_type, manifest_type=None, inner_input_type=None,
        transformation="NONE", **changes,
    )  # fmt: skip


def _athena_config(config: ReaderConfig) -> ReaderConfig:
    inner = config.inner_input_type
    if inner not in _ATHENA_INPUT_TYPES:
        raise SpecError(
            "ItemReader.ReaderConfig.InputType",
            f"ATHENA_DATA needs one of {', '.join(_ATHENA_INPUT_TYPES)} (got {inner!r})",
        )
    if inner != "CSV":
        return _inner(config, inner)
    if not config.csv_headers:
        raise SpecError(
            "ItemReader.ReaderConfig.CSVHeaders",
            "required for ATHENA_DATA CSV files: UNLOAD writes no header row",
        )
    return _inner(config, "CSV", csv_header_location="GIVEN")


def _inventory_csv_config(config: ReaderConfig, fields: tuple[str, ...]) -> ReaderConfig:
    return _inner(
        config, "CSV", csv_header_location="GIVEN", csv_headers=tuple(fields),
        csv_delimiter="COMMA", items_pointer=None,
    )  # fmt: skip


# -- scope -----------------------------------------------------------------------------------
class Scope:
    """Where the files one manifest names may be: its ``AllowedLocations``, resolved.

    Entries are ``SAME_AS_MANIFEST``, ``s3://bucket[/prefix]`` (a key prefix, as S3 lists it:
    end it with ``/`` to mean a folder), local folders (resolved, symlinks too) and other URL
    prefixes (same scheme and host, path prefix).

    >>> scope = Scope("s3://in/uploads/m-manifest.csv", ("s3://in/uploads/",), "ATHENA_DATA")
    >>> scope.allows_object("in", "uploads/part-0"), scope.allows_object("in", "private/x")
    (True, False)
    """

    def __init__(
        self,
        manifest_url: str,
        locations: tuple[str, ...],
        manifest_type: str,
        storage_options: Any = None,
    ) -> None:
        self.manifest_url = manifest_url
        self._storage_options = storage_options
        self.shown = ", ".join(locations) or "none"
        self._prefixes: list[tuple[str, str]] = []  # (bucket, key prefix)
        self._folders: list[str] = []  # real paths
        self._urls: list[tuple[str, str, str]] = []  # (scheme, host, path prefix)
        for location in locations:
            if location == SAME_AS_MANIFEST:
                self._add_own(manifest_url, manifest_type)
            else:
                self._add(location)

    # -- building --------------------------------------------------------------------------
    def _add(self, location: str) -> None:
        scheme, sep, rest = location.partition("://")
        if not sep or scheme == "file":
            self._folders.append(os.path.realpath(rest if sep else location))
        elif scheme == "s3":
            bucket, _, prefix = rest.partition("/")
            self._prefixes.append((bucket, prefix))
        else:
            host, _, path = rest.partition("/")
            self._urls.append((scheme.lower(), host.lower(), "/" + path))

    def _add_own(self, url: str, manifest_type: str) -> None:
        s3_object = _s3_object(url)
        if s3_object is not None:
            self._prefixes.append((s3_object[0], ""))  # the whole bucket
            return
        fs, path = filesystem(url, self._storage_options)
        folders = [posixpath.dirname(path)]
        if manifest_type == "S3_INVENTORY":  # <config>/<date>/manifest.json, <config>/data/...
            folders.append(posixpath.join(posixpath.dirname(folders[0]), "data"))
        for folder in folders:
            self._add(folder if is_local_disk(fs) else url_of(fs, folder).rstrip("/") + "/")

    # -- checking --------------------------------------------------------------------------
    def allows_object(self, bucket: str, key: str) -> bool:
        return any(bucket == b and key.startswith(prefix) for b, prefix in self._prefixes)

    def allows_path(self, path: str) -> bool:
        try:
            real = os.path.realpath(path)
        except ValueError:  # an embedded NUL: no such file anywhere
            return False
        return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep)
                   for root in self._folders)  # fmt: skip

    def allows_url(self, url: str) -> bool:
        scheme, _, rest = url.partition("://")
        host, _, path = rest.partition("/")
        path = "/" + path
        return any(
            scheme.lower() == s and host.lower() == h and path.startswith(p)
            for s, h, p in self._urls
        )

    def refuse(self, location: str, position: str, why: str = "") -> ReaderError:
        """The error for a named location that will not be read (outside, unless ``why``)."""
        reason = why or (
            f"{location} is outside the allowed locations ({self.shown}); to read it, {_WIDEN}"
        )
        return ReaderError(self.manifest_url, _printable(reason), position)


def _printable(text: str, limit: int = 2000) -> str:
    """``text`` safe for a terminal and a log line: a manifest's control characters escaped
    (an ESC sequence must not reach the screen), its length bounded."""
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit] + f"...(+{len(text) - limit})"


def _scope(url: str, config: ReaderConfig) -> Scope:
    return Scope(
        url, tuple(config.allowed_locations), config.manifest_type or "", config.storage_options
    )


def _s3_object(url: str) -> tuple[str, str] | None:
    """``(bucket, key)`` of an ``s3://`` (or exact-key ``s3key://``) URL; ``None`` otherwise."""
    return split_object_url(url) if url.startswith(("s3://", "s3key://")) else None


def _located(url: str, scope: Scope, position: str) -> str:
    """``url`` (a data-file location a manifest names) if it may be read, else refuse it.

    ``s3://`` URLs come back as exact-key URLs: a key is never parsed (``?versionId=``...).
    """
    if "::" in url:  # fsspec would chain it to another filesystem
        raise scope.refuse(url, position, f"{url!r} chains URLs ('::')")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme == "file":
        path = rest if sep else url
        if not scope.allows_path(path):
            raise scope.refuse(path, position)
        if os.path.isdir(path):
            raise scope.refuse(path, position, f"{path} is a folder, not a data file")
        return os.path.abspath(path)
    if scheme == "s3":
        bucket, _, key = rest.partition("/")
        return _object(bucket, key, scope, position)
    if any(segment in (".", "..") for segment in unquote(rest).split("/")):
        raise scope.refuse(url, position, f"{url}: a '.' or '..' segment")
    if not scope.allows_url(url):
        raise scope.refuse(url, position)
    return url


def _object(bucket: str, key: str, scope: Scope, position: str) -> str:
    shown = f"s3://{bucket}/{key}"
    if not valid_bucket(bucket):
        raise scope.refuse(shown, position, f"{bucket!r} is not a bucket name")
    problem = unsafe_key(key) or ("a folder key, not a data file" if key.endswith("/") else None)
    if problem:
        raise scope.refuse(shown, position, f"key {key!r}: {problem}")
    if not scope.allows_object(bucket, key):
        raise scope.refuse(shown, position)
    return object_url(bucket, key)


# -- S3 inventory ----------------------------------------------------------------------------
def _inventory_files(url: str, config: ReaderConfig) -> tuple[tuple[str, ...], list[str]]:
    """The fileSchema names and the data-file URLs of an inventory ``manifest.json``."""
    manifest = _load_json(url, config)
    file_format = manifest.get("fileFormat")
    if not isinstance(file_format, str) or file_format.upper() != "CSV":
        raise ReaderError(
            url,
            f"fileFormat {file_format!r} is not supported: only CSV inventories can be read",
            position="fileFormat",
        )
    schema = manifest.get("fileSchema")
    if not isinstance(schema, str) or not schema.strip():
        raise ReaderError(url, 'inventory manifest has no "fileSchema"', position="fileSchema")
    fields = tuple(name.strip() for name in schema.split(","))
    files = manifest.get("files")
    if not isinstance(files, list):
        raise ReaderError(url, 'inventory manifest has no "files" list', position="files")
    keys = []
    for position, entry in enumerate(files):
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise ReaderError(url, 'a "files" entry has no "key"', position=f"files[{position}]")
        keys.append(entry["key"])
    scope = _scope(url, config)
    bucket = _destination_bucket(manifest, url)
    if bucket is not None:
        return fields, [
            _object(bucket, key, scope, f"files[{n}] (destinationBucket {bucket})")
            for n, key in enumerate(keys)
        ]
    return fields, [_resolve_near(url, key, config, scope, f"files[{n}]")
                    for n, key in enumerate(keys)]  # fmt: skip


def _load_json(url: str, config: ReaderConfig) -> dict[str, Any]:
    """The manifest document, read whole (it lists files, not items): its depth is checked
    before the C decoder, which recurses, sees it; every error says where."""
    with open_binary(url, config.storage_options) as raw:
        data = raw.read()
    check_depth(url, data)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        where = f"byte {exc.start}"
        raise ReaderError(url, f"manifest is not UTF-8 text: {exc.reason}", where) from exc
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise ReaderError(url, f"manifest is not valid JSON: {exc.msg}", where) from exc
    if not isinstance(manifest, dict):
        raise ReaderError(url, "manifest is not a JSON object", "line 1")
    return manifest


def _destination_bucket(manifest: dict[str, Any], url: str) -> str | None:
    """The bucket file keys live in, for an ``s3://`` manifest; ``None`` for any other."""
    s3_object = _s3_object(url)
    if s3_object is None:
        return None
    destination = manifest.get("destinationBucket")
    if destination is None or destination == "":
        return s3_object[0]
    if not isinstance(destination, str):
        raise ReaderError(url, f"destinationBucket {destination!r} is not a bucket name")
    return destination.removeprefix(_ARN_PREFIX)


def _resolve_near(
    manifest_url: str, key: str, config: ReaderConfig, scope: Scope, position: str
) -> str:
    """``key`` under the manifest's directory or the nearest parent that holds it, in scope.

    Only candidates inside the scope are looked at, so a key never makes the reader touch,
    or even test for, a file outside it.
    """
    if "::" in key or key.startswith("/") or "://" in key:
        raise scope.refuse(key, position, f"key {key!r} is not a relative bucket key")
    fs, path = filesystem(manifest_url, config.storage_options)
    # fsspec gives '/'-separated paths on every OS, local ones too
    directory = posixpath.dirname(path)
    first: str | None = None
    while True:
        candidate = posixpath.join(directory, key)
        location = url_of(fs, candidate)
        try:
            located = _located(location, scope, position)
        except ReaderError:
            located = None
        if located is not None:
            first = first or located
            if fs.exists(candidate):
                return located
        parent = posixpath.dirname(directory)
        if parent == directory:
            if first is None:
                raise scope.refuse(url_of(fs, posixpath.join(posixpath.dirname(path), key)),
                                   position)  # fmt: skip
            # Nowhere: name the most likely place, so the read fails with a useful URL.
            return first
        directory = parent


# -- Athena UNLOAD -----------------------------------------------------------------------------
def _athena_files(url: str, config: ReaderConfig) -> list[str]:
    """The data-file URLs of an UNLOAD manifest, one per non-blank line."""
    with open_binary(url, config.storage_options) as raw:
        data = raw.read()
    lines = []
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            lines.append((number, line.decode("utf-8-sig" if number == 1 else "utf-8").strip()))
        except UnicodeDecodeError as exc:
            where = f"line {number}"
            raise ReaderError(url, f"manifest is not UTF-8 text: {exc.reason}", where) from exc
    scope = _scope(url, config)
    return [
        _resolve_line(url, line, config, scope, f"line {number}") for number, line in lines if line
    ]


def _resolve_line(
    manifest_url: str, line: str, config: ReaderConfig, scope: Scope, position: str
) -> str:
    if "://" in line or line.startswith("/"):
        return _located(line, scope, position)
    if "::" in line:
        raise scope.refuse(line, position, f"{line!r} chains URLs ('::')")
    s3_object = _s3_object(manifest_url)
    if s3_object is not None:  # a relative key: joined as a key, never normalised
        bucket, manifest_key = s3_object
        return _object(bucket, posixpath.join(posixpath.dirname(manifest_key), line), scope,
                       position)  # fmt: skip
    fs, path = filesystem(manifest_url, config.storage_options)
    return _located(url_of(fs, posixpath.join(posixpath.dirname(path), line)), scope, position)
