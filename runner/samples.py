"""Seeded sample datasets (``shardmap sample WORKLOAD DEST_URL``)."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor

import fsspec

__all__ = ["write_demo"]

_WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray"
).split()


def write_demo(dest_url: str, count: int = 2000, seed: int = 7) -> int:
    """A folder (or S3 prefix) of small text, JSON and CSV objects in nested "folders".

    The same seed always writes the same bytes, so results are comparable across runs.
    """
    rng = random.Random(seed)
    fs, root = fsspec.core.url_to_fs(dest_url)
    fs.makedirs(root, exist_ok=True)
    objects = [_demo_object(rng, number) for number in range(count)]

    def put(entry: tuple[str, bytes]) -> None:
        key, body = entry
        path = f"{root.rstrip('/')}/{key}"
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(path, "wb") as f:
            f.write(body)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, objects))
    return count


def _demo_object(rng: random.Random, number: int) -> tuple[str, bytes]:
    folder = f"day={1 + number % 7:02d}"
    kind = ("txt", "json", "csv")[number % 3]
    words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 400))]
    if kind == "txt":
        body = " ".join(words).encode()
    elif kind == "json":
        body = json.dumps({"id": number, "words": words[:20], "score": rng.random()}).encode()
    else:
        rows = "\n".join(f"{i},{w},{rng.randint(0, 999)}" for i, w in enumerate(words[:50]))
        body = ("n,word,value\n" + rows + "\n").encode()
    return f"{folder}/object-{number:05d}.{kind}", body
