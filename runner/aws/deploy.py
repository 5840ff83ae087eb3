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
  :func:`~runner.aws.iam.policy_for` of the definition, and ``shardmap-NAME-lambda`` (trusted by
  ``lambda.amazonaws.com``) holding :func:`~runner.aws.iam.lambda_policy_for`: logs, reading the
  source and reading/writing the destination. No statement grants a ``*`` action.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.aws.iam import ensure_role, lambda_policy_for, policy_for
from runner.errors import ExecutorError, SpecError
from runner.readers.infer import infer_item_reader
from runner.spec import MapSpec

__all__ = [
    "Deployment",
    "deploy",
    "lambda_policy_for",  # runner.aws.iam's, re-exported: what deploy grants
    "package",
    "policy_for",
    "resource_names",
]

log = logging.getLogger("shardmap.aws")

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


# -- deploying ---------------------------------------------------------------------------------


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
    lambda_role = ensure_role(
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
    definition = spec.to_asl(function_arn=function_arn, reduce_arn=reduce_arn)
    if adapt is not None:
        definition = adapt(definition)
    if role_arn is None:
        policy = policy_for(definition, state_machine_arn=machine_arn)
        role_arn = ensure_role(iam, names.states_role, "states.amazonaws.com", policy, actions)
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


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


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
