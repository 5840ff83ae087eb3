"""notebooks/map_run.ipynb runs top to bottom on a real run and draws its three plots."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from runner import RunStatus, run
from tests.notebooks import execute_notebook
from tests.test_engine import spec_for, write_jsonl

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "map_run.ipynb"
PLOTS = ("plot-timeline", "plot-durations", "plot-failures")


def test_the_committed_notebook_has_no_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, cell.source[:60]


@pytest.mark.parametrize("failing", [(7, 55), ()], ids=["some-failures", "no-failures"])
def test_notebook_analyses_a_run(
    failing: tuple[int, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [{"n": n, "fail": n in failing} for n in range(100)]
    source = write_jsonl(str(tmp_path / "items.jsonl"), items)
    spec = spec_for(
        source,
        str(tmp_path / "out"),
        "tests.workers_for_tests:fail_marked",
        ItemBatcher={"MaxItemsPerBatch": 10},
        ToleratedFailurePercentage=50,
    )
    result = run(spec, executor="threads")
    assert result.status == RunStatus.SUCCEEDED
    # The kernel inherits this process's environment, where the autouse fixture already set
    # SHARDMAP_STATE_DIR to this test's state directory.
    monkeypatch.setenv("SHARDMAP_RUN_ID", result.run_id)

    ran = execute_notebook(NOTEBOOK, tmp_path)
    notebook, outputs, stdout = ran.notebook, ran.outputs, ran.stdout
    assert f"run {result.run_id}: SUCCEEDED, 10 batches" in stdout
    assert ("ValueError: 2 batches, 20 items" in stdout) == bool(failing)
    # Warnings raised in the kernel (matplotlib, pandas) arrive as stderr output.
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    for tag in PLOTS:
        (cell,) = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert len(images) == 1, f"{tag} drew no image: {cell.outputs}"
