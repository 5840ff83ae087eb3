"""shardmap's public API: Distributed Map runs in Python.

>>> from runner import MapSpec, run, load_results
>>> spec = MapSpec.from_yaml("pipelines/demo.yaml")          # doctest: +SKIP
>>> result = run(spec)                                        # doctest: +SKIP
>>> frame = load_results(result.manifest_url)                 # doctest: +SKIP
"""

from runner.engine import Counts, MapRunResult, RunProgress, run
from runner.errors import (
    ExecutorError,
    InputNotFound,
    ReaderError,
    RunFailed,
    ShardmapError,
    SpecError,
    WorkerError,
    WorkerNotFound,
    WriterError,
)
from runner.registry import worker
from runner.results import ResultWriter, load_results
from runner.spec import MapSpec
from runner.types import BatchStatus, ChildRecord, RunStatus

__all__ = [
    "BatchStatus",
    "ChildRecord",
    "Counts",
    "ExecutorError",
    "InputNotFound",
    "MapRunResult",
    "MapSpec",
    "ReaderError",
    "ResultWriter",
    "RunFailed",
    "RunProgress",
    "RunStatus",
    "ShardmapError",
    "SpecError",
    "WorkerError",
    "WorkerNotFound",
    "WriterError",
    "load_results",
    "run",
    "worker",
]
