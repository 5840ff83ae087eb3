"""The Map state at run time: inline iterations, and distributed ones over its own input.

Inline (``ProcessorConfig.Mode: INLINE``, the default): items come from the state's input
(``ItemsPath`` or JSONata ``Items``), each goes through ``ItemSelector`` (legacy
``Parameters``) with ``$$.Map.Item.Index``/``Value`` in its context, and runs the ItemProcessor
with a variable scope that reads the Map's; up to ``MaxConcurrency`` at once (0: no limit);
the first failing iteration fails the state with its error. The output is the iterations'
outputs in item order.

Distributed maps with an ItemReader, a ResultWriter or tolerated failures are the engine's
(journal, executors, results): they go to ``ExecutionConfig.distributed_map``. A distributed
Map over items of its own input runs here too, with the child's own variable scope (a
distributed child cannot read its parent's variables) and its ItemBatcher.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from runner import jsontext
from runner.errors import StatesError
from runner.states.jsonpath import RUNTIME, Scope, compact_json, compile_payload, select
from runner.states.mapfields import ENGINE_FIELDS
from runner.states.runtime import Env, Variables, run_concurrently

if TYPE_CHECKING:
    from runner.states.runtime import StateFrame

__all__ = ["run_map_state"]


def run_map_state(frame: StateFrame, state_input: Any) -> list[Any] | Any:
    state = frame.state
    hook = frame.env.run.config.distributed_map
    if state.distributed and any(key in state.raw for key in ENGINE_FIELDS):
        if hook is None:
            raise StatesError(
                RUNTIME,
                "This distributed Map reads or writes through the engine (ItemReader, "
                "ResultWriter or tolerated failures) and no engine was given to run it",
            )
        return hook(frame, state_input)
    effective, items = _items(frame, state_input)
    history = frame.env.run.history
    history.add("MapStateStarted", name=state.name, length=len(items))
    inputs = [
        _item_input(frame, effective, state_input, index, item) for index, item in enumerate(items)
    ]
    if state.distributed and "ItemBatcher" in state.raw:
        inputs = _batches(frame, effective, inputs)
    results = _iterate(frame, inputs, _max_concurrency(frame, effective, state_input))
    history.add("MapStateSucceeded", name=state.name)
    return results


def _items(frame: StateFrame, state_input: Any) -> tuple[Any, list[Any]]:
    state = frame.state
    if state.language == "JSONata":
        template = state.templates.get("Items")
        items = (
            template.evaluate(frame.states(state_input), frame.env.variables.flat())
            if template is not None
            else state_input
        )
        effective = state_input
    else:
        effective = state_input
        if state.input_path != "$":
            effective = select(state.input_path, frame.scope(state_input), "InputPath")
        path = state.raw.get("ItemsPath", "$")
        items = effective if path == "$" else select(path, frame.scope(effective), "ItemsPath")
    if not isinstance(items, list):
        field = "Items" if state.language == "JSONata" else "ItemsPath"
        raise StatesError(
            RUNTIME,
            f"The {field} of a Map state must select a JSON array (got {compact_json(items)})",
        )
    return effective, items


def _item_context(frame: StateFrame, index: int, item: Any) -> dict[str, Any]:
    return {**frame.context, "Map": {"Item": {"Index": index, "Value": item}}}


def _item_input(frame: StateFrame, effective: Any, state_input: Any, index: int, item: Any) -> Any:
    selector = frame.state.templates.get("ItemSelector")
    if selector is None:
        return item
    context = _item_context(frame, index, item)
    variables = frame.env.variables.flat()
    if frame.state.language == "JSONata":
        return selector.evaluate({"input": state_input, "context": context}, variables)
    return selector.evaluate(Scope(effective, context, variables))


def _batches(frame: StateFrame, effective: Any, inputs: list[Any]) -> list[Any]:
    """ItemBatcher over items of the input: ``{"Items": [...], **BatchInput}`` per batch."""
    batcher = frame.state.raw["ItemBatcher"]
    if not isinstance(batcher, Mapping):
        raise StatesError(RUNTIME, "ItemBatcher must be an object")
    most = batcher.get("MaxItemsPerBatch")
    if "MaxItemsPerBatchPath" in batcher:
        most = select(
            batcher["MaxItemsPerBatchPath"], frame.scope(effective), "MaxItemsPerBatchPath"
        )
    max_bytes = batcher.get("MaxInputBytesPerBatch")
    batch_input = batcher.get("BatchInput", {})
    if isinstance(batch_input, Mapping) and frame.state.language == "JSONPath":
        batch_input = compile_payload(batch_input, "ItemBatcher/BatchInput").evaluate(
            frame.scope(effective)
        )
    batches: list[Any] = []
    current: list[Any] = []
    size = 0
    for value in inputs:
        value_size = len(jsontext.dumps(value).encode())
        full = most is not None and len(current) >= most
        too_big = max_bytes is not None and current and size + value_size > max_bytes
        if full or too_big:
            batches.append({**batch_input, "Items": current})
            current, size = [], 0
        current.append(value)
        size += value_size
    if current:
        batches.append({**batch_input, "Items": current})
    return batches


def _max_concurrency(frame: StateFrame, effective: Any, state_input: Any) -> int:
    state = frame.state
    if "MaxConcurrencyPath" in state.raw:
        value = select(
            state.raw["MaxConcurrencyPath"], frame.scope(effective), "MaxConcurrencyPath"
        )
    elif "MaxConcurrency" in state.templates:
        value = state.templates["MaxConcurrency"].evaluate(
            frame.states(state_input), frame.env.variables.flat()
        )
    else:
        value = state.raw.get("MaxConcurrency", 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise StatesError(
            RUNTIME, f"MaxConcurrency must be a non-negative integer (got {compact_json(value)})"
        )
    return value


def _iterate(frame: StateFrame, inputs: list[Any], limit: int) -> list[Any]:
    state = frame.state
    processor = state.processor
    assert processor is not None
    env = frame.env

    def one(index: int, value: Any) -> Any:
        context = {"Map": {"Item": {"Index": index, "Value": value}}}
        if state.distributed:  # a distributed child reads none of its parent's variables
            child = Env(env.run, Variables(None), context)
        else:
            child = env.child(context)
        env.run.history.add("MapIterationStarted", name=state.name, index=index)
        output = env.run.run_machine(processor, value, child)
        env.run.history.add("MapIterationSucceeded", name=state.name, index=index)
        return output

    calls = [_bind(one, index, value) for index, value in enumerate(inputs)]
    try:
        return run_concurrently(calls, limit)
    except StatesError:
        env.run.history.add("MapStateFailed", name=state.name)
        raise


def _bind(one: Any, index: int, value: Any) -> Any:
    return lambda: one(index, value)
