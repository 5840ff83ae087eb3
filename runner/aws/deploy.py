"""Deploy a pipeline to AWS: the worker Lambda, two IAM roles and the Step Functions state
machine, created on the first call and updated after (idempotent).

::

    MapSpec ──► to_asl ──► definition ──► policy_for ──► state machine role ──► state machine
       │                                                                           │ invokes
       └──► package() (runner, workers, pipelines) ──► worker Lambda (+ reduce) ◄───┘

What deploy creates, for ``--name NAME``:

- Lambda ``shardmap-NAME-worker`` (handler :func:`runner.aws.handler.lambda_handler`,
  ``SHARDMAP_WORKER`` = the pipeline's worker) and, with a ``Reduce``, ``shardmap-NAME-reduce``.
  The zip holds the ``runner``, ``workers`` and ``pipelines`` packages and shardmap's
  entry-point metadata, so registered worker names resolve; the third-party dependencies
  (pyarrow, pandas, fsspec, ...) come from Lambda layers (``layers=``), which deploy does not
  build.
- IAM role ``shardmap-NAME-states`` (trusted by ``states.amazonaws.com``) holding
  :func:`policy_for` of the definition, and ``shardmap-NAME-lambda`` (trusted by
  ``lambda.amazonaws.com``) holding :func:`lambda_policy_for`: logs, reading the source and
  reading/writing the destination. No statement grants a ``*`` action.
- The state machine ``NAME`` (STANDARD).

boto3 is imported here only, and every client honours the standard credential chain and
``AWS_ENDPOINT_URL`` (so moto or LocalStack stand in for AWS).
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import io
import json
import logging
import re
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.errors import ExecutorError, SpecError
from runner.spec import GET_OBJECT, LIST_OBJECTS, PUT_OBJECT, MapSpec

__all__ = [
    "Deployment",
    "deploy",
    "lambda_policy_for",
    "package",
    "policy_for",
    "resource_names",
]

log = logging.getLogger("shardmap.aws")

LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
HANDLER = "runner.aws.handler.lambda_handler"
REDUCE_HANDLER = "runner.aws.handler.reduce_handler"
RUNTIME = "python3.11"
PACKAGES = ("runner", "workers", "pipelines")
DEFAULT_MEMORY_MB = 1024
DEFAULT_TIMEOUT_SECONDS = 300
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)  # fixed, so an unchanged tree zips to the same bytes
_PROPAGATION_SECONDS = 60.0  # IAM roles take a few seconds to become assumable


@dataclass(frozen=True)
class Deployment:
    """What :func:`deploy` made: the ARNs a run needs, the definition, and what changed."""

    name: str
    region: str
    state_machine_arn: str
    function_arn: str
    role_arn: str
    lambda_role_arn: str
    definition: dict[str, Any]
    spec: MapSpec
    reduce_function_arn: str | None = None
    #: ``"created role ..."``, ``"updated function ..."``: empty when nothing had to change
    actions: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        return bool(self.actions)

    @property
    def reduce(self) -> str | None:
        """The reducer the state machine runs after the Map (None when it has no reduce Task)."""
        arn = self.reduce_function_arn
        return self.spec.reduce if arn and arn in json.dumps(self.definition) else None


@dataclass(frozen=True)
class _Names:
    state_machine: str
    function: str
    reduce_function: str
    states_role: str
    lambda_role: str


def resource_names(name: str) -> _Names:
    """AWS names of a deployment's resources (``name`` made AWS-safe).

    >>> resource_names("taxi stats").function
    'shardmap-taxi-stats-worker'
    """
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", name).strip("-") or "shardmap"
    short = safe[:40]  # role names <= 64, function names <= 64 characters
    return _Names(
        state_machine=safe[:80],
        function=f"shardmap-{short}-worker",
        reduce_function=f"shardmap-{short}-reduce",
        states_role=f"shardmap-{short}-states",
        lambda_role=f"shardmap-{short}-lambda",
    )


# -- packaging ---------------------------------------------------------------------------------


def package(packages: Sequence[str] = PACKAGES) -> bytes:
    """A Lambda deployment zip of ``packages`` plus shardmap's entry-point metadata.

    Byte-identical for an unchanged tree (sorted entries, fixed timestamps, no ``__pycache__``),
    so a redeploy of the same code leaves the function alone.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in packages:
            module = importlib.import_module(name)
            root = Path(module.__file__ or "").parent
            for path in sorted(root.rglob("*")):
                if path.is_dir() or "__pycache__" in path.parts or path.suffix == ".pyc":
                    continue
                arcname = f"{name}/{path.relative_to(root).as_posix()}"
                _add(archive, arcname, path.read_bytes())
        for arcname, data in _dist_info():
            _add(archive, arcname, data)
    return buffer.getvalue()


def _add(archive: zipfile.ZipFile, arcname: str, data: bytes) -> None:
    info = zipfile.ZipInfo(arcname, _ZIP_TIME)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def _dist_info() -> Iterator[tuple[str, bytes]]:
    """METADATA and entry_points.txt, so ``importlib.metadata`` finds registered workers."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("shardmap")
    except PackageNotFoundError:
        return
    folder = f"shardmap-{dist.version}.dist-info"
    for name in ("METADATA", "entry_points.txt"):
        text = dist.read_text(name)
        if text is not None:
            yield f"{folder}/{name}", text.encode()


# -- IAM policies ------------------------------------------------------------------------------


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
        _allow("StartChildExecutions", ["states:StartExecution"], [state_machine_arn]),
        _allow(
            "FollowChildExecutions",
            ["states:DescribeExecution", "states:StopExecution"],
            [f"{executions}/*", f"{executions}:*"],
        ),
        _allow("RedriveMapRuns", ["states:RedriveExecution"], [f"{executions}/*"]),
    ]
    functions = (
        list(function_arns)
        if function_arns is not None
        else [_function_arn(name, arn) for name in _function_names(definition)]
    )
    if functions:
        resources = sorted({*functions, *(f"{fn}:*" for fn in functions)})
        statements.append(_allow("InvokeWorkers", ["lambda:InvokeFunction"], resources))
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
        _allow("CreateLogGroups", ["logs:CreateLogGroup"], groups),
        _allow(
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


def _allow(sid: str, actions: list[str], resources: list[str], **extra: Any) -> dict[str, Any]:
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


def _walk_states(states: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for name, state in states.items():
        if not isinstance(state, Mapping):
            continue
        here = f"{path}.{name}"
        yield here, state
        for key in ("ItemProcessor", "Iterator"):
            inner = state.get(key)
            if isinstance(inner, Mapping) and isinstance(inner.get("States"), Mapping):
                yield from _walk_states(inner["States"], f"{here}.{key}.States")
        for number, branch in enumerate(state.get("Branches") or []):
            if isinstance(branch, Mapping) and isinstance(branch.get("States"), Mapping):
                yield from _walk_states(branch["States"], f"{here}.Branches[{number}].States")


def _all_states(definition: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    states = definition.get("States")
    if isinstance(states, Mapping):
        yield from _walk_states(states, "States")


def _function_names(definition: Mapping[str, Any]) -> list[str]:
    """Every Lambda a Task invokes (``lambda:invoke`` FunctionName, or a bare function ARN)."""
    found: list[str] = []
    for path, state in _all_states(definition):
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
    for path, state in _all_states(definition):
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
            out.append(_allow("ReadItems", ["s3:GetObject"], sorted(self.get)))
        for bucket, prefixes in sorted(self.lists.items()):
            bucket_arn = f"arn:{self.partition}:s3:::{bucket}"
            if "" in prefixes:
                out.append(_allow(f"List{_sid(bucket)}", ["s3:ListBucket"], [bucket_arn]))
                continue
            condition = {"StringLike": {"s3:prefix": sorted(p + "*" for p in prefixes)}}
            out.append(
                _allow(f"List{_sid(bucket)}", ["s3:ListBucket"], [bucket_arn], Condition=condition)
            )
        if self.put:
            out.append(
                _allow(
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


# -- deploying ---------------------------------------------------------------------------------


def _trust(service: str) -> str:
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


def deploy(
    spec: MapSpec,
    *,
    name: str | None = None,
    region: str | None = None,
    role_arn: str | None = None,
    memory_mb: int = DEFAULT_MEMORY_MB,
    layers: Sequence[str] = (),
    adapt: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    session: Any = None,
) -> Deployment:
    """Create or update everything ``spec`` needs to run on Step Functions. Idempotent.

    Parameters
    ----------
    spec
        The pipeline. Its ``Source`` (or ItemReader Parameters) and ``ResultWriter`` must be
        on S3; a bare ``Source`` gets its reader inferred as local runs do.
    name
        Names the state machine and derives the other resources (:func:`resource_names`);
        default: the spec's ``Name``.
    region
        Default: the session's region (``AWS_DEFAULT_REGION``, the profile).
    role_arn
        Use this role for the state machine instead of creating ``shardmap-NAME-states``.
    memory_mb, layers
        The worker Lambda's memory and its layers (which provide pyarrow, pandas, ...).
    adapt
        Rewrites the generated definition before it is deployed (used to drop what an
        emulator cannot parse).
    session
        A ``boto3.Session``; default: a new one (standard credential chain; clients honour
        ``AWS_ENDPOINT_URL``).

    Examples
    --------
    >>> deployment = deploy(MapSpec.from_yaml("pipelines/demo.yaml"), name="demo")  # doctest: +SKIP
    >>> deployment.state_machine_arn  # doctest: +SKIP
    """
    import boto3

    spec = aws_spec(spec)
    if not spec.worker:
        raise SpecError("Worker", "a deployed pipeline needs a worker")
    session = session or boto3.session.Session(region_name=region)
    region = region or session.region_name
    if not region:
        raise SpecError("region", "no AWS region: pass --region or set AWS_DEFAULT_REGION")
    names = resource_names(name or spec.name)
    caller = session.client("sts", region_name=region).get_caller_identity()
    account, partition = caller["Account"], caller["Arn"].split(":")[1]
    machine_arn = f"arn:{partition}:states:{region}:{account}:stateMachine:{names.state_machine}"
    lam = session.client("lambda", region_name=region)
    iam = session.client("iam", region_name=region)
    actions: list[str] = []

    function_names = [names.function] + ([names.reduce_function] if spec.reduce else [])
    lambda_policy = lambda_policy_for(
        spec, function_names=function_names, region=region, account=account, partition=partition
    )
    lambda_role = _ensure_role(
        iam, names.lambda_role, "lambda.amazonaws.com", lambda_policy, actions
    )
    code = package()
    timeout = min(900, int(spec.timeout_seconds or DEFAULT_TIMEOUT_SECONDS))
    function_arn = _ensure_function(
        lam,
        names.function,
        code=code,
        role=lambda_role,
        handler=HANDLER,
        env={"SHARDMAP_WORKER": spec.worker},
        memory_mb=memory_mb,
        timeout=timeout,
        layers=layers,
        actions=actions,
    )
    reduce_arn = None
    if spec.reduce:
        env = {"SHARDMAP_REDUCE": spec.reduce, "SHARDMAP_SOURCE": spec.source_url() or ""}
        batcher = spec.item_batcher
        if batcher and batcher.batch_input is not None:
            env["SHARDMAP_BATCH_INPUT"] = json.dumps(batcher.batch_input)
        reduce_arn = _ensure_function(
            lam,
            names.reduce_function,
            code=code,
            role=lambda_role,
            handler=REDUCE_HANDLER,
            env=env,
            memory_mb=memory_mb,
            timeout=900,
            layers=layers,
            actions=actions,
        )
    definition = _definition(spec, function_arn, reduce_arn)
    if adapt is not None:
        definition = adapt(definition)
    if role_arn is None:
        policy = policy_for(definition, state_machine_arn=machine_arn)
        role_arn = _ensure_role(iam, names.states_role, "states.amazonaws.com", policy, actions)
    sfn = session.client("stepfunctions", region_name=region)
    _ensure_state_machine(sfn, machine_arn, names.state_machine, definition, role_arn, actions)
    for action in actions:
        log.info("deploy %s: %s", names.state_machine, action)
    return Deployment(
        name=names.state_machine,
        region=region,
        state_machine_arn=machine_arn,
        function_arn=function_arn,
        role_arn=role_arn,
        lambda_role_arn=lambda_role,
        definition=definition,
        spec=spec,
        reduce_function_arn=reduce_arn,
        actions=tuple(actions),
    )


def aws_spec(spec: MapSpec) -> MapSpec:
    """``spec`` as Step Functions runs it: its reader made explicit, S3 source and destination.

    Raises :class:`SpecError` for what only runs locally: a local source or destination, and
    shardmap's ``$$.Shardmap`` context extension (AWS's context object has no such field).
    """
    from runner.engine import infer_item_reader

    source = spec.source_url()
    if spec.item_reader is None and spec.items_path is None and source:
        spec = spec.replace(item_reader=infer_item_reader(source))
    if source and spec.items_path is None and not source.startswith("s3://"):
        raise SpecError("Source", f"Step Functions reads items from S3, not {source!r}")
    dest = spec.result_writer.destination_url() if spec.result_writer else None
    if dest and not dest.startswith("s3://"):
        raise SpecError("ResultWriter.Destination", f"Step Functions writes to S3, not {dest!r}")
    data = spec.to_dict()
    known = {
        "$$.Shardmap.Source": spec.source_url(),
        "$$.Shardmap.Destination": dest,
    }
    for key in ("ItemSelector", "ItemBatcher"):
        if key in data:
            data[key] = _fixed_context(data[key], known, key)
    for key, value in data.items():
        if "$$.Shardmap" in json.dumps(value):
            raise SpecError(key, "$$.Shardmap.* exists in local runs only, not on AWS")
    return MapSpec.from_dict(data)


def _fixed_context(value: Any, known: Mapping[str, str | None], path: str) -> Any:
    """Replace shardmap's ``$$.Shardmap`` paths, which AWS's context object lacks, by what a
    deployment knows: ``Source``/``Destination`` become literals, ``RunId`` the execution name.
    """
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, inner in value.items():
        if key.endswith(".$") and isinstance(inner, str) and inner.startswith("$$.Shardmap."):
            if inner == "$$.Shardmap.RunId":
                out[key] = "$$.Execution.Name"
                continue
            fixed = known.get(inner)
            if fixed is None:
                raise SpecError(f"{path}.{key}", f"{inner} is not known on AWS")
            out[key[:-2]] = fixed
        else:
            out[key] = _fixed_context(inner, known, f"{path}.{key}")
    return out


def _definition(spec: MapSpec, function_arn: str, reduce_arn: str | None) -> dict[str, Any]:
    import inspect

    from runner.asl import to_asl

    options: dict[str, Any] = {"function_arn": function_arn}
    if reduce_arn is not None:
        if "reduce_arn" in inspect.signature(to_asl).parameters:
            options["reduce_arn"] = reduce_arn  # a reduce Task after the Map
        else:
            log.warning("to_asl has no reduce Task yet: %s is deployed but not run", reduce_arn)
    return to_asl(spec, **options)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _ensure_role(
    iam: Any, name: str, service: str, policy: dict[str, Any], actions: list[str]
) -> str:
    document = json.dumps(policy, sort_keys=True)
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except iam.exceptions.NoSuchEntityException:
        role = iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=_trust(service),
            Description=f"shardmap: {service}",
        )["Role"]
        actions.append(f"created role {name}")
    else:
        trusted = role.get("AssumeRolePolicyDocument")
        if isinstance(trusted, str):
            from urllib.parse import unquote

            trusted = json.loads(unquote(trusted))
        if trusted != json.loads(_trust(service)):
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=_trust(service))
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


def _ensure_function(
    lam: Any,
    name: str,
    *,
    code: bytes,
    role: str,
    handler: str,
    env: dict[str, str],
    memory_mb: int,
    timeout: int,
    layers: Sequence[str],
    actions: list[str],
) -> str:
    config = {
        "Role": role,
        "Handler": handler,
        "Runtime": RUNTIME,
        "MemorySize": memory_mb,
        "Timeout": timeout,
        "Environment": {"Variables": env},
        "Layers": list(layers),
    }
    try:
        current = lam.get_function(FunctionName=name)["Configuration"]
    except lam.exceptions.ResourceNotFoundException:
        created = _retry_while_role_propagates(
            lambda: lam.create_function(
                FunctionName=name,
                Code={"ZipFile": code},
                Description="shardmap worker",
                Publish=False,
                **config,
            )
        )
        actions.append(f"created function {name}")
        _wait_for_function(lam, name)
        return str(created["FunctionArn"])
    sha = base64.b64encode(hashlib.sha256(code).digest()).decode()
    if current.get("CodeSha256") != sha:
        lam.update_function_code(FunctionName=name, ZipFile=code)
        actions.append(f"updated code of function {name}")
        _wait_for_function(lam, name)
    if _config_differs(current, config):
        _retry_while_role_propagates(
            lambda: lam.update_function_configuration(FunctionName=name, **config)
        )
        actions.append(f"updated configuration of function {name}")
        _wait_for_function(lam, name)
    return str(current["FunctionArn"])


def _config_differs(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    layers = [layer.get("Arn") for layer in current.get("Layers", [])]
    env = (current.get("Environment") or {}).get("Variables") or {}
    return (
        current.get("Role") != wanted["Role"]
        or current.get("Handler") != wanted["Handler"]
        or current.get("Runtime") != wanted["Runtime"]
        or current.get("MemorySize") != wanted["MemorySize"]
        or current.get("Timeout") != wanted["Timeout"]
        or env != wanted["Environment"]["Variables"]
        or layers != wanted["Layers"]
    )


def _wait_for_function(lam: Any, name: str, timeout: float = 300.0) -> None:
    """Lambda refuses a second update (and invocations) while one is in progress."""
    deadline = time.monotonic() + timeout
    while True:
        config = lam.get_function_configuration(FunctionName=name)
        state, update = config.get("State", "Active"), config.get("LastUpdateStatus", "Successful")
        if state == "Failed" or update == "Failed":
            raise ExecutorError(
                f"Lambda function {name} failed to deploy: "
                f"{config.get('StateReason') or config.get('LastUpdateStatusReason')}"
            )
        if state == "Active" and update != "InProgress":
            return
        if time.monotonic() > deadline:
            raise ExecutorError(f"Lambda function {name} still {state}/{update} after {timeout}s")
        time.sleep(1.0)


def _retry_while_role_propagates(call: Callable[[], Any]) -> Any:
    """A new role is not assumable at once: Lambda and Step Functions reject it for seconds."""
    deadline = time.monotonic() + _PROPAGATION_SECONDS
    delay = 1.0
    while True:
        try:
            return call()
        except Exception as exc:
            code = _error_code(exc)
            message = str(exc).lower()
            propagating = code in ("AccessDeniedException", "InvalidParameterValueException") and (
                "role" in message or "assume" in message
            )
            if not propagating or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 8.0)


def _ensure_state_machine(
    sfn: Any,
    arn: str,
    name: str,
    definition: dict[str, Any],
    role_arn: str,
    actions: list[str],
) -> None:
    text = json.dumps(definition, indent=2)
    try:
        current = sfn.describe_state_machine(stateMachineArn=arn)
    except sfn.exceptions.StateMachineDoesNotExist:
        _retry_while_role_propagates(
            lambda: sfn.create_state_machine(
                name=name, definition=text, roleArn=role_arn, type="STANDARD"
            )
        )
        actions.append(f"created state machine {name}")
        return
    same = current.get("roleArn") == role_arn and _same_json(current.get("definition"), definition)
    if not same:
        _retry_while_role_propagates(
            lambda: sfn.update_state_machine(stateMachineArn=arn, definition=text, roleArn=role_arn)
        )
        actions.append(f"updated state machine {name}")


def _same_json(text: Any, value: Any) -> bool:
    try:
        return bool(json.loads(text) == value)
    except (TypeError, ValueError):
        return False
