"""``overfit train``: the task function, and Hydra running it once (sweeps: :mod:`overfit.multirun`).

The task function is separate from how Hydra is called (lightning-hydra-template's
habit). Hydra is driven through its public compose API (``initialize_config_dir``
and the ``Hydra`` object it installs), with the overrides as a list: ``sys.argv``
stays what the user typed, so a multi-device run can start its other processes
with the same command line.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from overfit import paths
from overfit.compose import compose_jobs, writable_dir
from overfit.config import register
from overfit.interrupts import Signals
from overfit.tracking import runs
from overfit.tracking.store import resolve_uri, store_for
from overfit.tracking.pointfile import PointResult

if TYPE_CHECKING:
    from overfit.tracking.sweeps import Outcome


class _NoJobErrorEcho(logging.Filter):
    """Hydra logs "Error executing job ..." before re-raising; the CLI prints the one line that says why."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Error executing job")


logging.getLogger("hydra.core.utils").addFilter(_NoJobErrorEcho())


def task(cfg: DictConfig) -> PointResult | float:
    """Hydra's task function: one job. A single run returns its result; a sweep point its validation error."""
    from overfit.lifecycle.point import run_point  # training (PyTorch, Lightning) is imported by the jobs alone

    hc = HydraConfig.get()
    if cfg.sweep.get("unit") is not None:  # a vectorized sweep's job: a group of points, or one that trains alone
        return _unit(cfg, Path(hc.runtime.output_dir))
    overrides = [o for o in hc.overrides.task if not o.startswith(("sweep.parent_run_id=", "sweep.axes="))]
    multirun = hc.mode == RunMode.MULTIRUN
    keys = list(cfg.sweep.axes) if multirun else None
    result = run_point(cfg, overrides, Path(hc.runtime.output_dir), runs.point_name(overrides, keys),
                       hc.job.num if multirun else None)
    if not multirun:
        return result
    error = result.metrics.get("val/error", math.nan) if result.status == "FINISHED" else math.nan
    return error if math.isfinite(error) else math.inf  # the worst value: Optuna's sweeper crashes on NaN


def _unit(cfg: DictConfig, job_dir: Path) -> float:
    """One job of a vectorized sweep: its points as one batched model, or a point alone; the best val error."""
    from overfit.lifecycle.group import run_group
    from overfit.lifecycle.plan import read_unit
    from overfit.lifecycle.point import run_point

    members = read_unit(Path(cfg.sweep.plan), cfg.sweep.unit)
    if len(members) == 1:
        m = members[0]
        results = [run_point(m.cfg(cfg.sweep.parent_run_id), m.overrides, job_dir / str(m.num), m.name, m.num)]
    else:
        results = run_group(members, cfg.sweep.parent_run_id, job_dir)
    errors = [r.metrics.get("val/error", math.nan) for r in results if r.status == "FINISHED"]
    return min(errors, default=math.nan)


@contextmanager
def hydra_session() -> Iterator[Any]:
    """Hydra initialised on the project's ``conf/``, as ``@hydra.main`` would."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(paths.config_dir()), version_base="1.3", job_name="train"):
        yield GlobalHydra.instance().hydra


def run(overrides: list[str]) -> tuple[PointResult, str]:
    """``overfit train OVERRIDES``: one run, validated first; returns its result and store.

    A signal ends the run KILLED (or SCHEDULED for SLURM's requeue) and propagates.
    """
    (cfg,) = compose_jobs(overrides, multirun=False)
    writable_dir(overrides, "hydra.run.dir", paths.project_root() / "outputs")
    store_for(cfg.tracking.uri).experiment(cfg.experiment_name)  # a store that cannot be used: one line, now
    with Signals(), hydra_session() as hydra:
        job = hydra.run(config_name="train", task_function=task, overrides=overrides)
    return job.return_value, resolve_uri(cfg.tracking.uri)


def print_run(result: PointResult, uri: str) -> None:
    """Where a single run is: its id and status, its test metrics, the store and the UI command."""
    from overfit.tracking import ui

    shown = "  ".join(f"{k}={v:.4g}" for k, v in result.metrics.items() if k.startswith("test/") or k == "generalization_gap")
    resumed = f" (attempt {result.attempt}, resumed)" if result.attempt > 1 else ""
    print(f"[overfit] run {result.run_id} {result.status}{resumed}: {shown}")
    print(f"[overfit] store: {uri}")
    print(f"[overfit] open the MLflow UI: {ui.command(uri)}")


def print_outcome(outcome: Outcome) -> int:
    """The sweep's summary for the terminal; 1 if any point did not finish."""
    for line in outcome.summary():
        print(line, file=sys.stdout)
    return 1 if outcome.failed else 0
