"""What arrives, made into one shape: :class:`ObjectCreated`, or a refusal with its reason.

Three shapes come in through a queue, and one from the poller:

- an S3 event notification (``{"Records": [{"eventSource": "aws:s3", ...}]}``; keys are
  URL-encoded, ``+`` for a space), possibly wrapped in an SNS envelope
  (``{"Type": "Notification", "Message": "<json>"}``) when S3 -> SNS -> SQS;
- an EventBridge event (``{"source": "aws.s3", "detail-type": "Object Created", "detail": ...}``)
  that a rule delivered to the queue;
- S3's ``s3:TestEvent``, sent when notifications are configured: ignored;
- a ListObjectsV2 entry from the poller (:func:`from_listing`).

Everything an event carries is untrusted. It is checked here, once, before anything else sees
it: the message size (before parsing), JSON that parses, field types, the bucket name, the key
(no ``.`` or ``..`` segment, not absolute, no control or format characters, at most
``max_key_bytes``), etag, version id and sequencer (short and printable). What fails is refused
with a log line naming the reason and the message; nothing from it starts a run. The key never
becomes a path on this machine, nor is it parsed as a URL: a run reads exactly that key
(:func:`runner.readers.s3keys.object_url`: ``a?versionId=x`` is that object, not a version of
``a``), and results go under the trigger's fixed destination, named by the run id.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

__all__ = [
    "Limits",
    "ObjectCreated",
    "Parsed",
    "Refused",
    "check_key",
    "from_listing",
    "parse_message",
    "safe_text",
]

log = logging.getLogger("shardmap.triggers")

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_TOKEN = re.compile(r"^[A-Za-z0-9._\-+/=:]{1,1024}$")  # etag, version id, sequencer
_RUN_NAMESPACE = uuid.UUID("6c1f4a52-8f0e-4d8a-9b8e-5b3c1d2e7a90")
# S3's reason for each notification eventName (EventBridge's detail.reason)
_REASONS = {
    "ObjectCreated:Put": "PutObject",
    "ObjectCreated:Post": "POSTObject",
    "ObjectCreated:Copy": "CopyObject",
    "ObjectCreated:CompleteMultipartUpload": "CompleteMultipartUpload",
}


class Refused(ValueError):
    """An event that must start nothing; ``reason`` says why, in words safe to log."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Limits:
    """Bounds on what an event may carry (see :class:`runner.triggers.config.LimitsConfig`)."""

    max_event_bytes: int = 256 * 1024  # SQS's largest message
    max_key_bytes: int = 1024  # S3's longest key
    max_records: int = 100


@dataclass(frozen=True)
class ObjectCreated:
    """One new object version, whatever way it was announced."""

    bucket: str
    key: str
    size: int
    etag: str = ""
    version_id: str | None = None
    sequencer: str | None = None
    event_time: str | None = None
    reason: str = "PutObject"
    region: str | None = None
    #: For objects found by listing: their LastModified (the version identity needs it).
    last_modified: str | None = None

    @property
    def version(self) -> str:
        """What tells this version of the object from another one with the same key.

        A version id when the bucket is versioned; else the sequencer S3 puts on every
        notification (it grows with every write of a key); else the ETag (plus LastModified for
        listings), so a redelivered or relisted event names the same version. Without version
        ids or sequencers, the same bytes uploaded again under the same key count as the same
        version.
        """
        if self.version_id and self.version_id != "null":
            return f"v:{self.version_id}"
        if self.sequencer:
            return f"s:{self.sequencer}"
        return f"e:{self.etag}" + (f"@{self.last_modified}" if self.last_modified else "")

    @property
    def url(self) -> str:
        """The URL a run reads this object by: its exact key, never parsed (see s3keys)."""
        from runner.readers.s3keys import object_url

        return object_url(self.bucket, self.key)

    def run_id(self, trigger: str) -> str:
        """The run this trigger starts for this version: the same after any restart."""
        name = "\0".join((trigger, self.bucket, self.key, self.version))
        return str(uuid.uuid5(_RUN_NAMESPACE, name))

    def to_event(self) -> dict[str, Any]:
        """The EventBridge "Object Created" event S3 would send for this object."""
        obj: dict[str, Any] = {"key": self.key, "size": self.size, "etag": self.etag}
        if self.version_id:
            obj["version-id"] = self.version_id
        if self.sequencer:
            obj["sequencer"] = self.sequencer
        return {
            "version": "0",
            "detail-type": "Object Created",
            "source": "aws.s3",
            "time": self.event_time or _now(),
            "region": self.region or "",
            "resources": [f"arn:aws:s3:::{self.bucket}"],
            "detail": {
                "version": "0",
                "bucket": {"name": self.bucket},
                "object": obj,
                "reason": self.reason,
            },
        }

    def run_input(self, trigger: str) -> dict[str, Any]:
        """The run input of a triggered run; ``deploy --trigger`` sends AWS the same fields."""
        data: dict[str, Any] = {
            "Trigger": trigger,
            "Bucket": self.bucket,
            "Key": self.key,
            "Size": self.size,
            "ETag": self.etag,
        }
        for name, value in (
            ("VersionId", self.version_id),
            ("Sequencer", self.sequencer),
            ("EventTime", self.event_time),
        ):
            if value:
                data[name] = value
        return data

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ObjectCreated:
        return cls(**json.loads(text))


@dataclass
class Parsed:
    """What one message held: objects to consider, refusals, and what was ignored."""

    objects: list[ObjectCreated] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def safe_text(value: Any, limit: int = 120) -> str:
    """A loggable rendering of untrusted text: control characters escaped, length bounded."""
    text = repr(value) if not isinstance(value, str) else repr(value)[1:-1]
    text = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)
    return text if len(text) <= limit else text[:limit] + f"...(+{len(text) - limit})"


def check_key(key: Any, max_key_bytes: int = 1024) -> str:
    """``key`` if it is safe to hand to a run, else raise :class:`Refused`.

    >>> check_key("in/2025/a.csv")
    'in/2025/a.csv'
    >>> check_key("in/../../etc/passwd")
    Traceback (most recent call last):
    ...
    runner.triggers.events.Refused: key 'in/../../etc/passwd': a '..' segment
    """
    if not isinstance(key, str) or not key:
        raise Refused(f"key {safe_text(key)}: not a non-empty string")
    shown = f"key {safe_text(key)!r}"
    if len(key.encode("utf-8", "surrogatepass")) > max_key_bytes:
        raise Refused(f"{shown}: longer than {max_key_bytes} bytes")
    for char in key:
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            raise Refused(f"{shown}: control or format character U+{ord(char):04X}")
    if key.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", key):
        raise Refused(f"{shown}: an absolute path")
    for segment in (".", ".."):  # servers normalise them: no request names such a key exactly
        if segment in re.split(r"[/\\]", key):
            raise Refused(f"{shown}: a {segment!r} segment")
    return key


def _token(value: Any, name: str, optional: bool = True) -> str | None:
    if value is None or (optional and value == ""):
        return None
    if not isinstance(value, str) or not _TOKEN.match(value.strip('"')):
        raise Refused(f"{name} {safe_text(value)!r}: not a short printable token")
    return value.strip('"')


def _size(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 5 * 1024**4:
        raise Refused(f"size {safe_text(value)!r}: not a byte count")
    return value


def _bucket(value: Any) -> str:
    if not isinstance(value, str) or not _BUCKET.match(value) or ".." in value:
        raise Refused(f"bucket {safe_text(value)!r}: not a bucket name")
    return value


def _object(
    bucket: Any,
    key: Any,
    obj: Mapping[str, Any],
    limits: Limits,
    *,
    event_time: Any = None,
    reason: str = "PutObject",
    region: Any = None,
) -> ObjectCreated:
    return ObjectCreated(
        bucket=_bucket(bucket),
        key=check_key(key, limits.max_key_bytes),
        size=_size(obj.get("size")),
        etag=_token(obj.get("eTag", obj.get("etag")), "etag") or "",
        version_id=_token(obj.get("versionId", obj.get("version-id")), "version id"),
        sequencer=_token(obj.get("sequencer"), "sequencer"),
        event_time=event_time if isinstance(event_time, str) and len(event_time) < 40 else None,
        reason=reason,
        region=region if isinstance(region, str) and len(region) < 40 else None,
    )


def parse_message(body: str | bytes, limits: Limits = Limits()) -> Parsed:
    """Turn one queue message into objects, refusals and ignored notes. Never raises.

    >>> parsed = parse_message('{"Service": "Amazon S3", "Event": "s3:TestEvent"}')
    >>> parsed.objects, parsed.ignored
    ([], ['s3:TestEvent'])
    """
    parsed = Parsed()
    try:
        document = _load(body, limits)
        if isinstance(document, Mapping) and document.get("Type") == "Notification":
            document = _load(_expect_str(document.get("Message"), "SNS Message"), limits)
        for item in _records(document, limits):
            if isinstance(item, str):
                parsed.ignored.append(item)
                continue
            try:
                parsed.objects.append(item())
            except Refused as exc:
                parsed.refused.append(exc.reason)
    except Refused as exc:
        parsed.refused.append(exc.reason)
    return parsed


def _expect_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise Refused(f"{name}: not a string")
    return value


def _load(body: str | bytes, limits: Limits) -> Any:
    size = len(body.encode() if isinstance(body, str) else body)
    if size > limits.max_event_bytes:
        raise Refused(f"message of {size} bytes is over the {limits.max_event_bytes}-byte limit")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # ValueError: also int digits over the limit
        raise Refused(f"not JSON: {safe_text(str(exc), 80)}") from None


def _records(document: Any, limits: Limits) -> Iterator[Any]:
    """Yield a note (str) for what is ignored, or a thunk building an object (refusals raise
    when it is called, so one bad record does not hide the good ones beside it)."""
    if not isinstance(document, Mapping):
        raise Refused(f"a {type(document).__name__}, not an event object")
    if document.get("Event") == "s3:TestEvent":
        yield "s3:TestEvent"
        return
    if "Records" in document:
        records = document["Records"]
        if not isinstance(records, list):
            raise Refused("Records: not an array")
        if len(records) > limits.max_records:
            raise Refused(f"{len(records)} records, over the limit of {limits.max_records}")
        for number, record in enumerate(records):
            yield from _notification_record(record, number, limits)
        return
    if "detail-type" in document or "detail" in document:
        yield from _eventbridge(document, limits)
        return
    raise Refused("neither an S3 notification nor an EventBridge event")


def _notification_record(record: Any, number: int, limits: Limits) -> Iterator[Any]:
    if not isinstance(record, Mapping):
        raise Refused(f"Records[{number}]: not an object")
    if record.get("eventSource") != "aws:s3":
        yield f"Records[{number}]: eventSource {safe_text(record.get('eventSource'))}"
        return
    name = record.get("eventName")
    if not isinstance(name, str) or not name.startswith("ObjectCreated:"):
        yield f"Records[{number}]: {safe_text(name)} is not an ObjectCreated event"
        return
    s3 = record.get("s3")
    bucket = s3.get("bucket") if isinstance(s3, Mapping) else None
    obj = s3.get("object") if isinstance(s3, Mapping) else None
    if not isinstance(bucket, Mapping) or not isinstance(obj, Mapping):
        raise Refused(f"Records[{number}]: no s3.bucket / s3.object")
    key = obj.get("key")

    def build() -> ObjectCreated:
        if not isinstance(key, str):
            raise Refused(f"Records[{number}]: key {safe_text(key)}: not a string")
        # S3 URL-encodes keys in notifications; decoding is where "%2e%2e" becomes "..", so the
        # key is checked after it.
        return _object(
            bucket.get("name"),
            unquote_plus(key),
            obj,
            limits,
            event_time=record.get("eventTime"),
            reason=_REASONS.get(name, name.partition(":")[2]),
            region=record.get("awsRegion"),
        )

    yield build


def _eventbridge(event: Mapping[str, Any], limits: Limits) -> Iterator[Any]:
    if event.get("source") != "aws.s3" or event.get("detail-type") != "Object Created":
        yield (
            f"EventBridge event {safe_text(event.get('source'))} / "
            f"{safe_text(event.get('detail-type'))} is not an S3 Object Created event"
        )
        return
    detail = event.get("detail")
    bucket = detail.get("bucket") if isinstance(detail, Mapping) else None
    obj = detail.get("object") if isinstance(detail, Mapping) else None
    if not isinstance(bucket, Mapping) or not isinstance(obj, Mapping):
        raise Refused("EventBridge event without detail.bucket / detail.object")
    assert isinstance(detail, Mapping)
    reason = detail.get("reason")

    def build() -> ObjectCreated:
        return _object(
            bucket.get("name"),
            obj.get("key"),
            obj,
            limits,
            event_time=event.get("time"),
            reason=reason if isinstance(reason, str) and len(reason) < 40 else "PutObject",
            region=event.get("region"),
        )

    yield build


def from_listing(bucket: str, entry: Mapping[str, Any], limits: Limits = Limits()) -> ObjectCreated:
    """A ListObjectsV2 ``Contents`` entry as an :class:`ObjectCreated` (may raise Refused)."""
    modified = entry.get("LastModified")
    stamp = (
        modified.astimezone(UTC).isoformat().replace("+00:00", "Z")
        if isinstance(modified, datetime)
        else str(modified or "")
    )
    obj = {"size": entry.get("Size"), "etag": entry.get("ETag")}
    found = _object(bucket, entry.get("Key"), obj, limits, event_time=stamp)
    return ObjectCreated(**{**found.__dict__, "last_modified": stamp})
