"""The public API is exactly ``runner.__all__`` (as httpx's tests/test_exported_members.py):
a name added to or dropped from it is a decision made here, not by accident."""

from __future__ import annotations

import inspect
import types

import runner

EXPECTED = {
    # running and finishing Map Runs
    "run",
    "resume",
    "redrive",
    "export",
    "load_results",
    "MapSpec",
    "MapRunResult",
    "Counts",
    "RunProgress",
    "RunStatus",
    "BatchStatus",
    "ChildRecord",
    "ResultWriter",
    # writing workers, reducers and executors
    "worker",
    "WorkerError",
    "ReduceContext",
    "Executor",
    # the errors users catch
    "ShardmapError",
    "SpecError",
    "WorkerNotFound",
    "MissingExtra",
    "ReaderError",
    "InputNotFound",
    "SourceUnavailable",
    "WriterError",
    "ExecutorError",
    "RunFailed",
    "JournalError",
}


def test_all_is_the_expected_public_api() -> None:
    assert set(runner.__all__) == EXPECTED
    assert len(runner.__all__) == len(EXPECTED)  # no name twice
    assert runner.__all__ == sorted(runner.__all__)


def test_every_exported_name_exists_and_is_documented() -> None:
    for name in runner.__all__:
        member = getattr(runner, name)
        # the member's own docstring, not one inherited from a base class or made by dataclass
        doc = member.__dict__.get("__doc__") if inspect.isclass(member) else member.__doc__
        assert doc and doc.strip(), f"runner.{name} has no docstring"
        assert not doc.startswith(f"{name}("), f"runner.{name} has only dataclass's docstring"


def test_nothing_public_is_left_out_of_all() -> None:
    public = {
        name
        for name, value in vars(runner).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(runner.__all__)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from runner import *", namespace)
    assert set(namespace) - {"__builtins__"} == EXPECTED
