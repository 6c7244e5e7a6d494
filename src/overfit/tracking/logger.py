"""Lightning's Logger for one existing MLflow run, over a :class:`~overfit.tracking.writer.MetricWriter`.

The module hands each evaluated epoch's metrics to :meth:`RunLogger.log_metrics` with
the epoch as the step; the writer's thread sends them in batches, so training never
waits on the store, and raises the store's failure here once the store is gone.
:meth:`pending` and :meth:`restore` carry the unsent points through a checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from overfit.tracking.writer import MetricWriter, Point


class RunLogger(Logger):
    """Metric points of one run, sent by ``writer``; ``logged`` holds the last step of each key already stored."""

    def __init__(self, writer: MetricWriter, run_id: str, logged: Mapping[str, int] | None = None) -> None:
        super().__init__()
        self.writer = writer
        self.run_id = run_id
        writer.open_run(run_id, logged)

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
        self.writer.check()
        self.writer.add(self.run_id, metrics, step or 0)

    def flush(self, budget: float | None = None) -> None:
        """Send everything queued, waiting for the store up to ``budget`` seconds (its deadline)."""
        self.writer.flush([self.run_id], budget)

    def pending(self) -> list[Point]:
        """Points not yet in the store (they travel in the checkpoint)."""
        return self.writer.pending(self.run_id)

    def restore(self, points: list[Point]) -> None:
        """Points a checkpoint carried; those the store already has are dropped by step."""
        self.writer.restore(self.run_id, points)

    def finalize(self, status: str = "success") -> None:
        """Lightning ends training: nothing to do yet — the run is tested, flushed and ended by its lifecycle."""
