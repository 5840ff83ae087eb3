"""What a running state machine is made of: the clock, the task runner's contract, variable
scopes, the event history, the frame of a running state, and the calls states make (tasks,
waits, concurrent branches). :mod:`runner.states.interpreter` drives them; the state handlers
use them without importing the interpreter (it hands them ``Run.run_machine``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from runner.errors import StatesError
from runner.states.jsonpath import Scope

if TYPE_CHECKING:
    from runner.states.definition import Machine, State

__all__ = [
    "Clock",
    "Env",
    "Execution",
    "ExecutionConfig",
    "Run",
    "StateFrame",
    "TaskCall",
    "TaskRunner",
    "Variables",
    "call_task",
    "iso",
    "run_concurrently",
    "seconds_until",
    "wait_for",
]


class Clock:
    """Wall time and sleeping; tests pass one that records waits instead of sleeping."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


@dataclass(frozen=True, slots=True)
class TaskCall:
    """What a Task state asks of its runner, beside the resource and the payload."""

    state: str
    context: Mapping[str, Any]
    timeout_seconds: float | None
    heartbeat_seconds: float | None
    credentials: Any = None


class TaskRunner(Protocol):
    """Calls a Task's ``Resource``. Raise :class:`StatesError` to fail with an error name of
    your own (``Lambda.Unknown``, ``MyError``); any other exception fails the state with the
    exception's class name as the error and its message as the cause, like a Lambda error."""

    def __call__(self, resource: str, payload: Any, call: TaskCall) -> Any: ...


@dataclass(slots=True)
class ExecutionConfig:
    """One execution's fixed parts: who runs tasks and maps, and the context object's
    Execution and StateMachine entries."""

    tasks: TaskRunner
    clock: Clock = field(default_factory=Clock)
    distributed_map: Callable[..., Any] | None = None
    execution_name: str = ""
    state_machine_arn: str = "arn:aws:states:us-east-1:123456789012:stateMachine:local"
    role_arn: str = "arn:aws:iam::123456789012:role/shardmap-local"


@dataclass(slots=True)
class Execution:
    """The outcome, as DescribeExecution gives it, and the history."""

    status: str  # SUCCEEDED | FAILED | TIMED_OUT
    output: Any = None
    error: str | None = None
    cause: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    arn: str = ""
    start: datetime | None = None
    stop: datetime | None = None


class Variables:
    """A variable scope. Parallel branches and Map iterations get a child scope that reads its
    parents (a distributed Map's child starts from none); values assigned by a state take
    effect once the state is done, so every expression in a state reads the values it entered
    with."""

    __slots__ = ("_flat", "parent", "values")

    def __init__(self, parent: Variables | None = None, values: dict[str, Any] | None = None):
        self.parent = parent
        self.values: dict[str, Any] = dict(values or {})
        self._flat: dict[str, Any] | None = None

    def flat(self) -> dict[str, Any]:
        if self._flat is None:
            merged = dict(self.parent.flat()) if self.parent is not None else {}
            merged.update(self.values)
            self._flat = merged
        return self._flat

    def assign(self, assigned: Mapping[str, Any]) -> None:
        if assigned:
            self.values.update(assigned)
            self._flat = None


class History:
    """The execution's events, numbered as GetExecutionHistory numbers them."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, kind: str, previous: int | None = None, **details: Any) -> int:
        with self._lock:
            number = len(self.events) + 1
            event = {"id": number, "type": kind, "timestamp": self.clock.now()}
            if previous is not None:
                event["previousEventId"] = previous
            event.update(details)
            self.events.append(event)
            return number


class Run:
    """What every state of one execution shares (branches and iterations included)."""

    def __init__(
        self,
        config: ExecutionConfig,
        context: dict[str, Any],
        deadline: float | None,
        run_machine: Callable[[Machine, Any, Env], Any],
    ):
        self.config = config
        self.run_machine = run_machine  # the interpreter's, for Parallel branches and Map items
        self.clock = config.clock
        self.history = History(config.clock)
        self.context = context  # Execution and StateMachine entries
        self.deadline = deadline


#: An inline Map with no MaxConcurrency runs up to 40 iterations at once, as on AWS.
INLINE_CONCURRENCY = 40


def run_concurrently(calls: list[Callable[[], Any]], limit: int) -> list[Any]:
    """Run ``calls`` at most ``limit`` at once (0: up to :data:`INLINE_CONCURRENCY`); their
    results in order. The first to fail (in order) raises its error; later ones not yet
    started are cancelled. Each call gets a pool of its own, so that branches waiting on
    their own branches never starve one shared pool."""
    if limit == 1 or len(calls) <= 1:
        return [call() for call in calls]
    workers = min(limit or INLINE_CONCURRENCY, len(calls))
    with ThreadPoolExecutor(workers, thread_name_prefix="shardmap-states") as pool:
        futures = [pool.submit(call) for call in calls]
        try:
            return [future.result() for future in futures]
        finally:
            for future in futures:
                future.cancel()


class Env:
    """One running (sub-)machine: the shared run, its variable scope and extra context
    entries (``Map.Item`` inside a Map iteration)."""

    __slots__ = ("extra_context", "run", "variables")

    def __init__(self, run: Run, variables: Variables, extra_context: Mapping[str, Any]):
        self.run = run
        self.variables = variables
        self.extra_context = extra_context

    def child(self, extra_context: Mapping[str, Any] | None = None) -> Env:
        return Env(self.run, Variables(self.variables), extra_context or {})


class StateFrame:
    """A state while it runs: its context object and how to build its scope."""

    __slots__ = ("context", "entered", "env", "state")

    def __init__(self, state: State, env: Env, entered: int, entered_time: datetime):
        self.state = state
        self.env = env
        self.entered = entered
        self.context: dict[str, Any] = {
            **env.run.context,
            "State": {"EnteredTime": iso(entered_time), "Name": state.name, "RetryCount": 0},
            **env.extra_context,
        }

    def scope(self, data: Any) -> Scope:
        return Scope(data, self.context, self.env.variables.flat())

    def states(self, state_input: Any, **more: Any) -> dict[str, Any]:
        """``$states`` for a JSONata expression."""
        return {"input": state_input, "context": self.context, **more}


def iso(moment: datetime) -> str:
    """AWS's timestamps: UTC, milliseconds, ``Z``."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def check_deadline(run: Run) -> None:
    if run.deadline is not None and run.clock.monotonic() >= run.deadline:
        error = StatesError("States.Timeout", "The execution timed out")
        error.execution_timeout = True  # type: ignore[attr-defined]
        raise error


def call_task(frame: StateFrame, resource: str, payload: Any, timeout: float | None,
              heartbeat: float | None) -> Any:  # fmt: skip
    """Call the runner; its failures become this state's errors, marked as a Task's."""
    run = frame.env.run
    call = TaskCall(
        frame.state.name, frame.context, timeout, heartbeat, frame.state.raw.get("Credentials")
    )
    history = run.history
    scheduled = history.add("TaskScheduled", resource=resource, parameters=payload)
    history.add("TaskStarted", scheduled)
    try:
        if timeout is None:
            result = run.config.tasks(resource, payload, call)
        else:
            result = _call_with_timeout(run.config.tasks, (resource, payload, call), timeout)
    except StatesError as exc:
        exc.from_task = True  # type: ignore[attr-defined]
        history.add("TaskFailed", error=exc.error, cause=exc.cause)
        raise
    except Exception as exc:  # a worker's own error: its class names it, as Lambda's errorType
        error = StatesError(type(exc).__name__, str(exc))
        error.from_task = True  # type: ignore[attr-defined]
        history.add("TaskFailed", error=error.error, cause=error.cause)
        raise error from exc
    history.add("TaskSucceeded", output=result)
    return result


def _call_with_timeout(fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
    """``fn(*args)`` on a thread of its own, so that the clock starts when the call does; a
    call still running at the deadline is abandoned (a thread cannot be stopped) and the state
    fails with States.Timeout."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append((True, fn(*args)))
        except BaseException as exc:  # handed to the waiting thread below
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name="shardmap-task", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise StatesError("States.Timeout", "")
    ok, value = outcome[0]
    if ok:
        return value
    raise value


def wait_for(frame: StateFrame, seconds: float) -> None:
    """Wait, but never past the execution's deadline (which then times it out)."""
    run = frame.env.run
    if run.deadline is not None:
        left = run.deadline - run.clock.monotonic()
        if seconds > left:
            run.clock.sleep(max(left, 0))
            check_deadline(run)
    run.clock.sleep(seconds)


def seconds_until(frame: StateFrame, moment: datetime) -> float:
    return max((moment - frame.env.run.clock.now()) / timedelta(seconds=1), 0.0)
