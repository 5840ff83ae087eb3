"""The images workload: thumbnails, EXIF, perceptual hash and dominant colours of each photo in
a listing (the Distributed Map launch example: ~1,000 photos in an S3 prefix, one function each).

Items are listObjectsV2 entries (``Key``, ``Size``, ...). The objects are found under the item's
``Source`` (``$$.Map.Item.Source``: ``S3://bucket``, or the listed local folder), else under
``BatchInput.Source``; the other settings come from ``BatchInput`` too (:class:`Settings`).

The batch output is a list with one entry per item, in the order of ``Items``, so that
``runner.load_results`` gives every item its own output.

Error policy:

- An object that is not a usable image is **rejected**: its entry says ``"status": "rejected"``
  with a ``rule`` (``oversized``, ``corrupt``, ``non_image``, ``format``, ``unsafe_key``) and a
  ``reason`` naming the key, and the batch succeeds. Retrying cannot fix bad data.
- Storage that cannot be read or written **fails the batch** with ``Images.StorageError``, the
  cause naming the URL and the original exception, so the pipeline's Retry applies.

Each object is read whole into memory before Pillow sees it, so an error while decoding is about
the bytes, never about the storage: the two cases cannot be confused.
"""

from __future__ import annotations

import contextlib
import io
import json
import posixpath
import struct
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote

import fsspec
import imagehash
from fsspec.implementations.local import LocalFileSystem
from PIL import ExifTags, Image, ImageOps

from runner.errors import WorkerError

__all__ = ["STORAGE_ERROR", "Settings", "thumbnail_key", "thumbnails"]

T = TypeVar("T")
R = TypeVar("R")

STORAGE_ERROR = "Images.StorageError"
SETTINGS_ERROR = "Images.InvalidBatchInput"
THUMBNAILS_FOLDER = "thumbnails"
#: Bytes fetched before they are processed: bounds memory whatever the batch size.
FETCH_CHUNK_BYTES = 64 * 1024 * 1024
IO_THREADS = 8  # requests in flight per batch, for remote storage
ANALYSIS_SIDE = 64  # the perceptual hash is computed from an image about this small
COLOUR_SIDE = 32  # 1,024 pixels decide the dominant colours: plenty, and median cut is quick
# What Pillow raises for bad bytes while decoding them and reading their EXIF.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)


@dataclass(frozen=True)
class Settings:
    """What ``BatchInput`` can set (pipeline spellings in brackets), with their defaults.

    >>> Settings.from_batch_input({"ThumbnailsTo": "s3://b/out", "ThumbnailSizes": [256]})
    ... # doctest: +ELLIPSIS
    Settings(thumbnails_to='s3://b/out', thumbnail_sizes=(256,), ...)
    """

    thumbnails_to: str | None = None  # [ThumbnailsTo] thumbnails go to <this>/thumbnails/
    thumbnail_sizes: tuple[int, ...] = (128, 512)  # [ThumbnailSizes] longest side, in pixels
    max_bytes: int = 20_000_000  # [MaxBytes] larger objects are rejected unread
    max_pixels: int = 40_000_000  # [MaxPixels] checked from the header, before decoding
    formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP")  # [Formats] Pillow format names
    dominant_colours: int = 5  # [DominantColours]
    thumbnail_quality: int = 85  # [ThumbnailQuality] JPEG quality of the thumbnails
    source: str | None = None  # [Source] where objects live when items do not say

    _FIELDS: ClassVar[dict[str, str]] = {
        "ThumbnailsTo": "thumbnails_to",
        "ThumbnailSizes": "thumbnail_sizes",
        "MaxBytes": "max_bytes",
        "MaxPixels": "max_pixels",
        "Formats": "formats",
        "DominantColours": "dominant_colours",
        "ThumbnailQuality": "thumbnail_quality",
        "Source": "source",
    }

    @classmethod
    def from_batch_input(cls, batch_input: Mapping[str, Any]) -> Settings:
        """Settings from a BatchInput; an unknown or invalid field fails the batch."""
        unknown = sorted(set(batch_input) - set(cls._FIELDS))
        if unknown:
            known = ", ".join(cls._FIELDS)
            raise WorkerError(SETTINGS_ERROR, f"unknown BatchInput field(s) {unknown}; {known}")
        values = {cls._FIELDS[name]: value for name, value in batch_input.items()}
        try:
            return cls(**_normalised(values))
        except (TypeError, ValueError) as exc:
            raise WorkerError(SETTINGS_ERROR, str(exc)) from exc

    def __post_init__(self) -> None:
        sizes = self.thumbnail_sizes
        if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
            raise ValueError(f"ThumbnailSizes must be positive integers: {list(sizes)}")
        if sizes and not self.thumbnails_to:
            raise ValueError("ThumbnailsTo is required (ThumbnailSizes: [] writes no thumbnails)")
        # Largest first: each thumbnail is made from the one before it.
        object.__setattr__(self, "thumbnail_sizes", tuple(sorted(set(sizes), reverse=True)))
        Image.init()  # registers every plugin, so Image.OPEN knows every format name
        unknown = [name for name in self.formats if name not in Image.OPEN]
        if unknown:
            raise ValueError(f"Formats: Pillow cannot open {unknown}")
        if not 1 <= self.dominant_colours <= 256:
            raise ValueError("DominantColours must be between 1 and 256")


def _normalised(values: dict[str, Any]) -> dict[str, Any]:
    if "thumbnail_sizes" in values:
        values["thumbnail_sizes"] = tuple(values["thumbnail_sizes"])
    if "formats" in values:
        values["formats"] = tuple(str(name).upper() for name in values["formats"])
    return values


def thumbnails(event: dict[str, Any]) -> list[dict[str, Any]]:
    """Thumbnails, EXIF fields, perceptual hash and dominant colours of each listed image.

    >>> thumbnails({"BatchInput": {"ThumbnailsTo": "out"},
    ...             "Items": [{"Key": "a.jpg", "Size": 1234, "Source": "photos"}]})
    ... # doctest: +SKIP
    [{'key': 'a.jpg', 'status': 'processed', 'format': 'JPEG', 'width': 640, ...}]
    """
    settings = Settings.from_batch_input(event.get("BatchInput") or {})
    items = event.get("Items", [event])
    outputs: dict[int, dict[str, Any]] = {}
    wanted: list[_Object] = []
    for position, item in enumerate(items):
        located = _locate(position, item, settings)
        if isinstance(located, _Object):
            wanted.append(located)
        else:
            outputs[position] = located
    for chunk in _chunks(wanted):
        files: dict[str, bytes] = {}
        for obj, data in zip(chunk, _fetch(chunk), strict=True):
            outputs[obj.position], thumbs = _analyse(obj, data, settings)
            files.update(thumbs)
        _store(settings, files)
    return [outputs[position] for position in range(len(items))]


def thumbnail_key(key: str, size: int) -> str:
    """Where the ``size`` thumbnail of ``key`` goes, relative to ``ThumbnailsTo``.

    Every key segment is percent-encoded, and the segments ``..``, ``.`` and empty ones (from a
    leading ``/`` or ``//``) become ``%2E%2E``, ``%2E`` and ``%2F``, so no key can leave the
    thumbnails folder (a backslash is ``%5C``, never a separator) and distinct keys never share a
    thumbnail. Ordinary keys keep their shape.

    >>> thumbnail_key("2021-alps/IMG_0001.jpg", 128)
    'thumbnails/128/2021-alps/IMG_0001.jpg.jpg'
    >>> thumbnail_key("../../etc/passwd", 128)
    'thumbnails/128/%2E%2E/%2E%2E/etc/passwd.jpg'
    """
    segments = [
        _SPECIAL_SEGMENTS.get(part) or quote(part, safe=" -_.~()+,=@") for part in key.split("/")
    ]
    return "/".join([THUMBNAILS_FOLDER, str(size), *segments]) + ".jpg"


_SPECIAL_SEGMENTS = {"": "%2F", ".": "%2E", "..": "%2E%2E"}


# -- locating and reading ----------------------------------------------------------------------
@dataclass(frozen=True)
class _Object:
    position: int  # in the batch's Items
    key: str
    url: str
    size: int | None


def _locate(position: int, item: Any, settings: Settings) -> _Object | dict[str, Any]:
    """The object an item names, or its rejection when it must not be read."""
    if not isinstance(item, Mapping) or not isinstance(item.get("Key"), str):
        raise WorkerError(SETTINGS_ERROR, f"item {position} is not a listing entry: {item!r}")
    key, size = item["Key"], item.get("Size")
    source = item.get("Source") or settings.source
    if not source:
        raise WorkerError(SETTINGS_ERROR, "objects need item.Source or BatchInput.Source")
    if size is not None and size > settings.max_bytes:
        reason = f"{key}: {size:,} bytes, over MaxBytes ({settings.max_bytes:,})"
        return _rejected(key, "oversized", reason, size)
    url = _object_url(source, key)
    if url is None:
        return _rejected(key, "unsafe_key", f"{key}: the key climbs out of {source}", size)
    return _Object(position, key, url, size)


def _object_url(source: str, key: str) -> str | None:
    """``s3://bucket/<key>`` (listing keys are relative to the bucket, whatever the prefix), or
    ``<folder>/<key>``; ``None`` when a key would leave its folder (local listings never make
    such keys, hand-written items might)."""
    if source[:5].lower() == "s3://":
        bucket = source[5:].split("/", 1)[0]
        return f"s3://{bucket}/{key}"
    parts = key.split("/")
    if key.startswith("/") or ".." in parts or "\\" in key:
        return None
    return source.rstrip("/") + "/" + key


def _chunks(objects: list[_Object]) -> Iterator[list[_Object]]:
    chunk: list[_Object] = []
    held = 0
    for obj in objects:
        if chunk and held + (obj.size or 0) > FETCH_CHUNK_BYTES:
            yield chunk
            chunk, held = [], 0
        chunk.append(obj)
        held += obj.size or 0
    if chunk:
        yield chunk


def _fetch(chunk: Sequence[_Object]) -> list[bytes]:
    """Every object's bytes (from S3, several requests in flight)."""
    urls = [obj.url for obj in chunk]
    return _each(_read, urls, remote=any(_is_remote(url) for url in urls))


def _read(url: str) -> bytes:
    with _storage("read", url):
        fs, path = fsspec.core.url_to_fs(url)
        return fs.cat_file(path)


def _store(settings: Settings, files: Mapping[str, bytes]) -> None:
    """Write the thumbnails (relative key -> bytes) under ThumbnailsTo."""
    if not files:
        return
    assert settings.thumbnails_to is not None  # Settings requires it when sizes are given
    dest = settings.thumbnails_to.rstrip("/")
    with _storage("write thumbnails to", dest):
        fs, root = fsspec.core.url_to_fs(dest)

    local = isinstance(fs, LocalFileSystem)

    def put(key: str) -> None:
        path = f"{root.rstrip('/')}/{key}"
        with _storage("write", f"{dest}/{key}"):
            if local:  # S3 has no folders (and its makedirs would create a missing bucket)
                fs.makedirs(posixpath.dirname(path), exist_ok=True)
            fs.pipe_file(path, files[key])

    _each(put, list(files), remote=_is_remote(dest))


def _each(fn: Callable[[T], R], args: Sequence[T], *, remote: bool) -> list[R]:
    """``fn`` over ``args``: in threads for remote storage, whose latency dominates small
    requests; in turn for local files, where threads would only compete with decoding."""
    if not remote or len(args) == 1:
        return [fn(arg) for arg in args]
    with ThreadPoolExecutor(min(IO_THREADS, len(args))) as pool:
        return list(pool.map(fn, args))


def _is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


@contextlib.contextmanager
def _storage(action: str, url: str) -> Iterator[None]:
    """Turn any exception of a storage call into ``Images.StorageError`` (the batch fails and
    Retry applies), with a Lambda-shaped cause naming the URL and the original error."""
    try:
        yield
    except WorkerError:
        raise
    except Exception as exc:
        message = f"cannot {action} {url}: {type(exc).__name__}: {exc}"
        cause = {
            "errorMessage": message,
            "errorType": type(exc).__name__,
            "stackTrace": traceback.format_exception(exc),
        }
        raise WorkerError(STORAGE_ERROR, json.dumps(cause)) from exc


# -- analysing ---------------------------------------------------------------------------------
class _Rejected(Exception):
    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(reason)
        self.rule = rule
        self.reason = reason


def _rejected(key: str, rule: str, reason: str, size: int | None) -> dict[str, Any]:
    return {"key": key, "status": "rejected", "rule": rule, "reason": reason, "bytes": size}


def _analyse(obj: _Object, data: bytes, settings: Settings) -> tuple[dict[str, Any], dict]:
    """The item's output and its thumbnails (relative key -> JPEG bytes)."""
    try:
        upright, output = _decoded(obj, data, settings)
    except _Rejected as rejection:
        return _rejected(obj.key, rejection.rule, rejection.reason, len(data)), {}
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return _rejected(obj.key, "oversized", f"{obj.key}: {exc}", len(data)), {}
    except DECODE_ERRORS as exc:
        reason = f"{obj.key}: corrupt image data: {type(exc).__name__}: {exc}"
        return _rejected(obj.key, "corrupt", reason, len(data)), {}
    # Past decoding the pixels are in memory: an error from here on is a bug, and fails the batch.
    thumbs = _thumbnails(upright, settings.thumbnail_sizes)
    small = _analysis_image(upright, [thumb for _, thumb in thumbs])
    output["phash"] = str(imagehash.phash(small))
    output["colours"] = _dominant_colours(small, settings.dominant_colours)
    files, entries = {}, []
    for size, thumb in thumbs:
        key = thumbnail_key(obj.key, size)
        files[key] = _jpeg(thumb, settings.thumbnail_quality)
        entries.append({"size": size, "key": key, "width": thumb.width, "height": thumb.height})
    output["thumbnails"] = entries[::-1]  # smallest first
    return output, files


def _decoded(obj: _Object, data: bytes, settings: Settings) -> tuple[Image.Image, dict[str, Any]]:
    """The upright RGB/L image and what its header and EXIF say; bad data raises."""
    if len(data) > settings.max_bytes:  # the item carried no Size
        raise _Rejected("oversized", f"{obj.key}: {len(data):,} bytes, over MaxBytes")
    with _opened(obj.key, data, settings) as image:
        width, height = image.size
        if width * height > settings.max_pixels:
            reason = f"{obj.key}: {width}x{height} is {width * height:,} pixels, over MaxPixels"
            raise _Rejected("oversized", f"{reason} ({settings.max_pixels:,})")
        output = {
            "key": obj.key,
            "status": "processed",
            "format": image.format,
            "mode": image.mode,
            "width": width,
            "height": height,
            "bytes": len(data),
        }
        _draft(image, settings)
        image.load()
        output["exif"] = _exif_fields(image.getexif())
        return _flattened(ImageOps.exif_transpose(image)), output


def _opened(key: str, data: bytes, settings: Settings) -> Image.Image:
    """The image, opened with only the allowed formats' plugins (less parser surface)."""
    try:
        return Image.open(io.BytesIO(data), formats=settings.formats)
    except Image.UnidentifiedImageError:
        pass
    # What the key's suffix claims tells a damaged image from a stranger.
    claimed = Image.registered_extensions().get(posixpath.splitext(key)[1].lower())
    allowed = ", ".join(settings.formats)
    if claimed in settings.formats:
        raise _Rejected("corrupt", f"{key}: not a readable {claimed} image") from None
    if claimed:
        raise _Rejected(
            "format", f"{key}: {claimed} is not an allowed format ({allowed})"
        ) from None
    raise _Rejected("non_image", f"{key}: not an image ({allowed} are read)") from None


def _draft(image: Image.Image, settings: Settings) -> None:
    """Let JPEG decode at 1/2, 1/4 or 1/8 scale when even the largest thumbnail is smaller.

    Like ``Image.thumbnail`` it keeps twice the target size, so the final resize still has
    detail to work with; formats without scaled decoding ignore it.
    """
    if not settings.thumbnail_sizes:
        target = ANALYSIS_SIDE
    else:
        target = max(settings.thumbnail_sizes)
    scale = 2 * target / max(image.size)
    if scale < 1:
        image.draft(None, (int(image.width * scale) + 1, int(image.height * scale) + 1))


def _flattened(image: Image.Image) -> Image.Image:
    """An RGB or L image (what JPEG stores): transparency composited onto white."""
    if image.mode in ("RGB", "L"):
        return image
    if image.mode == "P" or image.mode.endswith("A") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", image.size, "white")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def _thumbnails(image: Image.Image, sizes: tuple[int, ...]) -> list[tuple[int, Image.Image]]:
    """One thumbnail per size (largest first, each made from the one before: cheaper, and as
    sharp); the aspect ratio is kept and images are never enlarged."""
    thumbs, current = [], image
    for size in sizes:
        if max(current.size) > size:
            current = current.copy()
            current.thumbnail((size, size), Image.Resampling.BICUBIC)
        thumbs.append((size, current))
    return thumbs


def _analysis_image(upright: Image.Image, thumbs: list[Image.Image]) -> Image.Image:
    """The smallest thumbnail still at least ANALYSIS_SIDE wide, else the image itself: the
    hash and the colours need little, and the smaller the image the faster they are."""
    big_enough = [t for t in thumbs if max(t.size) >= ANALYSIS_SIDE]
    return min(big_enough, key=lambda t: t.width * t.height) if big_enough else upright


def _dominant_colours(image: Image.Image, count: int) -> list[dict[str, Any]]:
    """The ``count`` main colours (median cut) as ``{"hex", "share"}``, largest share first."""
    small = image.convert("RGB")
    small.thumbnail((COLOUR_SIDE, COLOUR_SIDE))
    quantized = small.quantize(colors=count, method=Image.Quantize.MEDIANCUT)
    palette = quantized.getpalette() or []
    total = small.width * small.height
    colours = []
    for pixels, index in sorted(quantized.getcolors(256) or [], reverse=True):
        red, green, blue = palette[3 * index : 3 * index + 3]
        share = round(pixels / total, 4)
        colours.append({"hex": f"#{red:02x}{green:02x}{blue:02x}", "share": share})
    return colours


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


_EXIF_TEXT = {"make": ExifTags.Base.Make, "model": ExifTags.Base.Model}


def _exif_fields(exif: Image.Exif) -> dict[str, Any]:
    """Orientation, camera and DateTimeOriginal (DateTime when missing), JSON-safe."""
    orientation = exif.get(ExifTags.Base.Orientation)
    taken = exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.DateTimeOriginal)
    fields: dict[str, Any] = {
        "orientation": orientation
        if isinstance(orientation, int) and 1 <= orientation <= 8
        else None
    }
    fields.update({name: _text(exif.get(tag)) for name, tag in _EXIF_TEXT.items()})
    fields["datetime_original"] = _text(taken or exif.get(ExifTags.Base.DateTime))
    return fields


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    text = str(value).strip("\x00 ").strip()
    return text or None
