"""A Hydra callback that gives any other sweeper (Optuna's, say) overfit's parent run and report.

overfit's own sweeper does this itself. For another one, the sweep's parent is opened when
the multirun starts — its search space checked at its ends first — and its record written
in the sweep's directory, where every job finds it; the parent gets its report when the
multirun ends.
"""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from overfit.sweeping import driver, session


class SweepCallback(Callback):
    """The parent run of a sweep that another sweeper drives."""

    def __init__(self) -> None:
        self.progress: driver.Progress | None = None

    @staticmethod
    def _foreign(config: DictConfig) -> bool:
        return config.hydra.runtime.choices.get("hydra/sweeper") not in (None, "overfit")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self._foreign(config):
            return
        from overfit.compose import compose_jobs

        task_args = driver.task_only(list(config.hydra.overrides.task))
        try:
            searched = [o for o in config.hydra.overrides.hydra if o.startswith("hydra.searchpath=")]
            jobs = compose_jobs([*task_args, *searched], multirun=True)  # an interval sweep: its two ends
        except Exception as exc:
            raise session.Stopped(exc) from exc
        launcher = config.hydra.runtime.choices.get("hydra/launcher", "basic")
        total = int(config.hydra.sweeper.get("n_trials", len(jobs)))
        current = session.current()
        try:
            _, parent, sweep_dir = driver.open_sweep(config, task_args, jobs, current, launcher, total, own=False)
        except Exception as exc:
            raise session.Stopped(exc) from exc
        self.progress = driver.Progress(sweep_dir, parent, total, current.label)
        self.progress.start()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self._foreign(config):
            return
        from overfit.tracking.sweeps import close_parent

        if self.progress is not None:
            self.progress.stopped.set()
        current = session.current()
        if current.store is not None and current.parent is not None:
            current.outcome = close_parent(current.store, current.parent)
