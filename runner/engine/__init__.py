"""The engine: the run API over one scheduling loop.

Data flows one way::

    reader ─► (index, item) ─► ItemSelector ─► ItemBatcher ─► queue ─► loop ─► executor
                                                                        │
                                                                        └─► records ─► results

Its modules, each importing only those below it (``.importlinter``):

- :mod:`~runner.engine.api`: ``run``, ``resume``, ``redrive``, ``export``;
- :mod:`~runner.engine.loop`: ``MapRun``, the one scheduling loop (MaxConcurrency, retries,
  timeouts, thresholds, signals);
- :mod:`~runner.engine.planner`: settings resolved against the run input, items read, selected
  and batched by the planner thread, resume's carry-over;
- :mod:`~runner.engine.records`: ARNs and child names, the journal or streamed results, the
  export in AWS's layout, crash-test checkpoints;
- :mod:`~runner.engine.tally`: item and execution counts, the threshold judgement;
- :mod:`~runner.engine.child`: one child execution's attempts, start, deadline and retries;
- :mod:`~runner.engine.limits`: warnings for inputs and outputs AWS would refuse.
"""

from runner.engine.api import export, redrive, resume, run
from runner.engine.planner import plan_batches
from runner.engine.records import map_run_arn
from runner.readers.infer import infer_item_reader
from runner.types import Counts, MapRunResult, RunProgress

__all__ = [
    "Counts",
    "MapRunResult",
    "RunProgress",
    "export",
    "infer_item_reader",
    "map_run_arn",
    "plan_batches",
    "redrive",
    "resume",
    "run",
]
