"""JSON items: the elements of an array, or the key/value pairs of an object, streamed with ijson.

AWS's rules (see ``/work/shared/reference/distributed-map.md``): the file, or the value that
``ItemsPointer`` (an RFC 6901 JSON Pointer such as ``/inventory/items``) points to, must be an
array, whose elements are the items, or an object, whose pairs are the items (each yielded as a
:class:`KeyedValue`, so ``$$.Map.Item.Key`` is known). Anything else fails the read.

Nothing is loaded whole: ijson's C backend (yajl2_c) parses the bytes as they arrive and builds one
item at a time. Numbers come back as ``int`` or ``float`` (``use_float=True``), never ``Decimal``;
the price is that yajl rejects integers beyond 64 bits ("integer overflow").

shardmap's choices where AWS documents nothing:

- The whole document must be valid JSON, also after the array or object being iterated, so a
  truncated file always fails (after the items before the damage were produced).
- Errors name the item being read (``item 40``, counted from 0) or, outside the items, the block of
  bytes the parser was in (``bytes 65536-131072``); the reason quotes yajl's message and context.
- A UTF-8 byte-order mark at the start is ignored.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, Any

import ijson

from runner.errors import ReaderError, SpecError
from runner.readers._io import open_binary
from runner.readers.base import ItemReader, KeyedValue, ReaderConfig, Shard

__all__ = ["JsonReader", "pointer_tokens"]

# The fastest backend ijson found (yajl2_c when its wheel is installed, as the project pins).
_IJSON = ijson.get_backend(ijson.backend_name)
_BUF_SIZE = 64 * 1024  # bytes per parser read; also the precision of byte positions in errors
_EVENTS_PER_PUMP = 4096  # events handed to the item builder per batch (bounds buffered items)
_WHITESPACE = b" \t\r\n"
_BOM = b"\xef\xbb\xbf"
_TYPE_NAMES = {
    "start_array": "an array",
    "start_map": "an object",
    "string": "a string",
    "number": "a number",
    "integer": "a number",
    "double": "a number",
    "boolean": "a boolean",
    "null": "null",
}
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")  # RFC 6901: no sign, no leading zeros


class JsonReader(ItemReader):
    """Stream the items of a JSON array or object, at the root or under ``ItemsPointer``.

    >>> reader = JsonReader(ReaderConfig(input_type="JSON", items_pointer="/inventory/items"))
    >>> list(reader.iter_items("s3://bucket/stock.json"))  # doctest: +SKIP
    [{'sku': 'A1', 'count': 3}, {'sku': 'B2', 'count': 0}]
    """

    input_type = "JSON"

    def __init__(self, config: ReaderConfig) -> None:
        super().__init__(config)
        self._tokens = pointer_tokens(config.items_pointer)

    def read_shard(self, shard: Shard) -> Iterator[Any]:
        """The items of ``shard.url``: values of an array, :class:`KeyedValue` of an object."""
        with open_binary(shard.url, self.config.storage_options) as raw:
            source = _Source(raw)
            first = source.first_byte()
            if not first:
                raise ReaderError(
                    shard.url, "JSON file is empty; it must hold an array or an object"
                )
            if self._tokens:
                yield from _pointed_items(source, shard.url, self.config.items_pointer or "")
            else:
                yield from _root_items(source, first, shard.url)


def pointer_tokens(pointer: str | None) -> tuple[str, ...]:
    """The reference tokens of an RFC 6901 JSON Pointer; ``None`` or ``""`` is the whole document.

    >>> pointer_tokens("/inventory/items")
    ('inventory', 'items')
    >>> pointer_tokens("/a~1b/m~0n")
    ('a/b', 'm~n')
    """
    if not pointer:
        return ()
    if not pointer.startswith("/"):
        raise SpecError("ItemReader.ReaderConfig.ItemsPointer", "must start with '/'")
    tokens = pointer[1:].split("/")
    if any(re.search(r"~(?![01])", token) for token in tokens):
        raise SpecError(
            "ItemReader.ReaderConfig.ItemsPointer", "'~' must be followed by 0 or 1 (~0, ~1)"
        )
    # ~1 first: "~01" is the token "~1", not "/".
    return tuple(token.replace("~1", "/").replace("~0", "~") for token in tokens)


class _Source:
    """The byte stream ijson reads: drops a BOM, peeks the first value byte, tracks position."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._head = b""  # bytes peeked but not yet handed to the parser
        self.window = (0, 0)  # byte range of the last block handed out

    def first_byte(self) -> bytes:
        """The first byte that is not whitespace (``b""`` for an empty document). Call first."""
        block = self._raw.read(_BUF_SIZE).removeprefix(_BOM)
        skipped = 0
        while block and not block.lstrip(_WHITESPACE):
            skipped += len(block)
            block = self._raw.read(_BUF_SIZE)
        self._head = block.lstrip(_WHITESPACE)
        skipped += len(block) - len(self._head)
        self.window = (skipped, skipped)
        return self._head[:1]

    def read(self, size: int) -> bytes:
        if size == 0:  # ijson probes read(0) to tell bytes from text
            return b""
        if self._head:
            data, self._head = self._head, b""
        else:
            data = self._raw.read(size)
        if data:  # at the end, keep the last block: that is where a truncated file broke off
            end = self.window[1]
            self.window = (end, end + len(data))
        return data


def _root_items(source: _Source, first: bytes, url: str) -> Iterator[Any]:
    if first == b"[":
        items = _IJSON.items(source, "item", use_float=True, buf_size=_BUF_SIZE)
        yield from _guarded(items, source, url)
    elif first == b"{":
        pairs = _IJSON.kvitems(source, "", use_float=True, buf_size=_BUF_SIZE)
        yield from _guarded(map(_keyed, pairs), source, url)
    else:
        found = _TYPE_NAMES[_first_event(source, url)[1]]
        raise ReaderError(url, f"JSON file must hold an array or an object, found {found}")


def _pointed_items(source: _Source, url: str, pointer: str) -> Iterator[Any]:
    """Items under ``pointer``: walk the parse events to the target, then build its items in C."""
    events = _IJSON.parse(source, use_float=True, buf_size=_BUF_SIZE)
    try:
        prefix, event = _seek(events, pointer)
    except ijson.JSONError as exc:
        raise _invalid(url, exc, _bytes(source)) from exc
    except _Missing as exc:
        raise ReaderError(url, f"ItemsPointer {pointer!r} does not exist: {exc}") from None
    if event == "start_array":
        build, end = _IJSON.items_basecoro, "end_array"
        # The prefix of an element: ijson joins path segments with "." and names elements "item".
        items = _pump(events, (prefix, end, None), build, prefix + ".item")
    elif event == "start_map":
        build, end = _IJSON.kvitems_basecoro, "end_map"
        items = map(_keyed, _pump(events, (prefix, end, None), build, prefix))
    else:
        found = _TYPE_NAMES[event]
        raise ReaderError(
            url, f"ItemsPointer {pointer!r} must point to an array or an object, found {found}"
        )
    yield from _guarded(items, source, url)
    try:
        deque(events, maxlen=0)  # the rest of the document must parse too
    except ijson.JSONError as exc:
        raise _invalid(url, exc, _bytes(source)) from exc


def _pump(
    events: Iterator[tuple[str, str, Any]],
    end: tuple[str, str, None],
    build: Callable[..., Any],
    prefix: str,
) -> Iterator[Any]:
    """Feed the target's events to ijson's C item builder, ``_EVENTS_PER_PUMP`` at a time.

    ``iter(events.__next__, end)`` stops at the target's own closing event: a nested value's
    prefix is always longer than its container's, so the first ``end`` seen is the right one.
    ``deque(map(send, ...))`` moves the events without a Python frame per event, which keeps
    this path within about 2.5x of ``ijson.items`` on a whole file.
    """
    built: ijson.sendable_list = ijson.sendable_list()
    send = build(built, prefix).send
    target = iter(events.__next__, end)
    while True:
        try:
            fed = deque(map(send, itertools.islice(target, _EVENTS_PER_PUMP)), maxlen=1)
            if not fed:
                send(end)  # the object builder hands over its last pair when the object ends
        except ijson.JSONError:
            yield from built  # items completed before the damage are still produced
            raise
        yield from built
        built.clear()
        if not fed:
            return


class _Missing(LookupError):
    """The pointer leads nowhere; the message says where it stopped."""


def _seek(events: Iterator[tuple[str, str, Any]], pointer: str) -> tuple[str, str]:
    """Consume events up to the start of the value ``pointer`` names: ``(prefix, event)``."""
    tokens = pointer_tokens(pointer)
    prefix, event, _ = next(events)  # the root value
    for depth, token in enumerate(tokens):
        here = "/" + "/".join(pointer[1:].split("/")[:depth]) if depth else "the root"
        if event == "start_map":
            found = _enter_key(events, token)
            if found is None:
                raise _Missing(f"no key {token!r} in the object at {here}")
        elif event == "start_array":
            found = _enter_index(events, token)
            if found is None:
                raise _Missing(f"no element {token!r} in the array at {here}")
        else:
            raise _Missing(f"the value at {here} is {_TYPE_NAMES[event]}, not a container")
        prefix, event = found
    return prefix, event


def _enter_key(events: Iterator[tuple[str, str, Any]], token: str) -> tuple[str, str] | None:
    for _, event, key in events:
        if event == "end_map":
            return None
        prefix, event, _ = next(events)  # after a map_key: the start of its value
        if key == token:
            return prefix, event
        _skip(events, prefix, event)
    return None


def _enter_index(events: Iterator[tuple[str, str, Any]], token: str) -> tuple[str, str] | None:
    if not _ARRAY_INDEX.fullmatch(token):  # includes "-", the element after the last
        return None
    for _ in range(int(token)):
        prefix, event, _ = next(events)
        if event == "end_array":
            return None
        _skip(events, prefix, event)
    prefix, event, _ = next(events)
    return None if event == "end_array" else (prefix, event)


def _skip(events: Iterator[tuple[str, str, Any]], prefix: str, event: str) -> None:
    """Consume the rest of a value whose first event was ``(prefix, event)``."""
    if event in ("start_map", "start_array"):
        end = "end_map" if event == "start_map" else "end_array"
        deque(iter(events.__next__, (prefix, end, None)), maxlen=0)


def _first_event(source: _Source, url: str) -> tuple[str, str, Any]:
    try:
        first: tuple[str, str, Any] = next(_IJSON.parse(source, use_float=True, buf_size=_BUF_SIZE))
        return first
    except ijson.JSONError as exc:
        raise _invalid(url, exc, _bytes(source)) from exc


def _guarded(items: Iterator[Any], source: _Source, url: str) -> Iterator[Any]:
    """``items``, with a parse error turned into a ReaderError naming the item being read."""
    count = 0
    try:
        for count, item in enumerate(items, start=1):  # noqa: B007 - count is read after the loop
            yield item
    except ijson.JSONError as exc:
        raise _invalid(url, exc, f"item {count}", _bytes(source)) from exc


def _keyed(pair: tuple[str, Any]) -> KeyedValue:
    return KeyedValue(pair[0], pair[1])


def _bytes(source: _Source) -> str:
    start, end = source.window
    return f"bytes {start}-{end}"


def _invalid(url: str, exc: Exception, position: str, where: str | None = None) -> ReaderError:
    """yajl's multi-line message, made one line: ``parse error: ... near '<context>'``."""
    message = exc.args[0] if exc.args else str(exc)
    if isinstance(message, bytes):  # yajl2_c reports invalid UTF-8 as bytes
        message = message.decode("utf-8", "replace")
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    reason = "invalid JSON: " + (lines[0] if lines else type(exc).__name__)
    if len(lines) > 1 and not lines[1].startswith("(right here)"):
        reason += f" near {lines[1]!r}"
    if where:
        reason += f" (in {where})"
    return ReaderError(url, reason, position)
