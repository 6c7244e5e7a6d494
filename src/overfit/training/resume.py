"""Resume: checkpoints that bound lost work, and signals honoured at the next epoch boundary.

A run saves ``last.ckpt`` (Lightning's own atomic save: written aside, then moved)
every ``trainer.checkpoint_every_n_epochs`` epochs or ``checkpoint_every_seconds``
seconds, whichever comes first, and when a signal asks it to stop. Signals
(SIGTERM, SIGINT, and SLURM's SIGUSR1/SIGUSR2) are recorded, not acted on mid-step:
during training the :class:`Resume` callback saves at the end of the epoch and
raises :class:`Interrupted`; outside training (loading data, testing) the signal
raises at once. The checkpoint also carries the metric points not yet in the
store and the shuffling stream, so the resumed run continues its history exactly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

from overfit.interrupts import Interrupted, Signals

CHECKPOINT = "last.ckpt"


class Buffered(Protocol):
    """A logger whose unsent points travel in the checkpoint (overfit.tracking.logger.RunLogger)."""

    def pending(self) -> list[Any]: ...

    def restore(self, points: list[Any]) -> None: ...


class Resume(Checkpoint):
    """Saves ``last.ckpt`` at a cadence and on a signal, at the end of an epoch (after its metrics are logged).

    A :class:`~lightning.pytorch.callbacks.Checkpoint`, so Lightning calls it after the
    module's own ``on_train_epoch_end``; its state (the logger's unsent points)
    travels in the checkpoint.
    """

    def __init__(self, directory: Path, signals: Signals, logger: Any, every_n_epochs: int, every_seconds: float,
                 owner: str = "") -> None:
        self.path = directory / CHECKPOINT
        self.signals = signals
        self.logger: Buffered | None = logger if hasattr(logger, "pending") else None
        self.owner = owner  # the run (or group of runs) this checkpoint belongs to
        self.every_n_epochs = every_n_epochs
        self.every_seconds = every_seconds
        self._saved_epoch = 0
        self._saved_at = time.monotonic()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.signals.deferred = True
        self.signals.reinstall()
        self._saved_epoch = trainer.current_epoch
        self._saved_at = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        stopping = self.signals.received is not None
        due = epoch - self._saved_epoch >= self.every_n_epochs or time.monotonic() - self._saved_at >= self.every_seconds
        if stopping or (due and epoch < (trainer.max_epochs or 0)):
            trainer.save_checkpoint(self.path)
            self._saved_epoch, self._saved_at = epoch, time.monotonic()
        if stopping:
            raise Interrupted(self.signals.received)  # type: ignore[arg-type]

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.signals.deferred = False

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.signals.deferred = False

    def state_dict(self) -> dict[str, Any]:
        return {"owner": self.owner, "pending_metrics": self.logger.pending() if self.logger is not None else []}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.logger is not None:
            self.logger.restore(state_dict.get("pending_metrics", []))
