"""MapSpec: one validated model of a Distributed Map, loaded from a pipeline YAML file or ASL.

A pipeline file uses AWS's own field names (so errors, docs and ASL share one vocabulary) plus
a few shardmap fields: ``Worker``, ``Source`` (a URL of a file or prefix), ``Destination`` (a URL
under ``ResultWriter``), ``Input`` (default run input), ``Reduce``, ``OversizedOutput``
(``FAIL``, AWS's behaviour, or ``WARN``: keep child outputs over 256 KiB, warning) and
``AllowedLocations`` (where the files a MANIFEST names may be; default ``[SAME_AS_MANIFEST]``: the
manifest's own bucket, or its own folder). Example::

    Name: demo
    Worker: echo
    Source: ./demo-data/items.jsonl
    ItemReader: {ReaderConfig: {InputType: JSONL}}
    ItemBatcher: {MaxItemsPerBatch: 100}
    MaxConcurrency: 4
    ToleratedFailurePercentage: 5
    Retry: [{ErrorEquals: [States.ALL], MaxAttempts: 2}]
    ResultWriter: {Destination: ./demo-results}

Every other module takes a MapSpec; none parses configuration on its own. Validation errors are
:class:`~runner.errors.SpecError` naming the field path and the rule
(``ToleratedFailurePercentage: must be between 0 and 100``). Values that only break AWS's limits
are reported by :meth:`MapSpec.aws_warnings` instead, because local runs need not keep them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import unquote

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runner import asl
from runner.constants import (
    AWS_MAX_BATCH_BYTES,
    AWS_MAX_CHILD_INPUT_BYTES,
    AWS_MAX_ITEMS,
    AWS_MAX_OUTPUT_BYTES,
    GET_OBJECT,
    LIST_OBJECTS,
    PUT_OBJECT,
)
from runner.errors import SpecError

__all__ = [
    # AWS's limits and resource ARNs (runner.constants), re-exported for the modules that
    # read them beside the spec
    "AWS_MAX_BATCH_BYTES",
    "AWS_MAX_CHILD_INPUT_BYTES",
    "AWS_MAX_ITEMS",
    "AWS_MAX_OUTPUT_BYTES",
    "GET_OBJECT",
    "LIST_OBJECTS",
    "PUT_OBJECT",
    "SAME_AS_MANIFEST",
    "ItemBatcher",
    "ItemReader",
    "MapSpec",
    "ReaderConfigSpec",
    "ResultWriterSpec",
    "Retrier",
    "WriterConfig",
]

_INPUT_TYPES = ("CSV", "JSON", "JSONL", "PARQUET", "MANIFEST")
#: AllowedLocations entry: the manifest's own bucket (s3://) or its own folder tree (local).
SAME_AS_MANIFEST: Final = "SAME_AS_MANIFEST"
# States.ALL never matches these two (AWS error-handling guide).
_NOT_MATCHED_BY_ALL = frozenset({"States.DataLimitExceeded", "States.Runtime"})


class _Model(BaseModel):
    # extra="forbid" is what catches a typo such as MaxItemPerBatch.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ReaderConfigSpec(_Model):
    input_type: Literal["CSV", "JSON", "JSONL", "PARQUET", "MANIFEST"] | None = Field(
        None, alias="InputType"
    )
    csv_header_location: Literal["FIRST_ROW", "GIVEN"] = Field(
        "FIRST_ROW", alias="CSVHeaderLocation"
    )
    csv_headers: tuple[str, ...] | None = Field(None, alias="CSVHeaders")
    csv_delimiter: Literal["COMMA", "PIPE", "SEMICOLON", "SPACE", "TAB"] = Field(
        "COMMA", alias="CSVDelimiter"
    )
    items_pointer: str | None = Field(None, alias="ItemsPointer")
    manifest_type: Literal["S3_INVENTORY", "ATHENA_DATA"] | None = Field(None, alias="ManifestType")
    transformation: Literal["NONE", "LOAD_AND_FLATTEN"] = Field("NONE", alias="Transformation")
    max_items: int | None = Field(None, alias="MaxItems")
    max_items_path: str | None = Field(None, alias="MaxItemsPath")

    @field_validator("max_items")
    @classmethod
    def _max_items_range(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= AWS_MAX_ITEMS:
            raise ValueError(f"must be between 1 and {AWS_MAX_ITEMS:,}")
        return value

    @field_validator("items_pointer")
    @classmethod
    def _pointer_form(cls, value: str | None) -> str | None:
        if value is not None and value and not value.startswith("/"):
            raise ValueError("must be a JSON Pointer starting with '/' (e.g. /inventory/items)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ReaderConfigSpec:
        _exclusive(self, "max_items", "MaxItems")
        if self.csv_header_location == "GIVEN" and not self.csv_headers:
            raise SpecError("CSVHeaders", "required when CSVHeaderLocation is GIVEN")
        if self.csv_headers is not None and len(set(self.csv_headers)) != len(self.csv_headers):
            raise SpecError("CSVHeaders", "CSV headers cannot contain duplicates.")
        if self.manifest_type == "ATHENA_DATA" and self.input_type not in (
            "CSV",
            "JSONL",
            "PARQUET",
        ):
            raise SpecError("InputType", "must be CSV, JSONL or PARQUET with ATHENA_DATA")
        if (
            self.manifest_type == "ATHENA_DATA"
            and self.input_type == "CSV"
            and not self.csv_headers
        ):
            raise SpecError("CSVHeaders", "required for ATHENA_DATA CSV (it has no header row)")
        return self


class ItemReader(_Model):
    resource: (
        Literal["arn:aws:states:::s3:listObjectsV2", "arn:aws:states:::s3:getObject"] | None
    ) = Field(None, alias="Resource")
    reader_config: ReaderConfigSpec = Field(default_factory=ReaderConfigSpec, alias="ReaderConfig")
    parameters: dict[str, Any] | None = Field(None, alias="Parameters")


class ItemBatcher(_Model):
    max_items_per_batch: int | None = Field(None, alias="MaxItemsPerBatch", ge=1)
    max_items_per_batch_path: str | None = Field(None, alias="MaxItemsPerBatchPath")
    max_input_bytes_per_batch: int | None = Field(None, alias="MaxInputBytesPerBatch", ge=1)
    max_input_bytes_per_batch_path: str | None = Field(None, alias="MaxInputBytesPerBatchPath")
    batch_input: dict[str, Any] | None = Field(None, alias="BatchInput")

    @model_validator(mode="after")
    def _one_form_each(self) -> ItemBatcher:
        _exclusive(self, "max_items_per_batch", "MaxItemsPerBatch")
        _exclusive(self, "max_input_bytes_per_batch", "MaxInputBytesPerBatch")
        if not any(
            (
                self.max_items_per_batch,
                self.max_items_per_batch_path,
                self.max_input_bytes_per_batch,
                self.max_input_bytes_per_batch_path,
            )
        ):
            raise SpecError("", "needs MaxItemsPerBatch or MaxInputBytesPerBatch (or a Path form)")
        return self


class Retrier(_Model):
    error_equals: tuple[str, ...] = Field(alias="ErrorEquals", min_length=1)
    interval_seconds: float = Field(1.0, alias="IntervalSeconds", ge=0)
    max_attempts: int = Field(3, alias="MaxAttempts", ge=0)
    backoff_rate: float = Field(2.0, alias="BackoffRate", ge=1.0)
    max_delay_seconds: float | None = Field(None, alias="MaxDelaySeconds", gt=0)
    jitter_strategy: Literal["FULL", "NONE"] = Field("NONE", alias="JitterStrategy")

    def matches(self, error: str) -> bool:
        """AWS matching: exact names, ``States.ALL`` (all but two), ``States.TaskFailed``."""
        if error in self.error_equals:
            return True
        if "States.ALL" in self.error_equals:
            return error not in _NOT_MATCHED_BY_ALL
        if "States.TaskFailed" in self.error_equals:
            return error != "States.Timeout" and error not in _NOT_MATCHED_BY_ALL
        return False

    def delay(self, retry_number: int, rand: float = 1.0) -> float:
        """Seconds before retry ``retry_number`` (1-based); ``rand`` in [0, 1) for FULL jitter."""
        delay = self.interval_seconds * self.backoff_rate ** (retry_number - 1)
        if self.max_delay_seconds is not None:
            delay = min(delay, self.max_delay_seconds)
        return delay * rand if self.jitter_strategy == "FULL" else delay


class WriterConfig(_Model):
    transformation: Literal["NONE", "COMPACT", "FLATTEN"] = Field("NONE", alias="Transformation")
    output_type: Literal["JSON", "JSONL"] = Field("JSON", alias="OutputType")


class ResultWriterSpec(_Model):
    resource: Literal["arn:aws:states:::s3:putObject"] = Field(PUT_OBJECT, alias="Resource")
    parameters: dict[str, Any] | None = Field(None, alias="Parameters")
    writer_config: WriterConfig = Field(default_factory=WriterConfig, alias="WriterConfig")
    destination: str | None = Field(None, alias="Destination")

    def destination_url(self) -> str | None:
        """The destination as a URL: ``Destination`` or ``s3://Bucket/Prefix`` from Parameters."""
        if self.destination:
            return self.destination
        if self.parameters and "Bucket" in self.parameters:
            prefix = str(self.parameters.get("Prefix", "")).strip("/")
            return f"s3://{self.parameters['Bucket']}" + (f"/{prefix}" if prefix else "")
        return None


class MapSpec(_Model):
    """A Distributed Map: where items come from, how they are batched, who processes them,
    how failures are tolerated and where results go.

    >>> spec = MapSpec.from_dict({"Worker": "echo", "Source": "items.jsonl",
    ...     "ItemReader": {"ReaderConfig": {"InputType": "JSONL"}}})
    >>> spec.worker
    'echo'
    """

    name: str = Field("shardmap", alias="Name", min_length=1, max_length=80)
    comment: str | None = Field(None, alias="Comment")
    label: str | None = Field(None, alias="Label", max_length=40)
    worker: str | None = Field(None, alias="Worker")
    reduce: str | None = Field(None, alias="Reduce")
    source: str | None = Field(None, alias="Source")
    input: Any = Field(None, alias="Input")
    item_reader: ItemReader | None = Field(None, alias="ItemReader")
    items_path: str | None = Field(None, alias="ItemsPath")
    item_selector: dict[str, Any] | None = Field(None, alias="ItemSelector")
    item_batcher: ItemBatcher | None = Field(None, alias="ItemBatcher")
    max_concurrency: int = Field(0, alias="MaxConcurrency", ge=0)
    max_concurrency_path: str | None = Field(None, alias="MaxConcurrencyPath")
    tolerated_failure_percentage: float | None = Field(None, alias="ToleratedFailurePercentage")
    tolerated_failure_percentage_path: str | None = Field(
        None, alias="ToleratedFailurePercentagePath"
    )
    tolerated_failure_count: int | None = Field(None, alias="ToleratedFailureCount")
    tolerated_failure_count_path: str | None = Field(None, alias="ToleratedFailureCountPath")
    retry: tuple[Retrier, ...] = Field((), alias="Retry")
    timeout_seconds: float | None = Field(None, alias="TimeoutSeconds", gt=0)
    execution_type: Literal["STANDARD", "EXPRESS"] = Field("STANDARD", alias="ExecutionType")
    result_writer: ResultWriterSpec | None = Field(None, alias="ResultWriter")
    #: shardmap extension: a child output over AWS's 256 KiB fails its batch with
    #: States.DataLimitExceeded as on AWS (FAIL), or is kept with a warning (WARN, local only).
    oversized_output: Literal["FAIL", "WARN"] = Field("FAIL", alias="OversizedOutput")
    #: shardmap extension: where the data files a MANIFEST names may be (URL prefixes, local
    #: folders, or SAME_AS_MANIFEST); a file named anywhere else fails the run unread.
    allowed_locations: tuple[str, ...] = Field((SAME_AS_MANIFEST,), alias="AllowedLocations")

    @field_validator("tolerated_failure_percentage")
    @classmethod
    def _percentage(cls, value: float | None) -> float | None:
        if value is not None and not 0 <= value <= 100:
            raise ValueError("must be between 0 and 100")
        return value

    @field_validator("tolerated_failure_count")
    @classmethod
    def _count(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise ValueError("must be 0 or greater")
        return value

    @field_validator("retry")
    @classmethod
    def _states_all_last(cls, retriers: tuple[Retrier, ...]) -> tuple[Retrier, ...]:
        for number, retrier in enumerate(retriers):
            if "States.ALL" in retrier.error_equals and (
                len(retrier.error_equals) > 1 or number != len(retriers) - 1
            ):
                raise SpecError(
                    f"{number}.ErrorEquals", "States.ALL must appear alone, in the last retrier"
                )
        return retriers

    @field_validator("allowed_locations")
    @classmethod
    def _locations(cls, locations: tuple[str, ...]) -> tuple[str, ...]:
        for number, location in enumerate(locations):
            problem = _location_problem(location)
            if problem:
                raise SpecError(str(number), f"{location!r}: {problem}")
        return locations

    @model_validator(mode="after")
    def _consistent(self) -> MapSpec:
        if self.allowed_locations != (SAME_AS_MANIFEST,) and self.input_type != "MANIFEST":
            raise SpecError(
                "AllowedLocations",
                "only a MANIFEST ItemReader (ReaderConfig.ManifestType) reads files it names",
            )
        _exclusive(self, "max_concurrency", "MaxConcurrency", unset=0)
        _exclusive(self, "tolerated_failure_percentage", "ToleratedFailurePercentage")
        _exclusive(self, "tolerated_failure_count", "ToleratedFailureCount")
        if self.item_reader is not None and self.items_path is not None:
            raise SpecError("ItemsPath", "cannot be used together with ItemReader")
        reader = self.item_reader
        if reader and reader.reader_config.transformation == "LOAD_AND_FLATTEN":
            if reader.resource == GET_OBJECT:
                raise SpecError(
                    "ItemReader.ReaderConfig.Transformation",
                    "LOAD_AND_FLATTEN needs the listObjectsV2 resource",
                )
            if reader.reader_config.input_type in (None, "MANIFEST"):
                raise SpecError(
                    "ItemReader.ReaderConfig.InputType",
                    "LOAD_AND_FLATTEN needs CSV, JSON, JSONL or PARQUET",
                )
        return self

    # -- loading and saving -------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MapSpec:
        """Validate a mapping in pipeline-file form; errors are :class:`SpecError`."""
        if not isinstance(data, Mapping):
            raise SpecError("", f"a pipeline must be a mapping, got {type(data).__name__}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise _spec_error(exc) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (AWS field names) that :meth:`from_dict` reads back."""
        return self.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True, mode="json")

    @classmethod
    def from_yaml(cls, path: str | Path) -> MapSpec:
        """Load a pipeline file. Relative ``Source``/``Destination`` stay relative to the CWD."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise SpecError(str(path), "no such pipeline file") from None
        except yaml.YAMLError as exc:
            raise SpecError(str(path), f"not valid YAML: {exc}") from None
        return cls.from_dict(data or {})

    @classmethod
    def load(cls, path: str | Path, resources: Mapping[str, str] | None = None) -> MapSpec:
        """A pipeline YAML file, or an ASL ``.json``/``.asl.json`` state machine."""
        if str(path).endswith(".json"):
            return cls.from_asl(json.loads(Path(path).read_text()), resources=resources)
        return cls.from_yaml(path)

    @classmethod
    def from_asl(
        cls,
        definition: Mapping[str, Any],
        *,
        resources: Mapping[str, str] | None = None,
        worker: str | None = None,
    ) -> MapSpec:
        """The MapSpec of the one Distributed Map state in an ASL ``definition``.

        ``resources`` maps Lambda ARNs (or function names) to worker names: the child Task's
        function becomes ``Worker``, and the function of a Lambda Task that follows the Map
        state becomes ``Reduce``. A following Task whose function is not mapped is left out
        (logged): the local run then ends with the Map Run, as the state machine's first part
        does. ``worker`` names the worker outright. Errors name the field from the
        definition's root (``States.Map.ItemBatcher``). See :mod:`runner.asl`.

        Examples
        --------
        >>> spec = MapSpec.from_dict({"Worker": "echo", "Reduce": "total"})
        >>> back = MapSpec.from_asl(spec.to_asl(), resources={
        ...     asl.lambda_arn("echo"): "echo", asl.lambda_arn("total"): "total"})
        >>> back.worker, back.reduce
        ('echo', 'total')
        """
        pipeline, path = asl.pipeline_of(definition, resources=resources, worker=worker)
        try:
            return cls.from_dict(pipeline)
        except SpecError as exc:
            raise SpecError(f"{path}.{exc.path}" if exc.path else path, exc.rule) from None

    def to_asl(
        self,
        *,
        function_arn: str | None = None,
        reduce_arn: str | None = None,
        state_name: str = "Map",
    ) -> dict[str, Any]:
        """A complete ASL state machine running this Distributed Map (see :mod:`runner.asl`).

        Parameters
        ----------
        function_arn
            The worker's Lambda function (default: the placeholder
            :func:`runner.asl.lambda_arn` of ``Worker``).
        reduce_arn
            With a ``Reduce`` step: its Lambda function (default: the placeholder
            :func:`runner.asl.lambda_arn` of ``Reduce``). The Task ``Reduce`` then follows
            the Map state and gets its output,
            ``{"MapRunArn", "ResultWriterDetails": {"Bucket", "Key"}}``.
        state_name
            The Map state's name.

        Raises
        ------
        SpecError
            ``reduce_arn`` was given for a pipeline without a ``Reduce`` step.

        Examples
        --------
        >>> spec = MapSpec.from_dict({"Worker": "echo", "Reduce": "total",
        ...     "ItemBatcher": {"MaxItemsPerBatch": 10},
        ...     "ResultWriter": {"Destination": "s3://b/out"}})
        >>> machine = spec.to_asl()
        >>> machine["States"]["Map"]["Next"], machine["States"]["Reduce"]["Type"]
        ('Reduce', 'Task')
        """
        pipeline = self.to_dict()
        if self.result_writer is not None:  # ASL spells WriterConfig out, defaults included
            writer = pipeline.setdefault("ResultWriter", {})
            writer["WriterConfig"] = self.result_writer.writer_config.model_dump(by_alias=True)
        return asl.definition_of(
            pipeline, function_arn=function_arn, reduce_arn=reduce_arn, state_name=state_name
        )

    # -- derived values -----------------------------------------------------------------
    @property
    def input_type(self) -> str | None:
        """The effective reader InputType; ``LISTING`` for an object listing."""
        reader = self.item_reader
        if reader is None:
            return None
        config = reader.reader_config
        if config.manifest_type:
            return "MANIFEST"
        if reader.resource == LIST_OBJECTS:
            return "LISTING"
        return config.input_type

    def source_url(self) -> str | None:
        """``Source``, else ``s3://Bucket/Key`` (or ``/Prefix``) from ItemReader.Parameters."""
        if self.source:
            return self.source
        params = self.item_reader.parameters if self.item_reader else None
        if params and "Bucket" in params:
            tail = params.get("Key", params.get("Prefix", ""))
            return f"s3://{params['Bucket']}" + (f"/{tail}" if tail else "")
        return None

    def replace(self, **changes: Any) -> MapSpec:
        """A copy with fields changed (by Python name), validated again."""
        data = self.model_dump(by_alias=False, exclude_none=True)
        data.update({key: value for key, value in changes.items()})
        try:
            return type(self).model_validate(data)
        except ValidationError as exc:
            raise _spec_error(exc) from None

    def aws_warnings(self) -> list[str]:
        """Settings that run locally but would break AWS's limits."""
        warnings = []
        batcher = self.item_batcher
        if (
            batcher
            and batcher.max_input_bytes_per_batch
            and (batcher.max_input_bytes_per_batch > AWS_MAX_BATCH_BYTES)
        ):
            warnings.append(
                f"ItemBatcher.MaxInputBytesPerBatch: {batcher.max_input_bytes_per_batch} is over "
                f"AWS's limit of {AWS_MAX_BATCH_BYTES} bytes"
            )
        if self.max_concurrency > 10_000:
            warnings.append("MaxConcurrency: AWS runs at most 10,000 child workflows at once")
        return warnings


def _location_problem(location: str) -> str | None:
    """What is wrong with an AllowedLocations entry (a URL prefix or a local folder), if anything.

    Credentials are refused because the spec is journaled; ``::`` because fsspec would chain it;
    ``.``/``..`` segments in URLs because servers normalise them away.
    """
    if location == SAME_AS_MANIFEST:
        return None
    if not location or location != location.strip():
        return "empty or padded with spaces"
    if "::" in location:
        return "'::' chains URLs in fsspec; give one location per entry"
    scheme, sep, rest = location.partition("://")
    if not sep:
        return None  # a local folder, resolved when the run reads the manifest
    netloc, _, path = rest.partition("/")
    if not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
        return f"{scheme!r} is not a URL scheme"
    if "@" in netloc:
        return "credentials do not belong in a pipeline (it is journaled); use the environment"
    if any(segment in (".", "..") for segment in unquote(path).split("/")):
        return "a '.' or '..' segment"
    bucket_name = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}", netloc) and ".." not in netloc
    if scheme == "s3" and not bucket_name:
        return f"{netloc!r} is not a bucket name"
    if scheme == "s3" and ("?" in path or "#" in path):
        return "an S3 prefix here is a plain key prefix, without '?' or '#'"
    return None


def _exclusive(model: BaseModel, name: str, alias: str, unset: Any = None) -> None:
    if getattr(model, name) not in (None, unset) and getattr(model, f"{name}_path") is not None:
        raise SpecError(alias, f"use either {alias} or {alias}Path, not both")


def _spec_error(exc: ValidationError) -> SpecError:
    """The first pydantic error as a SpecError with an AWS-named field path."""
    error = exc.errors()[0]
    path = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    context = error.get("ctx", {}).get("error")
    if isinstance(context, SpecError):  # raised inside a model validator: prefix its path
        inner = context.path
        path = ".".join(p for p in (path, inner) if p)
        message = context.rule
    elif error["type"] == "extra_forbidden":
        message = "unknown field (check its spelling)"
    elif error["type"] == "literal_error":
        message = f"must be one of {error['ctx']['expected']}"
    return SpecError(path, message)
