"""Warnings for what runs here but AWS would refuse: child inputs and outputs over 256 KiB.

Inputs are sampled (the first few children: encoding each one again would cost the hot path);
outputs are checked only when OversizedOutput is WARN (FAIL fails them in the child itself).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from runner.constants import AWS_MAX_CHILD_INPUT_BYTES, AWS_MAX_OUTPUT_BYTES

log = logging.getLogger("shardmap")

INPUT_SAMPLE = 16  # child inputs checked per run


class AwsLimits:
    def __init__(self, warnings: Iterable[str] = ()) -> None:
        #: The run's warnings (the spec's own first), as ``MapRunResult.warnings`` shows them.
        self.warnings: list[str] = list(warnings)
        self.checked_inputs = 0
        self.oversized_outputs = 0

    @property
    def sampling_inputs(self) -> bool:
        return self.checked_inputs < INPUT_SAMPLE

    def child_input(self, input_json: str) -> None:
        self.checked_inputs += 1
        size = len(input_json.encode())
        if size > AWS_MAX_CHILD_INPUT_BYTES and not any("256 KiB" in w for w in self.warnings):
            message = (
                f"a child input is {size} bytes; AWS rejects child inputs over 256 KiB "
                "(lower ItemBatcher.MaxItemsPerBatch or set MaxInputBytesPerBatch)"
            )
            self.warnings.append(message)
            log.warning(message)

    def child_output(self, output_json: str) -> None:
        """OversizedOutput WARN: keep the output, but say (once, then in the count) that AWS
        would fail this child with States.DataLimitExceeded."""
        if len(output_json) <= AWS_MAX_OUTPUT_BYTES // 4:
            return
        size = len(output_json.encode())
        if size <= AWS_MAX_OUTPUT_BYTES:
            return
        self.oversized_outputs += 1
        message = (
            f"{self.oversized_outputs} child output(s) over AWS's 256 KiB limit (the latest "
            f"{size:,} bytes); on AWS these children fail with States.DataLimitExceeded"
        )
        self.warnings = [w for w in self.warnings if "child output(s) over" not in w]
        self.warnings.append(message)
        if self.oversized_outputs == 1:
            log.warning(message)
