"""Seeded sample photos for the images workload: ``shardmap sample images DEST_URL``.

Every image is cut from one of the real photos scikit-image ships in ``skimage/data`` (the
astronaut, Chelsea the cat, coffee, a rocket, a retina, the Hubble deep field, ...): a random
crop, resized to 64-640 px on its long side, re-encoded as JPEG, PNG or WebP. Some JPEG and WebP
files carry EXIF camera fields (make, model, DateTimeOriginal), some of those an orientation tag
(2-8); some PNGs have an alpha channel. A fixed set of bad objects is mixed in under ``inbox/``:
truncated and random-bytes "images" (corrupt), a text and a CSV file (non-image), and a tiny PNG
whose header declares 8000x6000 pixels, over the pipeline's MaxPixels of 40 million (oversized).

The same seed writes the same bytes, and the summary is the ground truth a run is checked
against::

    {"objects": 1008, "images": 1000, "corrupt": 5, "non_image": 2, "oversized": 1,
     "by_format": {"JPEG": ..., "PNG": ..., "WEBP": ...}, "rotated": ..., "swapped": ...,
     "with_camera": ..., "bad_keys": {"corrupt": [...], ...}}

``rotated`` counts images whose orientation tag is 2-8 (the worker must transpose them),
``swapped`` those among them (5-8) whose upright width and height are the stored height and width.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from PIL import ExifTags, Image

__all__ = ["DEFAULT_COUNT", "images_sample"]

DEFAULT_COUNT = 1000
#: Photographs among the files scikit-image ships (its drawings and test patterns left out).
PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "cell.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "page.png",
    "retina.jpg",
    "rocket.jpg",
    "text.png",
)
ALBUMS = ("2019-lisbon", "2021-alps", "2022-garden", "2023-family", "scans")
#: (Pillow format, file suffix, weight)
FORMATS = (("JPEG", ".jpg", 60), ("PNG", ".png", 25), ("WEBP", ".webp", 15))
CAMERAS = (
    ("Canon", "Canon EOS 80D"),
    ("NIKON CORPORATION", "NIKON D750"),
    ("Apple", "iPhone 12"),
    ("FUJIFILM", "X-T3"),
    ("SONY", "ILCE-7M3"),
)
#: The oversized object: 48 megapixels declared, a few kilobytes stored (1-bit, all zeros).
OVERSIZED_SIZE = (8000, 6000)
_BASE_MAX_SIDE = 800  # photos are shrunk once to this, so cropping and resizing stay cheap


@dataclass(frozen=True)
class _Photo:
    key: str
    body: bytes
    format: str
    orientation: int | None
    camera: bool


def images_sample(dest_url: str, *, count: int | None = None, seed: int = 7) -> dict[str, Any]:
    """Write ``count`` photos (default 1,000) plus the bad objects under ``dest_url``.

    Returns the ground truth (see the module docstring); ``objects`` is how many were written.

    >>> images_sample("images-data", count=20)["objects"]  # doctest: +SKIP
    28
    """
    count = DEFAULT_COUNT if count is None else count
    fs, root = fsspec.core.url_to_fs(dest_url)
    fs.makedirs(root, exist_ok=True)  # a local folder, or the bucket
    root = root.rstrip("/")
    local = isinstance(fs, LocalFileSystem)

    def put(key: str, body: bytes) -> None:
        path = f"{root}/{key}"
        if local:  # S3 has no folders; asking would cost a request per object
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(path, body)

    def make_and_put(number: int) -> _Photo:
        photo = _photo(seed, number)
        put(photo.key, photo.body)
        return photo

    bad = _bad_objects(seed)
    # Pillow releases the GIL while it resizes and encodes, so threads use every core.
    with ThreadPoolExecutor(8) as pool:
        photos = list(pool.map(make_and_put, range(count)))
        list(pool.map(lambda entry: put(entry[0], entry[1]), [(k, b) for k, b, _ in bad]))
    return _summary(photos, bad)


def _summary(photos: list[_Photo], bad: list[tuple[str, bytes, str]]) -> dict[str, Any]:
    kinds = ("corrupt", "non_image", "oversized")
    bad_keys = {kind: [key for key, _, k in bad if k == kind] for kind in kinds}
    by_format = Counter(photo.format for photo in photos)
    orientations = [photo.orientation or 1 for photo in photos]
    return {
        "objects": len(photos) + len(bad),
        "images": len(photos),
        **{kind: len(keys) for kind, keys in bad_keys.items()},
        "by_format": {name: by_format[name] for name, _, _ in FORMATS},
        "rotated": sum(1 for o in orientations if o >= 2),
        "swapped": sum(1 for o in orientations if o >= 5),
        "with_camera": sum(1 for photo in photos if photo.camera),
        "bad_keys": bad_keys,
    }


# -- photos ------------------------------------------------------------------------------------
@cache
def _bases() -> tuple[Image.Image, ...]:
    """The scikit-image photos, decoded once and shrunk to at most 800 px."""
    folder = files("skimage.data")
    bases = []
    for name in PHOTOS:
        with Image.open(folder.joinpath(name).open("rb")) as image:
            image.draft(None, (_BASE_MAX_SIDE, _BASE_MAX_SIDE))
            image.load()
            base = image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode)
        base.thumbnail((_BASE_MAX_SIDE, _BASE_MAX_SIDE))
        bases.append(base)
    return tuple(bases)


def _photo(seed: int, number: int) -> _Photo:
    # One generator per image, seeded by (seed, number): images can be made in any order.
    rng = random.Random(f"images:{seed}:{number}")
    image = _crop(rng, rng.choice(_bases()))
    name, suffix, _ = rng.choices(FORMATS, weights=[w for _, _, w in FORMATS])[0]
    orientation, camera = None, False
    options: dict[str, Any] = {}
    if name == "PNG" and rng.random() < 0.2:
        image = _with_alpha(image)
    if name in ("JPEG", "WEBP") and rng.random() < 0.5:
        camera = True
        if rng.random() < 0.5:
            orientation = rng.randint(2, 8) if rng.random() < 0.8 else 1
        options["exif"] = _exif(rng, orientation)
    key = f"{rng.choice(ALBUMS)}/IMG_{number:04d}{suffix}"
    return _Photo(key, _encode(image, name, rng, options), name, orientation, camera)


def _crop(rng: random.Random, base: Image.Image) -> Image.Image:
    width, height = base.size
    crop_w, crop_h = rng.randint(width // 2, width), rng.randint(height // 2, height)
    left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    scale = rng.randint(64, 640) / max(crop_w, crop_h)
    size = (max(1, round(crop_w * scale)), max(1, round(crop_h * scale)))
    box = (left, top, left + crop_w, top + crop_h)
    return base.resize(size, Image.Resampling.BILINEAR, box=box, reducing_gap=2.0)


def _with_alpha(image: Image.Image) -> Image.Image:
    mask = Image.linear_gradient("L").resize(image.size)
    image = image.convert("LA" if image.mode == "L" else "RGBA")
    image.putalpha(mask)
    return image


def _exif(rng: random.Random, orientation: int | None) -> bytes:
    exif = Image.Exif()
    make, model = rng.choice(CAMERAS)
    taken = (
        f"{rng.randint(2015, 2024)}:{rng.randint(1, 12):02d}:{rng.randint(1, 28):02d} "
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
    )
    exif[ExifTags.Base.Make] = make
    exif[ExifTags.Base.Model] = model
    exif[ExifTags.Base.DateTime] = taken
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = taken
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    return exif.tobytes()


def _encode(image: Image.Image, name: str, rng: random.Random, options: dict[str, Any]) -> bytes:
    # Fast encoder settings: the sample must be quick to make, not small.
    if name == "JPEG":
        options["quality"] = rng.randint(70, 95)
    elif name == "PNG":
        options["compress_level"] = 1
    else:
        options.update(quality=80, method=0)
    buffer = io.BytesIO()
    image.save(buffer, name, **options)
    return buffer.getvalue()


# -- bad objects -------------------------------------------------------------------------------
def _bad_objects(seed: int) -> list[tuple[str, bytes, str]]:
    """``(key, body, kind)`` of the objects the worker must reject, the same for every count."""
    rng = random.Random(f"images:{seed}:bad")
    jpegs = [_encode(_crop(rng, rng.choice(_bases())), "JPEG", rng, {}) for _ in range(2)]
    png = _encode(_crop(rng, rng.choice(_bases())), "PNG", rng, {})
    return [
        ("inbox/truncated-1.jpg", jpegs[0][: len(jpegs[0]) // 2], "corrupt"),
        ("inbox/truncated-2.jpg", jpegs[1][: len(jpegs[1]) * 3 // 4], "corrupt"),
        ("inbox/truncated-3.png", png[: len(png) // 2], "corrupt"),
        ("inbox/noise-1.jpg", _noise(rng), "corrupt"),
        ("inbox/noise-2.jpg", _noise(rng), "corrupt"),
        ("inbox/README.txt", b"Holiday photos, uploaded from the phone.\n", "non_image"),
        ("inbox/exif-export.csv", b"key,make,model\nIMG_0001.jpg,Canon,EOS 80D\n", "non_image"),
        ("inbox/panorama.png", _declared_png(*OVERSIZED_SIZE), "oversized"),
    ]


def _noise(rng: random.Random) -> bytes:
    # A leading zero byte: no image signature, whatever the seed.
    return b"\x00" + rng.randbytes(rng.randint(2_000, 20_000))


def _declared_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` black pixels: kilobytes stored, megapixels
    declared (the decompression-bomb shape)."""
    row = b"\x00" + bytes((width + 7) // 8)  # filter byte + packed pixels
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(row * height, 9))
        + _png_chunk(b"IEND", b"")
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
