"""Where a listed object lives, for workers that open the objects their items name.

A listing item's ``$$.Map.Item.Source`` is ``S3://bucket`` for S3 (AWS's spelling) or the
listed local folder; these helpers turn it, and user-given destinations, into fsspec URLs.
"""

from __future__ import annotations

import os

__all__ = ["bare_etag", "location_url", "object_url"]


def location_url(location: str) -> str:
    """``S3://bucket`` (a listing's Source) and ``s3://`` alike; local paths made absolute, so
    they mean the same in a worker process started elsewhere.

    >>> location_url("S3://leads/in")
    's3://leads/in'
    """
    if location[:5].lower() == "s3://":
        return "s3://" + location[5:]
    if location.startswith("file://"):
        location = location[len("file://") :]
    return os.path.abspath(location) if "://" not in location else location


def object_url(source: str, key: str) -> str:
    """Where a listed key lives: ``S3://bucket`` + key, or the listed folder + key.

    >>> object_url("S3://leads", "exports/a.parquet")
    's3://leads/exports/a.parquet'
    """
    return location_url(source).rstrip("/") + "/" + key


def bare_etag(etag: str | None) -> str:
    """An ETag without the quotes S3 puts around it (listings and HEAD differ)."""
    return (etag or "").strip().strip('"')
