"""Triggers end to end on loopback servers: moto's server for S3 (with event notifications to
SQS), SQS and SNS; SeaweedFS for the polling source; a tiny http.server for webhooks.

What moto (5.2) does and does not do here: S3 -> SQS notifications work, but its records carry
no ``sequencer`` and no ``versionId`` (the ETag tells versions apart then), and configuring them
sends an ``s3:TestEvent`` first. SNS delivers to SQS subscriptions. EventBridge rules take any
pattern and route S3's EventBridge events through moto's own matcher to SQS targets, but never
start a state machine, and GetBucketNotificationConfiguration omits EventBridgeConfiguration.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest

from runner.journal import list_runs
from runner.results import iter_result_records, load_results
from runner.triggers.aws import deploy_triggers, input_transformer
from runner.triggers.config import load_config
from runner.triggers.ledger import Ledger
from runner.triggers.service import LEDGER_FILE, TriggerService
from tests.motoserver import moto_api, moto_server

REGION = "us-east-1"
ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def moto_url():
    with moto_server() as url:
        yield url


@pytest.fixture
def aws(moto_url, monkeypatch, s3fs_clear_cache):
    """A fresh moto account: bucket ``incoming`` notifying queue ``events`` of new objects,
    bucket ``results``, topic ``runs`` with queue ``notes`` subscribed."""
    moto_api(f"{moto_url}/moto-api/reset", {})
    env = {
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s3, sqs, sns = (boto3.client(name, region_name=REGION) for name in ("s3", "sqs", "sns"))
    for bucket in ("incoming", "results"):
        s3.create_bucket(Bucket=bucket)
    events_url = sqs.create_queue(QueueName="events")["QueueUrl"]
    events_arn = sqs.get_queue_attributes(QueueUrl=events_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket="incoming",
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": events_arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    notes_url = sqs.create_queue(QueueName="notes")["QueueUrl"]
    notes_arn = sqs.get_queue_attributes(QueueUrl=notes_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    topic = sns.create_topic(Name="runs")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=notes_arn)
    return {
        "env": env, "s3": s3, "sqs": sqs, "events_url": events_url, "notes_url": notes_url,
        "topic": topic,
    }  # fmt: skip


class Webhook:
    """An http.server on loopback that keeps every POSTed JSON body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.bodies.append(json.loads(body))
                owner.headers.append(dict(self.headers))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


PIPELINE = """\
Name: uploads
Worker: echo
ItemReader:
  ReaderConfig:
    InputType: JSONL
ItemBatcher:
  MaxItemsPerBatch: 10
ResultWriter:
  Destination: {dest}
"""


def _write_config(
    tmp_path: Path,
    *,
    queue_url: str | None = None,
    poll: dict[str, Any] | None = None,
    notify: dict[str, Any] | None = None,
    dest: str = "s3://results/runs",
    visibility: int = 30,
    concurrency: int = 4,
    wait_seconds: int = 1,
) -> Path:
    folder = tmp_path / "pipelines"
    folder.mkdir(exist_ok=True)
    (folder / "uploads.yaml").write_text(PIPELINE.format(dest=dest))
    (folder / "other.yaml").write_text(PIPELINE.format(dest=dest).replace("uploads", "other"))
    source: dict[str, Any] = (
        {"sqs": {"queue_url": queue_url, "wait_seconds": wait_seconds,
                 "visibility_timeout": visibility}}
        if queue_url else {"poll": poll}
    )  # fmt: skip
    config = {
        "state_dir": "state",
        "pipelines_dir": "pipelines",
        "pipelines": {"uploads": "uploads.yaml", "other": "other.yaml"},
        "source": source,
        "notify": notify or {},
        "limits": {"max_concurrent_runs": concurrency},
        "triggers": [
            {
                "name": "jsonl-uploads",
                "pattern": {
                    "detail": {
                        "bucket": {"name": ["incoming"]},
                        "object": {
                            "key": [{"wildcard": "uploads/*.jsonl"}],
                            "size": [{"numeric": [">", 0]}],
                        },
                    }
                },
                "pipeline": "uploads",
                "notify": list(notify or {}),
            },
            {
                "name": "inbox",
                "pattern": {"detail": {"object": {"key": [{"prefix": "inbox/"}]}}},
                "pipeline_from_key_segment": 1,
                "allowed_pipelines": ["other"],
            },
        ],
    }
    path = tmp_path / "triggers.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def _wait(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Running:
    """A TriggerService serving in a background thread."""

    def __init__(self, config_path: Path) -> None:
        self.service = TriggerService(load_config(config_path))
        self.service.__enter__()
        self.thread = threading.Thread(target=self.service.serve, daemon=True)
        self.thread.start()

    def counts(self) -> dict[str, int]:
        if self.service.ledger is not None:
            return self.service.ledger.counts()
        with Ledger(Path(self.service.state_dir) / LEDGER_FILE) as ledger:  # after stop()
            return ledger.counts()

    def stop(self) -> None:
        self.service.stop()
        self.thread.join(timeout=60)
        self.service.close()


def _receive_all(sqs, url: str, wait: float = 1) -> list[dict[str, Any]]:
    got = []
    while True:
        response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait)
        messages = response.get("Messages", [])
        if not messages:
            return got
        for message in messages:
            got.append(message)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


# -- end to end --------------------------------------------------------------------------------


def test_upload_starts_a_run_results_appear_and_notifications_arrive(aws, tmp_path, webhook):
    notify = {
        "topic": {"sns": {"topic_arn": aws["topic"]}},
        "hook": {"webhook": {"url": webhook.url}},
    }
    config_path = _write_config(tmp_path, queue_url=aws["events_url"], notify=notify)
    lines = b'{"n": 1}\n{"n": 2}\n{"n": 3}\n'
    running = Running(config_path)
    try:
        aws["s3"].put_object(Bucket="incoming", Key="uploads/day 1/trips.jsonl", Body=lines)
        aws["s3"].put_object(Bucket="incoming", Key="other/ignored.jsonl", Body=lines)
        _wait(lambda: running.counts().get("SUCCEEDED") == 1, 60, "the run")
        _wait(lambda: len(webhook.bodies) == 1, 30, "the webhook")
    finally:
        running.stop()

    ledger = Ledger(tmp_path / "state" / LEDGER_FILE)
    (claim,) = ledger.all()
    ledger.close()
    assert claim.object.key == "uploads/day 1/trips.jsonl" and claim.status == "SUCCEEDED"
    # results: the run's manifest and its items, in AWS's layout, under the trigger's dest
    assert claim.manifest_url == f"s3://results/runs/{claim.run_id}/manifest.json"
    frame = load_results(claim.manifest_url)
    outputs = sorted(json.dumps(o) for o in frame["output"])
    assert outputs == [json.dumps({"n": n}) for n in (1, 2, 3)]
    # the run is a journaled Map Run like any other: `shardmap runs` shows it
    assert [run.id for run in list_runs(tmp_path / "state")] == [claim.run_id]
    # notifications: SNS (read through the subscribed queue) and the webhook, same body
    (note,) = _receive_all(aws["sqs"], aws["notes_url"])
    message = json.loads(json.loads(note["Body"])["Message"])
    assert message == webhook.bodies[0]
    assert message["status"] == "SUCCEEDED" and message["runId"] == claim.run_id
    assert message["itemCounts"]["succeeded"] == 3 and message["manifest"] == claim.manifest_url
    assert message["object"]["key"] == "uploads/day 1/trips.jsonl"


def test_redelivered_events_start_nothing_more(aws, tmp_path, caplog):
    config_path = _write_config(tmp_path, queue_url=aws["events_url"])
    aws["s3"].put_object(Bucket="incoming", Key="uploads/a.jsonl", Body=b'{"n": 1}\n')
    # take the notification off the queue, then deliver it three more times (SQS redelivery)
    bodies = [m["Body"] for m in _receive_all(aws["sqs"], aws["events_url"])]
    created = [b for b in bodies if "ObjectCreated" in b]
    assert len(created) == 1
    for _ in range(3):
        aws["sqs"].send_message(QueueUrl=aws["events_url"], MessageBody=created[0])
    caplog.set_level(logging.INFO, logger="shardmap.triggers")
    running = Running(config_path)
    try:
        _wait(lambda: running.counts().get("SUCCEEDED") == 1, 60, "the run")
        _wait(lambda: caplog.text.count("already started") == 2, 30, "the redeliveries")
    finally:
        running.stop()
    assert running.counts() == {"SUCCEEDED": 1}
    assert len(list_runs(tmp_path / "state")) == 1


def test_a_failed_run_stays_failed_and_can_be_redriven(aws, tmp_path):
    """Bad input fails the run; the ledger and `shardmap runs` show it, redelivery does not
    rerun it, `shardmap redrive` does."""
    from runner.engine import redrive

    config_path = _write_config(tmp_path, queue_url=aws["events_url"])
    # not JSONL: the reader fails the run (States.ItemReaderFailed)
    aws["s3"].put_object(Bucket="incoming", Key="uploads/bad.jsonl", Body=b"{not json\n")
    running = Running(config_path)
    try:
        _wait(lambda: running.counts().get("FAILED") == 1, 60, "the failed run")
    finally:
        running.stop()
    ledger = Ledger(tmp_path / "state" / LEDGER_FILE)
    (claim,) = ledger.all()
    ledger.close()
    assert claim.error == "States.ItemReaderFailed"
    (run,) = list_runs(tmp_path / "state")
    assert run.status == "FAILED"
    # fix the data, redrive by hand: the failed batches run again, as one run
    aws["s3"].put_object(Bucket="incoming", Key="uploads/bad.jsonl", Body=b'{"n": 1}\n')
    _receive_all(aws["sqs"], aws["events_url"])  # the fix is a new version; drop its event
    result = redrive(claim.run_id, state_dir=str(tmp_path / "state"))
    assert result.run_id == claim.run_id


MALICIOUS = [
    ("traversal", {"key": "uploads/../../etc/passwd.jsonl"}, "'..' segment"),
    ("encoded traversal", {"key": "uploads/%2E%2E/%2e%2e/x.jsonl"}, "'..' segment"),
    ("absolute", {"key": "%2Fetc%2Fuploads.jsonl"}, "absolute path"),
    ("control chars", {"key": "uploads/a%0D%0Ab.jsonl"}, "control"),
    ("unknown pipeline", {"key": "inbox/os%3Asystem/x.csv"}, "names no allowed pipeline"),
    ("pipeline by path", {"key": "inbox/..%2F..%2Fevil/x.csv"}, "names no allowed pipeline"),
    ("size not a number", {"size": "1; rm -rf /"}, "size"),
    ("bucket name", {"bucket": "../../x"}, "bucket"),
]


def _record(key: str = "uploads/ok.jsonl", size: Any = 5, bucket: str = "incoming") -> str:
    return json.dumps(
        {
            "Records": [
                {
                    "eventSource": "aws:s3",
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "bucket": {"name": bucket},
                        "object": {"key": key, "size": size, "eTag": "abc"},
                    },
                }
            ]
        }
    )


def test_malicious_events_are_refused_with_a_log_line_and_start_nothing(aws, tmp_path, caplog):
    config_path = _write_config(tmp_path, queue_url=aws["events_url"])
    _receive_all(aws["sqs"], aws["events_url"])  # the s3:TestEvent
    sqs, url = aws["sqs"], aws["events_url"]
    for _name, fields, _reason in MALICIOUS:
        sqs.send_message(QueueUrl=url, MessageBody=_record(**fields))
    raw = [
        "{'python': 'dict'}",
        json.dumps({"detail-type": "Object Created", "source": "aws.s3", "detail": "x"}),
        json.dumps({"pipeline": "uploads", "worker": "os:system", "source": "s3://x/y"}),
        _record(key="uploads/" + "a" * 2000 + ".jsonl"),
        json.dumps({"Records": [{"padding": "x" * 300_000}]}),  # over the 256 KiB limit
    ]
    for body in raw:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    caplog.set_level(logging.INFO, logger="shardmap.triggers")
    service = TriggerService(load_config(config_path))
    with service:
        for _ in range(5):
            service.receive_sqs()
        service.wait_for_runs()
        counts = service.ledger.counts() if service.ledger else None
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == len(MALICIOUS) + len(raw), refusals
    for _name, _fields, reason in MALICIOUS:
        assert any(reason in line for line in refusals), reason
    assert counts == {}  # nothing claimed, nothing started
    assert list_runs(tmp_path / "state") == []
    assert all(r.levelname == "WARNING" for r in caplog.records if "refused" in r.getMessage())
    # the refused messages are gone from the queue: they are not retried forever
    assert _receive_all(sqs, url) == []
    # and the log line never carries a raw control character
    assert not any("\r" in line or "\n" in line for line in refusals)


def test_routed_keys_start_the_allowed_pipeline_only(aws, tmp_path):
    config_path = _write_config(tmp_path, queue_url=aws["events_url"])
    aws["s3"].put_object(Bucket="incoming", Key="inbox/other/a.jsonl", Body=b'{"n": 1}\n')
    aws["s3"].put_object(Bucket="incoming", Key="inbox/uploads/a.jsonl", Body=b'{"n": 1}\n')
    running = Running(config_path)
    try:
        _wait(lambda: running.counts().get("SUCCEEDED") == 1, 60, "the routed run")
        time.sleep(1.5)  # let the second event be seen and refused
    finally:
        running.stop()
    assert running.service.refused == 1
    ledger = Ledger(tmp_path / "state" / LEDGER_FILE)
    assert [(c.pipeline, c.object.key) for c in ledger.all()] == [("other", "inbox/other/a.jsonl")]
    ledger.close()


# -- polling (SeaweedFS, no queue) -------------------------------------------------------------


def test_polling_with_a_durable_high_water_mark(s3_server, s3_client, tmp_path, s3fs_clear_cache):
    s3_client.create_bucket(Bucket="incoming")
    s3_client.put_object(Bucket="incoming", Key="uploads/old.jsonl", Body=b'{"n": 0}\n')
    poll = {"bucket": "incoming", "prefix": "uploads/", "interval_seconds": 0.2, "since": "now"}
    config_path = _write_config(tmp_path, poll=poll, dest=str(tmp_path / "results"))

    def one_round() -> dict[str, int]:
        with TriggerService(load_config(config_path)) as service:
            service.serve(once=True)
            assert service.ledger is not None
            return service.ledger.counts()

    # since: now: what was there before the first poll never starts a run
    assert one_round() == {"SKIPPED": 1}
    s3_client.put_object(Bucket="incoming", Key="uploads/a.jsonl", Body=b'{"n": 1}\n')
    s3_client.put_object(Bucket="incoming", Key="uploads/b.jsonl", Body=b'{"n": 2}\n')
    s3_client.put_object(Bucket="incoming", Key="uploads/a\u202eb.jsonl", Body=b'{"n": 3}\n')
    assert one_round() == {"SKIPPED": 1, "SUCCEEDED": 2}
    # a new process relists: nothing starts twice
    assert one_round() == {"SKIPPED": 1, "SUCCEEDED": 2}
    s3_client.put_object(Bucket="incoming", Key="uploads/a.jsonl", Body=b'{"n": 4}\n')
    # a new version of a.jsonl is a new run
    assert one_round() == {"SKIPPED": 1, "SUCCEEDED": 3}
    assert len(list_runs(tmp_path / "state")) == 3


# -- deploy --trigger (moto: EventBridge, IAM, S3) ---------------------------------------------


def test_deploy_creates_the_rule_its_target_and_bucket_notifications(aws, tmp_path):
    config_path = _write_config(tmp_path, queue_url=aws["events_url"])
    config = load_config(config_path)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    machine = sfn.create_state_machine(
        name="uploads",
        definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
        roleArn="arn:aws:iam::123456789012:role/unused",
    )["stateMachineArn"]
    done = deploy_triggers(
        config, name="uploads", state_machine_arn=machine, region=REGION,
        pipeline=tmp_path / "pipelines" / "uploads.yaml",
    )  # fmt: skip
    assert set(done.rules) == {"jsonl-uploads"}  # the routed trigger needs the service
    assert done.buckets == ["incoming"]
    events = boto3.client("events", region_name=REGION)
    rule = events.describe_rule(Name="shardmap-uploads-jsonl-uploads")
    trigger = config.triggers[0]
    assert json.loads(rule["EventPattern"]) == trigger.pattern  # the same pattern, exactly
    (target,) = events.list_targets_by_rule(Rule="shardmap-uploads-jsonl-uploads")["Targets"]
    assert target["Arn"] == machine
    assert target["InputTransformer"] == input_transformer(trigger)
    iam = boto3.client("iam", region_name=REGION)
    assert target["RoleArn"] == iam.get_role(RoleName="shardmap-uploads-events")["Role"]["Arn"]
    policy = iam.get_role_policy(RoleName="shardmap-uploads-events", PolicyName="shardmap")
    document = policy["PolicyDocument"]
    document = json.loads(document) if isinstance(document, str) else document
    assert document["Statement"][0]["Action"] == ["states:StartExecution"]
    assert document["Statement"][0]["Resource"] == [machine]
    # idempotent: a second deploy changes no rule or target
    again = deploy_triggers(config, name="uploads", state_machine_arn=machine, region=REGION)
    assert not [a for a in again.actions if "rule" in a]
    # The bucket now sends EventBridge events and keeps its queue notification. moto cannot
    # deliver to a state machine target (it raises inside its dispatch, and swallows that), so
    # a twin rule with the deployed pattern and a queue target shows what the pattern matches.
    sqs = aws["sqs"]
    watch = sqs.create_queue(QueueName="watch")["QueueUrl"]
    watch_arn = sqs.get_queue_attributes(QueueUrl=watch, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name="watch", EventPattern=rule["EventPattern"], State="ENABLED")
    events.put_targets(Rule="watch", Targets=[{"Id": "watch", "Arn": watch_arn}])
    events.remove_targets(Rule="shardmap-uploads-jsonl-uploads", Ids=["shardmap-state-machine"])
    s3 = aws["s3"]
    s3.put_object(Bucket="incoming", Key="uploads/x.jsonl", Body=b'{"n": 1}\n')
    s3.put_object(Bucket="incoming", Key="uploads/x.csv", Body=b"n\n1\n")
    s3.put_object(Bucket="incoming", Key="uploads/empty.jsonl", Body=b"")
    seen = [json.loads(m["Body"])["detail"]["object"]["key"] for m in _receive_all(sqs, watch)]
    assert seen == ["uploads/x.jsonl"]
    queued = [m["Body"] for m in _receive_all(sqs, aws["events_url"])]
    assert sum("ObjectCreated" in body for body in queued) == 3


def test_cli_deploy_with_trigger(aws, moto_url, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from runner.aws import deploy as deploy_module
    from runner.cli import main

    moto_api(f"{moto_url}/moto-api/config", {"lambda": {"use_docker": False}})
    monkeypatch.setattr(deploy_module, "package", lambda *a: b"PK\x05\x06" + b"\0" * 18)
    config_path = _write_config(tmp_path, queue_url=aws["events_url"])
    pipeline = tmp_path / "pipelines" / "uploads.yaml"
    pipeline.write_text("Name: uploads\nWorker: echo\nSource: s3://incoming/uploads/a.json\n")
    done = CliRunner().invoke(
        main,
        ["deploy", str(pipeline), "--region", REGION, "--trigger", str(config_path)],
        catch_exceptions=False,
    )
    assert done.exit_code == 0, done.output
    assert "created rule shardmap-uploads-jsonl-uploads" in done.output
    assert "turned on EventBridge notifications of bucket incoming" in done.output
    assert "trigger jsonl-uploads: arn:aws:events:us-east-1:" in done.output


# -- load: 1,000 uploads, the service killed mid-burst and restarted ---------------------------


@pytest.mark.slow
def test_a_burst_of_1000_uploads_each_run_once_across_a_kill(aws, tmp_path):
    uploads = 1000
    config_path = _write_config(
        tmp_path, queue_url=aws["events_url"], dest=str(tmp_path / "results"), visibility=3,
        concurrency=4,
    )  # fmt: skip
    _receive_all(aws["sqs"], aws["events_url"])  # the s3:TestEvent
    env = dict(os.environ, **aws["env"], PYTHONPATH=str(ROOT))
    env.pop("SHARDMAP_STATE_DIR", None)
    command = [sys.executable, "-m", "runner", "trigger", "serve", str(config_path)]
    logs = [open(tmp_path / f"serve-{n}.log", "w") for n in range(2)]  # noqa: SIM115

    def start(n: int) -> subprocess.Popen:
        return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=logs[n], stderr=logs[n])

    state = tmp_path / "state"
    ledger_path = state / LEDGER_FILE

    def counts() -> dict[str, int]:
        if not ledger_path.exists():
            return {}
        with Ledger(ledger_path) as ledger:
            return ledger.counts()

    def finished() -> int:
        found = counts()
        return sum(found.get(s, 0) for s in ("SUCCEEDED", "FAILED", "ABORTED"))

    first = start(0)
    began = time.monotonic()
    s3 = aws["s3"]

    def upload(n: int) -> None:
        s3.put_object(
            Bucket="incoming", Key=f"uploads/{n:05d}.jsonl", Body=json.dumps({"upload": n}).encode()
        )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(upload, range(uploads)))
    uploaded = time.monotonic() - began
    # Kill right after the 300th claim: its run has not begun, others are running, and the
    # claimed messages of the last receive may not be deleted yet.
    _wait(lambda: sum(counts().values()) >= 300, 120, "300 claims", interval=0.01)
    first.send_signal(signal.SIGKILL)
    first.wait()
    at_kill = counts()
    second = start(1)
    try:
        _wait(lambda: finished() >= uploads, 240, f"{uploads} runs", interval=0.2)
        elapsed = time.monotonic() - began
        time.sleep(4)  # past the visibility timeout: late redeliveries must start nothing
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
        for log in logs:
            log.close()
    with Ledger(ledger_path) as ledger:
        claims = ledger.all()
    assert len(claims) == uploads
    assert {c.status for c in claims} == {"SUCCEEDED"}
    assert sorted(c.object.key for c in claims) == [
        f"uploads/{n:05d}.jsonl" for n in range(uploads)
    ]
    runs = list_runs(state)
    assert len(runs) == uploads and {r.status for r in runs} == {"SUCCEEDED"}
    # every upload's item is in exactly one run's results
    seen: list[int] = []
    for claim in claims:
        for kind, record in iter_result_records(claim.manifest_url):
            assert kind == "SUCCEEDED"
            seen += [item["upload"] for item in json.loads(record["Output"])]
    assert sorted(seen) == list(range(uploads))
    after = (tmp_path / "serve-1.log").read_text()
    recovered = re.search(r"recovering (\d+) unfinished", after)
    print(
        f"\n{uploads} uploads in {uploaded:.1f}s; killed at {at_kill}; after the "
        f"restart: {recovered.group(1) if recovered else 0} claims recovered, "
        f"{after.count('resuming run')} runs resumed, {after.count('already started')} "
        f"redeliveries ignored; all done in {elapsed:.1f}s ({uploads / elapsed:.1f} runs/s)"
    )
