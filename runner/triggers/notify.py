"""Completion notifications: an SNS publish or a webhook POST per finished triggered run.

The message (JSON, the same for both)::

    {"trigger": "csv-in", "pipeline": "demo", "runId": "...", "mapRunArn": "...",
     "status": "SUCCEEDED", "error": null, "cause": null,
     "object": {"bucket": "...", "key": "...", "size": 12, "etag": "...", "versionId": null},
     "itemCounts": {"succeeded": 3, "failed": 0, ...}, "manifest": "s3://.../manifest.json"}

Delivery is at least once: the ledger marks a run notified after the target accepted the
message, so a crash in between sends it again at the next start. A webhook body may be signed
(``secret_env``): ``X-Shardmap-Signature: sha256=<hex HMAC of the body>``. The secret is read
from the environment at send time and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
import urllib.error
import urllib.request
from typing import Any

from runner.triggers.config import NotifyTarget, WebhookTarget
from runner.triggers.ledger import Claim

__all__ = ["message_for", "send"]

log = logging.getLogger("shardmap.triggers")


def message_for(claim: Claim, map_run_arn: str | None = None) -> dict[str, Any]:
    """The notification body for a finished run."""
    obj = claim.object
    return {
        "trigger": claim.trigger,
        "pipeline": claim.pipeline,
        "runId": claim.run_id,
        "mapRunArn": map_run_arn,
        "status": claim.status,
        "error": claim.error,
        "cause": claim.cause,
        "object": {
            "bucket": obj.bucket,
            "key": obj.key,
            "size": obj.size,
            "etag": obj.etag,
            "versionId": obj.version_id,
        },
        "itemCounts": claim.counts or {},
        "manifest": claim.manifest_url,
    }


def send(target: NotifyTarget, message: dict[str, Any], *, session: Any = None) -> None:
    """Deliver ``message`` to ``target``; raises on failure (the caller logs and retries later)."""
    body = json.dumps(message, sort_keys=True)
    if target.sns is not None:
        import boto3

        region = target.sns.topic_arn.split(":")[3]
        client = (session or boto3).client("sns", region_name=region)
        client.publish(
            TopicArn=target.sns.topic_arn,
            Subject=f"shardmap run {message['status']}: {message['trigger']}"[:100],
            Message=body,
            MessageAttributes={
                "status": {"DataType": "String", "StringValue": str(message["status"])},
                "trigger": {"DataType": "String", "StringValue": str(message["trigger"])},
            },
        )
        return
    assert target.webhook is not None
    _post(target.webhook, body.encode())


def _post(hook: WebhookTarget, body: bytes) -> None:
    headers = {"Content-Type": "application/json", "User-Agent": "shardmap-trigger"}
    if hook.secret_env:
        # Not a shardmap setting (runner.settings): the trigger config names the variable, so
        # this reads the user's own data by name, at send time, and keeps it out of any object.
        secret = os.environ.get(hook.secret_env)
        if not secret:
            raise RuntimeError(f"webhook secret: ${hook.secret_env} is not set")
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers["X-Shardmap-Signature"] = f"sha256={digest}"
    last: Exception | None = None
    for attempt in range(hook.attempts):
        request = urllib.request.Request(hook.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=hook.timeout_seconds) as response:
                response.read()
            return
        except urllib.error.HTTPError as exc:
            last = exc
            if exc.code < 500 and exc.code != 429:  # the receiver refuses it: retrying won't help
                break
        except OSError as exc:
            last = exc
        time.sleep(min(5.0, 0.5 * 2**attempt))
    raise RuntimeError(f"webhook POST failed after {hook.attempts} attempt(s): {last}") from last
