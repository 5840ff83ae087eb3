"""Checks of an ASL definition before it reaches AWS: shardmap's strict checks and asl-validator.

Two layers, both returning :class:`Problem` s that name the field path
(``States.Map.ItemBatcher.MaxItemPerBatch``):

- :func:`check_asl`: what asl-validator 4.x lets through and Step Functions rejects or
  misreads. Unknown keys inside ``ItemReader`` (and its ``ReaderConfig``), ``ItemBatcher``,
  ``ResultWriter`` (and its ``WriterConfig``), each with the nearest valid key; the allowed
  values of ``InputType``, ``CSVHeaderLocation``, ``CSVDelimiter``, ``ManifestType``, the reader
  and writer ``Transformation`` and ``OutputType``; fields placed in the wrong block
  (``BatchInput`` beside ``ItemBatcher``, ``InputType`` outside ``ReaderConfig``); a few rules
  that hold between fields (``GIVEN`` needs ``CSVHeaders``, ``LOAD_AND_FLATTEN`` needs a
  listing, ...). Pure Python, no I/O.
- :func:`asl_validator`: npm's asl-validator 4.x (schema, paths, transitions, ARNs), run with
  node from ``tools/node_modules`` (``npm ci --prefix tools``).

A problem is an ``"error"`` when Step Functions would reject the definition and a
``"warning"`` when the definition runs locally (``shardmap run --asl``) but is not deployable as
it stands: a reader or writer without S3 ``Parameters`` (a pipeline with a local ``Source`` or
``Destination``), or shardmap's ``$$.Shardmap`` context paths, which deploy resolves.

>>> problems = check_asl({"StartAt": "Map", "States": {"Map": {"Type": "Map",
...     "ItemBatcher": {"MaxItemPerBatch": 10}, "End": True,
...     "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED"}, "StartAt": "W",
...                       "States": {"W": {"Type": "Succeed"}}}}}})
>>> print(problems[0])
States.Map.ItemBatcher.MaxItemPerBatch: unknown field (did you mean MaxItemsPerBatch?)
"""

from __future__ import annotations

import difflib
import json
import math
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeGuard

from runner.asl import walk_states
from runner.errors import AslValidatorMissing, ShardmapError
from runner.settings import settings

__all__ = ["AslValidatorMissing", "Problem", "asl_validator", "check_asl", "errors_only"]

GET_OBJECT = "arn:aws:states:::s3:getObject"
LIST_OBJECTS = "arn:aws:states:::s3:listObjectsV2"
PUT_OBJECT = "arn:aws:states:::s3:putObject"
AWS_MAX_BATCH_BYTES = 262_144
AWS_MAX_ITEMS = 100_000_000

# The fields AWS documents for each block (Parameters for JSONPath, Arguments for JSONata).
_READER_KEYS = ("Resource", "ReaderConfig", "Parameters", "Arguments")
_READER_CONFIG_KEYS = (
    "InputType",
    "Transformation",
    "ManifestType",
    "CSVHeaderLocation",
    "CSVHeaders",
    "CSVDelimiter",
    "ItemsPointer",
    "MaxItems",
    "MaxItemsPath",
)
_BATCHER_KEYS = (
    "MaxItemsPerBatch",
    "MaxItemsPerBatchPath",
    "MaxInputBytesPerBatch",
    "MaxInputBytesPerBatchPath",
    "BatchInput",
)
_WRITER_KEYS = ("Resource", "Parameters", "Arguments", "WriterConfig")
_WRITER_CONFIG_KEYS = ("OutputType", "Transformation")
_WRITER_PARAMETER_KEYS = ("Bucket", "Prefix")

_VALUES: dict[str, tuple[str, ...]] = {
    "InputType": ("CSV", "JSON", "JSONL", "PARQUET", "MANIFEST"),
    "ReaderTransformation": ("NONE", "LOAD_AND_FLATTEN"),
    "ManifestType": ("S3_INVENTORY", "ATHENA_DATA"),
    "CSVHeaderLocation": ("FIRST_ROW", "GIVEN"),
    "CSVDelimiter": ("COMMA", "PIPE", "SEMICOLON", "SPACE", "TAB"),
    "OutputType": ("JSON", "JSONL"),
    "WriterTransformation": ("NONE", "COMPACT", "FLATTEN"),
    "ReaderResource": (GET_OBJECT, LIST_OBJECTS),
    "WriterResource": (PUT_OBJECT,),
}

# Where a field belongs when it turns up in another block: named in the problem.
_HOME: dict[str, str] = {
    **{key: "ItemReader.ReaderConfig" for key in _READER_CONFIG_KEYS},
    **{key: "ItemBatcher" for key in _BATCHER_KEYS},
    **{key: "ResultWriter.WriterConfig" for key in _WRITER_CONFIG_KEYS},
    "ReaderConfig": "ItemReader",
    "WriterConfig": "ResultWriter",
}
_MAP_ONLY_DISTRIBUTED = ("ItemReader", "ItemBatcher", "ResultWriter")

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition.

    ``path`` is the field path from the definition's root (``States.Map.ItemBatcher``),
    ``suggestion`` the nearest valid key or value when there is one, ``source`` who found it
    (``"shardmap"`` or ``"asl-validator"``).
    """

    path: str
    message: str
    suggestion: str | None = None
    severity: Severity = "error"
    source: str = "shardmap"

    def __str__(self) -> str:
        hint = f" (did you mean {self.suggestion}?)" if self.suggestion else ""
        where = f"{self.path}: " if self.path else ""
        return f"{where}{self.message}{hint}"


def errors_only(problems: list[Problem]) -> list[Problem]:
    """The problems Step Functions would reject the definition for."""
    return [problem for problem in problems if problem.severity == "error"]


# -- shardmap's strict checks ------------------------------------------------------------------


def check_asl(definition: Mapping[str, Any]) -> list[Problem]:
    """shardmap's strict checks of every Map state in ``definition`` (nested ones too).

    Parameters
    ----------
    definition
        An ASL state machine as parsed JSON.

    Returns
    -------
    list of Problem
        Empty when nothing is wrong; errors and warnings in definition order.

    Examples
    --------
    >>> check_asl({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
    []
    """
    problems: list[Problem] = []
    if not isinstance(definition, Mapping):
        return [Problem("", "a state machine must be a JSON object")]
    for path, state in walk_states(definition):
        if state.get("Type") == "Map":
            problems += _check_map(state, path)
    problems += _local_only_paths(definition)
    return problems


def _check_map(state: Mapping[str, Any], path: str) -> list[Problem]:
    problems: list[Problem] = []
    processor = state.get("ItemProcessor") or state.get("Iterator") or {}
    config = processor.get("ProcessorConfig") if isinstance(processor, Mapping) else None
    distributed = isinstance(config, Mapping) and config.get("Mode") == "DISTRIBUTED"
    for key in _MAP_ONLY_DISTRIBUTED:
        if key in state and not distributed:
            problems.append(
                Problem(
                    f"{path}.{key}",
                    "needs a Distributed Map (ItemProcessor.ProcessorConfig.Mode DISTRIBUTED)",
                )
            )
    for key in state:
        home = _HOME.get(key)
        if home and home.split(".")[0] != key:
            problems.append(Problem(f"{path}.{key}", f"belongs inside {home}"))
    problems += _check_thresholds(state, path)
    if "ItemReader" in state:
        problems += _check_reader(state["ItemReader"], f"{path}.ItemReader")
        if "ItemsPath" in state:
            problems.append(Problem(f"{path}.ItemsPath", "cannot be used together with ItemReader"))
    if "ItemBatcher" in state:
        problems += _check_batcher(state["ItemBatcher"], f"{path}.ItemBatcher")
    if "ResultWriter" in state:
        problems += _check_writer(state["ResultWriter"], f"{path}.ResultWriter")
    return problems


def _check_thresholds(state: Mapping[str, Any], path: str) -> list[Problem]:
    problems = []
    percentage = state.get("ToleratedFailurePercentage")
    if percentage is not None and not (_is_number(percentage) and 0 <= percentage <= 100):
        problems.append(
            Problem(f"{path}.ToleratedFailurePercentage", "must be a number from 0 to 100")
        )
    count = state.get("ToleratedFailureCount")
    if count is not None and not (_is_integer(count) and count >= 0):
        problems.append(Problem(f"{path}.ToleratedFailureCount", "must be an integer >= 0"))
    return problems


def _check_reader(reader: Any, path: str) -> list[Problem]:
    if not isinstance(reader, Mapping):
        return [Problem(path, "must be an object")]
    problems = _unknown_keys(reader, _READER_KEYS, path)
    resource = reader.get("Resource")
    if resource is None:
        choices = " or ".join(_VALUES["ReaderResource"])
        problems.append(Problem(f"{path}.Resource", f"required: {choices}"))
    else:
        problems += _one_of(resource, "ReaderResource", f"{path}.Resource")
    if not ({"Parameters", "Arguments"} & set(reader)):
        problems.append(
            Problem(
                f"{path}.Parameters",
                "missing: Step Functions needs the Bucket and Key (or Prefix) to read; "
                "give the pipeline an s3:// Source",
                severity="warning",
            )
        )
    config = reader.get("ReaderConfig", {})
    if not isinstance(config, Mapping):
        return [*problems, Problem(f"{path}.ReaderConfig", "must be an object")]
    where = f"{path}.ReaderConfig"
    problems += _unknown_keys(config, _READER_CONFIG_KEYS, where)
    for key, kind in (
        ("InputType", "InputType"),
        ("Transformation", "ReaderTransformation"),
        ("ManifestType", "ManifestType"),
        ("CSVHeaderLocation", "CSVHeaderLocation"),
        ("CSVDelimiter", "CSVDelimiter"),
    ):
        if key in config:
            problems += _one_of(config[key], kind, f"{where}.{key}")
    input_type = config.get("InputType")
    manifest = config.get("ManifestType")
    flatten = config.get("Transformation") == "LOAD_AND_FLATTEN"
    if resource == GET_OBJECT and input_type is None and manifest is None:
        problems.append(Problem(f"{where}.InputType", "required with s3:getObject"))
    if resource == LIST_OBJECTS and input_type is not None and not flatten:
        problems.append(
            Problem(
                f"{where}.InputType",
                "only with Transformation LOAD_AND_FLATTEN when listing objects",
            )
        )
    if flatten:
        if resource != LIST_OBJECTS:
            problems.append(
                Problem(f"{where}.Transformation", "LOAD_AND_FLATTEN needs s3:listObjectsV2")
            )
        if input_type not in ("CSV", "JSON", "JSONL", "PARQUET"):
            problems.append(
                Problem(f"{where}.InputType", "LOAD_AND_FLATTEN needs CSV, JSON, JSONL or PARQUET")
            )
    if manifest == "ATHENA_DATA" and input_type not in ("CSV", "JSONL", "PARQUET"):
        problems.append(Problem(f"{where}.InputType", "ATHENA_DATA needs CSV, JSONL or PARQUET"))
    problems += _check_csv(config, where, input_type)
    if "ItemsPointer" in config:
        pointer = config["ItemsPointer"]
        if not isinstance(pointer, str) or (pointer and not pointer.startswith("/")):
            problems.append(
                Problem(f"{where}.ItemsPointer", "must be a JSON Pointer such as /data/items")
            )
        elif input_type != "JSON":
            problems.append(Problem(f"{where}.ItemsPointer", "applies to InputType JSON only"))
    if "MaxItems" in config:
        value = config["MaxItems"]
        if not (_is_integer(value) and 1 <= value <= AWS_MAX_ITEMS):
            problems.append(
                Problem(f"{where}.MaxItems", f"must be an integer from 1 to {AWS_MAX_ITEMS:,}")
            )
        if "MaxItemsPath" in config:
            problems.append(Problem(f"{where}.MaxItems", "use either MaxItems or MaxItemsPath"))
    return problems


def _check_csv(config: Mapping[str, Any], where: str, input_type: Any) -> list[Problem]:
    problems = []
    csv_keys = [k for k in ("CSVHeaderLocation", "CSVHeaders", "CSVDelimiter") if k in config]
    if csv_keys and input_type != "CSV":
        problems.append(Problem(f"{where}.{csv_keys[0]}", "applies to InputType CSV only"))
    headers = config.get("CSVHeaders")
    if config.get("CSVHeaderLocation") == "GIVEN" and not headers:
        problems.append(Problem(f"{where}.CSVHeaders", "required when CSVHeaderLocation is GIVEN"))
    if headers is not None:
        if not (isinstance(headers, list) and all(isinstance(h, str) for h in headers)):
            problems.append(Problem(f"{where}.CSVHeaders", "must be a list of strings"))
        elif len(set(headers)) != len(headers):
            problems.append(Problem(f"{where}.CSVHeaders", "CSV headers cannot contain duplicates"))
    return problems


def _check_batcher(batcher: Any, path: str) -> list[Problem]:
    if not isinstance(batcher, Mapping):
        return [Problem(path, "must be an object")]
    problems = _unknown_keys(batcher, _BATCHER_KEYS, path)
    if not any(key in batcher for key in _BATCHER_KEYS[:4]):
        problems.append(
            Problem(path, "needs MaxItemsPerBatch or MaxInputBytesPerBatch (or a Path form)")
        )
    for key in ("MaxItemsPerBatch", "MaxInputBytesPerBatch"):
        if key in batcher:
            value = batcher[key]
            if not (_is_integer(value) and value >= 1):
                problems.append(Problem(f"{path}.{key}", "must be an integer >= 1"))
            if f"{key}Path" in batcher:
                problems.append(Problem(f"{path}.{key}", f"use either {key} or {key}Path"))
    size = batcher.get("MaxInputBytesPerBatch")
    if _is_integer(size) and size > AWS_MAX_BATCH_BYTES:
        problems.append(
            Problem(f"{path}.MaxInputBytesPerBatch", f"must be at most {AWS_MAX_BATCH_BYTES:,}")
        )
    if "BatchInput" in batcher and not isinstance(batcher["BatchInput"], Mapping):
        problems.append(Problem(f"{path}.BatchInput", "must be a JSON object"))
    return problems


def _check_writer(writer: Any, path: str) -> list[Problem]:
    if not isinstance(writer, Mapping):
        return [Problem(path, "must be an object")]
    problems = _unknown_keys(writer, _WRITER_KEYS, path)
    if not writer:
        problems.append(Problem(path, "cannot be empty: give WriterConfig and/or Resource"))
    if "Resource" in writer:
        problems += _one_of(writer["Resource"], "WriterResource", f"{path}.Resource")
        params = writer.get("Parameters", writer.get("Arguments"))
        if params is None:
            problems.append(
                Problem(
                    f"{path}.Parameters",
                    "missing: Step Functions needs the Bucket and Prefix to write to; "
                    "give the pipeline an s3:// Destination",
                    severity="warning",
                )
            )
        elif isinstance(params, Mapping) and "Parameters" in writer:
            names = {key.removesuffix(".$"): key for key in params}
            for name, key in names.items():
                if name not in _WRITER_PARAMETER_KEYS:
                    problems.append(
                        _unknown(f"{path}.Parameters.{key}", name, _WRITER_PARAMETER_KEYS)
                    )
    elif {"Parameters", "Arguments"} & set(writer):
        problems.append(Problem(f"{path}.Resource", f"required with Parameters: {PUT_OBJECT}"))
    config = writer.get("WriterConfig")
    if config is not None:
        where = f"{path}.WriterConfig"
        if not isinstance(config, Mapping):
            return [*problems, Problem(where, "must be an object")]
        problems += _unknown_keys(config, _WRITER_CONFIG_KEYS, where)
        if "OutputType" in config:
            problems += _one_of(config["OutputType"], "OutputType", f"{where}.OutputType")
        if "Transformation" in config:
            problems += _one_of(
                config["Transformation"], "WriterTransformation", f"{where}.Transformation"
            )
    return problems


def _local_only_paths(definition: Mapping[str, Any]) -> list[Problem]:
    """``$$.Shardmap.*`` paths: shardmap's context extension, absent on AWS."""
    problems = []
    for path, value in _leaves(definition, ""):
        if isinstance(value, str) and value.startswith("$$.Shardmap."):
            problems.append(
                Problem(
                    path,
                    f"{value} exists in local runs only; deploy resolves it, "
                    "Step Functions has no such context field",
                    severity="warning",
                )
            )
    return problems


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _leaves(inner, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for number, inner in enumerate(value):
            yield from _leaves(inner, f"{path}.{number}")
    else:
        yield path, value


def _unknown_keys(block: Mapping[str, Any], known: tuple[str, ...], path: str) -> list[Problem]:
    problems = []
    for key in block:
        if key in known:
            continue
        home = _HOME.get(key)
        if home and not path.endswith(home):
            problems.append(Problem(f"{path}.{key}", f"belongs inside {home}"))
        else:
            problems.append(_unknown(f"{path}.{key}", key, known))
    return problems


def _unknown(path: str, key: str, known: tuple[str, ...]) -> Problem:
    return Problem(path, "unknown field", _nearest(key, known))


def _one_of(value: Any, kind: str, path: str) -> list[Problem]:
    allowed = _VALUES[kind]
    if value in allowed:
        return []
    shown = json.dumps(value)
    suggestion = _nearest(value, allowed) if isinstance(value, str) else None
    return [Problem(path, f"{shown} is not one of {', '.join(allowed)}", suggestion)]


def _nearest(word: str, choices: tuple[str, ...]) -> str | None:
    """The closest choice, compared case-insensitively (``Jsonl`` -> ``JSONL``)."""
    lowered = {choice.lower(): choice for choice in choices}
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_integer(value: Any) -> TypeGuard[float]:
    if isinstance(value, float) and value.is_integer():
        return True
    return isinstance(value, int) and not isinstance(value, bool)


# -- npm's asl-validator -----------------------------------------------------------------------

#: Where ``npm ci --prefix tools`` installs node modules; ``SHARDMAP_TOOLS_DIR`` overrides it.
TOOLS_DIR = Path(__file__).resolve().parents[2] / "tools"
_VALIDATE_JS = """
const validator = require("asl-validator");
const chunks = [];
process.stdin.on("data", (chunk) => chunks.push(chunk));
process.stdin.on("end", () => {
  const definition = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  const result = validator(definition, { checkPaths: true, checkArn: true });
  process.stdout.write(JSON.stringify(result.errors));
});
"""


def asl_validator(definition: Mapping[str, Any], *, timeout: float = 60.0) -> list[Problem]:
    """Run npm's asl-validator 4.x over ``definition``; its errors as :class:`Problem` s.

    The validator's schema wants ``ToleratedFailurePercentage`` to be a whole number, while
    Step Functions takes any number from 0 to 100 (:func:`check_asl` checks the range); a
    fractional percentage is therefore validated as its floor.

    Raises
    ------
    AslValidatorMissing
        node is not on PATH, or asl-validator is not installed under ``tools/node_modules``.

    Examples
    --------
    >>> asl_validator({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
    ... # doctest: +SKIP
    []
    """
    tools = settings().tools_dir or TOOLS_DIR
    node = shutil.which("node")
    if node is None:
        raise AslValidatorMissing("node is not on PATH; asl-validator needs Node.js")
    if not (tools / "node_modules" / "asl-validator" / "package.json").is_file():
        raise AslValidatorMissing(
            f"asl-validator is not installed under {tools}/node_modules: run npm ci --prefix tools"
        )
    payload = json.dumps(_whole_percentages(definition))
    completed = subprocess.run(
        [node, "-e", _VALIDATE_JS],
        input=payload,
        capture_output=True,
        text=True,
        cwd=tools,  # require() resolves tools/node_modules from here
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise ShardmapError(f"asl-validator failed: {completed.stderr.strip()}")
    errors = json.loads(completed.stdout or "[]")
    uses_jsonata = "JSONata" in payload
    return [
        _validator_problem(error) for error in errors if uses_jsonata or not _jsonata_fallout(error)
    ]


def _whole_percentages(value: Any) -> Any:
    if isinstance(value, Mapping):
        out = {key: _whole_percentages(inner) for key, inner in value.items()}
        percentage = out.get("ToleratedFailurePercentage")
        if _is_number(percentage) and not float(percentage).is_integer():
            out["ToleratedFailurePercentage"] = math.floor(percentage)
        return out
    if isinstance(value, list):
        return [_whole_percentages(inner) for inner in value]
    return value


def _jsonata_fallout(error: Mapping[str, Any]) -> bool:
    """A JSONPath state that fails the schema also fails its JSONata alternative, which only
    complains that QueryLanguage is not JSONata: noise when the definition uses no JSONata."""
    schema = error.get("schemaError") or {}
    return str(schema.get("instancePath", "")).endswith("/QueryLanguage") and str(
        schema.get("schemaPath", "")
    ).startswith("jsonata.json")


def _validator_problem(error: Mapping[str, Any]) -> Problem:
    schema = error.get("schemaError") or {}
    pointer = str(schema.get("instancePath") or error.get("path") or "")
    path = ".".join(part for part in pointer.split("/") if part)
    message = str(error.get("Message", error))
    if pointer and message.startswith(f"{pointer} is invalid. "):
        message = message[len(f"{pointer} is invalid. ") :]
    code = error.get("Error code")
    if code:
        message = f"{message} [{code}]"
    return Problem(path, message, source="asl-validator")
