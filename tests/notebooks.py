"""Run a notebook top to bottom the way the tests check every shipped notebook."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbclient
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager


@dataclass
class Executed:
    notebook: Any  # the executed notebook, outputs filled in
    outputs: list[Any]  # every code cell's outputs, in order
    stdout: str  # what the cells printed


def execute_notebook(path: Path, cwd: Path, timeout: int = 120) -> Executed:
    """Execute ``path`` in ``cwd``; a failing cell raises CellExecutionError with its traceback.

    The kernel inherits this process's environment (S3 endpoint, credentials, the run to read).
    """
    notebook = nbformat.read(path, as_version=4)
    # Only ipykernel's own kernel spec, which runs this interpreter (the venv): a "python3"
    # kernel installed elsewhere on the machine would lack shardmap.
    kernel = KernelManager(
        kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[])
    )
    client = nbclient.NotebookClient(
        notebook, km=kernel, timeout=timeout, startup_timeout=60,
        resources={"metadata": {"path": str(cwd)}},
    )  # fmt: skip
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    stdout = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
    return Executed(notebook, outputs, stdout)
