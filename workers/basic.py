"""Built-in workers that prove the path end to end."""

from __future__ import annotations

import mimetypes
from typing import Any

import fsspec

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
    """
    items = event.get("Items", [event])
    default_source = (event.get("BatchInput") or {}).get("Source")
    stats = []
    for item in items:
        source = item.get("Source", default_source)
        if not source:
            raise ValueError("object-stats needs BatchInput.Source or item.Source to find objects")
        url = _object_url(source, item["Key"])
        fs, path = fsspec.core.url_to_fs(url)
        info = fs.info(path)
        content_type = info.get("ContentType") or mimetypes.guess_type(item["Key"])[0]
        etag = info.get("ETag") or item.get("Etag")
        stats.append(
            {
                "Key": item["Key"],
                "Size": info["size"],
                "Etag": etag,
                "ContentType": content_type or "application/octet-stream",
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


def _object_url(source: str, key: str) -> str:
    if source.startswith("S3://"):
        source = "s3://" + source[5:]
    return source.rstrip("/") + "/" + key
