"""Seeded sample datasets (``shardmap sample WORKLOAD DEST_URL``), in a lazy registry.

Generators are registered, like workers, by entry point: the ``shardmap.samples`` group names
``module:function`` for each workload (``pyproject.toml``; a third party's package adds its
own). The group is read on first use and a generator's module imported only when its sample is
made, through :func:`runner.registry.load`, so a workload whose extra is not installed is one
:class:`~runner.errors.MissingExtra` naming the ``pip install``.

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
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any

import fsspec

from runner.errors import SpecError
from runner.registry import load

__all__ = ["GROUP", "SAMPLES", "get_sample", "write_demo", "write_sample"]

GROUP = "shardmap.samples"


@cache
def _registered() -> Mapping[str, str]:
    return MappingProxyType({ep.name: f"{ep.module}:{ep.attr}" for ep in entry_points(group=GROUP)})


class _Samples(Mapping[str, str]):
    """Workload name -> ``module:function``, read from the entry points when first looked at
    (the CLI lists the names when it starts; the modules wait until a sample is made)."""

    def __getitem__(self, workload: str) -> str:
        return _registered()[workload]

    def __iter__(self) -> Iterator[str]:
        return iter(_registered())

    def __len__(self) -> int:
        return len(_registered())

    def __repr__(self) -> str:
        return f"SAMPLES({dict(_registered())!r})"


#: Workload name -> ``module:function``, as the ``shardmap.samples`` entry points register them.
SAMPLES: Mapping[str, str] = _Samples()


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
