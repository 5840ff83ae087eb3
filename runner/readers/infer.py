"""The ItemReader a bare URL implies: a folder or prefix is listed, a file read by its suffix.

Used wherever a pipeline names a ``Source`` without an ``ItemReader`` (``run``, ``deploy``) and
by ``shardmap map``. It lives with the readers because it answers their question, which reader
reads this, from the names alone: nothing is opened (only a local path is checked for being a
folder).
"""

from __future__ import annotations

import os
from typing import Any

from runner.constants import GET_OBJECT, LIST_OBJECTS
from runner.readers._io import compression_of

__all__ = ["infer_item_reader"]

_SUFFIX_TYPES = {
    ".csv": "CSV",
    ".tsv": "CSV",
    ".json": "JSON",
    ".jsonl": "JSONL",
    ".ndjson": "JSONL",
    ".parquet": "PARQUET",
    ".pq": "PARQUET",
}


def infer_item_reader(url: str, input_type: str | None = None) -> dict[str, Any]:
    """An ItemReader (pipeline-file form) for a bare URL.

    ``input_type`` (an InputType, or ``LISTING``) overrides the suffix. A ``.tsv`` file is CSV
    with ``CSVDelimiter: TAB``; a compression suffix (``.gz``, ``.zst``) is looked through.

    >>> infer_item_reader("s3://bucket/trips.csv.gz")["ReaderConfig"]
    {'InputType': 'CSV'}
    >>> infer_item_reader("s3://bucket/photos/")["Resource"]
    'arn:aws:states:::s3:listObjectsV2'
    """
    name = url
    if compression_of(name):
        name = name.rsplit(".", 1)[0]
    suffix = os.path.splitext(name)[1].lower()
    bucket_only = url.startswith("s3://") and "/" not in url[5:].rstrip("/")
    is_listing = (
        url.endswith("/")
        or bucket_only
        or os.path.isdir(url)
        or (input_type is None and suffix not in _SUFFIX_TYPES)
    )
    if input_type == "LISTING" or (input_type is None and is_listing):
        return {"Resource": LIST_OBJECTS}
    config: dict[str, Any] = {"InputType": input_type or _SUFFIX_TYPES[suffix]}
    if suffix == ".tsv" and input_type is None:
        config["CSVDelimiter"] = "TAB"
    return {"Resource": GET_OBJECT, "ReaderConfig": config}
