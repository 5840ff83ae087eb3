"""Packaging: the core install is the runner alone, workloads and Dask are extras, a missing
extra is one clear error naming the ``pip install`` to run, exact pins live in constraints.txt,
and the working directory never shadows shardmap's own modules.

The slow test installs this checkout into a fresh venv exactly as the README's first command
does (``pip install -c constraints.txt -e .``) and runs the demo there.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from packaging.requirements import Requirement

from runner.cli import main
from runner.errors import MissingExtra
from runner.executors import get_executor
from runner.registry import EXTRAS, resolve_worker
from runner.samples import get_sample

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OPTIONAL = PYPROJECT["optional-dependencies"]
#: Extras that bundle others or serve a surface no registry entry needs.
BUNDLES = {"all", "test", "snakemake"}
SHARDMAP = Path(sys.executable).parent / "shardmap"


def _name(requirement: str | Requirement) -> str:
    if isinstance(requirement, str):
        requirement = Requirement(requirement)
    return re.sub(r"[-_.]+", "-", requirement.name).lower()


def _closure(requirements: Iterable[str]) -> set[str]:
    """Every distribution the requirements install (as installed here), extras followed."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(text) for text in requirements]
    while todo:
        requirement = todo.pop()
        key = (_name(requirement), frozenset(requirement.extras))
        if key in seen or key[0] == "shardmap":
            continue
        seen.add(key)
        try:
            needs = importlib.metadata.requires(key[0]) or []
        except importlib.metadata.PackageNotFoundError:  # another platform's dependency
            continue
        for text in needs:
            need = Requirement(text)
            extras = requirement.extras or {""}
            if need.marker is None or any(need.marker.evaluate({"extra": e}) for e in extras):
                todo.append(need)
    return {name for name, _ in seen}


def _extra_requirements(extra: str) -> list[str]:
    """The requirements of one extra, with ``shardmap[...]`` self-references expanded."""
    found = []
    for text in OPTIONAL[extra]:
        requirement = Requirement(text)
        if _name(requirement) == "shardmap":
            for inner in sorted(requirement.extras):
                found += _extra_requirements(inner)
        else:
            found.append(text)
    return found


@functools.cache
def _distributions_of() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()  # reads every RECORD: once


def _providers(module: str) -> set[str]:
    return {_name(d) for d in _distributions_of().get(module, [])}


# -- the declared dependencies ----------------------------------------------------------------


def test_the_core_install_is_the_runner_alone() -> None:
    core = {_name(text) for text in PYPROJECT["dependencies"]}
    for extra in EXTRAS:
        assert not core & {_name(text) for text in OPTIONAL[extra]}, extra
    assert not {"dask", "distributed", "pillow", "mappy", "pysam", "scikit-image"} & core


def test_the_library_states_ranges_and_constraints_pin_them() -> None:
    requirements = list(PYPROJECT["dependencies"])
    for extra in OPTIONAL:
        requirements += _extra_requirements(extra)
    for text in requirements:
        assert "==" not in text, f"an exact pin in pyproject.toml: {text}"
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt pins exact versions only: {line!r}"
            pins[_name(name)] = version
    assert "shardmap" not in pins
    # Every distribution an install of `.[test]` brings is pinned: CI installs what was tested.
    unpinned = _closure(requirements) - set(pins)
    assert not unpinned, f"not in constraints.txt: {sorted(unpinned)}"


def test_all_and_test_bring_every_extra() -> None:
    extras = set(OPTIONAL) - {"all", "test"}
    assert {_name(text) for text in _extra_requirements("all")} == {
        _name(text) for extra in extras for text in OPTIONAL[extra]
    }
    assert set(_extra_requirements("all")) <= set(_extra_requirements("test"))


def test_the_registry_knows_each_extra_and_what_it_installs() -> None:
    assert set(EXTRAS) == set(OPTIONAL) - BUNDLES
    for extra, entry in EXTRAS.items():
        installs = _closure(OPTIONAL[extra])
        for module in entry.modules:
            assert _providers(module) & installs, f"[{extra}] installs no {module!r}"
        for text in OPTIONAL[extra]:  # each of the extra's distributions is checked for
            assert any(_name(text) in _providers(m) for m in entry.modules), (extra, text)


def test_every_module_that_imports_an_extra_is_tied_to_it() -> None:
    core = _closure(PYPROJECT["dependencies"])
    owner = {}  # distribution -> the extra that installs it
    for extra in EXTRAS:
        owner.update(dict.fromkeys(_closure(OPTIONAL[extra]) - core, extra))
    untied = []
    for path in sorted([*(ROOT / "runner").rglob("*.py"), *(ROOT / "workers").glob("*.py")]):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for imported in _imports(path):
            for extra in {owner[d] for d in _providers(imported) if d in owner}:
                needed_by = EXTRAS[extra].needed_by
                if not any(module == m or module.startswith(m + ".") for m in needed_by):
                    untied.append(f"{module} imports {imported} ([{extra}])")
    assert not untied


def _imports(path: Path) -> set[str]:
    """Top-level names a module imports, lazily inside functions too."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


# -- a missing extra (blocked imports: None in sys.modules is what Python treats as absent) -------


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch) -> Any:
    def block(*modules: str) -> None:
        for module in modules:
            monkeypatch.setitem(sys.modules, module, None)
        resolve_worker.cache_clear()  # it caches what it resolved while they were there

    yield block
    resolve_worker.cache_clear()


def test_a_worker_sample_or_executor_without_its_extra_names_the_install(without: Any) -> None:
    without("PIL", "mappy", "distributed")
    cases = [
        (lambda: resolve_worker("image-thumbnails"), "images", "worker 'image-thumbnails'"),
        (lambda: get_sample("genomics"), "genomics", "sample 'genomics'"),
        (lambda: get_executor("dask"), "dask", "executor 'dask'"),
    ]
    for call, extra, needed_by in cases:
        with pytest.raises(MissingExtra) as caught:
            call()
        assert caught.value.extra == extra and caught.value.exit_code == 2
        assert str(caught.value).startswith(needed_by)
        assert str(caught.value).endswith(f"pip install 'shardmap[{extra}]'")
    resolve_worker("echo")  # the core workers still load


def test_the_cli_says_which_extra_to_install(
    without: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    without("phonenumbers")
    monkeypatch.setenv("SHARDMAP_STATE_DIR", str(tmp_path / "state"))
    runner = CliRunner()
    pipeline = str(ROOT / "pipelines" / "leads.yaml")
    done = runner.invoke(main, ["run", pipeline, "--source", str(tmp_path)])
    assert done.exit_code == 2, done.output
    assert done.output.strip().splitlines() == [
        "MissingExtra: worker 'leads-curate' needs the leads extra (no module 'phonenumbers'): "
        "pip install 'shardmap[leads]'"
    ]
    listed = runner.invoke(main, ["workers"])
    assert listed.exit_code == 0
    assert "pip install 'shardmap[leads]'" in next(
        line for line in listed.output.splitlines() if line.startswith("leads-reduce ")
    )


# -- the working directory (the installed console script, in a directory of the user's) ---------


def _user_directory(tmp_path: Path) -> Path:
    """A user's project: a ``workers/`` package of its own (that must never load), a worker
    module using shardmap's ``workers.basic`` and a sibling module, and three items."""
    (tmp_path / "workers").mkdir()
    (tmp_path / "workers" / "__init__.py").write_text(
        'raise RuntimeError("the working directory shadowed shardmap\'s workers")\n'
    )
    (tmp_path / "mymod.py").write_text(
        textwrap.dedent(
            """\
            import helper
            from workers.basic import echo

            def fn(event):
                return {"tag": helper.TAG, "echo": echo(event)}
            """
        )
    )
    (tmp_path / "helper.py").write_text('TAG = "mine"\n')
    (tmp_path / "broken.py").write_text("import not_installed_anywhere\n")
    (tmp_path / "items.jsonl").write_text("".join(f'{{"n": {n}}}\n' for n in range(3)))
    return tmp_path


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # as a user runs it
    env["SHARDMAP_STATE_DIR"] = str(cwd / ".state")
    return subprocess.run(
        [str(SHARDMAP), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _outputs(dest: Path) -> list[Any]:
    (manifest,) = dest.glob("*/manifest.json")
    records = json.loads(next(manifest.parent.glob("SUCCEEDED_*.json")).read_text())
    return sorted((json.loads(r["Output"]) for r in records), key=lambda o: o["echo"]["n"])


def test_a_workers_folder_in_the_working_directory_does_not_shadow_ours(tmp_path: Path) -> None:
    cwd = _user_directory(tmp_path)
    done = _cli(cwd, "map", "items.jsonl", "--worker", "echo", "--dest", "out")
    assert done.returncode == 0, done.stdout + done.stderr
    listed = _cli(cwd, "workers")
    assert listed.returncode == 0 and "shadowed" not in listed.stdout + listed.stderr
    assert "cannot load" not in listed.stdout.split("image-thumbnails")[0]  # echo, fail-some...


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_a_module_function_worker_loads_from_the_working_directory(
    tmp_path: Path, executor: str
) -> None:
    cwd = _user_directory(tmp_path)
    args = ["map", "items.jsonl", "--worker", "mymod:fn", "--executor", executor]
    done = _cli(cwd, *args, "--dest", "out")
    assert done.returncode == 0, done.stdout + done.stderr
    # its sibling module loaded from there too, and its `workers` import got shardmap's
    assert _outputs(cwd / "out") == [{"tag": "mine", "echo": {"n": n}} for n in range(3)]


def test_a_broken_user_module_is_a_clear_worker_error(tmp_path: Path) -> None:
    cwd = _user_directory(tmp_path)
    broken = _cli(cwd, "map", "items.jsonl", "--worker", "broken:fn", "--dest", "out")
    missing = _cli(cwd, "map", "items.jsonl", "--worker", "nowhere:fn", "--dest", "out")
    assert (broken.returncode, missing.returncode) == (2, 2)
    assert broken.stderr.strip() == (
        "WorkerNotFound: cannot import worker 'broken:fn': No module named 'not_installed_anywhere'"
    )
    assert missing.stderr.strip() == (
        "WorkerNotFound: cannot import worker 'nowhere:fn': No module named 'nowhere'"
    )


# -- a fresh venv: the README's first command ---------------------------------------------------


@pytest.mark.slow
def test_a_fresh_core_install_runs_the_demo_and_names_missing_extras(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SHARDMAP_EXECUTOR")}
    # The README's first command, against this checkout: `pip install -c constraints.txt -e .`
    pip = [str(venv / "bin" / "pip"), "install", "-q", "-c", str(ROOT / "constraints.txt")]
    install = subprocess.run(
        [*pip, "-e", str(ROOT)], env=env, capture_output=True, text=True, timeout=540
    )
    assert install.returncode == 0, install.stdout + install.stderr
    listing = "import importlib.metadata as m; print([d.name.lower() for d in m.distributions()])"
    present = subprocess.run(
        [str(venv / "bin" / "python"), "-c", listing], env=env, capture_output=True, text=True
    ).stdout
    assert "'shardmap'" in present and "'pyarrow'" in present
    absent = ["pillow", "scikit-image", "imagehash", "mappy", "pysam", "dask", "distributed"]
    for name in [*absent, "phonenumbers", "email-validator", "snakemake"]:
        assert f"'{name}'" not in present, f"the core install brought {name}"

    work = tmp_path / "work"
    work.mkdir()
    shardmap = venv / "bin" / "shardmap"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(shardmap), *args]
        return subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)

    sample = cli("sample", "demo", "demo-data")
    assert sample.returncode == 0, sample.stdout + sample.stderr
    demo = cli("run", str(ROOT / "pipelines" / "demo.yaml"))
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "Map Run SUCCEEDED" in demo.stdout
    assert len(list((work / "demo-results").glob("*/manifest.json"))) == 1

    images = cli("run", str(ROOT / "pipelines" / "images.yaml"))
    assert images.returncode == 2, images.stdout + images.stderr
    assert images.stderr.strip() == (
        "MissingExtra: worker 'image-thumbnails' needs the images extra (no module 'PIL'): "
        "pip install 'shardmap[images]'"
    )
    for args, extra in [
        (("sample", "genomics", "g"), "genomics"),
        (("map", "demo-data", "--worker", "echo", "--executor", "dask", "--dest", "d"), "dask"),
    ]:
        done = cli(*args)
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr.strip().endswith(f"pip install 'shardmap[{extra}]'"), done.stderr
