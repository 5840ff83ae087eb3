"""The MANIFEST item reader: S3 inventory reports and Athena UNLOAD results.

``ManifestType: S3_INVENTORY`` -- the URL is an inventory ``manifest.json``::

    {"sourceBucket": "src", "destinationBucket": "arn:aws:s3:::dest", "fileFormat": "CSV",
     "fileSchema": "Bucket, Key, Size, LastModifiedDate",
     "files": [{"key": "inv/src/cfg/data/1.csv.gz", "size": 123, "MD5checksum": "..."}]}

Every row of every listed CSV file (gzip, no header row) is an item keyed by the
``fileSchema`` names, all values strings as in the file (keys stay URL-encoded as the inventory
writes them). Only ``fileFormat: CSV`` is read; ORC and Parquet inventories are refused.
File keys are bucket keys: for an ``s3://`` manifest they resolve against
``destinationBucket`` (the manifest's own bucket if that is missing). For a local (or other
non-S3) manifest they resolve against the manifest's directory, and failing that against each
of its parent directories, so both a folder holding manifest and data side by side and a local
mirror of the whole destination bucket work.

``ManifestType: ATHENA_DATA`` -- the URL is an Athena UNLOAD ``<query-id>-manifest.csv``: one
data-file URL per line. Each file is read with ``inner_input_type`` (CSV, JSONL or PARQUET);
UNLOAD writes CSV without a header row, so CSV needs ``CSVHeaders``. Relative lines (only
seen in hand-made local manifests) resolve against the manifest's directory.

Either way each referenced file is one shard, and files are read in manifest order; planning
reads the manifest only.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
from collections.abc import Iterator
from typing import Any, ClassVar

from runner.errors import ReaderError, SpecError
from runner.readers._io import filesystem, open_text
from runner.readers.base import ItemReader, ReaderConfig, Shard, get_reader

__all__ = ["ManifestReader"]

_ATHENA_INPUT_TYPES = ("CSV", "JSONL", "PARQUET")
_ARN_PREFIX = "arn:aws:s3:::"


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


# -- S3 inventory ----------------------------------------------------------------------------
def _inventory_files(url: str, config: ReaderConfig) -> tuple[tuple[str, ...], list[str]]:
    """The fileSchema names and the data-file URLs of an inventory ``manifest.json``."""
    manifest = _load_json(url, config)
    file_format = manifest.get("fileFormat")
    if not isinstance(file_format, str) or file_format.upper() != "CSV":
        raise ReaderError(
            url, f"fileFormat {file_format!r} is not supported: only CSV inventories can be read"
        )
    schema = manifest.get("fileSchema")
    if not isinstance(schema, str) or not schema.strip():
        raise ReaderError(url, 'inventory manifest has no "fileSchema"')
    fields = tuple(name.strip() for name in schema.split(","))
    files = manifest.get("files")
    if not isinstance(files, list):
        raise ReaderError(url, 'inventory manifest has no "files" list')
    keys = []
    for position, entry in enumerate(files):
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise ReaderError(url, 'a "files" entry has no "key"', position=f"files[{position}]")
        keys.append(entry["key"])
    bucket = _destination_bucket(manifest, url)
    if bucket is not None:
        return fields, [f"s3://{bucket}/{key}" for key in keys]
    return fields, [_resolve_near(url, key, config) for key in keys]


def _load_json(url: str, config: ReaderConfig) -> dict[str, Any]:
    with open_text(url, config.storage_options) as text:
        try:
            manifest = json.load(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ReaderError(url, f"manifest is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ReaderError(url, "manifest is not a JSON object")
    return manifest


def _destination_bucket(manifest: dict[str, Any], url: str) -> str | None:
    """The bucket file keys live in, for an ``s3://`` manifest; ``None`` for any other."""
    if not url.startswith("s3://"):
        return None
    destination = manifest.get("destinationBucket")
    if isinstance(destination, str) and destination:
        return destination.removeprefix(_ARN_PREFIX)
    return url[len("s3://") :].partition("/")[0]


def _resolve_near(manifest_url: str, key: str, config: ReaderConfig) -> str:
    """``key`` under the manifest's directory or the nearest parent that holds it."""
    fs, path = filesystem(manifest_url, config.storage_options)
    local = _is_local(fs)  # fsspec gives '/'-separated paths on every OS, local ones too
    directory = posixpath.dirname(path)
    first = posixpath.join(directory, key)
    while True:
        candidate = posixpath.join(directory, key)
        if fs.exists(candidate):
            return _to_url(fs, candidate, local)
        parent = posixpath.dirname(directory)
        if parent == directory:
            # Nowhere: name the most likely place, so the read fails with a useful URL.
            return _to_url(fs, first, local)
        directory = parent


# -- Athena UNLOAD -----------------------------------------------------------------------------
def _athena_files(url: str, config: ReaderConfig) -> list[str]:
    """The data-file URLs of an UNLOAD manifest, one per non-blank line."""
    with open_text(url, config.storage_options) as text:
        try:
            lines = [line.strip() for line in text]
        except UnicodeDecodeError as exc:
            raise ReaderError(url, f"manifest is not UTF-8 text: {exc.reason}") from exc
    files = [line for line in lines if line]
    return [_resolve_line(url, line, config) for line in files]


def _resolve_line(manifest_url: str, line: str, config: ReaderConfig) -> str:
    if "://" in line or line.startswith("/"):
        return line
    fs, path = filesystem(manifest_url, config.storage_options)
    return _to_url(fs, posixpath.join(posixpath.dirname(path), line), _is_local(fs))


def _is_local(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols


def _to_url(fs: Any, path: str, local: bool) -> str:
    return path if local else fs.unstrip_protocol(path)
