"""runner.settings: the one module that reads the environment; each setting's default, override
and bad value; and the CLI passing --state-dir/--scheduler down as arguments, never through
os.environ."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import fields
from pathlib import Path

import pytest
from click.testing import CliRunner

import runner.settings
from runner.cli import main
from runner.errors import EXIT_BAD_INPUT, SpecError
from runner.settings import (
    DEFAULT_SHARD_BYTES,
    DEFAULT_STATE_DIR,
    LambdaSettings,
    Settings,
    env_var,
    lambda_settings,
    settings,
)

ROOT = Path(__file__).parent.parent
RUNNER = ROOT / "runner"
W = "tests.workers_for_tests"
ALL_VARIABLES = [env_var(f.name) for cls in (Settings, LambdaSettings) for f in fields(cls)]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No shardmap variable set (conftest sets SHARDMAP_STATE_DIR for every test)."""
    for variable in ALL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


# -- only runner/settings.py reads the environment ---------------------------------------------

_ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}

#: Every place of runner/ besides runner/settings.py that touches the process environment,
#: with why. (A place that builds a child process's environment copies it, ``{**os.environ,
#: ...}``: it belongs here too, with its reason.)
ALLOWED = {
    # a webhook's HMAC secret, read from the variable the user's trigger config names: user
    # data by name, not a shardmap setting
    ("runner/triggers/notify.py", "_post"): 1,
}


def environment_uses(source: str) -> list[tuple[str, int]]:
    """(enclosing function or class, line) of every use of ``os.environ``, ``os.getenv`` and
    the like in ``source``, through ``import os as x`` and ``from os import environ`` too."""
    tree = ast.parse(source)
    modules = {"os"}
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "os" or alias.name.startswith("os."):
                    modules.add(alias.asname or "os")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            names |= {
                alias.asname or alias.name for alias in node.names if alias.name in _ENV_NAMES
            }
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, where: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            where = f"{where}.{node.name}" if where else node.name
        if (
            isinstance(node, ast.Attribute)
            and node.attr in _ENV_NAMES
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
        ) or (isinstance(node, ast.Name) and node.id in names):
            found.append((where or "<module>", node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, where)

    visit(tree, "")
    return found


def test_the_scan_finds_every_spelling_of_an_environment_read() -> None:
    source = (
        "import os\nimport os as system\nfrom os import environ, getenv as ge\n"
        "A = os.environ.get('X')\n"
        "def f():\n    return system.getenv('Y')\n"
        "class C:\n    def m(self):\n        environ['Z'] = '1'\n        return ge('Z')\n"
        "B = {**os.environ, 'Q': '1'}\n"
        "os.path.join('a', 'b')\n"  # not the environment
    )
    assert environment_uses(source) == [
        ("<module>", 4),
        ("f", 6),
        ("C.m", 9),
        ("C.m", 10),
        ("<module>", 11),
    ]


def test_only_settings_reads_the_environment() -> None:
    found: Counter[tuple[str, str]] = Counter()
    lines: dict[tuple[str, str], list[int]] = {}
    for path in sorted(RUNNER.rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name == "runner/settings.py":
            continue
        for where, line in environment_uses(path.read_text()):
            found[(name, where)] += 1
            lines.setdefault((name, where), []).append(line)
    unexpected = {key: lines[key] for key in found if key not in ALLOWED}
    assert not unexpected, f"read the environment through runner.settings: {unexpected}"
    assert dict(found) == ALLOWED  # an allowed place that is gone leaves the list too


# -- each setting: default, override, bad value ------------------------------------------------


def test_defaults(clean_env: pytest.MonkeyPatch) -> None:
    assert settings() == Settings()
    assert settings().state_dir == DEFAULT_STATE_DIR == ".shardmap"
    assert settings().executor == "local"
    assert settings().dask_scheduler is None
    assert settings().shard_bytes == DEFAULT_SHARD_BYTES == 64 << 20
    assert settings().tools_dir is None
    assert lambda_settings() == LambdaSettings(None, None, None, None)


def test_an_empty_variable_counts_as_unset(clean_env: pytest.MonkeyPatch) -> None:
    for variable in ALL_VARIABLES:
        clean_env.setenv(variable, "")
    assert settings() == Settings()
    assert lambda_settings() == LambdaSettings()


def test_state_dir(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from runner.journal import default_state_dir, list_runs

    assert default_state_dir() == ".shardmap"
    clean_env.setenv("SHARDMAP_STATE_DIR", str(tmp_path / "journals"))
    assert settings().state_dir == default_state_dir() == str(tmp_path / "journals")
    (tmp_path / "journals" / "runs").mkdir(parents=True)
    (tmp_path / "journals" / "runs" / "bad.sqlite").write_text("not a journal")
    assert list_runs() == []  # looked there (and skipped what is not a journal)


def test_executor(clean_env: pytest.MonkeyPatch) -> None:
    from runner.executors import get_executor
    from runner.executors.local import LocalExecutor

    made = get_executor()
    assert isinstance(made, LocalExecutor) and made.mode == "threads"
    clean_env.setenv("SHARDMAP_EXECUTOR", "inline")
    assert settings().executor == "inline"
    made = get_executor()
    assert isinstance(made, LocalExecutor) and made.mode == "inline"
    assert get_executor("processes").mode == "processes"  # type: ignore[attr-defined]


def test_a_bad_executor_name_names_the_variable(clean_env: pytest.MonkeyPatch) -> None:
    from runner.errors import ExecutorError
    from runner.executors import get_executor

    clean_env.setenv("SHARDMAP_EXECUTOR", "bogus")
    with pytest.raises(SpecError, match=r"^SHARDMAP_EXECUTOR: unknown executor 'bogus'; known: "):
        get_executor()
    with pytest.raises(ExecutorError, match="unknown executor 'other'") as raised:
        get_executor("other")  # an argument is not the variable
    assert not isinstance(raised.value, SpecError)
    done = CliRunner().invoke(main, ["map", "x.jsonl", "--worker", "echo", "--dest", "out"])
    assert done.exit_code == EXIT_BAD_INPUT, done.output
    assert "SpecError: SHARDMAP_EXECUTOR: unknown executor 'bogus'" in done.output


def test_dask_scheduler(clean_env: pytest.MonkeyPatch) -> None:
    from runner.executors.dask import DaskExecutor

    assert DaskExecutor().scheduler is None  # a LocalCluster on __enter__
    clean_env.setenv("SHARDMAP_DASK_SCHEDULER", "tcp://10.0.0.1:8786")
    assert settings().dask_scheduler == "tcp://10.0.0.1:8786"
    assert DaskExecutor().scheduler == "tcp://10.0.0.1:8786"
    assert DaskExecutor("tcp://10.0.0.2:8786").scheduler == "tcp://10.0.0.2:8786"  # argument wins


def test_shard_bytes(clean_env: pytest.MonkeyPatch) -> None:
    from runner.shards import _shard_bytes

    assert _shard_bytes() == DEFAULT_SHARD_BYTES
    clean_env.setenv("SHARDMAP_SHARD_BYTES", "4096")
    assert settings().shard_bytes == _shard_bytes() == 4096


@pytest.mark.parametrize("bad", ["abc", "0", "-5", "1.5", "64MiB"])
def test_a_bad_shard_bytes_names_the_variable(clean_env: pytest.MonkeyPatch, bad: str) -> None:
    clean_env.setenv("SHARDMAP_SHARD_BYTES", bad)
    with pytest.raises(SpecError) as raised:
        settings()
    assert raised.value.path == "SHARDMAP_SHARD_BYTES"
    assert str(raised.value) == (
        f"SHARDMAP_SHARD_BYTES: must be a positive whole number of bytes, got {bad!r}"
    )
    assert raised.value.exit_code == EXIT_BAD_INPUT


def test_a_bad_variable_is_a_usage_error_of_the_cli(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SHARDMAP_SHARD_BYTES", "abc")
    done = CliRunner().invoke(main, ["runs"])
    assert done.exit_code == EXIT_BAD_INPUT
    assert "SpecError: SHARDMAP_SHARD_BYTES: must be a positive whole number" in done.output
    assert "Traceback" not in done.output


def test_tools_dir(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from runner.aws.checks import TOOLS_DIR, asl_validator
    from runner.errors import AslValidatorMissing

    assert settings().tools_dir is None and TOOLS_DIR.name == "tools"
    clean_env.setenv("SHARDMAP_TOOLS_DIR", str(tmp_path))
    assert settings().tools_dir == tmp_path
    definition = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
    with pytest.raises(AslValidatorMissing) as raised:
        asl_validator(definition)
    if "node is not on PATH" not in str(raised.value):
        assert f"not installed under {tmp_path}/node_modules" in str(raised.value)


def test_lambda_settings(clean_env: pytest.MonkeyPatch) -> None:
    from runner.aws import handler

    clean_env.setenv("SHARDMAP_WORKER", "echo")
    clean_env.setenv("SHARDMAP_REDUCE", "total")
    clean_env.setenv("SHARDMAP_SOURCE", "s3://bucket/in/")
    clean_env.setenv("SHARDMAP_BATCH_INPUT", '{"threshold": 3}')
    assert lambda_settings() == LambdaSettings(
        worker="echo", reduce="total", source="s3://bucket/in/", batch_input={"threshold": 3}
    )
    assert handler.lambda_handler({"Items": [{"n": 1}]}) == [{"n": 1}]  # ran "echo"
    assert (handler.WORKER_ENV, handler.REDUCE_ENV) == ("SHARDMAP_WORKER", "SHARDMAP_REDUCE")


def test_a_bad_batch_input_names_the_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SHARDMAP_BATCH_INPUT", "{not json")
    with pytest.raises(SpecError, match=r"^SHARDMAP_BATCH_INPUT: not valid JSON: "):
        lambda_settings()


def test_settings_are_read_at_every_call(clean_env: pytest.MonkeyPatch) -> None:
    assert settings().executor == "local"
    clean_env.setenv("SHARDMAP_EXECUTOR", "threads")
    assert settings().executor == "threads"
    assert settings({"SHARDMAP_EXECUTOR": "inline"}).executor == "inline"  # or from a mapping


def test_reprs_mask_credentials() -> None:
    shown = repr(LambdaSettings(source="s3://AKIA:s3cret@bucket/in/"))
    assert "s3cret" not in shown and "s3://***@bucket/in/" in shown
    assert "s3cret" not in repr(Settings(dask_scheduler="tls://me:s3cret@scheduler:8786"))


def test_every_variable_is_documented() -> None:
    """The module's table names each field's variable, the README each run setting's."""
    doc = runner.settings.__doc__ or ""
    table = {
        line.split()[0]: line.split()[1].strip("`")
        for line in doc.splitlines()
        if line.startswith("SHARDMAP_")
    }
    expected = {env_var(f.name): f.name for cls in (Settings, LambdaSettings) for f in fields(cls)}
    assert table == expected
    readme = (ROOT / "README.md").read_text()
    for f in fields(Settings):
        assert f"`{env_var(f.name)}`" in readme, f.name
    assert "SHARDMAP_STATE_DIR" in CliRunner().invoke(main, ["--help"]).output
    assert "SHARDMAP_DASK_SCHEDULER" in CliRunner().invoke(main, ["map", "--help"]).output


# -- the CLI passes its flags down as arguments ------------------------------------------------


def items_file(tmp_path: Path, failing: int | None = None) -> str:
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps({"n": n, "fail": n == failing}) + "\n" for n in range(12)))
    return str(path)


def test_state_dir_reaches_every_command_without_touching_os_environ(
    tmp_path: Path, state_dir: Path
) -> None:
    flagged = tmp_path / "flagged"
    before = dict(os.environ)  # SHARDMAP_STATE_DIR is conftest's state_dir, not flagged

    def cli(*args: str, at: Path | None = flagged) -> object:
        done = CliRunner().invoke(
            main, [*(["--state-dir", str(at)] if at else []), *args], catch_exceptions=False
        )
        assert dict(os.environ) == before, args  # nothing was written to the environment
        return done

    items = items_file(tmp_path, failing=5)
    ran = cli("map", items, "--worker", f"{W}:fail_marked", "--dest", str(tmp_path / "out"),
              "--batch-size", "4", "--run-id", "r1")  # fmt: skip
    # One batch fails: the run is FAILED (1). Its report, printed after it, read the same
    # journal: under another state dir it would be a JournalError (2).
    assert ran.exit_code == 1, ran.output
    assert (flagged / "runs" / "r1.sqlite").is_file()
    assert not (state_dir / "runs" / "r1.sqlite").exists()

    listed = cli("runs", "--json")
    assert [row["runId"] for row in json.loads(listed.output)] == ["r1"]
    assert json.loads(cli("runs", "--json", at=None).output) == []  # the variable's: no run

    status = cli("status", "r1", "--json")
    assert status.exit_code == 0 and json.loads(status.output)["status"] == "FAILED"
    newest = cli("status", "--json")
    assert json.loads(newest.output)["status"] == "FAILED"
    assert cli("status", "r1", at=None).exit_code == EXIT_BAD_INPUT  # not under the variable's

    report = cli("report", "r1", "--json")
    assert report.exit_code == 0 and json.loads(report.output)["run_id"] == "r1"

    redriven = cli("redrive", "r1")  # the same item fails again
    assert redriven.exit_code == 1, redriven.output
    assert json.loads(cli("runs", "--json").output)[0]["redriveCount"] == 1

    resumed = cli("resume", "r1")  # found, and refused: it is not interrupted
    assert resumed.exit_code == EXIT_BAD_INPUT and "is FAILED, not interrupted" in resumed.output
    exported = cli("export", "r1")
    assert exported.exit_code == EXIT_BAD_INPUT and "no results waiting" in exported.output


def test_a_subprocess_journals_under_the_flag_with_no_variable_set(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDMAP_")}
    flagged = tmp_path / "journals"
    done = subprocess.run(
        [sys.executable, "-m", "runner", "--state-dir", str(flagged), "map", items_file(tmp_path),
         "--worker", "echo", "--dest", str(tmp_path / "out"), "--run-id", "sub"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (flagged / "runs" / "sub.sqlite").is_file()
    assert not (tmp_path / ".shardmap").exists()  # the default, had the flag not reached it
    listed = subprocess.run(
        [sys.executable, "-m", "runner", "--state-dir", str(flagged), "runs", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert [row["runId"] for row in json.loads(listed.stdout)] == ["sub"], listed.stderr


@pytest.mark.parametrize(
    ("args", "variable", "named"),
    [
        (["--executor", "threads"], None, "'threads'"),
        ([], None, "'local'"),  # no --executor: the default
        ([], "processes", "'processes'"),  # no --executor: $SHARDMAP_EXECUTOR
    ],
)
def test_scheduler_without_the_dask_executor_is_a_usage_error(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, args: list[str], variable: str | None,
    named: str,
) -> None:  # fmt: skip
    if variable:
        clean_env.setenv("SHARDMAP_EXECUTOR", variable)
    done = CliRunner().invoke(
        main,
        ["map", items_file(tmp_path), "--worker", "echo", "--dest", str(tmp_path / "out"),
         "--scheduler", "tcp://127.0.0.1:8786", *args],
    )  # fmt: skip
    assert done.exit_code == EXIT_BAD_INPUT, done.output
    assert f"--scheduler applies to --executor dask, not to {named}" in done.output
    assert not (tmp_path / "out").exists()  # nothing ran


def test_scheduler_with_stepfunctions_is_a_usage_error(tmp_path: Path) -> None:
    done = CliRunner().invoke(
        main,
        ["run", str(ROOT / "pipelines" / "demo.yaml"), "--executor", "stepfunctions",
         "--scheduler", "tcp://127.0.0.1:8786"],
    )  # fmt: skip
    assert done.exit_code == EXIT_BAD_INPUT, done.output
    assert "--scheduler applies to --executor dask, not to 'stepfunctions'" in done.output


def test_the_scheduler_variable_alone_does_not_make_a_usage_error(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Ambient configuration is not a flag: a threads run ignores it, as before."""
    clean_env.setenv("SHARDMAP_DASK_SCHEDULER", "tcp://127.0.0.1:8786")
    done = CliRunner().invoke(
        main,
        ["--state-dir", str(tmp_path / "state"), "map", items_file(tmp_path), "--worker", "echo",
         "--dest", str(tmp_path / "out"), "--executor", "threads"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output


def test_scheduler_sends_the_run_to_that_cluster(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from distributed import Client, LocalCluster

    from runner import load_results

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0")
        as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        theirs = set(client.run(os.getpid).values())
        before = dict(os.environ)
        done = CliRunner().invoke(
            main,
            ["--state-dir", str(tmp_path / "state"), "map", items_file(tmp_path),
             "--worker", f"{W}:count_concurrency", "--dest", str(tmp_path / "out"),
             "--batch-size", "3", "--executor", "dask", "--scheduler", cluster.scheduler_address],
            catch_exceptions=False,
        )  # fmt: skip
        assert dict(os.environ) == before
    assert done.exit_code == 0, done.output
    manifest = next(
        line.split("manifest: ", 1)[1] for line in done.output.splitlines() if "manifest: " in line
    )
    pids = set(load_results(manifest)["output"])
    assert pids and pids <= theirs  # ran on that cluster's worker, not a LocalCluster of its own
