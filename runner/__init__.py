"""shardmap's public API: Distributed Map runs in Python.

>>> from runner import MapSpec, run, load_results
>>> spec = MapSpec.from_yaml("pipelines/demo.yaml")          # doctest: +SKIP
>>> result = run(spec)                                        # doctest: +SKIP
>>> frame = load_results(result.manifest_url)                 # doctest: +SKIP

Everything in ``__all__`` is public (tests/test_exported_members.py pins the list); other
modules of the package are internal and may change.
"""

from runner.engine import Counts, MapRunResult, RunProgress, export, redrive, resume, run
from runner.errors import (
    ExecutorError,
    InputNotFound,
    JournalError,
    MissingExtra,
    ReaderError,
    RunFailed,
    ShardmapError,
    SourceUnavailable,
    SpecError,
    WorkerError,
    WorkerNotFound,
    WriterError,
)
from runner.executors.base import Executor
from runner.reduce import ReduceContext
from runner.registry import worker
from runner.results import ResultWriter, load_results
from runner.spec import MapSpec
from runner.types import BatchStatus, ChildRecord, RunStatus

__all__ = [
    "BatchStatus",
    "ChildRecord",
    "Counts",
    "Executor",
    "ExecutorError",
    "InputNotFound",
    "JournalError",
    "MapRunResult",
    "MapSpec",
    "MissingExtra",
    "ReaderError",
    "ReduceContext",
    "ResultWriter",
    "RunFailed",
    "RunProgress",
    "RunStatus",
    "ShardmapError",
    "SourceUnavailable",
    "SpecError",
    "WorkerError",
    "WorkerNotFound",
    "WriterError",
    "export",
    "load_results",
    "redrive",
    "resume",
    "run",
    "worker",
]
