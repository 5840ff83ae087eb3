"""ruff, mypy and the import contracts are part of the test suite, so CI keeps the code clean
and the layers of runner/ pointing one way."""

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_ruff_check_is_clean() -> None:
    ruff = Path(sys.executable).parent / "ruff"
    done = subprocess.run(
        [str(ruff), "check", "runner", "workers", "pipelines", "tests", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_is_clean_on_the_runner() -> None:
    mypy = Path(sys.executable).parent / "mypy"
    done = subprocess.run([str(mypy)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# -- import contracts (import-linter; the layers are drawn in docs/architecture.md) -------------

CONTRACTS = ROOT / ".importlinter"


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).parent / "lint-imports"
    assert lint.exists(), "import-linter is part of the test extra: pip install import-linter"
    return subprocess.run(
        [str(lint), "--no-cache", "--no-logo", str(root / ".importlinter")],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
    )


def _contracts() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(CONTRACTS)
    return config


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def test_import_contracts_are_kept() -> None:
    done = _lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_no_contract_ignores_an_import() -> None:
    config = _contracts()
    contracts = [name for name in config.sections() if name.startswith("importlinter:contract:")]
    assert len(contracts) >= 4
    for name in contracts:
        assert not config[name].get("ignore_imports", "").strip(), name


def test_storage_is_forbidden_every_layer_above_the_bottom() -> None:
    """The storage contract lists the layers by hand: it must follow the layers contract."""
    config = _contracts()
    layers = config["importlinter:contract:layers"]
    assert layers.get("exhaustive") == "True"
    rows = [[name.strip() for name in row.split("|")] for row in _lines(layers["layers"])]
    assert set(rows[-1]) == {"errors", "types", "constants", "jsontext"}  # the bottom
    above = {f"runner.{name}" for row in rows[:-1] for name in row} - {"runner.readers"}
    forbidden = set(_lines(config["importlinter:contract:storage"]["forbidden_modules"]))
    assert forbidden == above | {"runner.readers.*"}


def test_the_contracts_catch_an_upward_import_and_a_second_sqlite_user(tmp_path: Path) -> None:
    """The same contracts on a copy of runner/ with two violations: both are reported."""
    shutil.copytree(ROOT / "runner", tmp_path / "runner", ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(CONTRACTS, tmp_path / ".importlinter")
    with open(tmp_path / "runner" / "errors.py", "a") as f:
        f.write("\n\ndef _upward() -> None:\n    import runner.engine  # noqa: F401\n")
    with open(tmp_path / "runner" / "report.py", "a") as f:
        f.write("\n\nimport sqlite3  # noqa: E402,F401\n")
    done = _lint_imports(tmp_path)
    assert done.returncode != 0
    assert "runner.errors is not allowed to import runner.engine" in done.stdout, done.stdout
    assert "runner.report -> sqlite3" in done.stdout, done.stdout
