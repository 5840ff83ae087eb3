"""The shardmap CLI with a crash point, for the crash-point tests (a fault-injection fixture).

``python -m tests.crash_driver POINT shardmap-args...`` runs the CLI and SIGKILLs its own
process when the engine reaches the named checkpoint (``runner.engine.records.checkpoint``),
so a test kills the driver exactly there instead of guessing with a sleep. Before dying it
writes ``$CRASH_MARKER`` (when set), so the test can tell the kill happened at that point.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from runner.cli import main
from runner.engine import records


def _die_at(point: str) -> None:
    def observer(name: str) -> None:
        if name == point:
            marker = os.environ.get("CRASH_MARKER")
            if marker:
                Path(marker).write_text(point)
            os.kill(os.getpid(), signal.SIGKILL)

    records.checkpoint_observers.append(observer)


if __name__ == "__main__":
    _die_at(sys.argv[1])
    main(sys.argv[2:], prog_name="shardmap")
