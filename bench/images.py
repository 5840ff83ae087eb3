"""Images per second: shardmap on two worker processes against a serial loop, same photos.

Both sides do the same per-image work over the same objects of one local sample folder
(``shardmap sample images``: 1,000 photos plus 8 bad objects): read the object, check it, decode
it once, write 128 and 512 px JPEG thumbnails, read EXIF, hash it (pHash) and find its dominant
colours. The serial side is a plain loop that lists the folder and calls the same worker
function on the same batches of 25, in this process, on one core; shardmap runs
``pipelines/images.yaml`` with ``--executor processes`` and two workers (listing with ETags,
journal and AWS-layout results included). Both are timed in this process, alternating, several
rounds, pinned to two cores; the script prints images/s and the median ratio shardmap / serial
(the target is 1.7x or more: two cores, minus the framework's overhead).

    .venv/bin/python bench/images.py --count 1000 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from runner import MapSpec, run
from workers.images import thumbnails
from workers.images_sample import images_sample

PIPELINE = Path(__file__).parent.parent / "pipelines" / "images.yaml"


def serial(spec: MapSpec, source: Path, dest: Path) -> int:
    """The loop without the framework: list, batch as the pipeline does, call the worker."""
    assert spec.item_batcher is not None
    batch_input = dict(spec.item_batcher.batch_input or {})
    batch_input.pop("ThumbnailsTo.$", None)
    batch_input["ThumbnailsTo"] = str(dest)
    items = [
        {"Key": path.relative_to(source).as_posix(), "Size": path.stat().st_size}
        for path in sorted(source.rglob("*"))
        if path.is_file()
    ]
    size = spec.item_batcher.max_items_per_batch or 25
    done = 0
    for start in range(0, len(items), size):
        batch = [{**item, "Source": str(source)} for item in items[start : start + size]]
        done += len(thumbnails({"BatchInput": batch_input, "Items": batch}))
    return done


def shardmap(spec: MapSpec, source: Path, dest: Path, state_dir: Path) -> int:
    result = run(
        spec, source=str(source), dest=str(dest), executor="processes", state_dir=str(state_dir)
    )
    assert result.succeeded, (result.error, result.cause)
    return result.item_counts.succeeded


def timed(fn: Any, *args: Any) -> tuple[float, int]:
    started = time.perf_counter()
    count = fn(*args)
    return time.perf_counter() - started, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 2:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])  # worker processes inherit
    work = Path(tempfile.mkdtemp(prefix="shardmap-images-"))
    source = work / "photos"
    summary = images_sample(str(source), count=args.count)
    spec = MapSpec.from_yaml(PIPELINE).replace(max_concurrency=2)
    # Warm both sides alike: imports (scipy comes with the first pHash) and the OS file cache.
    serial(spec, source, work / "warm")
    photos = f"{summary['objects']} objects ({summary['images']} photos)"
    print(f"{photos}, batches of 25, {os.cpu_count()} cores, 2 used")
    ratios: list[float] = []
    rates: dict[str, list[float]] = {"serial": [], "shardmap": []}
    for round_ in range(args.rounds):
        sides = [("serial", serial, ()), ("shardmap", shardmap, (work / "state",))]
        if round_ % 2:
            sides.reverse()
        for name, fn, extra in sides:
            dest = work / f"{name}-{round_}"
            seconds, count = timed(fn, spec, source, dest, *extra)
            assert count == summary["objects"], (name, count)
            rates[name].append(count / seconds)
            shutil.rmtree(dest)
        ratios.append(rates["shardmap"][-1] / rates["serial"][-1])
        line = f"round {round_ + 1}: serial {rates['serial'][-1]:.0f} images/s, "
        line += f"shardmap {rates['shardmap'][-1]:.0f} images/s, ratio {ratios[-1]:.2f}x"
        print(line)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    line = f"median: serial {medians['serial']:.0f} images/s, "
    line += f"shardmap {medians['shardmap']:.0f} images/s; "
    print(line + f"ratio shardmap / serial = {statistics.median(ratios):.2f}x (target >= 1.7x)")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
