"""Child execution names that map back to source items: ``<run8>-b<batch>-i<first>-n<count>``."""

from __future__ import annotations

import re

_MAX_NAME = 80  # AWS execution-name limit
_NAME_TAIL = re.compile(r"-b\d+-i(\d+)-n(\d+)\Z")


# -- child names ---------------------------------------------------------------------------


def child_name(map_run_id: str, batch_number: int, first_index: int, item_count: int) -> str:
    """Name a child execution so its items can be found again from its record alone.

    Parameters
    ----------
    map_run_id
        The Map Run id; its first 8 name-safe characters prefix the name.
    batch_number, first_index, item_count
        Which batch, the source index of its first item, and how many items it holds.

    Returns
    -------
    str
        At most 80 characters of ``[A-Za-z0-9_-]``, valid as an AWS execution name.

    Examples
    --------
    >>> child_name("3a1f5e2c-9b7d-3c4e", 3, 200, 100)
    '3a1f5e2c-b000003-i200-n100'
    """
    if min(batch_number, first_index, item_count) < 0:
        raise ValueError("batch_number, first_index and item_count must be >= 0")
    prefix = re.sub(r"[^A-Za-z0-9_-]", "", map_run_id)[:8] or "map"
    name = f"{prefix}-b{batch_number:06d}-i{first_index}-n{item_count}"
    if len(name) > _MAX_NAME:
        raise ValueError(f"child name longer than {_MAX_NAME} characters: {name}")
    return name


def parse_child_name(name: str | None) -> tuple[int, int] | None:
    """``(first_index, item_count)`` from a name made by :func:`child_name`, else ``None``.

    Examples
    --------
    >>> parse_child_name("3a1f5e2c-b000003-i200-n100")
    (200, 100)
    >>> parse_child_name("da4e9fc7-abab-3b27-9a77-a277e463b709") is None
    True
    """
    match = _NAME_TAIL.search(name) if isinstance(name, str) else None
    return (int(match[1]), int(match[2])) if match else None
