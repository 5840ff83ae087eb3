"""Triggers, the parts without servers: EventBridge pattern matching, event parsing and refusal,
the config's allow-lists, and the ledger's exactly-once claims."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from runner.errors import SpecError
from runner.triggers.config import from_dict, load_config
from runner.triggers.events import (
    Limits,
    ObjectCreated,
    Refused,
    check_key,
    from_listing,
    parse_message,
)
from runner.triggers.ledger import Ledger
from runner.triggers.patterns import PatternError, matches, validate

EVENT = {
    "version": "0",
    "id": "17793124-05d4-b198-2fde-7ededc63b103",
    "detail-type": "Object Created",
    "source": "aws.s3",
    "account": "111122223333",
    "time": "2021-11-12T00:00:00Z",
    "region": "ca-central-1",
    "resources": ["arn:aws:s3:::incoming"],
    "detail": {
        "version": "0",
        "bucket": {"name": "incoming"},
        "object": {
            "key": "uploads/2025/trips.csv",
            "size": 5,
            "etag": "b1946ac92492d2347c6235b4d2611184",
            "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
            "sequencer": "617f08299329d189",
        },
        "request-id": "N4N7GDK58NMKJ12R",
        "requester": "123456789012",
        "source-ip-address": "1.2.3.4",
        "reason": "PutObject",
        "tags": ["a", "b"],
        "flag": True,
        "nothing": None,
    },
}


def _key(matcher):
    return {"detail": {"object": {"key": matcher}}}


def _size(matcher):
    return {"detail": {"object": {"size": matcher}}}


# (pattern, expected) over EVENT; each follows a rule of EventBridge's user guide.
CASES = [
    ({"source": ["aws.s3"]}, True),
    ({"source": ["aws.ec2", "aws.s3"]}, True),  # an array is OR
    ({"source": ["aws.ec2"]}, False),
    ({"source": ["aws.s3"], "detail-type": ["Object Deleted"]}, False),  # keys are AND
    ({"detail": {"bucket": {"name": ["incoming"]}}}, True),
    ({"detail": {"bucket": {"name": ["other"]}}}, False),
    (_key([{"prefix": "uploads/"}]), True),
    (_key([{"prefix": "Uploads/"}]), False),
    (_key([{"prefix": {"equals-ignore-case": "UPLOADS/"}}]), True),
    (_key([{"suffix": ".csv"}]), True),
    (_key([{"suffix": ".CSV"}]), False),
    (_key([{"suffix": {"equals-ignore-case": ".CSV"}}]), True),
    (_key([{"suffix": ".json"}, {"suffix": ".csv"}]), True),
    (_key([{"equals-ignore-case": "UPLOADS/2025/TRIPS.CSV"}]), True),
    (_key([{"wildcard": "uploads/*/trips.csv"}]), True),
    (_key([{"wildcard": "uploads/*.csv"}]), True),  # * crosses "/"
    (_key([{"wildcard": "uploads/*.json"}]), False),
    (_key([{"wildcard": "uploads/2025/trips.csv"}]), True),
    (_key([{"wildcard": "uploads/2025/trips.cs"}]), False),  # the whole value must match
    (_key([{"wildcard": "uploads/2025/trips.c?v"}]), False),  # ? is no wildcard
    (_key([{"anything-but": "x"}]), True),
    (_key([{"anything-but": ["uploads/2025/trips.csv", "y"]}]), False),
    (_key([{"anything-but": {"prefix": "uploads/"}}]), False),
    (_key([{"anything-but": {"prefix": "tmp/"}}]), True),
    (_key([{"anything-but": {"suffix": ".tmp"}}]), True),
    (_key([{"anything-but": {"equals-ignore-case": ["UPLOADS/2025/TRIPS.CSV"]}}]), False),
    (_key([{"anything-but": {"wildcard": "*/2025/*"}}]), False),
    (_size([{"numeric": [">", 0]}]), True),
    (_size([{"numeric": [">", 0, "<=", 5]}]), True),
    (_size([{"numeric": [">", 0, "<", 5]}]), False),
    (_size([{"numeric": ["=", 5]}]), True),
    (_size([{"numeric": [">=", 1e6]}]), False),
    (_size([5]), True),
    (_size([5.0]), True),  # numbers compare as numbers
    (_size(["5"]), False),  # a string is not a number
    (_key([{"numeric": [">", 0]}]), False),  # numeric needs a number
    (_size([{"anything-but": [1, 2]}]), True),
    (_size([{"anything-but": 5}]), False),
    (_key([{"exists": True}]), True),
    ({"detail": {"object": {"owner": [{"exists": False}]}}}, True),
    ({"detail": {"object": {"owner": [{"exists": True}]}}}, False),
    ({"detail": {"object": {"key": [{"exists": False}]}}}, False),
    ({"detail": {"object": [{"exists": True}]}}, False),  # exists is for leaves only
    ({"detail": {"object": {"owner": ["x"]}}}, False),  # a missing field matches no literal
    ({"detail": {"object": {"owner": [{"anything-but": "x"}]}}}, False),  # ...nor anything-but
    ({"detail": {"tags": ["b"]}}, True),  # an array field matches if an element does
    ({"detail": {"tags": ["c"]}}, False),
    ({"detail": {"tags": [{"prefix": "a"}]}}, True),
    ({"resources": [{"prefix": "arn:aws:s3:::inc"}]}, True),
    ({"detail": {"flag": [True]}}, True),
    ({"detail": {"flag": [1]}}, False),  # true is not 1
    ({"detail": {"nothing": [None]}}, True),
    ({"detail": {"nothing": [""]}}, False),
    ({"detail": {"source-ip-address": [{"cidr": "1.2.3.0/24"}]}}, True),
    ({"detail": {"source-ip-address": [{"cidr": "10.0.0.0/8"}]}}, False),
    (
        {
            "source": ["aws.s3"],
            "$or": [
                {"detail": {"object": {"size": [{"numeric": [">", 100]}]}}},
                {"detail": {"object": {"key": [{"suffix": ".csv"}]}}},
            ],
        },
        True,
    ),
    (
        {
            "$or": [
                {"detail": {"object": {"size": [{"numeric": [">", 100]}]}}},
                {"detail": {"reason": ["CopyObject"]}},
            ]
        },
        False,
    ),
]


@pytest.mark.parametrize(("pattern", "expected"), CASES)
def test_pattern_matching_follows_eventbridge(pattern, expected):
    validate(pattern)
    assert matches(pattern, EVENT) is expected


# moto's EventPattern is an independent implementation: both agreeing makes a shared mistake
# less likely. Its one known deviation here: `true` equals `1` (Python's bool is an int).
_MOTO_DEVIATES = ({"detail": {"flag": [1]}},)


@pytest.mark.parametrize(
    "number", [n for n, case in enumerate(CASES) if case[0] not in _MOTO_DEVIATES]
)
def test_pattern_matching_agrees_with_motos_eventbridge(number):
    from moto.events.models import EventPattern

    pattern, expected = CASES[number]
    assert EventPattern.load(json.dumps(pattern)).matches_event(EVENT) is expected


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ([], "pattern"),
        ({"source": "aws.s3"}, "pattern.source"),  # a bare value: must be an array
        ({"source": []}, "pattern.source"),
        ({"k": [{"prefix": "a", "suffix": "b"}]}, "pattern.k[0]"),
        ({"k": [{"regex": "a.*"}]}, "pattern.k[0]"),
        ({"k": [{"wildcard": "a**b"}]}, "pattern.k[0].wildcard"),
        ({"k": [{"numeric": [">", "1"]}]}, "pattern.k[0].numeric"),
        ({"k": [{"numeric": ["<", 5, ">", 1]}]}, "pattern.k[0].numeric"),
        ({"k": [{"anything-but": ["a", 1]}]}, "pattern.k[0].anything-but"),
        ({"k": [{"exists": "yes"}]}, "pattern.k[0].exists"),
        ({"k": [{"cidr": "300.0.0.0/8"}]}, "pattern.k[0].cidr"),
        ({"$or": [{"a": ["x"]}]}, "pattern.$or"),
        ({"k": ["x" * 5000]}, "pattern"),
    ],
)
def test_invalid_patterns_are_refused_naming_the_field(pattern, path):
    with pytest.raises(PatternError) as caught:
        validate(pattern)
    assert caught.value.path == path


def test_escaped_wildcards_are_literal():
    pattern = _key([{"wildcard": "a\\*b"}])
    validate(pattern)
    assert matches(pattern, {"detail": {"object": {"key": "a*b"}}})
    assert not matches(pattern, {"detail": {"object": {"key": "axxb"}}})
    assert matches(_key([{"wildcard": "a\\\\*"}]), {"detail": {"object": {"key": "a\\zz"}}})


# -- events ----------------------------------------------------------------------------------


def _notification(key: str, **object_fields) -> str:
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2025-01-01T00:00:00.000Z",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": "incoming", "arn": "arn:aws:s3:::incoming"},
            "object": {"key": key, "size": 12, "eTag": "abc123", **object_fields},
        },
    }
    return json.dumps({"Records": [record]})


def test_notifications_are_decoded_and_shaped_like_eventbridge_events():
    parsed = parse_message(_notification("in/my+file%281%29.csv", sequencer="0A1B"))
    assert parsed.refused == [] and len(parsed.objects) == 1
    obj = parsed.objects[0]
    assert obj.key == "in/my file(1).csv"
    assert obj.version == "s:0A1B"
    event = obj.to_event()
    assert event["detail"]["object"]["key"] == "in/my file(1).csv"
    assert matches({"source": ["aws.s3"], "detail-type": ["Object Created"]}, event)


def test_sns_envelopes_and_eventbridge_events_are_understood():
    wrapped = json.dumps({"Type": "Notification", "Message": _notification("a/b.csv")})
    assert parse_message(wrapped).objects[0].key == "a/b.csv"
    bridge = parse_message(json.dumps(EVENT)).objects[0]
    assert (bridge.key, bridge.version) == (
        "uploads/2025/trips.csv",
        "v:" + "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
    )


def test_test_events_and_other_event_kinds_are_ignored_not_refused():
    assert parse_message(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})).ignored
    deleted = json.loads(_notification("a.csv"))
    deleted["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    parsed = parse_message(json.dumps(deleted))
    assert parsed.objects == [] and parsed.refused == [] and parsed.ignored


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("../etc/passwd", "'..' segment"),
        ("in/../../x", "'..' segment"),
        ("in/%2e%2e/%2E%2E/x", "'..' segment"),  # decoded before the check
        ("in\\..\\x", "'..' segment"),
        ("/etc/passwd", "absolute"),
        ("%2Fetc%2Fpasswd", "absolute"),
        ("C:%5Cwindows", "absolute"),
        ("in/a%0Ab.csv", "control"),
        ("in/a%1Bb.csv", "control"),
        ("in/a%E2%80%AEb.csv", "format"),  # U+202E right-to-left override
        ("a" * 1100, "longer than"),
        ("", "non-empty"),
    ],
)
def test_unsafe_keys_are_refused(key, reason):
    parsed = parse_message(_notification(key))
    assert parsed.objects == []
    assert len(parsed.refused) == 1 and reason in parsed.refused[0]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not an event object"),
        ('{"hello": "world"}', "neither"),
        ("[" * 100_000 + "]" * 100_000, "not JSON"),  # nesting that would blow the stack
        ('{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}]}', "no s3"),
        ('{"Records": {"a": 1}}', "not an array"),
        ('{"Type": "Notification", "Message": 5}', "SNS Message"),
        ("1" * 5000, "not JSON"),  # Python refuses ints over 4300 digits
    ],
)
def test_malformed_messages_are_refused(body, reason):
    parsed = parse_message(body, Limits(max_event_bytes=1024 * 1024))
    assert parsed.objects == [] and reason in parsed.refused[0]


def test_oversized_messages_are_refused_before_parsing():
    body = _notification("a.csv", padding="x" * 300_000)
    parsed = parse_message(body)
    assert parsed.objects == [] and "over the 262144-byte limit" in parsed.refused[0]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("size", "12", "size"),
        ("size", -1, "size"),
        ("size", True, "size"),
        ("eTag", "a b", "etag"),
        ("versionId", "x" * 2000, "version id"),
        ("sequencer", {"a": 1}, "sequencer"),
    ],
)
def test_bad_field_types_are_refused(field, value, reason):
    parsed = parse_message(_notification("a.csv", **{field: value}))
    assert parsed.objects == [] and parsed.refused[0].startswith(reason)


def test_a_bad_record_does_not_hide_a_good_one_beside_it():
    good, bad = (json.loads(_notification(k))["Records"][0] for k in ("ok.csv", "../x"))
    parsed = parse_message(json.dumps({"Records": [bad, good]}))
    assert [o.key for o in parsed.objects] == ["ok.csv"] and len(parsed.refused) == 1


def test_bucket_names_are_checked():
    record = json.loads(_notification("a.csv"))
    record["Records"][0]["s3"]["bucket"]["name"] = "../x"
    assert "bucket" in parse_message(json.dumps(record)).refused[0]


def test_check_key_keeps_ordinary_keys():
    for key in ("a.csv", "in/2025/01/a b.csv", "dots.../x", "ünïcode/ß.json", "a//b"):
        assert check_key(key) == key
    with pytest.raises(Refused):
        check_key("a/./../b")


def test_run_ids_are_stable_per_trigger_and_version():
    a = ObjectCreated("b", "k", 1, etag="e", version_id="v1")
    assert a.run_id("t") == ObjectCreated("b", "k", 9, etag="x", version_id="v1").run_id("t")
    assert a.run_id("t") != ObjectCreated("b", "k", 1, etag="e", version_id="v2").run_id("t")
    assert a.run_id("t") != a.run_id("u")
    # without a version id or sequencer, the ETag (and a listing's LastModified) tell versions
    assert ObjectCreated("b", "k", 1, etag="e", version_id="null").version == "e:e"


def test_listing_entries_become_objects():
    from datetime import UTC, datetime

    entry = {
        "Key": "in/a.csv",
        "Size": 3,
        "ETag": '"abc"',
        "LastModified": datetime(2025, 1, 1, tzinfo=UTC),
    }
    obj = from_listing("incoming", entry)
    assert (obj.etag, obj.version) == ("abc", "e:abc@2025-01-01T00:00:00Z")


# -- config ----------------------------------------------------------------------------------


def _config(tmp_path: Path, **changes):
    (tmp_path / "p").mkdir(exist_ok=True)
    (tmp_path / "p" / "echo.yaml").write_text("Worker: echo\nSource: x.jsonl\n")
    data = {
        "pipelines_dir": "p",
        "pipelines": {"echo": "echo.yaml"},
        "source": {"sqs": {"queue_url": "http://127.0.0.1:1/q"}},
        "triggers": [{"name": "t", "pattern": _key([{"prefix": "in/"}]), "pipeline": "echo"}],
        "base_dir": str(tmp_path),
    }
    data.update(changes)
    return from_dict(data)


def test_config_fills_in_the_s3_object_created_envelope(tmp_path):
    config = _config(tmp_path)
    pattern = config.triggers[0].pattern
    assert pattern["source"] == ["aws.s3"] and pattern["detail-type"] == ["Object Created"]
    assert set(config.load_pipelines()) == {"echo"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"triggers": [{"name": "t", "pattern": {"a": ["x"]}, "pipeline": "nope"}]},
            "not in pipelines",
        ),
        ({"pipelines": {"echo": "../outside.yaml"}}, "outside pipelines_dir"),
        ({"pipelines": {"echo": "/etc/passwd"}}, "outside pipelines_dir"),
        ({"triggers": [{"name": "bad name", "pattern": {"a": ["x"]}, "pipeline": "echo"}]}, "name"),
        ({"triggers": [{"name": "t", "pattern": {"a": "x"}, "pipeline": "echo"}]}, "pattern.a"),
        ({"source": {"sqs": {"queue_url": "q"}, "poll": {"bucket": "b"}}}, "exactly one"),
        (
            {
                "triggers": [
                    {"name": "t", "pattern": {"a": ["x"]}, "pipeline": "echo", "notify": ["x"]}
                ]
            },
            "notify",
        ),
        (
            {
                "triggers": [
                    {"name": "t", "pattern": {"a": ["x"]}, "pipeline": "echo", "shell": "rm"}
                ]
            },
            "shell",
        ),
    ],
)
def test_config_refuses_what_could_start_the_unexpected(tmp_path, changes, message):
    with pytest.raises(SpecError, match=message):
        _config(tmp_path, **changes)


def test_pipelines_must_name_registered_workers(tmp_path):
    config = _config(tmp_path)
    (tmp_path / "p" / "echo.yaml").write_text("Worker: os:system\nSource: x.jsonl\n")
    with pytest.raises(SpecError, match="import paths are not allowed"):
        config.load_pipelines()


def test_key_routing_only_reaches_allowed_pipelines(tmp_path):
    trigger = {
        "name": "routed",
        "pattern": _key([{"prefix": "inbox/"}]),
        "pipeline_from_key_segment": 1,
        "allowed_pipelines": ["echo"],
    }
    routed = _config(tmp_path, triggers=[trigger]).triggers[0]
    assert routed.pipeline_for("inbox/echo/a.csv") == "echo"
    for key in ("inbox/other/a.csv", "inbox/echo", "inbox/../a.csv", "inbox/os:system/a"):
        assert routed.pipeline_for(key) is None


# -- ledger ----------------------------------------------------------------------------------


def test_a_version_is_claimed_once_across_threads_and_reopenings(tmp_path):
    obj = ObjectCreated("b", "k.csv", 1, etag="e", sequencer="01")
    won: list[str | None] = []

    def claim():
        with Ledger(tmp_path / "ledger.sqlite") as ledger:
            won.append(ledger.claim("t", obj, "echo"))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [w for w in won if w] == [obj.run_id("t")]
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        assert ledger.claim("t", obj, "echo") is None
        assert ledger.claim("other", obj, "echo") is not None  # another trigger, another run
        newer = ObjectCreated("b", "k.csv", 1, etag="e", sequencer="02")
        assert ledger.claim("t", newer, "echo") is not None
        assert [c.status for c in ledger.unfinished()] == ["CLAIMED"] * 3


def test_the_example_config_is_valid():
    config = load_config(Path(__file__).parent.parent / "pipelines" / "triggers" / "example.yaml")
    assert set(config.load_pipelines()) == {"demo", "taxi-stats"}
