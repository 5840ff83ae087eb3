"""The trigger service's configuration: one validated model, loaded from YAML.

Everything that decides what may run lives here, in trusted configuration, never in an event:
the pipelines a trigger may start (by name, from an allow-list of files inside
``pipelines_dir``), their workers (registered names only, never ``module:function``), where the
files an uploaded manifest names may be (``manifest_locations``: ``s3://`` only; by default the
watched bucket and prefix), the destinations, the executors and the notification targets. See
``docs/triggers.md`` and ``pipelines/triggers/example.yaml``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runner.errors import SpecError
from runner.spec import SAME_AS_MANIFEST, MapSpec
from runner.triggers.events import Limits
from runner.triggers.patterns import validate

__all__ = [
    "LimitsConfig",
    "NotifyTarget",
    "PollSource",
    "SourceConfig",
    "SqsSource",
    "Trigger",
    "TriggerConfig",
    "load_config",
]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
# A trigger's own fields, filled into its pattern when missing: the service only ever sees
# S3 "Object Created" events, and the rule deployed to EventBridge must not match more.
_S3_CREATED = {"source": ["aws.s3"], "detail-type": ["Object Created"]}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SqsSource(_Model):
    """Receive the bucket's event notifications (or EventBridge events) from an SQS queue."""

    queue_url: str
    wait_seconds: int = Field(10, ge=0, le=20, description="SQS long-poll wait")
    visibility_timeout: int = Field(
        60, ge=1, le=43200, description="seconds a received message stays hidden"
    )
    max_messages: int = Field(10, ge=1, le=10)


class PollSource(_Model):
    """No queue: list the bucket every ``interval_seconds`` with a durable high-water mark."""

    bucket: str
    prefix: str = ""
    interval_seconds: float = Field(10.0, gt=0)
    since: Literal["now", "beginning"] = Field(
        "now", description="on the first poll: ignore what is there (now) or start it all"
    )
    grace_seconds: float = Field(
        900.0, ge=0, description="relist objects this much older than the mark (slow uploads)"
    )


class SourceConfig(_Model):
    sqs: SqsSource | None = None
    poll: PollSource | None = None

    @model_validator(mode="after")
    def _one(self) -> SourceConfig:
        if (self.sqs is None) == (self.poll is None):
            raise ValueError("give exactly one of sqs or poll")
        return self


class SnsTarget(_Model):
    topic_arn: str = Field(pattern=r"^arn:aws[a-z-]*:sns:")


class WebhookTarget(_Model):
    url: str = Field(pattern=r"^https?://")
    #: Environment variable holding an HMAC key; the body is then signed (X-Shardmap-Signature).
    secret_env: str | None = None
    timeout_seconds: float = Field(10.0, gt=0)
    attempts: int = Field(3, ge=1, le=10)


class NotifyTarget(_Model):
    sns: SnsTarget | None = None
    webhook: WebhookTarget | None = None

    @model_validator(mode="after")
    def _one(self) -> NotifyTarget:
        if (self.sns is None) == (self.webhook is None):
            raise ValueError("give exactly one of sns or webhook")
        return self


class LimitsConfig(_Model):
    max_event_bytes: int = Field(256 * 1024, ge=1024, le=1024 * 1024)
    max_key_bytes: int = Field(1024, ge=1, le=1024)
    max_records_per_message: int = Field(100, ge=1)
    max_concurrent_runs: int = Field(4, ge=1, le=256)
    #: Claimed runs waiting for a slot before the service stops taking events (backpressure).
    max_waiting_runs: int = Field(200, ge=1)

    def event_limits(self) -> Limits:
        return Limits(self.max_event_bytes, self.max_key_bytes, self.max_records_per_message)


class Trigger(_Model):
    """One rule: an EventBridge pattern and the pipeline it starts."""

    name: str = Field(pattern=_NAME)
    pattern: dict[str, Any]
    #: The pipeline to start, a name from ``pipelines``.
    pipeline: str | None = None
    #: Or: the key's N-th segment (0-based, split on "/") names the pipeline, which must be in
    #: ``allowed_pipelines``. ``inbox/<pipeline>/file.csv`` with N = 1.
    pipeline_from_key_segment: int | None = Field(None, ge=0)
    allowed_pipelines: tuple[str, ...] = ()
    #: Results URL; default: the pipeline's ResultWriter (each run writes under <dest>/<run-id>/).
    dest: str | None = None
    executor: Literal["inline", "threads", "processes", "local", "dask"] = "inline"
    #: ``object``: the run's Source is the new object. ``pipeline``: keep the pipeline's Source
    #: (the object is still in the run input, ``$.Bucket`` / ``$.Key``).
    source: Literal["object", "pipeline"] = "object"
    notify: tuple[str, ...] = ()
    #: Where the data files a manifest (MANIFEST pipeline) names may be: ``s3://bucket[/prefix]``
    #: key prefixes. Default: the watched bucket and prefix (``poll``'s bucket and prefix; with
    #: ``sqs``, the uploaded object's bucket, narrowed to the key prefixes the pattern requires).
    manifest_locations: tuple[str, ...] | None = None

    @field_validator("manifest_locations")
    @classmethod
    def _s3_prefixes(cls, locations: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for location in locations or ():
            bucket, _, prefix = location.removeprefix("s3://").partition("/")
            if not location.startswith("s3://") or not _BUCKET.match(bucket) or ".." in bucket:
                raise ValueError(f"{location!r}: give s3://bucket[/prefix] (s3:// only)")
            problem = _prefix_problem(prefix)
            if problem:
                raise ValueError(f"{location!r}: {problem}")
        return locations

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: dict[str, Any]) -> dict[str, Any]:
        validate(value)
        return {**_S3_CREATED, **value}

    @model_validator(mode="after")
    def _routing(self) -> Trigger:
        routed = self.pipeline_from_key_segment is not None
        if routed == (self.pipeline is not None):
            raise ValueError("give either pipeline or pipeline_from_key_segment")
        if routed and not self.allowed_pipelines:
            raise ValueError("pipeline_from_key_segment needs allowed_pipelines")
        if not routed and self.allowed_pipelines:
            raise ValueError("allowed_pipelines goes with pipeline_from_key_segment")
        return self

    def pipelines(self) -> tuple[str, ...]:
        return (self.pipeline,) if self.pipeline else self.allowed_pipelines

    def manifest_scope(self, bucket: str, source: SourceConfig) -> tuple[str, ...]:
        """The AllowedLocations of this trigger's runs for an object uploaded to ``bucket``."""
        if self.manifest_locations is not None:
            return self.manifest_locations
        if source.poll is not None:
            return (f"s3://{source.poll.bucket}/{source.poll.prefix}",)
        prefixes = _key_prefixes(self.pattern) or ("",)
        return tuple(f"s3://{bucket}/{prefix}" for prefix in prefixes)

    def pipeline_for(self, key: str) -> str | None:
        """The pipeline name this trigger starts for ``key``; None when the key names none of
        the allowed ones (the caller refuses the event)."""
        if self.pipeline is not None:
            return self.pipeline
        assert self.pipeline_from_key_segment is not None
        segments = key.split("/")
        if self.pipeline_from_key_segment >= len(segments) - 1:  # the last segment is the file
            return None
        name = segments[self.pipeline_from_key_segment]
        return name if name in self.allowed_pipelines else None


class TriggerConfig(_Model):
    """``shardmap trigger serve CONFIG``: where events come from and what they may start."""

    #: Ledger and run journals (default: ``--state-dir`` / ``$SHARDMAP_STATE_DIR`` / .shardmap).
    state_dir: str | None = None
    #: Pipeline files must live in this folder (relative to the config file).
    pipelines_dir: str = "."
    #: The allow-list: pipeline name -> file inside ``pipelines_dir``.
    pipelines: dict[str, str]
    source: SourceConfig
    notify: dict[str, NotifyTarget] = {}
    limits: LimitsConfig = LimitsConfig()
    triggers: tuple[Trigger, ...] = Field(min_length=1)
    #: Where the config file was (relative paths resolve against it); set by :func:`load_config`.
    base_dir: str = "."

    @model_validator(mode="after")
    def _references(self) -> TriggerConfig:
        names = [trigger.name for trigger in self.triggers]
        if len(set(names)) != len(names):
            raise ValueError(f"trigger names must be unique: {names}")
        for name in self.pipelines:
            if not re.match(_NAME, name):
                raise ValueError(f"pipeline name {name!r}: letters, digits, '-' and '_' only")
        for trigger in self.triggers:
            for name in trigger.pipelines():
                if name not in self.pipelines:
                    raise ValueError(
                        f"trigger {trigger.name}: pipeline {name!r} is not in pipelines "
                        f"({', '.join(sorted(self.pipelines)) or 'none'})"
                    )
            for target in trigger.notify:
                if target not in self.notify:
                    raise ValueError(f"trigger {trigger.name}: no notify target {target!r}")
        for name in self.pipelines:
            self.pipeline_path(name)  # raises when a file is outside pipelines_dir
        return self

    def pipeline_path(self, name: str) -> Path:
        """The file of allow-listed pipeline ``name``; it must resolve inside pipelines_dir."""
        if name not in self.pipelines:
            raise SpecError(f"pipelines.{name}", "not an allow-listed pipeline")
        folder = (Path(self.base_dir) / self.pipelines_dir).resolve()
        path = (folder / self.pipelines[name]).resolve()
        if folder != path and folder not in path.parents:
            raise SpecError(f"pipelines.{name}", f"{path} is outside pipelines_dir {folder}")
        return path

    def resolved_state_dir(self) -> str:
        from runner.journal import default_state_dir

        if self.state_dir is None:
            return os.path.abspath(default_state_dir())
        return str((Path(self.base_dir) / self.state_dir).resolve())

    def load_pipelines(self) -> dict[str, MapSpec]:
        """Every allow-listed pipeline, validated; a worker or reduce step must be a registered
        name, so nothing a trigger starts imports code by path."""
        from runner.registry import resolve_worker

        specs = {}
        for name in self.pipelines:
            spec = MapSpec.load(self.pipeline_path(name))
            for field, ref in (("Worker", spec.worker), ("Reduce", spec.reduce)):
                if ref is not None:
                    try:
                        resolve_worker(ref, allow_import_path=False)
                    except Exception as exc:
                        raise SpecError(f"pipelines.{name}.{field}", str(exc)) from None
            if spec.worker is None:
                raise SpecError(f"pipelines.{name}.Worker", "a triggered pipeline needs a worker")
            if spec.allowed_locations != (SAME_AS_MANIFEST,):
                raise SpecError(
                    f"pipelines.{name}.AllowedLocations",
                    "a triggered run reads what its trigger allows: set manifest_locations on "
                    "the trigger instead",
                )
            specs[name] = spec
        return specs


def _prefix_problem(prefix: str) -> str | None:
    if any(segment in (".", "..") for segment in prefix.split("/")):
        return "a '.' or '..' segment"
    if "::" in prefix or "?" in prefix or "#" in prefix:
        return "a key prefix here is plain, without '::', '?' or '#'"
    if any(not char.isprintable() for char in prefix):
        return "a control character"
    return None


def _key_prefixes(pattern: dict[str, Any]) -> tuple[str, ...]:
    """The key prefixes ``pattern`` requires (``prefix``, or a ``wildcard`` up to its first
    ``*``); empty when it does not pin one down (the whole bucket is then the watched scope)."""
    detail = pattern.get("detail")
    obj = detail.get("object") if isinstance(detail, dict) else None
    conditions = obj.get("key") if isinstance(obj, dict) else None
    if not isinstance(conditions, list) or not conditions or "$or" in pattern:
        return ()
    prefixes = []
    for condition in conditions:
        if isinstance(condition, dict) and isinstance(condition.get("prefix"), str):
            prefixes.append(condition["prefix"])
        elif isinstance(condition, dict) and isinstance(condition.get("wildcard"), str):
            literal = condition["wildcard"].split("*", 1)[0]
            if "\\" in literal:  # an escaped '*' or '\': not worth decoding for a default
                return ()
            prefixes.append(literal)
        else:  # an exact key, anything-but, ...: no common prefix to narrow to
            return ()
    if any(_prefix_problem(prefix) for prefix in prefixes):
        return ()
    return tuple(dict.fromkeys(prefixes))


def load_config(path: str | Path) -> TriggerConfig:
    """Read and validate a trigger config file; errors are :class:`SpecError` with the field path.

    >>> config = load_config("pipelines/triggers/example.yaml")  # doctest: +SKIP
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(str(path), "no such trigger config") from None
    except yaml.YAMLError as exc:
        raise SpecError(str(path), f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(str(path), "a trigger config is a mapping")
    data.setdefault("base_dir", str(path.resolve().parent))
    return from_dict(data)


def from_dict(data: dict[str, Any]) -> TriggerConfig:
    try:
        return TriggerConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        inner = error.get("ctx", {}).get("error")
        if isinstance(inner, SpecError):  # a pattern error: keep its own path below "pattern"
            raise SpecError(where + inner.path.removeprefix("pattern"), inner.rule) from None
        raise SpecError(where, error["msg"].removeprefix("Value error, ")) from None
