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
- Containers nested deeper than :data:`~runner.readers.base.MAX_NESTING_DEPTH` (512, counted from
  the document's root) fail the read at the byte where the limit is passed, after the items before
  it were produced. :class:`JsonDepth` watches the bytes on their way to the parser; it costs a
  few percent of a read, where ijson's memory grows with the square of the depth.
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
from runner.readers.base import (
    MAX_NESTING_DEPTH,
    ItemReader,
    KeyedValue,
    ReaderConfig,
    Shard,
    placed,
)

__all__ = [
    "DepthLimitedFile",
    "JsonDepth",
    "JsonReader",
    "check_depth",
    "pointer_tokens",
    "too_deep",
]

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
_PREMATURE_EOF = "premature EOF"  # yajl's words for a document that stops early


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
        source: _Source | None = None
        try:
            with open_binary(shard.url, self.config.storage_options) as raw:
                source = _Source(raw)
                first = source.first_byte()
                if not first:
                    raise ReaderError(
                        shard.url, "JSON file is empty; it must hold an array or an object",
                        f"byte {source.window[0]}",
                    )  # fmt: skip
                if self._tokens:
                    yield from _pointed_items(source, shard.url, self.config.items_pointer or "")
                else:
                    yield from _root_items(source, first, shard.url)
        except ReaderError as exc:  # a broken .gz knows no position: the block being read
            raise placed(exc, _bytes(source) if source else "byte 0") from exc.__cause__


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


class JsonDepth:
    """The nesting depth of a JSON text fed block by block, found without parsing it.

    :meth:`feed` returns the offset, in the block, of the first ``[`` or ``{`` that opens a
    container deeper than ``limit`` (counted from the root: ``[[1]]`` is 2 deep), or ``None``.
    Exact for valid JSON, whatever the block boundaries; for invalid JSON the parser fails at
    or before the damage anyway. The work is done by ``bytes`` methods in C: escapes and
    strings are dropped, the brackets left are counted, and only a block that could pass the
    limit is walked bracket by bracket.

    >>> depth = JsonDepth(limit=3)
    >>> depth.feed(b'[["[[[", [') is None, depth.feed(b'1, [2]]]')
    (True, 3)
    """

    def __init__(self, limit: int = MAX_NESTING_DEPTH) -> None:
        self.limit = limit
        self.depth = 0  # containers open at the end of the bytes fed so far
        self.in_string = False
        self.escaped = False  # the last byte fed was a backslash escaping the next one

    def feed(self, data: bytes) -> int | None:
        """Account for ``data``; the offset in it of the first container past the limit."""
        before = (self.depth, self.in_string, self.escaped)
        text = self._unescaped(data[1:] if self.escaped else data)
        marks = text.translate(None, _NOT_STRUCTURE)
        if self.in_string:
            marks = b'"' + marks
        # Dropping two adjacent quotes changes no byte's in-string parity: empty strings, and
        # the close and open of strings holding no brackets, all go in one C pass.
        marks = marks.replace(b'""', b"")
        if b'"' in marks:
            parts = marks.split(b'"')
            self.in_string = len(parts) % 2 == 0
            marks = b"".join(parts[::2])
        else:
            self.in_string = False
        opened = marks.count(b"[") + marks.count(b"{")
        start = self.depth
        self.depth = start + 2 * opened - len(marks)
        if start + opened <= self.limit:
            return None
        # Dropping innermost pairs lowers the peak by at most two (one per replace): a cheap
        # bound first, the exact walk only when the bound cannot rule the limit out.
        inner = marks.replace(b"[]", b"").replace(b"{}", b"")
        peak = max(itertools.accumulate(map(_STEP.__getitem__, inner), initial=start))
        if peak + 2 <= self.limit:
            return None
        return self._walk(data, before)

    def _unescaped(self, data: bytes) -> bytes:
        """``data`` without its escaped quotes and backslashes; sets ``escaped`` for the next.

        In valid JSON a backslash only escapes, inside a string, and only ``\\"`` and ``\\\\``
        escape a byte that matters here. Backslashes are rare, so they are found one by one
        (each search in C); text full of them is unescaped with two ``replace`` passes instead.
        """
        self.escaped = False
        found = data.find(b"\\")
        if found < 0:
            return data
        pieces: list[bytes] = []
        start = 0
        for _ in range(_FEW_ESCAPES):
            if found == len(data) - 1:  # it escapes the first byte of the next block
                self.escaped = True
                break
            if data[found + 1] in _ESCAPED_MARKS:
                pieces.append(data[start:found])
                start = found + 2
            found = data.find(b"\\", found + 2)  # the byte after a backslash is escaped
            if found < 0:
                break
        else:  # many escapes: pair every backslash left to right, in C
            rest = data[start:].replace(b"\\\\", b"")
            self.escaped = rest.endswith(b"\\")
            pieces.append(rest.replace(b'\\"', b""))
            return b"".join(pieces)
        if not pieces:
            return data
        pieces.append(data[start:])
        return b"".join(pieces)

    def _walk(self, data: bytes, before: tuple[int, bool, bool]) -> int | None:
        """Byte by byte from the state before ``data``: exact, and only run near the limit."""
        depth, in_string, escaped = before
        for offset, byte in enumerate(data):
            if escaped:
                escaped = False
            elif in_string:
                if byte == _BACKSLASH:
                    escaped = True
                elif byte == _QUOTE:
                    in_string = False
            elif byte == _QUOTE:
                in_string = True
            elif byte in _OPENERS:
                depth += 1
                if depth > self.limit:
                    return offset
            elif byte in _CLOSERS:
                depth -= 1
        self.depth, self.in_string, self.escaped = depth, in_string, escaped
        return None


_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_ESCAPED_MARKS = frozenset(b'"\\')  # escaped, these two would change how quotes pair
_FEW_ESCAPES = 64  # backslashes searched one by one in a block before pairing them in bulk
_STEP = [0] * 256  # how a byte moves the depth
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1
_BACKSLASH, _QUOTE = ord("\\"), ord('"')
_OPENERS, _CLOSERS = frozenset(b"[{"), frozenset(b"]}")


def too_deep(url: str, offset: int, position: str | None = None) -> ReaderError:
    """The error for a container opened past the limit at byte ``offset`` (counted from 0)."""
    reason = f"JSON nested deeper than {MAX_NESTING_DEPTH} levels at byte {offset}"
    return ReaderError(url, reason, position or f"byte {offset}")


def check_depth(url: str, data: bytes) -> None:
    """Raise :class:`ReaderError` if the JSON text ``data`` nests past the limit.

    For documents read whole (manifests) before :func:`json.loads`, whose C decoder recurses.

    >>> check_depth("manifest.json", b'{"files": [[[]]]}')
    """
    offset = JsonDepth().feed(data)
    if offset is not None:
        raise too_deep(url, offset)


class DepthLimitedFile:
    """A binary file that raises :class:`ReaderError` (naming ``url`` and the byte) as soon as
    the JSON read through it nests past the limit: wrap what a streaming parser reads."""

    def __init__(self, raw: IO[bytes], url: str) -> None:
        self._raw = raw
        self._url = url
        self._depth = JsonDepth()
        self._offset = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        cut = self._depth.feed(data) if data else None
        if cut is not None:
            raise too_deep(self._url, self._offset + cut)
        self._offset += len(data)
        return data


class _Source:
    """The byte stream ijson reads: drops a BOM, peeks the first value byte, tracks position,
    and stops at the first container nested past the limit (``too_deep`` is then its offset:
    the parser, seeing the document end early, reports a premature EOF)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._head = b""  # bytes peeked but not yet handed to the parser
        self.window = (0, 0)  # byte range of the last block handed out
        self._depth = JsonDepth()
        self.too_deep: int | None = None

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
        if self.too_deep is not None:
            return b""
        if self._head:
            data, self._head = self._head, b""
        else:
            data = self._raw.read(size)
        if data:  # at the end, keep the last block: that is where a truncated file broke off
            end = self.window[1]
            cut = self._depth.feed(data)
            if cut is not None:
                self.too_deep, data = end + cut, data[:cut]
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
        raise ReaderError(
            url, f"JSON file must hold an array or an object, found {found}", _bytes(source)
        )


def _pointed_items(source: _Source, url: str, pointer: str) -> Iterator[Any]:
    """Items under ``pointer``: walk the parse events to the target, then build its items in C."""
    events = _IJSON.parse(source, use_float=True, buf_size=_BUF_SIZE)
    try:
        prefix, event = _seek(events, pointer)
    except ijson.JSONError as exc:
        raise _failure(url, exc, source, _bytes(source)) from exc
    except _Missing as exc:
        raise ReaderError(
            url, f"ItemsPointer {pointer!r} does not exist: {exc}", _bytes(source)
        ) from None
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
            url,
            f"ItemsPointer {pointer!r} must point to an array or an object, found {found}",
            _bytes(source),
        )
    yield from _guarded(items, source, url)
    try:
        deque(events, maxlen=0)  # the rest of the document must parse too
    except ijson.JSONError as exc:
        raise _failure(url, exc, source, _bytes(source)) from exc


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
        raise _failure(url, exc, source, _bytes(source)) from exc


def _guarded(items: Iterator[Any], source: _Source, url: str) -> Iterator[Any]:
    """``items``, with a parse error turned into a ReaderError naming the item being read."""
    count = 0
    try:
        for count, item in enumerate(items, start=1):  # noqa: B007 - count is read after the loop
            yield item
    except ijson.JSONError as exc:
        raise _failure(url, exc, source, f"item {count}", _bytes(source)) from exc


def _keyed(pair: tuple[str, Any]) -> KeyedValue:
    return KeyedValue(pair[0], pair[1])


def _bytes(source: _Source) -> str:
    start, end = source.window
    return f"bytes {start}-{end}"


def _failure(
    url: str, exc: Exception, source: _Source, position: str, where: str | None = None
) -> ReaderError:
    """The error for a parse that stopped: the depth limit when that is what cut it short."""
    if source.too_deep is not None and _PREMATURE_EOF in _message(exc):
        return too_deep(url, source.too_deep, position)
    return _invalid(url, exc, position, where)


def _message(exc: Exception) -> str:
    message = exc.args[0] if exc.args else str(exc)
    if isinstance(message, bytes):  # yajl2_c reports invalid UTF-8 as bytes
        message = message.decode("utf-8", "replace")
    return str(message)


def _invalid(url: str, exc: Exception, position: str, where: str | None = None) -> ReaderError:
    """yajl's multi-line message, made one line: ``parse error: ... near '<context>'``."""
    lines = [line.strip() for line in _message(exc).splitlines() if line.strip()]
    reason = "invalid JSON: " + (lines[0] if lines else type(exc).__name__)
    if len(lines) > 1 and not lines[1].startswith("(right here)"):
        reason += f" near {lines[1]!r}"
    if where:
        reason += f" (in {where})"
    return ReaderError(url, reason, position)
