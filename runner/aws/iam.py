"""IAM for deployments: least-privilege policy documents and the roles that hold them.

::

    definition ──► policy_for ─────────► shardmap-NAME-states (trusted by states.amazonaws.com)
    MapSpec ─────► lambda_policy_for ──► shardmap-NAME-lambda (trusted by lambda.amazonaws.com)
    triggers ────► allow(...) ─────────► shardmap-NAME-events (trusted by events.amazonaws.com)

No statement grants a ``*`` action; resources are the state machine, its executions, the named
functions and the S3 keys and prefixes the ItemReader reads and the ResultWriter writes.
:func:`ensure_role` creates a role or brings its trust and policy up to date (idempotent), for
:mod:`runner.aws.deploy` and :mod:`runner.triggers.aws` alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from runner.asl import walk_states
from runner.constants import GET_OBJECT, LAMBDA_INVOKE, LIST_OBJECTS, PUT_OBJECT
from runner.errors import SpecError
from runner.spec import MapSpec

__all__ = ["allow", "ensure_role", "lambda_policy_for", "policy_for", "trust_policy"]


def policy_for(
    definition: Mapping[str, Any],
    *,
    state_machine_arn: str,
    function_arns: Iterable[str] | None = None,
    reads: Iterable[str] = (),
    writes: Iterable[str] = (),
) -> dict[str, Any]:
    """The least-privilege policy document of the role that runs ``definition``.

    Parameters
    ----------
    definition
        The ASL state machine.
    state_machine_arn
        Its ARN (the Distributed Map starts child executions of the state machine itself).
    function_arns
        Lambda functions the role may invoke; default: every ``lambda:invoke`` Task's
        ``FunctionName`` in the definition.
    reads, writes
        Extra ``s3://`` URLs (a key, or a prefix ending in ``/``) to grant, for readers or
        writers whose Bucket/Key the definition takes from the run input (``Key.$``).

    Returns
    -------
    dict
        An IAM policy document. No statement uses a ``*`` action; resources are the state
        machine, its executions, the named functions and the S3 keys and prefixes the
        ItemReader reads and the ResultWriter writes.

    Examples
    --------
    >>> policy = policy_for(definition, state_machine_arn=arn)  # doctest: +SKIP
    >>> sorted({a for s in policy["Statement"] for a in s["Action"]})  # doctest: +SKIP
    """
    arn = _Arn.parse(state_machine_arn)
    executions = f"arn:{arn.partition}:states:{arn.region}:{arn.account}:execution:{arn.name}"
    statements: list[dict[str, Any]] = [
        allow("StartChildExecutions", ["states:StartExecution"], [state_machine_arn]),
        allow(
            "FollowChildExecutions",
            ["states:DescribeExecution", "states:StopExecution"],
            [f"{executions}/*", f"{executions}:*"],
        ),
        allow("RedriveMapRuns", ["states:RedriveExecution"], [f"{executions}/*"]),
    ]
    functions = (
        list(function_arns)
        if function_arns is not None
        else [_function_arn(name, arn) for name in _function_names(definition)]
    )
    if functions:
        resources = sorted({*functions, *(f"{fn}:*" for fn in functions)})
        statements.append(allow("InvokeWorkers", ["lambda:InvokeFunction"], resources))
    s3 = _S3Grants(arn.partition)
    for path, state in _map_states(definition):
        _grant_reader(s3, state.get("ItemReader"), f"{path}.ItemReader")
        _grant_writer(s3, state.get("ResultWriter"), f"{path}.ResultWriter")
    for url in reads:
        s3.read_url(url)
    for url in writes:
        s3.write_url(url)
    statements += s3.statements()
    return {"Version": "2012-10-17", "Statement": statements}


def lambda_policy_for(
    spec: MapSpec, *, function_names: Iterable[str], region: str, account: str, partition: str
) -> dict[str, Any]:
    """The Lambda execution role's policy: its own logs, read the source, read/write results.

    Workers read the objects a listing names and may write derived objects under the
    destination (thumbnails); the reducer reads the results there.
    """
    groups = [
        f"arn:{partition}:logs:{region}:{account}:log-group:/aws/lambda/{name}"
        for name in function_names
    ]
    statements = [
        allow("CreateLogGroups", ["logs:CreateLogGroup"], groups),
        allow(
            "WriteLogs",
            ["logs:CreateLogStream", "logs:PutLogEvents"],
            [f"{group}:*" for group in groups],
        ),
    ]
    s3 = _S3Grants(partition)
    source = spec.source_url()
    if source and source.startswith("s3://"):
        listing = spec.input_type == "LISTING" or source.endswith("/")
        s3.read_url(source if not listing or source.endswith("/") else source + "/")
    dest = spec.result_writer.destination_url() if spec.result_writer else None
    if dest and dest.startswith("s3://"):
        s3.read_url(dest.rstrip("/") + "/")
        s3.write_url(dest.rstrip("/") + "/")
    return {"Version": "2012-10-17", "Statement": statements + s3.statements()}


def allow(sid: str, actions: list[str], resources: list[str], **extra: Any) -> dict[str, Any]:
    """An ``Allow`` statement; ``extra`` adds fields such as ``Condition``.

    >>> allow("Start", ["states:StartExecution"], ["arn:aws:states:::x"])["Effect"]
    'Allow'
    """
    statement = {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}
    statement.update(extra)
    return statement


@dataclass(frozen=True)
class _Arn:
    partition: str
    region: str
    account: str
    name: str

    @classmethod
    def parse(cls, arn: str) -> _Arn:
        parts = arn.split(":")
        if len(parts) < 7 or parts[0] != "arn" or parts[5] != "stateMachine":
            raise SpecError("state_machine_arn", f"not a state machine ARN: {arn!r}")
        return cls(parts[1], parts[3], parts[4], parts[6])


def _function_arn(name: str, machine: _Arn) -> str:
    if name.startswith("arn:"):
        return name.split(":$")[0]  # a qualified ARN ($LATEST) is granted through "<arn>:*"
    return f"arn:{machine.partition}:lambda:{machine.region}:{machine.account}:function:{name}"


def _function_names(definition: Mapping[str, Any]) -> list[str]:
    """Every Lambda a Task invokes (``lambda:invoke`` FunctionName, or a bare function ARN)."""
    found: list[str] = []
    for path, state in walk_states(definition):
        if state.get("Type") != "Task":
            continue
        resource = str(state.get("Resource", ""))
        params = state.get("Parameters") or state.get("Arguments") or {}
        if resource.startswith(LAMBDA_INVOKE):
            name = params.get("FunctionName")
            if not isinstance(name, str) or "FunctionName.$" in params:
                raise SpecError(
                    f"{path}.Parameters.FunctionName",
                    "the policy needs a fixed function; pass function_arns=",
                )
            found.append(name)
        elif resource.startswith("arn:") and ":lambda:" in resource:
            found.append(resource)
    return sorted(set(found))


def _map_states(definition: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for path, state in walk_states(definition):
        if state.get("Type") == "Map" and ("ItemReader" in state or "ResultWriter" in state):
            yield path, state


class _S3Grants:
    """Collects S3 object and listing grants, then renders them as a few statements."""

    def __init__(self, partition: str = "aws") -> None:
        self.partition = partition
        self.get: set[str] = set()
        self.put: set[str] = set()
        self.lists: dict[str, set[str]] = {}  # bucket -> prefixes ("" = the whole bucket)

    def read_url(self, url: str) -> None:
        bucket, key = _split_s3(url)
        if key.endswith("/") or not key:
            self.list_prefix(bucket, key)
            self.get.add(self.object_arn(bucket, key + "*"))
        else:
            self.get.add(self.object_arn(bucket, key))

    def write_url(self, url: str) -> None:
        bucket, key = _split_s3(url)
        prefix = key if key.endswith("/") or not key else key + "/"
        self.put.add(self.object_arn(bucket, prefix + "*"))

    def object_arn(self, bucket: str, key: str) -> str:
        return f"arn:{self.partition}:s3:::{bucket}/{key}"

    def list_prefix(self, bucket: str, prefix: str) -> None:
        self.lists.setdefault(bucket, set()).add(prefix)

    def statements(self) -> list[dict[str, Any]]:
        out = []
        if self.get:
            out.append(allow("ReadItems", ["s3:GetObject"], sorted(self.get)))
        for bucket, prefixes in sorted(self.lists.items()):
            bucket_arn = f"arn:{self.partition}:s3:::{bucket}"
            if "" in prefixes:
                out.append(allow(f"List{_sid(bucket)}", ["s3:ListBucket"], [bucket_arn]))
                continue
            condition = {"StringLike": {"s3:prefix": sorted(p + "*" for p in prefixes)}}
            out.append(
                allow(f"List{_sid(bucket)}", ["s3:ListBucket"], [bucket_arn], Condition=condition)
            )
        if self.put:
            out.append(
                allow(
                    "WriteResults",
                    [
                        "s3:PutObject",
                        "s3:GetObject",
                        "s3:ListMultipartUploadParts",
                        "s3:AbortMultipartUpload",
                    ],
                    sorted(self.put),
                )
            )
        return out


def _sid(bucket: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]", bucket) if part)


def _split_s3(url: str) -> tuple[str, str]:
    if not url.startswith("s3://"):
        raise SpecError("reads/writes", f"an S3 URL is needed, got {url!r}")
    bucket, _, key = url[5:].partition("/")
    return bucket, key


def _static(params: Mapping[str, Any], key: str, path: str) -> str | None:
    if f"{key}.$" in params:
        raise SpecError(
            f"{path}.Parameters.{key}.$",
            "taken from the run input; pass reads=/writes= S3 URLs so the policy can name them",
        )
    value = params.get(key)
    return None if value is None else str(value)


def _grant_reader(s3: _S3Grants, reader: Any, path: str) -> None:
    if not isinstance(reader, Mapping):
        return
    params = reader.get("Parameters") or reader.get("Arguments") or {}
    bucket = _static(params, "Bucket", path)
    if bucket is None:
        raise SpecError(f"{path}.Parameters.Bucket", "Step Functions reads items from S3")
    resource = reader.get("Resource")
    config = reader.get("ReaderConfig") or {}
    if resource == LIST_OBJECTS:
        prefix = _static(params, "Prefix", path) or ""
        s3.list_prefix(bucket, prefix)
        if config.get("Transformation") == "LOAD_AND_FLATTEN":
            s3.get.add(s3.object_arn(bucket, prefix + "*"))
        return
    key = _static(params, "Key", path)
    if resource != GET_OBJECT or key is None:
        raise SpecError(f"{path}.Parameters.Key", "a getObject reader needs Bucket and Key")
    s3.get.add(s3.object_arn(bucket, key))
    manifest = config.get("ManifestType")
    if manifest:
        # The manifest names its data files. An inventory keeps them beside the dated folder
        # that holds manifest.json (<prefix>/<bucket>/<config>/data/...); Athena's UNLOAD
        # writes them next to its -manifest.csv.
        folder = key.rsplit("/", 2 if manifest == "S3_INVENTORY" else 1)[0]
        s3.get.add(s3.object_arn(bucket, (folder + "/" if folder != key else "") + "*"))


def _grant_writer(s3: _S3Grants, writer: Any, path: str) -> None:
    if not isinstance(writer, Mapping):
        return
    if writer.get("Resource", PUT_OBJECT) != PUT_OBJECT:
        raise SpecError(f"{path}.Resource", f"ResultWriter writes with {PUT_OBJECT}")
    params = writer.get("Parameters") or writer.get("Arguments") or {}
    bucket = _static(params, "Bucket", path)
    if bucket is None:
        raise SpecError(f"{path}.Parameters.Bucket", "Step Functions writes results to S3")
    prefix = (_static(params, "Prefix", path) or "").strip("/")
    s3.put.add(s3.object_arn(bucket, f"{prefix}/*" if prefix else "*"))


# -- roles -------------------------------------------------------------------------------------


def trust_policy(service: str) -> str:
    """The trust policy (JSON text) that lets AWS ``service`` assume a role."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": service},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )


def ensure_role(
    iam: Any, name: str, service: str, policy: dict[str, Any], actions: list[str]
) -> str:
    """Role ``name``, trusted by ``service`` and holding ``policy`` (inline, ``shardmap``):
    created, or its trust and policy updated where they differ. Returns its ARN; what had to
    change is appended to ``actions``. ``iam`` is a boto3 IAM client."""
    document = json.dumps(policy, sort_keys=True)
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except iam.exceptions.NoSuchEntityException:
        role = iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=trust_policy(service),
            Description=f"shardmap: {service}",
        )["Role"]
        actions.append(f"created role {name}")
    else:
        trusted = role.get("AssumeRolePolicyDocument")
        if isinstance(trusted, str):
            from urllib.parse import unquote

            trusted = json.loads(unquote(trusted))
        if trusted != json.loads(trust_policy(service)):
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=trust_policy(service))
            actions.append(f"updated trust of role {name}")
    try:
        current = iam.get_role_policy(RoleName=name, PolicyName="shardmap")["PolicyDocument"]
        if isinstance(current, str):
            from urllib.parse import unquote

            current = json.loads(unquote(current))
    except iam.exceptions.NoSuchEntityException:
        current = None
    if current != json.loads(document):
        iam.put_role_policy(RoleName=name, PolicyName="shardmap", PolicyDocument=document)
        actions.append(f"{'updated' if current else 'put'} policy of role {name}")
    return str(role["Arn"])
