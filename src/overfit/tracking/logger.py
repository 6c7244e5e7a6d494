"""Lightning's MLflow logger, batched: metrics go to the store a thousand at a time.

Lightning calls ``log_metrics`` once per epoch; writing each call to SQLite (or
over HTTP) costs more than the epoch itself for small models. This logger keeps
the points and sends them with one ``log_batch`` when the buffer fills, every
few seconds, and at the end. It leaves the run's status to the tracker, which
knows whether the whole job (test, artifacts) succeeded.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from mlflow.entities import Metric

MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch
FLUSH_SECONDS = 5.0


class BatchedMLFlowLogger(MLFlowLogger):
    """An :class:`MLFlowLogger` on an existing run that buffers metric points."""

    def __init__(self, run_id: str, tracking_uri: str) -> None:
        super().__init__(run_id=run_id, tracking_uri=tracking_uri)
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        self._buffer += [Metric(key=k, value=float(v), timestamp=now, step=step or 0) for k, v in metrics.items()]
        if len(self._buffer) >= MAX_BATCH or time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        while self._buffer:
            chunk, self._buffer = self._buffer[:MAX_BATCH], self._buffer[MAX_BATCH:]
            self.experiment.log_batch(run_id=self.run_id, metrics=chunk)
        self._last_flush = time.monotonic()

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        self.flush()
