"""Results in AWS's Distributed Map layout: written (:mod:`.writer`), named (:mod:`.names`) and
read back (:mod:`.loader`).

Layout (AWS developer guide, ``input-output-resultwriter``, section "Exporting to Amazon S3")::

    <dest>/<map-run-id>/manifest.json      written last, after every result file is complete
    <dest>/<map-run-id>/SUCCEEDED_<n>.json successful children
    <dest>/<map-run-id>/FAILED_<n>.json    failed, timed-out and aborted children
    <dest>/<map-run-id>/PENDING_<n>.json   children never started

``<n>`` starts at 0 and moves on when a file would pass ``rollover_bytes`` (AWS: 5 GB). Only files
that received a value exist and are listed. Records are AWS's (Transformation ``NONE``): keys in
alphabetical order as AWS writes them, ``Input``/``Output`` as compact JSON *strings*, dates as
``2025-02-04T01:49:50.099Z`` (UTC, milliseconds). ``COMPACT`` writes the bare outputs of successful
children, ``FLATTEN`` concatenates array outputs; failed and pending records always stay ``NONE``.

Choices where AWS documents nothing:

- ``OutputType: JSONL`` files are named ``<STATUS>_<n>.jsonl`` (AWS only ever shows ``.json``).
  The suffix keeps our JSONL files unambiguous to the loader, which also reads JSONL stored under
  a ``.json`` name by sniffing the content (see :func:`iter_result_records`).
- PENDING records carry no ``StartDate``/``StopDate``/``Output``/``OutputDetails``.
- A failed or pending record still carrying :class:`ChildRecord`'s success defaults for the
  redrive fields is written as AWS writes failed Map Run children: ``RedriveStatus``
  ``REDRIVABLE_BY_MAP_RUN`` and no ``RedriveStatusReason``.
- Local and other non-bucket destinations: ``DestinationBucket`` is the destination URL as given
  and each ``Key`` is relative to it (``<map-run-id>/SUCCEEDED_0.json``). The loader ignores both
  and finds result files next to ``manifest.json``, so a manifest copied from AWS loads too.
"""

from runner.results.loader import iter_result_records, load_results
from runner.results.names import child_name, parse_child_name
from runner.results.writer import ResultWriter, ResultWriterDetails

__all__ = [
    "ResultWriter",
    "ResultWriterDetails",
    "child_name",
    "iter_result_records",
    "load_results",
    "parse_child_name",
]
