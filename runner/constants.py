"""AWS's names and limits that shardmap keeps, in one place. Imports nothing.

Resource ARNs of the Distributed Map's integrations and the service quotas shardmap enforces
or warns about (Step Functions developer guide, "Service quotas" and "Distributed Map state").
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "AWS_MAX_BATCH_BYTES",
    "AWS_MAX_CHILD_INPUT_BYTES",
    "AWS_MAX_ITEMS",
    "AWS_MAX_OUTPUT_BYTES",
    "GET_OBJECT",
    "LAMBDA_INVOKE",
    "LIST_OBJECTS",
    "PUT_OBJECT",
]

#: ItemBatcher.MaxInputBytesPerBatch: AWS's upper bound (256 KiB).
AWS_MAX_BATCH_BYTES: Final = 262_144
#: A child execution's input.
AWS_MAX_CHILD_INPUT_BYTES: Final = 256 * 1024
#: A state's output; a larger child output fails its batch with States.DataLimitExceeded.
AWS_MAX_OUTPUT_BYTES: Final = 256 * 1024
#: ItemReader.ReaderConfig.MaxItems.
AWS_MAX_ITEMS: Final = 100_000_000

#: ItemReader resource of an S3 object listing.
LIST_OBJECTS: Final = "arn:aws:states:::s3:listObjectsV2"
#: ItemReader resource of one S3 object (CSV, JSON, JSONL, Parquet, manifest).
GET_OBJECT: Final = "arn:aws:states:::s3:getObject"
#: ResultWriter resource.
PUT_OBJECT: Final = "arn:aws:states:::s3:putObject"
#: The optimized Lambda integration of a Task state.
LAMBDA_INVOKE: Final = "arn:aws:states:::lambda:invoke"
