"""Shardmap's settings: the one module that reads environment variables.

Every other module asks :func:`settings` (or :func:`lambda_settings`, in a deployed Lambda)
and never ``os.environ``; the CLI passes its flags down as arguments, never through the
environment. Precedence everywhere: an explicit argument (an API keyword, a CLI flag), then the
variable, then the default. A variable set to the empty string counts as unset.

========================  ==================  ===================================================
Variable                  Field               Meaning [default]
========================  ==================  ===================================================
SHARDMAP_STATE_DIR        ``state_dir``       Where run journals live (``--state-dir``)
                                              [``.shardmap``]
SHARDMAP_EXECUTOR         ``executor``        The executor of a run that names none
                                              (``--executor``) [``local``]
SHARDMAP_DASK_SCHEDULER   ``dask_scheduler``  The Dask executor's scheduler address
                                              (``--scheduler``) [a LocalCluster]
SHARDMAP_SHARD_BYTES      ``shard_bytes``     Bytes per planned byte range of a CSV/JSONL shard
                                              read (a positive integer) [67108864, 64 MiB]
SHARDMAP_TOOLS_DIR        ``tools_dir``       Where ``npm ci --prefix tools`` installed
                                              asl-validator [the checkout's ``tools/``]
SHARDMAP_WORKER           ``worker``          Lambda: the worker of a deployed pipeline (set by
                                              deploy, never taken from an event)
SHARDMAP_REDUCE           ``reduce``          Lambda: the reducer of a deployed pipeline
SHARDMAP_SOURCE           ``source``          Lambda: the pipeline's item source, for the reducer
SHARDMAP_BATCH_INPUT      ``batch_input``     Lambda: the static ItemBatcher.BatchInput (JSON)
========================  ==================  ===================================================

The last four are :class:`LambdaSettings` (read by :mod:`runner.aws.handler`); the others are
:class:`Settings`. Not here, on purpose: a webhook's secret, read by
:mod:`runner.triggers.notify` from the variable its trigger config names (user data by name),
and what boto3, s3fs and Dask read for themselves (``AWS_*``, ``DASK_*``).

A bad value is a :class:`~runner.errors.SpecError` (exit 2) whose path is the variable:
``SHARDMAP_SHARD_BYTES: must be a positive whole number of bytes, got 'abc'``.

Both are read from ``os.environ`` at every call (a few dictionary look-ups), so a variable set
after import, or by a test's ``monkeypatch.setenv``, is seen at once.

>>> settings({"SHARDMAP_SHARD_BYTES": "1048576"}).shard_bytes
1048576
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from runner.errors import SpecError, redact_url

__all__ = [
    "DEFAULT_EXECUTOR",
    "DEFAULT_SHARD_BYTES",
    "DEFAULT_STATE_DIR",
    "LambdaSettings",
    "Settings",
    "env_var",
    "lambda_settings",
    "settings",
]

DEFAULT_STATE_DIR = ".shardmap"
DEFAULT_EXECUTOR = "local"
DEFAULT_SHARD_BYTES = 64 << 20  # a range per 64 MiB: a few seconds of parsing per index task


def _text(variable: str, raw: str) -> str:
    return raw


def _path(variable: str, raw: str) -> Path:
    return Path(raw)


def _byte_count(variable: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise SpecError(variable, f"must be a positive whole number of bytes, got {raw!r}")
    return value


def _json(variable: str, raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SpecError(variable, f"not valid JSON: {exc}") from None


def _env(variable: str, parse: Callable[[str, str], Any]) -> dict[str, Any]:
    # A field's variable and parser travel in its metadata, so reading, the docs' table
    # (checked by tests/test_settings.py) and the CLI's help all come from one place.
    return {"env": variable, "parse": parse}


def _repr(self: Any) -> str:
    # A URL's user:password@ (a scheduler address, a source) never reaches a log or a
    # traceback through a repr.
    shown = ", ".join(f"{f.name}={redact_url(repr(getattr(self, f.name)))}" for f in fields(self))
    return f"{type(self).__name__}({shown})"


@dataclass(frozen=True, repr=False)
class Settings:
    """How shardmap runs here, from the environment (see the module's table).

    >>> Settings().state_dir
    '.shardmap'
    """

    state_dir: str = field(default=DEFAULT_STATE_DIR, metadata=_env("SHARDMAP_STATE_DIR", _text))
    executor: str = field(default=DEFAULT_EXECUTOR, metadata=_env("SHARDMAP_EXECUTOR", _text))
    #: ``None``: the Dask executor starts a LocalCluster.
    dask_scheduler: str | None = field(
        default=None, metadata=_env("SHARDMAP_DASK_SCHEDULER", _text)
    )
    shard_bytes: int = field(
        default=DEFAULT_SHARD_BYTES, metadata=_env("SHARDMAP_SHARD_BYTES", _byte_count)
    )
    #: ``None``: the checkout's ``tools/`` (:data:`runner.aws.checks.TOOLS_DIR`).
    tools_dir: Path | None = field(default=None, metadata=_env("SHARDMAP_TOOLS_DIR", _path))

    __repr__ = _repr


@dataclass(frozen=True, repr=False)
class LambdaSettings:
    """A deployed pipeline's Lambda configuration, which :func:`runner.aws.deploy.deploy` sets
    as the functions' environment. ``None``: not set."""

    worker: str | None = field(default=None, metadata=_env("SHARDMAP_WORKER", _text))
    reduce: str | None = field(default=None, metadata=_env("SHARDMAP_REDUCE", _text))
    source: str | None = field(default=None, metadata=_env("SHARDMAP_SOURCE", _text))
    #: Parsed from JSON.
    batch_input: Any = field(default=None, metadata=_env("SHARDMAP_BATCH_INPUT", _json))

    __repr__ = _repr


_T = TypeVar("_T", Settings, LambdaSettings)


def _read(cls: type[_T], environ: Mapping[str, str] | None) -> _T:
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(cls):
        raw = environ.get(f.metadata["env"])
        if raw:  # unset or empty: the default
            values[f.name] = f.metadata["parse"](f.metadata["env"], raw)
    return cls(**values)


def settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings from ``environ`` (default: ``os.environ``, read now).

    Raises :class:`~runner.errors.SpecError` naming the variable whose value is bad.

    >>> settings({"SHARDMAP_EXECUTOR": "threads"}).executor
    'threads'
    """
    return _read(Settings, environ)


def lambda_settings(environ: Mapping[str, str] | None = None) -> LambdaSettings:
    """The Lambda's settings from ``environ`` (default: ``os.environ``, read now).

    >>> lambda_settings({"SHARDMAP_WORKER": "echo"}).worker
    'echo'
    """
    return _read(LambdaSettings, environ)


def env_var(name: str) -> str:
    """The environment variable of the setting ``name`` (a field of either class).

    >>> env_var("state_dir")
    'SHARDMAP_STATE_DIR'
    """
    for cls in (Settings, LambdaSettings):
        for f in fields(cls):
            if f.name == name:
                return str(f.metadata["env"])
    raise KeyError(name)
