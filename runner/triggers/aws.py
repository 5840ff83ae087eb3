"""``shardmap deploy PIPELINE --trigger CONFIG``: the same triggers, run by EventBridge on AWS.

For each trigger of CONFIG that starts PIPELINE (a fixed ``pipeline:``; key-routed triggers
need the service and are skipped with a note):

- the EventBridge rule ``shardmap-<name>-<trigger>`` on the default bus, whose EventPattern is
  the trigger's pattern exactly as the local service matches it;
- its target: the state machine, started through the role ``shardmap-<name>-events`` (trusted
  by ``events.amazonaws.com``, allowed ``states:StartExecution`` on that state machine only),
  with an InputTransformer that gives the execution the run input the local service gives a
  run: ``{"Trigger", "Bucket", "Key", "Size", "ETag", "Sequencer", "EventTime"}``;
- EventBridge notifications on each bucket the pattern names (``detail.bucket.name`` exact
  values; other notification configurations of the bucket are kept).

Idempotent: rules and targets are put (create or update) and the role is updated in place.
On AWS, EventBridge delivers at least once and starts executions with names of its own, so the
ledger's exactly-once guarantee is the local service's; see ``docs/triggers.md``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.errors import SpecError
from runner.triggers.config import Trigger, TriggerConfig

__all__ = ["TriggerDeployment", "deploy_triggers", "input_transformer", "pattern_buckets"]

log = logging.getLogger("shardmap.triggers")

TARGET_ID = "shardmap-state-machine"


class TriggerDeployment:
    """What :func:`deploy_triggers` did: rule ARNs by trigger name, and the actions taken."""

    def __init__(self) -> None:
        self.rules: dict[str, str] = {}
        self.buckets: list[str] = []
        self.actions: list[str] = []


def pattern_buckets(pattern: Mapping[str, Any]) -> list[str]:
    """The bucket names a pattern matches exactly (``detail.bucket.name`` literals).

    >>> pattern_buckets({"detail": {"bucket": {"name": ["in", {"prefix": "x"}]}}})
    ['in']
    """
    detail = pattern.get("detail")
    bucket = detail.get("bucket") if isinstance(detail, Mapping) else None
    names = bucket.get("name") if isinstance(bucket, Mapping) else None
    return sorted({n for n in names or () if isinstance(n, str)})


def input_transformer(trigger: Trigger) -> dict[str, Any]:
    """The target's InputTransformer: the event's object as the run input (see module doc).

    Placeholders stand outside quotes, so EventBridge inserts each value as JSON (a key with
    quotes or backslashes stays one valid string). The trigger name is checked by the config
    to be ``[A-Za-z0-9_-]``, safe to write into the template.
    """
    paths = {
        "bucket": "$.detail.bucket.name",
        "key": "$.detail.object.key",
        "size": "$.detail.object.size",
        "etag": "$.detail.object.etag",
        "sequencer": "$.detail.object.sequencer",
        "time": "$.time",
    }
    template = (
        f'{{"Trigger": "{trigger.name}", "Bucket": <bucket>, "Key": <key>, "Size": <size>,'
        ' "ETag": <etag>, "Sequencer": <sequencer>, "EventTime": <time>}'
    )
    return {"InputPathsMap": paths, "InputTemplate": template}


def _rule_name(name: str, trigger: str) -> str:
    return f"shardmap-{name}-{trigger}"[:64]


def _selected(config: TriggerConfig, pipeline: str | Path | None) -> list[Trigger]:
    chosen = []
    for trigger in config.triggers:
        if trigger.pipeline is None:
            log.warning(
                "deploy: trigger %s routes by key segment; only the service can do that",
                trigger.name,
            )
            continue
        if pipeline is None or config.pipeline_path(trigger.pipeline) == Path(pipeline).resolve():
            chosen.append(trigger)
    if not chosen:
        raise SpecError("triggers", f"no trigger of the config starts pipeline {pipeline}")
    return chosen


def deploy_triggers(
    config: TriggerConfig,
    *,
    name: str,
    state_machine_arn: str,
    region: str,
    pipeline: str | Path | None = None,
    session: Any = None,
) -> TriggerDeployment:
    """Create or update the EventBridge rules, their target and the bucket notifications.

    Parameters
    ----------
    config
        The trigger config (:func:`runner.triggers.config.load_config`).
    name, state_machine_arn, region
        The deployment (``runner.aws.deploy.deploy`` returns them).
    pipeline
        Only triggers starting this pipeline file are deployed; default: every fixed one.
    session
        A ``boto3.Session``; clients honour ``AWS_ENDPOINT_URL`` (moto stands in for AWS).

    Examples
    --------
    >>> done = deploy_triggers(config, name="demo", state_machine_arn=arn,  # doctest: +SKIP
    ...                        region="us-east-1")
    """
    import boto3

    from runner.aws.iam import allow, ensure_role

    session = session or boto3.session.Session(region_name=region)
    triggers = _selected(config, pipeline)
    buckets = sorted({b for t in triggers for b in pattern_buckets(t.pattern)})
    for trigger in triggers:
        if not pattern_buckets(trigger.pattern):
            raise SpecError(
                f"triggers.{trigger.name}.pattern.detail.bucket.name",
                "name the bucket(s) exactly: EventBridge notifications are turned on per bucket",
            )
    done = TriggerDeployment()
    iam = session.client("iam", region_name=region)
    policy = {
        "Version": "2012-10-17",
        "Statement": [allow("StartTriggeredRuns", ["states:StartExecution"], [state_machine_arn])],
    }
    role_name = f"shardmap-{name}-events"[:64]
    role_arn = ensure_role(iam, role_name, "events.amazonaws.com", policy, done.actions)

    events = session.client("events", region_name=region)
    for trigger in triggers:
        rule = _rule_name(name, trigger.name)
        pattern = json.dumps(trigger.pattern, sort_keys=True)
        current = _current_rule(events, rule)
        description = f"shardmap trigger {trigger.name}: start {name}"
        if current is None or json.loads(current.get("EventPattern") or "{}") != json.loads(
            pattern
        ):
            done.actions.append(f"{'created' if current is None else 'updated'} rule {rule}")
        arn = events.put_rule(
            Name=rule, EventPattern=pattern, State="ENABLED", Description=description
        )["RuleArn"]
        target = {
            "Id": TARGET_ID,
            "Arn": state_machine_arn,
            "RoleArn": role_arn,
            "InputTransformer": input_transformer(trigger),
        }
        existing = events.list_targets_by_rule(Rule=rule).get("Targets", [])
        if [t for t in existing if t.get("Id") == TARGET_ID] != [target]:
            events.put_targets(Rule=rule, Targets=[target])
            done.actions.append(f"put target of rule {rule}")
        done.rules[trigger.name] = arn

    s3 = session.client("s3", region_name=region)
    for bucket in buckets:
        current = s3.get_bucket_notification_configuration(Bucket=bucket)
        current.pop("ResponseMetadata", None)
        if "EventBridgeConfiguration" not in current:
            # Keep the bucket's queue, topic and Lambda notifications: the API replaces them all.
            s3.put_bucket_notification_configuration(
                Bucket=bucket,
                NotificationConfiguration={**current, "EventBridgeConfiguration": {}},
            )
            done.actions.append(f"turned on EventBridge notifications of bucket {bucket}")
    done.buckets = buckets
    for action in done.actions:
        log.info("deploy %s: %s", name, action)
    return done


def _current_rule(events: Any, rule: str) -> dict[str, Any] | None:
    try:
        return dict(events.describe_rule(Name=rule))
    except events.exceptions.ResourceNotFoundException:
        return None
