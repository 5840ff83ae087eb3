"""JSON text as Step Functions writes it: the one encoder for child inputs, worker outputs,
journal rows and result files.

AWS's ``Input``/``Output`` strings are compact (no space after ``,`` or ``:``) and keep
non-ASCII characters as they are. ``NaN`` and ``Infinity`` are not JSON: AWS rejects them and
so do strict parsers, so encoding one raises ``ValueError`` here rather than writing a file
that nothing else can read. This module imports nothing of shardmap (the bottom layer).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps"]

# Built once: json.dumps with options builds a new encoder per call, on the planner's hot path.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    """``value`` as compact JSON, AWS's form of a state's input and output.

    Raises ``ValueError`` for NaN, Infinity or a reference cycle and ``TypeError`` for a value
    JSON has no form for (a set, bytes, ...).

    >>> dumps({"Items": [1, "é"], "BatchInput": None})
    '{"Items":[1,"é"],"BatchInput":null}'
    >>> dumps(float("nan"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Out of range float values are not JSON compliant...
    """
    return _ENCODER.encode(value)
