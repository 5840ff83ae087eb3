"""A Map state's own fields, checked and compiled when the definition loads (the Map state,
ItemReader, ItemBatcher and ResultWriter pages of the developer guide)."""

from __future__ import annotations

import re
from typing import Any

from runner.errors import SpecError
from runner.states import jsonata
from runner.states.jsonpath import compile_payload

__all__ = ["ENGINE_FIELDS", "compile_map"]

_DISTRIBUTED_ONLY = (
    "ItemReader",
    "ItemBatcher",
    "ResultWriter",
    "ToleratedFailurePercentage",
    "ToleratedFailurePercentagePath",
    "ToleratedFailureCount",
    "ToleratedFailureCountPath",
    "Label",
)
#: Label: at most 40 characters, none of whitespace, brackets, wildcards, special characters
#: or control characters (the Map state page, "Label").
_LABEL_REFUSED = re.compile(r"[\s?*<>{}\[\]:;,\\|^~$#%&`\"\x00-\x1f\x7f-\x9f]")
ENGINE_FIELDS = ("ItemReader", "ResultWriter", *_DISTRIBUTED_ONLY[3:7])


def compile_map(state: Any) -> None:
    """Check and compile a Map state's fields into ``state`` (a definition ``State``, not
    named here: the definition imports this module)."""
    raw, where = state.raw, state.where
    if not state.distributed:
        for key in _DISTRIBUTED_ONLY:
            if key in raw:
                raise SpecError(f"{where}/{key}", "is a field of a distributed Map only")
    if "Label" in raw:
        label = raw["Label"]
        if not isinstance(label, str) or len(label) > 40 or _LABEL_REFUSED.search(label):
            raise SpecError(
                f"{where}/Label",
                "must be at most 40 characters, with no whitespace, brackets, wildcards, "
                "special or control characters",
            )
    if "ItemSelector" in raw and "Parameters" in raw:
        raise SpecError(where, "ItemSelector and its legacy name Parameters cannot both be set")
    selector = raw.get("ItemSelector", raw.get("Parameters"))
    selector_key = "ItemSelector" if "ItemSelector" in raw else "Parameters"
    if state.language == "JSONPath":
        if "ItemsPath" in raw:
            compile_payload({"p.$": raw["ItemsPath"]}, f"{where}/ItemsPath")
        if selector is not None:
            state.templates["ItemSelector"] = compile_payload(selector, f"{where}/{selector_key}")
    else:
        if "Items" in raw:
            state.templates["Items"] = jsonata.compile_template(raw["Items"], f"{where}/Items")
        if selector is not None:
            state.templates["ItemSelector"] = jsonata.compile_template(
                selector, f"{where}/ItemSelector"
            )
    _compile_concurrency(state)


def _compile_concurrency(state: Any) -> None:
    raw, where = state.raw, state.where
    value = raw.get("MaxConcurrency")
    if value is None:
        return
    if state.language == "JSONata" and jsonata.is_jsonata(value):
        state.templates["MaxConcurrency"] = jsonata.compile_template(
            value, f"{where}/MaxConcurrency"
        )
    elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SpecError(f"{where}/MaxConcurrency", "must be a non-negative integer")
