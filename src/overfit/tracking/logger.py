"""Lightning's Logger for one existing MLflow run: batched, patient with the store, resumable.

The module hands each evaluated epoch's metrics to :meth:`RunLogger.log_metrics`
with the epoch as the step. Points are buffered and sent with ``log_batch``
(a thousand at a time, every few seconds, and at the end). When the store is
locked or away, a flush keeps the points and tries again later with backoff,
so training never waits on it; only the final flush waits, for a bounded time.
On a resumed run the points already in the store are skipped by step, and the
points still buffered when the checkpoint was written come back with it: the
history continues without gaps or duplicate steps.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from overfit.tracking.store import RETRY_SECONDS, Store, StoreError

if TYPE_CHECKING:
    from mlflow.entities import Param

MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch
FLUSH_SECONDS = 5.0
MAX_BACKOFF = 30.0

Point = tuple[str, float, int, int]  # key, value, timestamp (ms), step


class RunLogger(Logger):
    """Metric points of one run, sent in batches; ``logged`` holds the last step of each key already stored."""

    def __init__(self, store: Store, run_id: str, logged: Mapping[str, int] | None = None,
                 params: list[Param] | None = None, every: float = FLUSH_SECONDS) -> None:
        super().__init__()
        self.store = store
        self.run_id = run_id
        self.logged = dict(logged or {})
        self.params = list(params or [])  # sent with the first batch of metrics
        self.every = every
        self._buffer: list[Point] = []
        self._next_flush = time.monotonic() + every
        self._backoff = every

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str:
        return self.run_id

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Params are the run's flattened config, logged when the run is created."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        step = step or 0
        now = int(time.time() * 1000)
        self._buffer += [(k, float(v), now, step) for k, v in metrics.items() if step > self.logged.get(k, -1)]
        if len(self._buffer) >= MAX_BATCH or time.monotonic() >= self._next_flush:
            self.flush(budget=0.0)

    def flush(self, budget: float = RETRY_SECONDS) -> None:
        """Send the buffer. ``budget=0``: one try, points kept on failure; else wait up to ``budget`` s or raise."""
        from mlflow.entities import Metric

        try:
            while self._buffer or self.params:
                chunk = self._buffer[:MAX_BATCH]
                metrics = [Metric(key=k, value=v, timestamp=t, step=s) for k, v, t, s in chunk]
                self.store.call_within(budget, "log_batch", self.run_id, metrics=metrics, params=self.params[:100])
                del self._buffer[:MAX_BATCH]
                del self.params[:100]
                for k, _, _, s in chunk:
                    self.logged[k] = max(s, self.logged.get(k, -1))
        except StoreError:
            if budget > 0:
                raise
            self._next_flush = time.monotonic() + self._backoff  # the store is busy: keep the points, try later
            self._backoff = min(self._backoff * 2, max(MAX_BACKOFF, self.every))
            return
        self._next_flush = time.monotonic() + self.every
        self._backoff = self.every

    def pending(self) -> list[Point]:
        """Points not yet in the store (they travel in the checkpoint)."""
        return list(self._buffer)

    def restore(self, points: list[Point]) -> None:
        """Points a checkpoint carried; those the store already has are dropped by step."""
        self._buffer = [p for p in points if p[3] > self.logged.get(p[0], -1)] + self._buffer

    def finalize(self, status: str = "success") -> None:
        """Lightning ends training: nothing to do yet — the task tests, then flushes and sets the run's status."""
