"""Batches on a Dask ``distributed`` cluster: a LocalCluster of worker processes by default, or an
existing scheduler (``scheduler=`` / ``SHARDMAP_DASK_SCHEDULER``).

Only execution moves: the scheduling loop above keeps concurrency, retries, timeouts,
thresholds, the journal and the results exactly as on the local executor. Dask's futures are
bridged to ``concurrent.futures.Future`` so the loop waits on both kinds the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, Self

from runner.errors import ExecutorError

__all__ = ["DaskExecutor"]

ENV_SCHEDULER = "SHARDMAP_DASK_SCHEDULER"


class DaskExecutor:
    """Run callables on Dask workers.

    ``scheduler``: a ``tcp://host:port`` address; when absent (and ``SHARDMAP_DASK_SCHEDULER``
    is unset) a ``LocalCluster`` with one single-threaded worker process per core is started on
    ``__enter__`` and closed on ``__exit__``.
    """

    name = "dask"
    remote = True  # callables travel by pickle; workers import the worker function by name
    prefetch = 16  # a scheduler round trip costs milliseconds: keep every worker fed

    def __init__(
        self,
        scheduler: str | None = None,
        *,
        n_workers: int | None = None,
        max_workers: int | None = None,
    ) -> None:
        self.scheduler = scheduler or os.environ.get(ENV_SCHEDULER) or None
        self.n_workers = n_workers or os.cpu_count() or 1
        self.max_workers = max_workers
        self.slots = max_workers or self.n_workers
        self._client: Any = None
        self._cluster: Any = None
        self._remote: dict[Future, Any] = {}

    def __enter__(self) -> Self:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # an optional dependency in spirit: say how to get it
            raise ExecutorError(
                "the dask executor needs `pip install 'dask[distributed]'`"
            ) from exc
        if self.scheduler:
            self._client = Client(self.scheduler)
        else:
            self._cluster = LocalCluster(
                n_workers=self.n_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
            )
            self._client = Client(self._cluster)
        threads = sum(self._client.nthreads().values()) or 1
        self.slots = min(self.max_workers, threads) if self.max_workers else threads
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._remote:
            self._client.cancel(list(self._remote.values()), force=True)
            self._remote.clear()
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    @property
    def client(self) -> Any:
        if self._client is None:
            raise ExecutorError("executor is not open; use it as a context manager")
        return self._client

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        remote = self.client.submit(fn, *args, pure=False, **kwargs)
        local: Future = Future()
        local.set_running_or_notify_cancel()
        self._remote[local] = remote

        def settle(done: Any) -> None:
            self._remote.pop(local, None)
            if local.done():
                return
            try:
                local.set_result(done.result())
            except BaseException as exc:  # KilledWorker, CancelledError, the task's own error
                local.set_exception(exc)

        remote.add_done_callback(settle)
        return local

    def cancel(self, futures: Iterable[Future]) -> None:
        remote = [self._remote.pop(f) for f in futures if f in self._remote]
        if remote:
            self.client.cancel(remote, force=True)

    def describe(self) -> str:
        link = getattr(self._client, "dashboard_link", None) if self._client else None
        where = self.scheduler or "LocalCluster"
        return f"dask {where} x{self.slots}" + (f" dashboard {link}" if link else "")
