"""One JSON encoder with AWS's rules (runner/jsontext.py), and what a value JSON has no form
for does to a run: NaN in a Python run input fails the batch holding it, never a file."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from runner import MapSpec, load_results, run
from runner.batcher import Batch, Failed, batch_items, encode_input
from runner.jsontext import dumps

ROOT = Path(__file__).resolve().parent.parent
NAN = float("nan")


def strict_loads(text: str) -> Any:
    """``json.loads`` that refuses NaN/Infinity, as AWS and strict parsers do."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


# -- the encoder ---------------------------------------------------------------------------------
def test_dumps_is_aws_compact_json_with_unicode_as_it_is() -> None:
    value = {"Items": [1, 2.5, "café", None, True], "BatchInput": {"k": "日本"}}
    assert dumps(value) == '{"Items":[1,2.5,"café",null,true],"BatchInput":{"k":"日本"}}'
    assert strict_loads(dumps(value)) == value


@pytest.mark.parametrize("value", [NAN, math.inf, -math.inf, {"a": [1, {"b": NAN}]}])
def test_dumps_refuses_nan_and_infinity(value: Any) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        dumps(value)


def test_dumps_refuses_what_json_has_no_form_for() -> None:
    with pytest.raises(TypeError, match="set"):
        dumps({"a": {1, 2}})
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="Circular"):
        dumps(cycle)


def test_runner_has_one_compact_json_encoder() -> None:
    """Child inputs, outputs, journal texts and result files all go through jsontext: no other
    module of runner/ builds a compact encoder of its own (which could disagree on NaN)."""
    compact = re.compile(r"""separators=\(\s*["'],["']\s*,\s*["']:["']\s*\)""")
    found = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "runner").rglob("*.py"))
        if compact.search(path.read_text()) or "JSONEncoder(" in path.read_text()
    ]
    assert found == ["runner/jsontext.py"]


# -- an item JSON cannot encode fails its batch --------------------------------------------------
def test_encode_input_nulls_the_item_and_fails_the_batch_naming_it() -> None:
    batch = Batch(3, 20, [{"n": 1}, {"n": NAN}, {"n": 3}, math.inf])
    text = encode_input(batch)
    assert strict_loads(text) == {"Items": [{"n": 1}, None, {"n": 3}, None]}
    assert batch.error == "States.Runtime"
    assert batch.cause is not None and batch.cause.startswith("item 21 cannot be encoded as JSON")


def test_encode_input_leaves_a_good_batch_and_an_earlier_failure_alone() -> None:
    good = Batch(0, 0, [1, "two"], batch_input={"b": 1})
    assert encode_input(good) == '{"BatchInput":{"b":1},"Items":[1,"two"]}'
    assert (good.error, good.cause) == (None, None)
    selected = Batch(1, 5, [None, {1}], error="States.Runtime", cause="ItemSelector: ...")
    assert encode_input(selected) == '{"Items":[null,null]}'
    assert selected.cause == "ItemSelector: ..."  # the first failure is the one reported


def test_encode_input_without_an_item_batcher_nulls_the_lone_item() -> None:
    batch = Batch(7, 7, [NAN], batched=False)
    assert encode_input(batch) == "null"
    assert batch.error == "States.Runtime" and "item 7 " in (batch.cause or "")


def test_a_batch_input_json_cannot_encode_still_raises() -> None:
    with pytest.raises(ValueError):
        encode_input(Batch(0, 0, [1], batch_input={"x": NAN}))


def test_the_byte_limited_batcher_fails_the_batch_of_a_nan_item() -> None:
    """MaxInputBytesPerBatch encodes every item to measure it: a NaN is found right there."""
    pairs = list(enumerate([1, 2, NAN, 4, 5]))
    batches = list(batch_items(pairs, max_items=None, max_bytes=20, batch_input=None))
    # {"Items":[1,2,null]} is 20 bytes: 4 starts the next batch
    assert [(b.first_index, b.items) for b in batches] == [(0, [1, 2, None]), (3, [4, 5])]
    assert batches[0].error == "States.Runtime" and batches[1].error is None
    assert (batches[0].cause or "").startswith("item 2 cannot be encoded as JSON")


def test_the_byte_limited_batcher_keeps_a_selection_failure_first() -> None:
    pairs = [(0, Failed("States.Runtime", "ItemSelector: first")), (1, NAN)]
    (batch,) = batch_items(pairs, max_items=None, max_bytes=100)
    assert (batch.items, batch.cause) == ([None, None], "ItemSelector: first")


# -- through a run -------------------------------------------------------------------------------
def result_texts(manifest_url: str) -> list[str]:
    folder = Path(manifest_url).parent
    return [path.read_text() for path in sorted(folder.glob("*_*.json"))]  # not the manifest


@pytest.mark.parametrize(
    ("batcher", "held"),
    [
        ({"MaxItemsPerBatch": 2}, [0, 1]),
        (None, [1]),
        ({"MaxInputBytesPerBatch": 1000}, [0, 1, 2, 3]),
    ],
    ids=["items", "no-batcher", "bytes"],
)
def test_nan_in_the_run_input_fails_the_batch_holding_it(
    tmp_path: Path, batcher: dict[str, Any] | None, held: list[int]
) -> None:
    """NaN can only come from a Python run input (readers refuse it). As an ItemSelector path
    that selects nothing: the batch holding it fails with States.Runtime naming the item, the
    item stands as null in its recorded Input, every other batch runs; no file holds NaN."""
    fields: dict[str, Any] = {"Worker": "echo", "ItemsPath": "$.items"}
    if batcher is not None:
        fields["ItemBatcher"] = batcher
    spec = MapSpec.from_dict({**fields, "ToleratedFailureCount": 5})
    result = run(
        spec,
        dest=str(tmp_path / "out"),
        run_input={"items": [1, NAN, 3, 4]},
        executor="inline",
    )
    assert result.succeeded, (result.error, result.cause)
    frame = load_results(result.manifest_url)
    failed = frame[frame["status"] == "FAILED"]
    assert list(failed["index"]) == held
    assert set(failed["error"]) == {"States.Runtime"}
    assert all(cause.startswith("item 1 cannot be encoded as JSON") for cause in failed["cause"])
    assert frame.loc[frame["index"] == 1, "item"].iloc[0] is None
    assert set(frame["status"]) - {"FAILED"} <= {"SUCCEEDED"}
    assert len(frame) == 4  # every item is in the results
    for text in result_texts(result.manifest_url):
        for record in strict_loads(text):
            strict_loads(record["Input"])  # plain JSON: no NaN anywhere


def test_nan_selected_from_the_run_input_fails_alike_on_shard_reading(tmp_path: Path) -> None:
    """Workers that read their own shards encode the child input where they run: the same
    batches fail with the same cause as on driver-side reading."""
    source = tmp_path / "items.jsonl"
    source.write_text("".join(json.dumps({"n": n}) + "\n" for n in range(5)))
    spec = MapSpec.from_dict(
        {
            "Worker": "echo",
            "Source": str(source),
            "ItemSelector": {"n.$": "$$.Map.Item.Value.n", "limit.$": "$.limit"},
            "ItemBatcher": {"MaxItemsPerBatch": 2},
            "ToleratedFailurePercentage": 100,
        }
    )
    frames = []
    for shard_reading in (False, True):
        result = run(
            spec,
            dest=str(tmp_path / str(shard_reading)),
            run_input={"limit": math.inf},
            executor="threads",
            shard_reading=shard_reading,
        )
        assert result.succeeded and result.shard_reading == shard_reading, result.cause
        frame = load_results(result.manifest_url)
        frames.append(list(zip(frame["index"], frame["status"], frame["cause"], strict=True)))
    assert frames[0] == frames[1]
    assert [cause.partition(" cannot")[0] for _, _, cause in frames[0]] == [
        "item 0", "item 0", "item 2", "item 2", "item 4"
    ]  # fmt: skip
