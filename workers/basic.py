"""Built-in workers that prove the path end to end."""

from __future__ import annotations

import mimetypes
import os
from typing import Any

import fsspec

from runner.errors import WorkerError

__all__ = ["echo", "fail_some", "object_stats"]


def echo(event: Any) -> Any:
    """Return the child input unchanged (with an ItemBatcher: the list of items)."""
    if isinstance(event, dict) and "Items" in event:
        return event["Items"]
    return event


def object_stats(event: dict[str, Any]) -> list[dict[str, Any]]:
    """Size, ETag and content type of each listed object (items are listObjectsV2 entries).

    The objects are found under ``BatchInput.Source`` (``S3://bucket`` or a local folder),
    which ``shardmap map`` sets for listings; an item may also carry its own ``Source``.
    Keys are keys: an S3 object is asked for by Bucket and Key (``a?versionId=x`` is that
    object, not a version of ``a``), and a local key must stay inside the folder. A key that
    cannot be read as itself fails the batch with ``ObjectStats.UnsafeKey``.
    """
    items = event.get("Items", [event])
    default_source = (event.get("BatchInput") or {}).get("Source")
    stats = []
    for item in items:
        source = item.get("Source", default_source)
        if not source:
            raise ValueError("object-stats needs BatchInput.Source or item.Source to find objects")
        key = item["Key"]
        if not isinstance(key, str) or not key:
            raise WorkerError("ObjectStats.UnsafeKey", f"Key {key!r} is not a non-empty string")
        if source.startswith(("S3://", "s3://")):
            size, etag, content_type = _s3_object_stats(source, key)
        elif "://" in source and not source.startswith("file://"):  # gs://, memory://, ...
            size, etag, content_type = _fsspec_stats(source, key)
        else:
            size, etag, content_type = _local_file_stats(source, key)
        stats.append(
            {
                "Key": key,
                "Size": size,
                "Etag": etag or item.get("Etag"),
                "ContentType": content_type
                or mimetypes.guess_type(key)[0]
                or "application/octet-stream",
            }
        )
    return stats


def fail_some(event: dict[str, Any]) -> list[Any]:
    """Echo items, but raise when an item has ``"fail": true`` (for trying failure handling)."""
    items = event.get("Items", [event])
    bad = [item for item in items if isinstance(item, dict) and item.get("fail")]
    if bad:
        raise ValueError(f"{len(bad)} item(s) asked to fail, first: {bad[0]}")
    return items


def _s3_object_stats(source: str, key: str) -> tuple[int, str | None, str | None]:
    """HeadObject with this Bucket and Key (``S3://bucket[/prefix]`` + key), nothing parsed."""
    from runner.readers.s3keys import unsafe_key

    bucket, _, prefix = source[len("s3://") :].partition("/")
    full_key = f"{prefix.rstrip('/')}/{key}" if prefix.strip("/") else key
    problem = unsafe_key(full_key)
    if problem:
        raise WorkerError("ObjectStats.UnsafeKey", f"key {full_key!r}: {problem}")
    head = fsspec.filesystem("s3").call_s3("head_object", Bucket=bucket, Key=full_key)
    return int(head["ContentLength"]), head.get("ETag"), head.get("ContentType")


def _fsspec_stats(source: str, key: str) -> tuple[int, str | None, str | None]:
    fs, path = fsspec.core.url_to_fs(source.rstrip("/") + "/" + key)
    info = fs.info(path)
    return info["size"], info.get("ETag"), info.get("ContentType")


def _local_file_stats(source: str, key: str) -> tuple[int, None, None]:
    """The file ``key`` names under the folder ``source``; it must resolve inside it."""
    root = source.removeprefix("file://")
    path = os.path.join(root, *key.split("/"))
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if key.startswith(("/", "\\")) or os.path.commonpath([real_root, real]) != real_root:
        raise WorkerError("ObjectStats.UnsafeKey", f"key {key!r} leads outside {root}")
    return os.stat(path).st_size, None, None
