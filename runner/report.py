"""A run's report: wall time, throughput, batch durations, failures, and what it would cost on AWS.

The report is read from the run's journal (read-only, so it works while the run is going and
from any process). The cost estimate prices the same work as a Distributed Map in us-east-1 with
one Lambda ``Task`` per child execution, two ways: Standard child workflows and Express child
workflows, each plus Lambda. Prices are on-demand list prices
(aws.amazon.com/step-functions/pricing, aws.amazon.com/lambda/pricing); free tiers and volume
tiers are left out, because both are monthly, per account, and a single run cannot know what else
the account used.

The pricing model, per child execution (one batch, or one item without an ItemBatcher):

**Standard children** ($0.025 per 1,000 state transitions). Three transitions per child, plus one
per retry:

1. the Distributed Map state starting the child (AWS bills the parent one state transition per
   child workflow execution it starts: Step Functions guide, "Transitions in Distributed Map
   states", concepts-transitions.html);
2. the child entering its Task state;
3. the Task state leaving to end the child;
4. each retry is "charged as an additional state transition" (Step Functions pricing page).

**Express children** ($1.00 per million requests + $0.06 per GB-hour). One request per child.
Duration runs from the child's start to its end, retries and their waits included, rounded up to
100 ms *per execution*. The memory is the child workflow's own, not the Lambda's: AWS estimates it
as 50 MB + definition size + payload, billed in 64 MB steps. A one-Task child with an input of at
most 256 KiB (AWS's cap) uses about 50.3 MB, so it is billed 64 MB. The parent still pays the Map's
one dispatch transition per child (item 1 above), which is counted in the Express total too. The
$0.06 rate is the first 1,000 GB-hours of a month; later tiers are cheaper, so this is an upper
bound.

**Lambda** ($0.20 per million requests + $0.0000166667 per GB-second, x86). Every attempt is a
request (a retry invokes the function again); each attempt's duration is rounded up to 1 ms and
billed at the configured memory size.

Durations are the worker's own time measured where it ran, so they leave out AWS's invoke overhead
and cold starts: real bills run somewhat higher for very short batches.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from runner.journal import Journal, default_state_dir
from runner.spec import MapSpec
from runner.status import describe_map_run

__all__ = [
    "CostEstimate",
    "RunReport",
    "build_report",
    "estimate_cost",
    "estimate_for_items",
    "format_report",
    "report_to_dict",
]

# us-east-1 on-demand list prices.
STANDARD_USD_PER_TRANSITION = 0.025 / 1000
EXPRESS_USD_PER_REQUEST = 1.00 / 1_000_000
EXPRESS_USD_PER_GB_HOUR = 0.06  # first 1,000 GB-hours of a month
LAMBDA_USD_PER_REQUEST = 0.20 / 1_000_000
LAMBDA_USD_PER_GB_SECOND = 0.0000166667  # x86

#: Map dispatch + entering the Task + leaving it; retries add one each.
TRANSITIONS_PER_CHILD = 3
#: AWS's Express memory estimate for a one-Task child: 50 MB + its largest input (256 KiB).
EXPRESS_CHILD_MEMORY_MB = 50 + 256 / 1024
EXPRESS_MEMORY_STEP_MB = 64
LAMBDA_MEMORY_RANGE_MB = (128, 10240)


@dataclass(frozen=True)
class CostEstimate:
    """What a run's children would cost on AWS, as Standard or Express workflows plus Lambda.

    Every ``*_usd`` field is US dollars, us-east-1, without free or volume tiers. See the module
    docstring for the model.

    Examples
    --------
    >>> cost = estimate_cost(children=10, attempts=10, attempt_seconds=[0.2] * 10)
    >>> cost.state_transitions, cost.lambda_billed_ms
    (30, 2000)
    """

    memory_mb: int  #: Lambda memory size
    children: int  #: child workflow executions
    attempts: int  #: Lambda invocations (first attempts and retries)
    retries: int
    state_transitions: int  #: with Standard children, the Map's dispatch included
    standard_usd: float
    dispatch_usd: float  #: the Map's one transition per child, paid with Express children too
    express_requests: int
    express_memory_mb: int  #: billed memory of one Express child (a multiple of 64 MB)
    express_billed_seconds: float
    express_gb_hours: float
    express_usd: float  #: Express requests and duration
    lambda_requests: int
    lambda_billed_ms: int
    lambda_gb_seconds: float
    lambda_usd: float
    standard_lambda_usd: float  #: Standard children + Lambda
    express_lambda_usd: float  #: Map dispatch + Express children + Lambda


@dataclass(frozen=True)
class RunReport:
    """One run at a glance: time, throughput, batch durations, failures and AWS cost.

    Duration percentiles are over every attempt's worker time (``None`` before any attempt
    ran); an attempt with no worker time (timed out, aborted, still running) counts with its
    wall time until it stopped, or until the run stopped. ``failures_by_error`` holds
    ``(error, batches, items)`` for FAILED and TIMED_OUT batches, most items first.

    Examples
    --------
    >>> report = build_report(None, "2f1c...")  # doctest: +SKIP
    >>> report.items_per_second, report.cost.standard_lambda_usd  # doctest: +SKIP
    (812.4, 0.0031)
    """

    run_id: str
    status: str
    execution_type: str  #: the spec's ExecutionType: which cost line applies to this pipeline
    start_date: str
    stop_date: str | None
    wall_seconds: float  #: start to stop, or to now while running
    items: int
    items_per_second: float  #: finished (succeeded, failed, timed-out) items per wall second
    succeeded: int
    failed: int
    timed_out: int
    aborted: int
    pending: int
    running: int
    batches: int
    p50_seconds: float | None
    p90_seconds: float | None
    p99_seconds: float | None
    max_seconds: float | None
    attempts: int
    retries: int
    failures_by_error: list[tuple[str, int, int]]
    cost: CostEstimate
    error: str | None = None
    cause: str | None = None


# -- the cost model ----------------------------------------------------------------------------


def estimate_cost(
    children: int,
    attempts: int,
    attempt_seconds: Iterable[float],
    memory_mb: int = 1024,
    *,
    child_seconds: Iterable[float] | None = None,
    express_memory_mb: float = EXPRESS_CHILD_MEMORY_MB,
) -> CostEstimate:
    """Price ``children`` child executions that made ``attempts`` Lambda invocations.

    Parameters
    ----------
    children
        Child workflow executions (batches that ran; a redriven batch runs a new one).
    attempts
        Lambda invocations: one per child plus one per retry.
    attempt_seconds
        The duration of each attempt (``attempts`` values); each is billed rounded up to 1 ms.
    memory_mb
        Lambda memory size, 128 to 10,240 MB.
    child_seconds
        The duration of each child execution, start to end with retries and their waits
        (``children`` values), billed for Express rounded up to 100 ms each. Without it each
        attempt stands for one child, which is exact when nothing was retried.
    express_memory_mb
        The memory one Express child uses (see the module docstring); billed in 64 MB steps.

    Returns
    -------
    CostEstimate

    Raises
    ------
    ValueError
        Negative counts, fewer attempts than children, a duration count that does not match,
        or a memory size Lambda does not offer.

    Examples
    --------
    >>> cost = estimate_cost(2, 3, [0.0004, 0.1234, 1.0])
    >>> cost.state_transitions, cost.lambda_billed_ms, cost.express_billed_seconds
    (7, 1125, 1.3)
    """
    seconds = list(attempt_seconds)
    if len(seconds) != attempts:
        raise ValueError(f"attempt_seconds has {len(seconds)} values for {attempts} attempts")
    per_child = seconds if child_seconds is None else list(child_seconds)
    if child_seconds is not None and len(per_child) != children:
        raise ValueError(f"child_seconds has {len(per_child)} values for {children} children")
    return _estimate(
        children,
        attempts,
        lambda_billed_ms=sum(_billed_units(s, 0.001) for s in seconds),
        express_billed_100ms=sum(_billed_units(s, 0.1) for s in per_child),
        memory_mb=memory_mb,
        express_memory_mb=express_memory_mb,
    )


def estimate_for_items(
    spec: MapSpec,
    items: int,
    seconds_per_batch: float,
    memory_mb: int = 1024,
    *,
    items_per_batch: int | None = None,
) -> CostEstimate:
    """Estimate a run before it starts: ``items`` items, each batch taking ``seconds_per_batch``.

    There is one child per batch of ``ItemBatcher.MaxItemsPerBatch`` items, or one per item
    without an ItemBatcher. Nothing is assumed to be retried.

    Parameters
    ----------
    spec
        The pipeline.
    items
        How many items the source holds (after ``MaxItems``).
    seconds_per_batch
        Worker time of one batch (one item without an ItemBatcher).
    memory_mb
        Lambda memory size, 128 to 10,240 MB.
    items_per_batch
        Overrides the batch size; needed when the spec batches by ``MaxInputBytesPerBatch``
        or a ``...Path`` field, which cannot be known before reading the input.

    Raises
    ------
    ValueError
        The batch size cannot be known from the spec and ``items_per_batch`` is not given.

    Examples
    --------
    >>> spec = MapSpec.from_dict({"Worker": "echo", "ItemBatcher": {"MaxItemsPerBatch": 100}})
    >>> estimate_for_items(spec, 1_000_000, 2.0).children
    10000
    """
    if items < 0 or seconds_per_batch < 0:
        raise ValueError("items and seconds_per_batch must be 0 or greater")
    size = items_per_batch
    if size is None:
        batcher = spec.item_batcher
        if batcher is None:
            size = 1
        elif batcher.max_items_per_batch is not None and not batcher.max_input_bytes_per_batch:
            size = batcher.max_items_per_batch
        else:
            raise ValueError(
                "the batch size depends on the input (MaxInputBytesPerBatch or a Path field); "
                "pass items_per_batch"
            )
    if size < 1:
        raise ValueError("items_per_batch must be 1 or greater")
    children = math.ceil(items / size)
    # Arithmetic rather than a list of durations: a 100-million-item estimate stays instant.
    return _estimate(
        children,
        children,
        lambda_billed_ms=children * _billed_units(seconds_per_batch, 0.001),
        express_billed_100ms=children * _billed_units(seconds_per_batch, 0.1),
        memory_mb=memory_mb,
    )


def _estimate(
    children: int,
    attempts: int,
    *,
    lambda_billed_ms: int,
    express_billed_100ms: int,
    memory_mb: int,
    express_memory_mb: float = EXPRESS_CHILD_MEMORY_MB,
) -> CostEstimate:
    low, high = LAMBDA_MEMORY_RANGE_MB
    if not low <= memory_mb <= high:
        raise ValueError(f"Lambda memory must be {low} to {high} MB, got {memory_mb}")
    if children < 0 or attempts < children:
        raise ValueError(f"need 0 <= children <= attempts, got {children} and {attempts}")
    if express_memory_mb <= 0:
        raise ValueError("express_memory_mb must be positive")
    retries = attempts - children
    transitions = TRANSITIONS_PER_CHILD * children + retries
    standard_usd = transitions * STANDARD_USD_PER_TRANSITION
    dispatch_usd = children * STANDARD_USD_PER_TRANSITION

    express_mb = _billed_units(express_memory_mb, EXPRESS_MEMORY_STEP_MB) * EXPRESS_MEMORY_STEP_MB
    express_seconds = express_billed_100ms / 10
    express_gb_hours = express_seconds * express_mb / 1024 / 3600
    express_usd = children * EXPRESS_USD_PER_REQUEST + express_gb_hours * EXPRESS_USD_PER_GB_HOUR

    lambda_gb_seconds = lambda_billed_ms / 1000 * memory_mb / 1024
    lambda_usd = attempts * LAMBDA_USD_PER_REQUEST + lambda_gb_seconds * LAMBDA_USD_PER_GB_SECOND
    return CostEstimate(
        memory_mb=memory_mb,
        children=children,
        attempts=attempts,
        retries=retries,
        state_transitions=transitions,
        standard_usd=standard_usd,
        dispatch_usd=dispatch_usd,
        express_requests=children,
        express_memory_mb=express_mb,
        express_billed_seconds=express_seconds,
        express_gb_hours=express_gb_hours,
        express_usd=express_usd,
        lambda_requests=attempts,
        lambda_billed_ms=lambda_billed_ms,
        lambda_gb_seconds=lambda_gb_seconds,
        lambda_usd=lambda_usd,
        standard_lambda_usd=standard_usd + lambda_usd,
        express_lambda_usd=dispatch_usd + express_usd + lambda_usd,
    )


def _billed_units(amount: float, unit: float) -> int:
    """``amount`` rounded up to whole ``unit``s, at least one (nothing runs in zero time)."""
    # round() first: 4.001 s / 1 ms is 4001.0000000000005 in floating point, which is 4001 ms.
    return max(1, math.ceil(round(amount / unit, 6)))


# -- the report --------------------------------------------------------------------------------


def build_report(state_dir: str | None, run_id: str, memory_mb: int = 1024) -> RunReport:
    """Read run ``run_id``'s journal under ``state_dir`` (default: the usual one) into a report.

    The journal is opened read-only, so a running run can be reported on from another process.

    Raises
    ------
    JournalError
        There is no journal for ``run_id``.
    ValueError
        ``memory_mb`` is not a Lambda memory size.

    Examples
    --------
    >>> print(format_report(build_report(None, result.run_id)))  # doctest: +SKIP
    """
    with Journal.open(state_dir or default_state_dir(), run_id, readonly=True) as journal:
        row = journal.run()
        described = describe_map_run(journal)
        failures = journal.failure_summary()
        attempt_rows = journal.attempts()
    now = time.time()
    start = datetime.fromisoformat(row.start_date).timestamp()
    stop = datetime.fromisoformat(row.stop_date).timestamp() if row.stop_date else now
    wall = max(0.0, stop - start)

    durations: list[float] = []
    children: dict[tuple[int, int], list[tuple[float, float, float]]] = {}
    for attempt in attempt_rows:
        # Attempts still running, or aborted when the run stopped (their end is not journaled),
        # last until the run's stop: now while it runs.
        stopped = attempt.stopped if attempt.stopped is not None else stop
        # A timed-out attempt has no worker time; Lambda would bill it until it was stopped.
        seconds = attempt.seconds
        if seconds is None:
            seconds = max(0.0, stopped - attempt.started)
        durations.append(seconds)
        key = (attempt.batch, attempt.redrive)
        children.setdefault(key, []).append((attempt.started, stopped, seconds))
    cost = estimate_cost(
        len(children),
        len(durations),
        durations,
        memory_mb,
        child_seconds=[_child_seconds(runs) for runs in children.values()],
    )

    items = described["itemCounts"]
    done = items["succeeded"] + items["failed"] + items["timedOut"]
    ordered = sorted(durations)
    return RunReport(
        run_id=row.id,
        status=row.status,
        execution_type=str(row.spec.get("ExecutionType", "STANDARD")),
        start_date=row.start_date,
        stop_date=row.stop_date,
        wall_seconds=wall,
        items=items["total"],
        items_per_second=done / wall if wall > 0 else 0.0,
        succeeded=items["succeeded"],
        failed=items["failed"],
        timed_out=items["timedOut"],
        aborted=items["aborted"],
        pending=items["pending"],
        running=items["running"],
        batches=described["executionCounts"]["total"],
        p50_seconds=_percentile(ordered, 0.50),
        p90_seconds=_percentile(ordered, 0.90),
        p99_seconds=_percentile(ordered, 0.99),
        max_seconds=ordered[-1] if ordered else None,
        attempts=cost.attempts,
        retries=cost.retries,
        failures_by_error=failures,
        cost=cost,
        error=row.error,
        cause=row.cause,
    )


def _child_seconds(attempts: list[tuple[float, float, float]]) -> float:
    """One child execution's duration: its attempts plus the retry waits between them."""
    total = sum(seconds for _, _, seconds in attempts)
    for (_, stopped, _), (started, _, _) in itertools.pairwise(attempts):
        total += max(0.0, started - stopped)
    return total


def _percentile(ordered: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (NumPy's default)."""
    if not ordered:
        return None
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# -- rendering ---------------------------------------------------------------------------------


def format_report(report: RunReport) -> str:
    """A few lines for the terminal.

    Examples
    --------
    >>> print(format_report(build_report(None, run_id)))  # doctest: +SKIP
    run 2f1c...  SUCCEEDED in 1.24 s  1,000 items, 806.5 items/s
    items     950 succeeded, 50 failed
    ...
    """
    r, cost = report, report.cost
    lines = [
        f"run {r.run_id}  {r.status} in {_duration(r.wall_seconds)}  "
        f"{r.items:,} items, {r.items_per_second:,.1f} items/s"
    ]
    if r.error:
        lines.append(f"error     {r.error}: {r.cause or ''}".rstrip())
    counts = [
        ("succeeded", r.succeeded),
        ("failed", r.failed),
        ("timed out", r.timed_out),
        ("aborted", r.aborted),
        ("pending", r.pending),
        ("running", r.running),
    ]
    shown = [f"{n:,} {name}" for name, n in counts if n or name == "succeeded"]
    lines.append("items     " + ", ".join(shown))
    if r.p50_seconds is not None:
        lines.append(
            f"batches   {r.batches:,}, {r.attempts:,} attempts ({r.retries:,} retries); "
            f"p50 {_duration(r.p50_seconds)}  p90 {_duration(r.p90_seconds)}  "
            f"p99 {_duration(r.p99_seconds)}  max {_duration(r.max_seconds)}"
        )
    else:
        lines.append(f"batches   {r.batches:,}, none started")
    for error, batches, items in r.failures_by_error:
        lines.append(
            f"failures  {error or '(no error name)'}: {batches:,} batches, {items:,} items"
        )
    here = {r.execution_type: "  <- this pipeline's ExecutionType"}
    lines += [
        f"cost      us-east-1 list prices, no free tier; Lambda x86 {cost.memory_mb} MB",
        f"  Standard + Lambda  {_usd(cost.standard_lambda_usd):<12}{here.get('STANDARD', '')}",
        f"  Express + Lambda   {_usd(cost.express_lambda_usd):<12}{here.get('EXPRESS', '')}",
        f"  Standard children  {_usd(cost.standard_usd):<12}  {cost.state_transitions:,} "
        f"transitions ({TRANSITIONS_PER_CHILD} per child + 1 per retry)",
        f"  Express children   {_usd(cost.express_usd):<12}  {cost.express_requests:,} requests, "
        f"{cost.express_billed_seconds:,.1f} s at {cost.express_memory_mb} MB "
        f"({cost.express_gb_hours:.3g} GB-h)",
        f"  Map dispatch       {_usd(cost.dispatch_usd):<12}  {cost.children:,} transitions "
        "(paid with Express children too)",
        f"  Lambda             {_usd(cost.lambda_usd):<12}  {cost.lambda_requests:,} requests, "
        f"{cost.lambda_gb_seconds:.3g} GB-s",
    ]
    return "\n".join(line.rstrip() for line in lines)


def report_to_dict(report: RunReport) -> dict[str, Any]:
    """The report as plain JSON-able data (``shardmap report --json``).

    Examples
    --------
    >>> json.dumps(report_to_dict(build_report(None, run_id)))  # doctest: +SKIP
    """
    data = asdict(report)
    data["failures_by_error"] = [
        {"error": error, "batches": batches, "items": items}
        for error, batches, items in report.failures_by_error
    ]
    return data


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes:.0f} min {rest:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours:.0f} h {minutes:.0f} min"


def _usd(amount: float) -> str:
    """Dollars with three significant digits below $1, so a tiny run's cost is not $0.00."""
    if amount >= 1 or amount == 0:
        return f"${amount:,.2f}"
    digits = min(12, 2 - math.floor(math.log10(amount)))
    return f"${amount:.{digits}f}"
