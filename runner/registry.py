"""Workers by name: the ``shardmap.workers`` entry-point group, plus ``module:function`` paths;
and :func:`load`, the one place that imports a worker, sample or executor module, so that a
missing optional extra is one clear error (:class:`~runner.errors.MissingExtra`).

A worker is a plain function. It receives the child input AWS would send a Lambda
(``{"Items": [...]}``, with ``BatchInput`` when configured, or the lone item without an
ItemBatcher) and returns a JSON-able output. A worker declared ``columnar`` instead receives
``(table: pyarrow.Table, batch_input)``. No worker knows which executor runs it.

An explicit ``module:function`` is looked for where Python looks, then, only if no installed
module has that name, in the working directory (as ``python -m`` would find it). The working
directory is never put first on ``sys.path``: a ``workers/`` folder there must not shadow
shardmap's own ``workers`` package.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from types import MappingProxyType, ModuleType
from typing import Any, TypeVar

from runner.errors import MissingExtra, WorkerNotFound

__all__ = [
    "EXTRAS",
    "Extra",
    "WorkerInfo",
    "known_workers",
    "load",
    "resolve_worker",
    "worker",
    "worker_info",
]

F = TypeVar("F", bound=Callable[..., Any])
GROUP = "shardmap.workers"


@dataclass(frozen=True)
class WorkerInfo:
    columnar: bool = False  # takes (pyarrow.Table, batch_input) instead of the JSON child input


def worker(fn: F | None = None, *, columnar: bool = False) -> Any:
    """Mark a function as a shardmap worker (registration itself is by entry point).

    >>> @worker(columnar=True)
    ... def count_rows(table, batch_input):
    ...     return {"rows": table.num_rows}
    """

    def mark(f: F) -> F:
        f.__shardmap_worker__ = WorkerInfo(columnar=columnar)  # type: ignore[attr-defined]
        return f

    return mark(fn) if fn is not None else mark


def worker_info(fn: Callable[..., Any]) -> WorkerInfo:
    return getattr(fn, "__shardmap_worker__", WorkerInfo())


@dataclass(frozen=True)
class Extra:
    """An optional extra of ``pyproject.toml``: the top-level modules it installs and the
    shardmap modules (with their submodules) that cannot work without them."""

    modules: tuple[str, ...]
    needed_by: tuple[str, ...]


#: Extra name -> what it installs and who needs it (tests/test_packaging.py checks this table
#: against pyproject.toml). Checked before a module is imported, since some import lazily
#: (the Dask executor imports ``distributed`` only when it starts).
EXTRAS: Mapping[str, Extra] = MappingProxyType(
    {
        "dask": Extra(
            ("dask", "distributed"), ("runner.executors.dask", "runner.executors.daskremote")
        ),
        "genomics": Extra(("mappy", "pysam"), ("workers.genomics", "workers.genomics_sample")),
        "images": Extra(
            ("PIL", "imagehash", "skimage"), ("workers.images", "workers.images_sample")
        ),
        "leads": Extra(
            ("phonenumbers", "email_validator"), ("workers.leads", "workers.leads_sample")
        ),
        "taxi": Extra(("numpy",), ("workers.taxi", "workers.taxi_sample")),
    }
)


def load(target: str, needed_by: str) -> Any:
    """The object a ``module:attr`` target names, importing its module now.

    ``needed_by`` says what it is for (``"worker 'image-thumbnails'"``). A shardmap module whose
    extra is not installed raises :class:`MissingExtra`; any other failure to import propagates,
    for the caller to say whose module it is.

    >>> load("runner.samples:write_demo", "sample 'demo'")  # doctest: +ELLIPSIS
    <function write_demo at 0x...>
    """
    module_name, _, attr = target.partition(":")
    for name, extra in EXTRAS.items():
        if _within(module_name, extra.needed_by):
            _require(name, extra, needed_by)
    try:
        found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # One of ours importing an extra's module that the table does not tie to it yet.
        missing = (exc.name or "").partition(".")[0]
        for name, extra in EXTRAS.items():
            if missing in extra.modules and _within(module_name, ("runner", "workers")):
                raise MissingExtra(name, needed_by, missing) from exc
        raise
    for part in attr.split("."):
        found = getattr(found, part)
    return found


def _within(module_name: str, packages: Sequence[str]) -> bool:
    return any(module_name == p or module_name.startswith(p + ".") for p in packages)


def _require(name: str, extra: Extra, needed_by: str) -> None:
    for module in extra.modules:
        # find_spec locates without importing (cheap); None also for an import blocked in
        # sys.modules
        if importlib.util.find_spec(module) is None:
            raise MissingExtra(name, needed_by, module)


@cache
def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def known_workers() -> dict[str, str]:
    """Registered worker names -> the first line of their docstring."""
    docs = {}
    for name in sorted(_entry_points()):
        try:
            doc = inspect.getdoc(resolve_worker(name)) or ""
        except Exception as exc:  # a broken plugin (or a missing extra) must not hide the others
            doc = f"(cannot load: {exc})"
        docs[name] = doc.splitlines()[0] if doc else ""
    return docs


#: Worker references by scheme, resolved by import path (fsspec's lazy registry): ``asl:``
#: names a child state machine (:mod:`runner.childmachine`, which sits above this module).
WORKER_SCHEMES: Mapping[str, str] = MappingProxyType({"asl:": "runner.childmachine:child_machine"})


@cache
def resolve_worker(ref: str, allow_import_path: bool = True) -> Callable[..., Any]:
    """The function for a registered name, a scheme reference (``asl:{...}``) or, when
    allowed, a ``module:function`` path."""
    for scheme, target in WORKER_SCHEMES.items():
        if ref.startswith(scheme):
            factory: Callable[[str], Callable[..., Any]] = load(target, "a child state machine")
            return factory(ref)
    ep = _entry_points().get(ref)
    if ep is not None:
        target = f"{ep.module}:{ep.attr}"
        try:
            return load(target, f"worker {ref!r}")
        except MissingExtra:
            raise
        except (ImportError, AttributeError) as exc:  # a plugin's module, not an input error
            raise WorkerNotFound(f"cannot import worker {ref!r} ({target}): {exc}") from exc
    if ":" in ref and allow_import_path:
        try:
            target = _import_path(ref)
        except MissingExtra:
            raise
        except (ImportError, AttributeError) as exc:
            raise WorkerNotFound(f"cannot import worker {ref!r}: {exc}") from exc
        if not callable(target):
            raise WorkerNotFound(f"worker {ref!r} is not callable")
        return target
    known = ", ".join(sorted(_entry_points())) or "none"
    hint = "" if allow_import_path else " (import paths are not allowed here)"
    raise WorkerNotFound(f"unknown worker {ref!r}{hint}; registered workers: {known}")


def _import_path(ref: str) -> Any:
    top = ref.partition(":")[0].partition(".")[0]
    try:
        return load(ref, f"worker {ref!r}")
    except ModuleNotFoundError as exc:
        if exc.name != top or _WorkingDirectory.installed():
            raise  # a module it imports is missing, or the working directory was searched
    _WorkingDirectory.install()
    return load(ref, f"worker {ref!r}")


class _WorkingDirectory:
    """A last-resort finder: top-level modules in the working directory.

    It sits at the end of ``sys.meta_path``, after every other finder, including the ones
    editable installs add (which come after the ``sys.path`` finder, so even a directory
    appended to ``sys.path`` would shadow an editable install's packages). A name any installed
    module has is therefore never taken from the working directory. Installed only once an
    explicit ``module:function`` was not found otherwise; submodules of a package found here
    are found through that package's ``__path__``, as usual.
    """

    @staticmethod
    def find_spec(
        fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if path is not None:  # a submodule: its package's own __path__ finds it
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, [os.getcwd()])

    @classmethod
    def installed(cls) -> bool:
        return cls in sys.meta_path

    @classmethod
    def install(cls) -> None:
        if not cls.installed():
            importlib.invalidate_caches()  # files written since the last failed lookup
            sys.meta_path.append(cls)
