"""The shardmap CLI whose leads reduce step dies right after its commit, for
``test_a_crash_between_commit_and_archive_is_repaired_by_a_rerun`` (a fault-injection fixture).

``python -m tests.leads_crash shardmap-args...`` runs the CLI with ``workers.leads._commit``
wrapped: the real commit runs (curated and rejects objects, then the marker, last) and, the
moment it returns, the process ends with ``os._exit(EXIT_CODE)``: no ``finally``, no cleanup,
no archiving, like a driver killed there. An exception instead would be caught by the runner as
a failed reduce step, a different and milder path. The hook lives here, not in the worker.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from runner.cli import main
from workers import leads

#: What the crashed process exits with, so the test tells this crash from any other failure.
EXIT_CODE = 75


def _die_after_commit() -> None:
    commit = leads._commit

    def commit_then_die(*args: Any, **kwargs: Any) -> Any:
        commit(*args, **kwargs)
        os._exit(EXIT_CODE)

    leads._commit = commit_then_die  # reduce() looks _commit up in the module when it runs


if __name__ == "__main__":
    _die_after_commit()
    main(sys.argv[1:], prog_name="shardmap")
