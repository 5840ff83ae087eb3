"""Seeded sample datasets (``shardmap sample WORKLOAD DEST_URL``), in a lazy registry.

A generator is ``fn(dest_url, *, count=None, seed=7) -> dict``: it writes its dataset under
``dest_url`` (a local folder or ``s3://`` prefix), the same bytes for the same seed, and returns
a JSON-able summary whose ``objects`` is how many objects it wrote. ``count`` (the generator's
own unit: objects, images, leads) is ``None`` for the generator's default. Ground truth that
tests and notebooks check against (counts per rule) belongs in the summary, never among the
data objects, where a listing would pick it up as an item.
"""

from __future__ import annotations

import inspect
import json
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec

from runner.errors import SpecError
from runner.registry import load

__all__ = ["SAMPLES", "get_sample", "write_demo", "write_sample"]

#: Workload name -> ``module:function``; modules are imported only when their sample is made.
SAMPLES: dict[str, str] = {
    "demo": "runner.samples:demo_sample",
    "genomics": "workers.genomics_sample:genomics_sample",
    "images": "workers.images_sample:images_sample",
    "leads": "workers.leads_sample:leads_sample",
    "taxi": "workers.taxi_sample:taxi_sample",
}


def get_sample(workload: str) -> Callable[..., dict[str, Any]]:
    """The generator registered for ``workload``."""
    target = SAMPLES.get(workload)
    if target is None:
        raise KeyError(f"no sample for {workload!r}; known: {', '.join(sorted(SAMPLES))}")
    return load(target, f"sample {workload!r}")  # a missing extra: MissingExtra, exit 2


def write_sample(
    workload: str, dest_url: str, *, count: int | None = None, seed: int = 7, **options: Any
) -> dict[str, Any]:
    """Write ``workload``'s sample dataset under ``dest_url``; its summary. ``options`` are the
    generator's own (``months`` for taxi); one it does not take is a clear error."""
    generator = get_sample(workload)
    accepted = inspect.signature(generator).parameters
    unknown = sorted(name for name in options if name not in accepted)
    if unknown:
        raise SpecError("sample", f"the {workload} sample takes no {', '.join(unknown)}")
    return generator(dest_url, count=count, seed=seed, **options)


def demo_sample(dest_url: str, *, count: int | None = None, seed: int = 7) -> dict[str, Any]:
    return {"objects": write_demo(dest_url, count=count or 2000, seed=seed)}


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
