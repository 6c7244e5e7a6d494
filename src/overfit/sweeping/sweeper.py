"""``hydra/sweeper=overfit`` (the default): Hydra's grid sweep, each point composed once, launched as a plan.

It expands the grid as Hydra's basic sweeper does (the product of the sweep overrides,
last key fastest), then hands the points to :func:`overfit.sweeping.driver.prepare`: every
point composed once and validated before the sweep's parent run exists, the finished ones
reused, the rest planned into jobs that the configured launcher runs (basic, joblib,
submitit, SLURM). When the jobs end the parent gets its report; a signal ends it KILLED.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from overfit.interrupts import Signals
from overfit.sweeping import driver, session
from overfit.tracking.store import CLOSE_SECONDS
from overfit.tracking.sweeps import close_parent


class GridSweeper(Sweeper):
    """A grid of points; its jobs are the plan's units (a batched group, or one point)."""

    def __init__(self, max_batch_size: int | None = None) -> None:
        self.max_batch_size = max_batch_size  # kept for config compatibility with the basic sweeper: jobs are units
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None
        current = session.current()
        with ExitStack() as resources:  # what lives as long as the sweep: its writers
            try:
                prepared = driver.prepare(self.config, driver.task_only(arguments), current, resources)
            except Exception as exc:  # bad input or a store that cannot be used: past Hydra, to the CLI's one line
                raise session.Stopped(exc) from exc
            return self._run(prepared, current)

    def _run(self, prepared: driver.Prepared, current: session.Session) -> Any:
        assert self.config is not None
        if prepared.jobs is None:
            current.outcome = prepared.outcome
            return []
        assert prepared.sweep_dir is not None
        with read_write(self.config), open_dict(self.config):  # the launcher puts its jobs in the sweep's own folder
            self.config.hydra.sweep.dir = str(prepared.sweep_dir)
        OmegaConf.save(self.config, prepared.sweep_dir / "multirun.yaml")  # as Hydra's basic sweeper leaves it
        progress = driver.Progress(prepared.sweep_dir, prepared.parent, prepared.total, current.label)
        progress.start()
        with Signals() as signals:  # SIGTERM / Ctrl-C while the jobs run: the sweep ends KILLED, in one line
            signals.hooks.append(lambda stop: prepared.store.hurry(CLOSE_SECONDS, stop))
            try:
                returns = self.launcher.launch(prepared.jobs, initial_job_idx=0)
            except BaseException as exc:
                progress.stopped.set()
                driver.abort(prepared.store, prepared.parent, exc)
                raise
        progress.stopped.set()
        current.outcome = close_parent(prepared.store, prepared.parent)
        return [returns]
