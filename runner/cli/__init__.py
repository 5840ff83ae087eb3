"""The ``shardmap`` command line. Thin: parse, build a MapSpec, call the public API, render.

Exit codes (:mod:`runner.errors` gives each error class its own): 0 the run succeeded, 1 the run
failed or was aborted, 2 bad usage or bad input (an invalid pipeline, an unknown worker, an item
source whose data cannot be read), 3 storage or a service could not be used (unreachable, access
denied, disk full).
"""

from __future__ import annotations

# Each command module registers its commands on ``main`` when imported.
from runner.cli import durable, run, stepfunctions, triggers  # noqa: F401
from runner.cli.common import EXIT_FAILED, main

__all__ = ["EXIT_FAILED", "main"]
