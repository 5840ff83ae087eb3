"""Load a state machine definition: check what CreateStateMachine checks, compile every field.

Only what AWS refuses when a state machine is created is refused here (unknown or misplaced
fields, a missing StartAt or transition target, a field of the wrong query language, a bad
path or expression); each refusal names the AWS location (``/States/Check/Choices/0``) and
the rule. Everything else fails at run time, as on AWS. Compiling once here is what keeps a
state cheap to run once per item.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runner.errors import SpecError
from runner.states import jsonata
from runner.states.choice import ChoiceRule, compile_choice_rules
from runner.states.jsonpath import Payload, compile_payload, reference_path_steps
from runner.states.mapfields import compile_map
from runner.states.retry import Catcher, Retrier, compile_catchers, compile_retriers

__all__ = ["JSONATA", "JSONPATH", "Machine", "State", "load_definition"]

JSONPATH, JSONATA = "JSONPath", "JSONata"

_COMMON = {"Type", "Comment", "QueryLanguage"}
_FLOW = {"Next", "End"}
_ERRORS = {"Retry", "Catch"}
_MAP = {
    "ItemProcessor", "Iterator", "ItemReader", "ItemSelector", "ItemBatcher", "ResultWriter",
    "MaxConcurrency", "ToleratedFailurePercentage", "ToleratedFailureCount", "Label",
}  # fmt: skip
_MAP_JSONPATH = {
    "ItemsPath", "Parameters", "MaxConcurrencyPath", "ToleratedFailurePercentagePath",
    "ToleratedFailureCountPath",
}  # fmt: skip
_IO_JSONPATH = {"InputPath", "OutputPath"}
_RESULT_JSONPATH = {"ResultPath", "ResultSelector"}
_TASK = {"Resource", "TimeoutSeconds", "HeartbeatSeconds", "Credentials"}

#: The fields each state type accepts, by query language (the developer guide's state pages).
FIELDS: dict[str, dict[str, set[str]]] = {
    "Pass": {
        JSONPATH: _FLOW | _IO_JSONPATH | {"Parameters", "Result", "ResultPath", "Assign"},
        JSONATA: _FLOW | {"Output", "Assign"},
    },
    "Task": {
        JSONPATH: _FLOW
        | _ERRORS
        | _TASK
        | _IO_JSONPATH
        | _RESULT_JSONPATH
        | {"Parameters", "TimeoutSecondsPath", "HeartbeatSecondsPath", "Assign"},
        JSONATA: _FLOW | _ERRORS | _TASK | {"Arguments", "Output", "Assign"},
    },
    "Choice": {
        JSONPATH: _IO_JSONPATH | {"Choices", "Default", "Assign"},
        JSONATA: {"Choices", "Default", "Output", "Assign"},
    },
    "Wait": {
        JSONPATH: _FLOW
        | _IO_JSONPATH
        | {"Seconds", "SecondsPath", "Timestamp", "TimestampPath", "Assign"},
        JSONATA: _FLOW | {"Seconds", "Timestamp", "Output", "Assign"},
    },
    "Succeed": {JSONPATH: _IO_JSONPATH, JSONATA: {"Output"}},
    "Fail": {
        JSONPATH: {"Error", "ErrorPath", "Cause", "CausePath"},
        JSONATA: {"Error", "Cause"},
    },
    "Parallel": {
        JSONPATH: _FLOW
        | _ERRORS
        | _IO_JSONPATH
        | _RESULT_JSONPATH
        | {"Branches", "Parameters", "Assign"},
        JSONATA: _FLOW | _ERRORS | {"Branches", "Arguments", "Output", "Assign"},
    },
    "Map": {
        JSONPATH: _FLOW
        | _ERRORS
        | _MAP
        | _MAP_JSONPATH
        | _IO_JSONPATH
        | _RESULT_JSONPATH
        | {"Assign"},
        JSONATA: _FLOW | _ERRORS | _MAP | {"Items", "Output", "Assign"},
    },
}
_TERMINAL = {"Choice", "Succeed", "Fail"}  # no Next/End of their own


@dataclass(slots=True)
class State:
    """One compiled state. ``raw`` is the definition's own mapping, kept for export and errors."""

    name: str
    type: str
    language: str
    raw: Mapping[str, Any]
    where: str
    next: str | None = None
    end: bool = False
    # JSONPath
    input_path: str | None = "$"
    output_path: str | None = "$"
    result_path: str | None = "$"
    parameters: Payload | None = None
    result_selector: Payload | None = None
    assign_payload: Payload | None = None
    # JSONata
    arguments: jsonata.Template | None = None
    output: jsonata.Template | None = None
    assign_template: jsonata.Template | None = None
    # errors
    retriers: list[Retrier] = field(default_factory=list)
    catchers: list[Catcher] = field(default_factory=list)
    # Choice
    rules: list[ChoiceRule] = field(default_factory=list)
    conditions: list[tuple[jsonata.Template, str, Any, Any]] = field(default_factory=list)
    default: str | None = None
    # Parallel, Map
    branches: list[Machine] = field(default_factory=list)
    processor: Machine | None = None
    distributed: bool = False
    templates: dict[str, Any] = field(default_factory=dict)  # other compiled fields by name


@dataclass(slots=True)
class Machine:
    """A compiled state machine (or a Parallel branch, or a Map's ItemProcessor)."""

    start_at: str
    states: dict[str, State]
    language: str
    where: str
    timeout_seconds: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


def load_definition(doc: Mapping[str, Any]) -> Machine:
    """Compile a whole definition; raises :class:`SpecError` for what AWS refuses at creation."""
    if not isinstance(doc, Mapping):
        raise SpecError("", "a state machine definition must be a JSON object")
    language = doc.get("QueryLanguage", JSONPATH)
    if language not in (JSONPATH, JSONATA):
        raise SpecError("/QueryLanguage", f"must be JSONPath or JSONata (got {language!r})")
    allowed = {"StartAt", "States", "Comment", "Version", "TimeoutSeconds", "QueryLanguage"}
    _refuse_unknown(doc, allowed, "")
    machine = _machine(doc, "", language)
    timeout = doc.get("TimeoutSeconds")
    if timeout is not None and (not _is_int(timeout) or timeout < 1):
        raise SpecError("/TimeoutSeconds", "must be a positive integer")
    machine.timeout_seconds = timeout
    return machine


def _machine(doc: Mapping[str, Any], where: str, language: str) -> Machine:
    states = doc.get("States")
    start_at = doc.get("StartAt")
    if not isinstance(states, Mapping) or not states:
        raise SpecError(f"{where}/States", "must be a non-empty object of states")
    if not isinstance(start_at, str):
        raise SpecError(f"{where}/StartAt", "is required and must be a state name")
    if start_at not in states:
        raise SpecError(f"{where}/StartAt", f"names no state ({start_at!r})")
    compiled = {
        name: _state(name, raw, f"{where}/States/{name}", language) for name, raw in states.items()
    }
    for state in compiled.values():
        for target, field_name in _targets(state):
            if target not in compiled:
                raise SpecError(
                    f"{state.where}/{field_name}", f"names no state of this machine ({target!r})"
                )
    return Machine(start_at, compiled, language, where, raw=doc)


def _targets(state: State) -> list[tuple[str, str]]:
    targets = [(state.next, "Next")] if state.next else []
    targets += [(rule.next, f"Choices/{i}/Next") for i, rule in enumerate(state.rules)]
    targets += [(c[1], f"Choices/{i}/Next") for i, c in enumerate(state.conditions)]
    if state.default:
        targets.append((state.default, "Default"))
    targets += [(c.next, f"Catch/{i}/Next") for i, c in enumerate(state.catchers)]
    return targets


def _state(name: str, raw: Any, where: str, outer_language: str) -> State:
    if len(name) > 80:
        raise SpecError(where, "a state name must be at most 80 characters")
    if not isinstance(raw, Mapping):
        raise SpecError(where, "a state must be a JSON object")
    kind = raw.get("Type")
    if kind not in FIELDS:
        raise SpecError(f"{where}/Type", f"must be one of {', '.join(FIELDS)} (got {kind!r})")
    language = raw.get("QueryLanguage", outer_language)
    if language not in (JSONPATH, JSONATA):
        raise SpecError(f"{where}/QueryLanguage", f"must be JSONPath or JSONata ({language!r})")
    if outer_language == JSONATA and language == JSONPATH:
        raise SpecError(
            f"{where}/QueryLanguage",
            "a state cannot use JSONPath when its state machine uses JSONata",
        )
    _refuse_fields(raw, kind, language, where)
    state = State(name, kind, language, raw, where)
    _flow(state)
    if language == JSONPATH:
        _compile_jsonpath(state)
    else:
        _compile_jsonata(state)
    if "Retry" in raw:
        state.retriers = compile_retriers(raw["Retry"], f"{where}/Retry")
    if "Catch" in raw:
        state.catchers = compile_catchers(raw["Catch"], f"{where}/Catch", language)
    _compile_type(state)
    return state


def _refuse_fields(raw: Mapping[str, Any], kind: str, language: str, where: str) -> None:
    allowed = _COMMON | FIELDS[kind][language]
    for key in raw:
        if key in allowed:
            continue
        other = JSONATA if language == JSONPATH else JSONPATH
        if key in FIELDS[kind][other]:
            raise SpecError(
                f"{where}/{key}", f"is a {other} field; this {kind} state uses {language}"
            )
        raise SpecError(f"{where}/{key}", f"is not a field of a {kind} state")


def _refuse_unknown(doc: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in doc:
        if key not in allowed:
            raise SpecError(f"{where}/{key}", "is not a field of a state machine")


def _flow(state: State) -> None:
    raw, where = state.raw, state.where
    if state.type in _TERMINAL:
        return
    has_next, end = "Next" in raw, raw.get("End", False)
    if has_next == bool(end):
        raise SpecError(where, f"a {state.type} state needs exactly one of Next or End: true")
    if has_next and not isinstance(raw["Next"], str):
        raise SpecError(f"{where}/Next", "must be a state name")
    if "End" in raw and raw["End"] is not True:
        raise SpecError(f"{where}/End", "must be true when present")
    state.next, state.end = raw.get("Next"), bool(end)


def _compile_jsonpath(state: State) -> None:
    raw, where = state.raw, state.where
    for key in ("InputPath", "OutputPath"):
        if key in raw:
            _check_path(raw[key], f"{where}/{key}", reference=False)
    state.input_path = raw.get("InputPath", "$")
    state.output_path = raw.get("OutputPath", "$")
    if "ResultPath" in raw:
        _check_path(raw["ResultPath"], f"{where}/ResultPath", reference=True)
    state.result_path = raw.get("ResultPath", "$")
    if "Parameters" in raw:
        state.parameters = compile_payload(raw["Parameters"], f"{where}/Parameters")
    if "ResultSelector" in raw:
        state.result_selector = compile_payload(raw["ResultSelector"], f"{where}/ResultSelector")
    if "Assign" in raw:
        state.assign_payload = compile_payload(_assign(raw, where), f"{where}/Assign")


def _compile_jsonata(state: State) -> None:
    raw, where = state.raw, state.where
    if "Arguments" in raw:
        state.arguments = jsonata.compile_template(raw["Arguments"], f"{where}/Arguments")
    if "Output" in raw:
        state.output = jsonata.compile_template(raw["Output"], f"{where}/Output")
    if "Assign" in raw:
        state.assign_template = jsonata.compile_template(_assign(raw, where), f"{where}/Assign")


def _assign(raw: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    assign = raw["Assign"]
    if not isinstance(assign, Mapping):
        raise SpecError(f"{where}/Assign", "must be an object of variable names and values")
    for name in assign:
        bare = name[:-2] if name.endswith(".$") else name
        if not bare.isidentifier() or bare == "states":
            raise SpecError(f"{where}/Assign/{name}", "is not a valid variable name")
    return assign


def _check_path(path: Any, where: str, *, reference: bool) -> None:
    if path is None:
        return
    if not isinstance(path, str) or not path.startswith("$"):
        raise SpecError(where, f"must be a JSONPath starting with $ or null (got {path!r})")
    if reference and (path.startswith("$$") or reference_path_steps(path) is None):
        raise SpecError(where, f"must be a reference path such as $.a.b[0] (got {path!r})")
    if not reference:
        compile_payload({"p.$": path}, where)


def _compile_type(state: State) -> None:
    compile_kind = _KINDS.get(state.type)
    if compile_kind is not None:
        compile_kind(state)


def _compile_pass(state: State) -> None:
    if "Result" in state.raw:
        state.templates["Result"] = state.raw["Result"]


def _compile_task(state: State) -> None:
    raw, where = state.raw, state.where
    resource = raw.get("Resource")
    if not isinstance(resource, str) or not resource:
        raise SpecError(f"{where}/Resource", "a Task state needs a Resource (a URI string)")
    _number_fields(state, ("TimeoutSeconds", "HeartbeatSeconds"))
    for key in ("TimeoutSecondsPath", "HeartbeatSecondsPath"):
        if key in raw:
            _check_path(raw[key], f"{where}/{key}", reference=True)
    if "TimeoutSeconds" in raw and "TimeoutSecondsPath" in raw:
        raise SpecError(where, "TimeoutSeconds and TimeoutSecondsPath cannot both be set")
    if "HeartbeatSeconds" in raw and "HeartbeatSecondsPath" in raw:
        raise SpecError(where, "HeartbeatSeconds and HeartbeatSecondsPath cannot both be set")


def _number_fields(state: State, keys: tuple[str, ...]) -> None:
    for key in keys:
        if key not in state.raw:
            continue
        value = state.raw[key]
        if state.language == JSONATA and jsonata.is_jsonata(value):
            state.templates[key] = jsonata.compile_template(value, f"{state.where}/{key}")
        elif not _is_int(value) or value < 1 or value > 99999999:
            raise SpecError(f"{state.where}/{key}", "must be an integer from 1 to 99999999")


def _compile_choice(state: State) -> None:
    raw, where = state.raw, state.where
    choices = raw.get("Choices")
    if not isinstance(choices, list) or not choices:
        raise SpecError(f"{where}/Choices", "a Choice state needs a non-empty Choices array")
    if state.language == JSONPATH:
        state.rules = compile_choice_rules(choices, f"{where}/Choices")
        for index, rule in enumerate(state.rules):
            if rule.assign is not None:
                here = f"{where}/Choices/{index}"
                assign = _assign({"Assign": rule.assign}, here)
                state.templates[f"Choices/{index}/Assign"] = compile_payload(
                    assign, f"{here}/Assign"
                )
    else:
        state.conditions = [_condition(c, f"{where}/Choices/{i}") for i, c in enumerate(choices)]
    default = raw.get("Default")
    if default is not None and not isinstance(default, str):
        raise SpecError(f"{where}/Default", "must be a state name")
    state.default = default


def _condition(choice: Any, where: str) -> tuple[jsonata.Template, str, Any, Any]:
    if not isinstance(choice, Mapping):
        raise SpecError(where, "a choice rule must be an object")
    for key in choice:
        if key not in ("Condition", "Next", "Assign", "Output", "Comment"):
            raise SpecError(f"{where}/{key}", "is not a field of a JSONata choice rule")
    if "Condition" not in choice or not isinstance(choice.get("Next"), str):
        raise SpecError(where, "a JSONata choice rule needs Condition and Next")
    condition = jsonata.compile_template(choice["Condition"], f"{where}/Condition")
    assign = (
        jsonata.compile_template(_assign(choice, where), f"{where}/Assign")
        if "Assign" in choice
        else None
    )
    output = (
        jsonata.compile_template(choice["Output"], f"{where}/Output")
        if "Output" in choice
        else None
    )
    return condition, choice["Next"], assign, output


def _compile_wait(state: State) -> None:
    raw, where = state.raw, state.where
    given = [key for key in ("Seconds", "SecondsPath", "Timestamp", "TimestampPath") if key in raw]
    if len(given) != 1:
        raise SpecError(
            where,
            "a Wait state needs exactly one of Seconds, SecondsPath, Timestamp, TimestampPath",
        )
    key = given[0]
    value = raw[key]
    if state.language == JSONATA and jsonata.is_jsonata(value):
        state.templates[key] = jsonata.compile_template(value, f"{where}/{key}")
    elif key.endswith("Path"):
        _check_path(value, f"{where}/{key}", reference=True)
    elif key == "Seconds" and (not _is_int(value) or value < 0 or value > 99999999):
        raise SpecError(f"{where}/Seconds", "must be an integer from 0 to 99999999")
    elif key == "Timestamp" and not isinstance(value, str):
        raise SpecError(f"{where}/Timestamp", "must be an RFC 3339 timestamp string")


def _compile_fail(state: State) -> None:
    raw, where = state.raw, state.where
    for name in ("Error", "Cause"):
        if name in raw and f"{name}Path" in raw:
            raise SpecError(where, f"{name} and {name}Path cannot both be set")
        if state.language == JSONATA and name in raw and jsonata.is_jsonata(raw[name]):
            state.templates[name] = jsonata.compile_template(raw[name], f"{where}/{name}")
        path_key = f"{name}Path"
        if path_key in raw:
            state.templates[path_key] = compile_payload(
                {"v.$": raw[path_key]}, f"{where}/{path_key}"
            )


def _compile_parallel(state: State) -> None:
    branches = state.raw.get("Branches")
    where = f"{state.where}/Branches"
    if not isinstance(branches, list) or not branches:
        raise SpecError(where, "a Parallel state needs a non-empty Branches array")
    state.branches = [
        _sub_machine(b, f"{where}/{i}", state.language) for i, b in enumerate(branches)
    ]


def _compile_map(state: State) -> None:
    processor_key = "ItemProcessor" if "ItemProcessor" in state.raw else "Iterator"
    if processor_key not in state.raw:
        raise SpecError(state.where, "a Map state needs an ItemProcessor")
    if "ItemProcessor" in state.raw and "Iterator" in state.raw:
        raise SpecError(state.where, "ItemProcessor and Iterator cannot both be set")
    processor = state.raw[processor_key]
    where = f"{state.where}/{processor_key}"
    if not isinstance(processor, Mapping):
        raise SpecError(where, "must be an object with StartAt and States")
    config = processor.get("ProcessorConfig", {})
    if not isinstance(config, Mapping):
        raise SpecError(f"{where}/ProcessorConfig", "must be an object")
    mode = config.get("Mode", "INLINE")
    if mode not in ("INLINE", "DISTRIBUTED"):
        raise SpecError(f"{where}/ProcessorConfig/Mode", "must be INLINE or DISTRIBUTED")
    state.distributed = mode == "DISTRIBUTED"
    child = {k: v for k, v in processor.items() if k != "ProcessorConfig"}
    state.processor = _sub_machine(child, where, state.language)
    compile_map(state)


def _sub_machine(doc: Any, where: str, outer_language: str) -> Machine:
    if not isinstance(doc, Mapping):
        raise SpecError(where, "must be an object with StartAt and States")
    allowed = {"StartAt", "States", "Comment", "QueryLanguage", "ProcessorConfig"}
    _refuse_unknown(doc, allowed, where)
    language = doc.get("QueryLanguage", outer_language)
    if outer_language == JSONATA and language == JSONPATH:
        raise SpecError(f"{where}/QueryLanguage", "cannot be JSONPath inside a JSONata state")
    return _machine(doc, where, language)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_KINDS = {
    "Pass": _compile_pass,
    "Task": _compile_task,
    "Choice": _compile_choice,
    "Wait": _compile_wait,
    "Fail": _compile_fail,
    "Parallel": _compile_parallel,
    "Map": _compile_map,
}
