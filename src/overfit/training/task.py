"""The task: one point, config → data → module → trainer → tracker, as one MLflow run for its whole life.

:func:`run_point` decides which run a point trains into — the run this very job
started before a requeue, a finished run with the same reuse key (reused, in a
sweep), an interrupted one (reopened and resumed from its checkpoint), or a new
one — then trains with :func:`fit` and ends the run with an honest status:
FINISHED, FAILED (``diverged`` / ``error``), KILLED on SIGTERM or Ctrl-C, or
SCHEDULED while SLURM requeues it.
"""

from __future__ import annotations

import os
import shutil
import signal
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from overfit.cluster import slurm
from overfit.tracking.pointfile import PointResult, read_point
from overfit.config import validate
from overfit.tracking import runs
from overfit.tracking.reap import owner_alive
from overfit.tracking.store import Store, StoreError, store_for
from overfit.interrupts import REQUEUE_SIGNALS, Interrupted, Signals

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    from matplotlib.figure import Figure
    from mlflow.entities import Run
    from torch import Tensor

    from overfit.data.datasets import Splits
    from overfit.training.module import Learner

warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")

def picture(learner: Learner, splits: Splits, title: str,
            truth: Callable[[Tensor], Tensor] | None = None) -> tuple[str, Figure] | None:
    """The run's picture: fitted curve (1-D regression, beside ``truth`` when known) or test confusion matrix."""
    from overfit.tracking import plots

    if splits.task == "regression":
        if splits.input_dim != 1 or splits.target_dim != 1:
            return None
        return "fit", plots.fitted_curve(learner.net, splits, title, truth)
    predicted = learner.eval().cpu().predict(splits.x_test.cpu())
    names = splits.class_names or tuple(str(i) for i in range(splits.num_classes or 0))
    return "confusion_matrix", plots.confusion_matrix(predicted, splits.y_test.cpu(), names, title)


def log_picture(store: Store, run_id: str, key: str, fig: Figure, step: int) -> None:
    """Draw the figure once and log its pixels (:func:`log_pixels`)."""
    import numpy as np

    from overfit.tracking.plots import plt

    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    log_pixels(store, run_id, key, rgb, step)


def log_pixels(store: Store, run_id: str, key: str, rgb: np.ndarray, step: int) -> None:
    """As ``<key>.png`` to look at, and as an MLflow image (key, step) so the UI sets them side by side."""
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(rgb).save(png, format="png")
    runs.log_files(store, run_id, {f"{key}.png": png.getvalue()})
    store.call("log_image", run_id, rgb, key=key, step=step)


def _rank() -> int:
    """This process's rank in multi-device training (0 when alone): only rank 0 talks to MLflow."""
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")) or 0)


@dataclass
class Fitted:
    """A trained model with its data and final metrics (train/val of the last epoch, test, the gap)."""

    learner: Learner
    splits: Splits
    metrics: dict[str, float]


def fit(cfg: DictConfig, checkpoints: Path, store: Store | None = None, run_id: str | None = None,
        signals: Signals | None = None, logged: dict[str, int] | None = None, name: str = "") -> Fitted:
    """Train and test one config, resuming from ``checkpoints/last.ckpt`` when it exists.

    With a store and a run, metrics go to the run (per epoch, step = epoch) and so
    does the picture; without, nothing is recorded (tests, non-zero ranks).
    """
    signals = signals or Signals()
    with signals.held():  # seconds of cold imports, which a signal must not cut in half
        import lightning as L
        import torch

        from overfit.data import datasets
        from overfit.data.datamodule import TensorDataModule
        from overfit.tracking.logger import RunLogger
        from overfit.training.module import build_learner
        from overfit.training.resume import Resume
        from overfit.training.trainer import build_trainer

    L.seed_everything(cfg.seed, verbose=False)
    splits = datasets.load(cfg.dataset, cfg.seed)
    learner = build_learner(cfg, splits)
    if str(cfg.trainer.precision) == "64-true":  # Lightning restores a checkpoint before converting: float64 throughout
        learner, splits = learner.double(), splits.floating(torch.float64)
    logger = RunLogger(store, run_id, logged) if store is not None and run_id is not None else None
    resume = Resume(checkpoints, signals, logger, cfg.trainer.checkpoint_every_n_epochs,
                    cfg.trainer.checkpoint_every_seconds) if cfg.trainer.checkpoint else None
    trainer = build_trainer(cfg.trainer, logger if logger is not None else False, checkpoints.parent,
                            [resume] if resume is not None else [])
    learner.automatic_optimization = trainer.world_size > 1  # one process: an epoch per step (overfit.training.module)
    data = TensorDataModule(learner.encode(splits), cfg.optimizer.batch_size, cfg.seed,
                            whole_epochs=not learner.automatic_optimization)
    start = resume.path if resume is not None and resume.path.is_file() else None
    trainer.fit(learner, datamodule=data, ckpt_path=start, weights_only=True)
    trainer.test(learner, datamodule=data, verbose=False)
    final = {**learner.last_metrics, **learner.test_metrics}
    final["generalization_gap"] = final["test/error"] - final["train/error"]
    if logger is not None and store is not None and run_id is not None:
        logger.log_metrics({k: v for k, v in final.items() if k.startswith("test/") or k == "generalization_gap"},
                           step=cfg.trainer.max_epochs)
        logger.flush()
        shown = picture(learner, splits, f"{name} · test error {final['test/error']:.4g}",
                        datasets.true_function(cfg.dataset))
        if shown is not None:
            log_picture(store, run_id, shown[0], shown[1], cfg.trainer.max_epochs)
    return Fitted(learner, splits, final)


def _logged_steps(store: Store, run: Run) -> dict[str, int]:
    """The last step of each metric the run already has (a resumed run sends only later steps)."""
    return {key: max((m.step for m in store.call("get_metric_history", run.info.run_id, key)), default=-1)
            for key in run.data.metrics}


@dataclass
class Claim:
    """The run a point trains into, and what it already holds (a reopened run's logged steps, its checkpoints)."""

    result: PointResult
    logged: dict[str, int]
    checkpoints: Path

    @property
    def reused(self) -> bool:
        return self.result.reused


def claim(store: Store, cfg: DictConfig, overrides: list[str], job_dir: Path, name: str,
          job_num: int | None = None, found: list[Run] | None = None, params: bool = True) -> Claim:
    """This job's own run after a requeue; else, in a sweep, a finished run with the reuse key (reused,
    linked on the parent); else an interrupted one (reopened); else a new run under the sweep's parent.

    ``found``: the runs with this point's key, when the caller looked them up for many points at once.
    ``params=False``: a new run's params are left to the caller (sent with its metrics, one call fewer).
    """
    parent = cfg.sweep.get("parent_run_id")
    experiment_id = store.experiment(cfg.experiment_name)
    key = runs.Key.of(cfg)
    earlier = read_point(job_dir)
    done = interrupted = None
    if earlier is not None:  # this job ran before (SLURM requeued it): the same run, whatever happened since
        run = store.call("get_run", earlier.run_id)
        done, interrupted = (run, None) if run.info.status == "FINISHED" else (None, run)
    else:
        found = runs.find(store, experiment_id, key) if found is None else found
        done = runs.finished(found) if parent and not cfg.sweep.rerun else None
        interrupted = None if done is not None else runs.resumable(found, owner_alive)
    checkpoints = job_dir / "checkpoints"
    if done is not None:
        if parent and done.data.tags.get(runs.TAG_PARENT) != parent:
            store.call("set_tag", parent, f"{runs.TAG_REUSED}{job_num or 0}", done.info.run_id)
        tags = done.data.tags
        result = PointResult(done.info.run_id, done.info.status, dict(done.data.metrics),
                             tags.get(runs.TAG_FAILURE, ""), tags.get(runs.TAG_REASON, ""), reused=True)
        result.save(job_dir)
        return Claim(result, {}, checkpoints)
    if interrupted is not None:
        attempt = runs.reopen(store, interrupted)
        claimed = Claim(PointResult(interrupted.info.run_id, "RUNNING", attempt=attempt),
                        _logged_steps(store, interrupted),
                        Path(interrupted.data.tags.get(runs.TAG_CHECKPOINT, str(checkpoints))))
    else:
        tags = {**key.tags, "overrides": " ".join(overrides), "dataset": cfg.dataset.name,
                "model": cfg.model.name, "loss": cfg.loss.name, runs.TAG_CHECKPOINT: str(checkpoints)}
        run_id = runs.create(store, experiment_id, "point", name, tags, parent=parent)
        runs.log_config(store, run_id, cfg, overrides, params)
        claimed = Claim(PointResult(run_id, "RUNNING"), {}, checkpoints)
    claimed.result.save(job_dir)
    return claimed


def finish(store: Store, result: PointResult, job_dir: Path, checkpoints: Path | None = None,
           error: BaseException | None = None) -> None:
    """End the point's run: FINISHED, or FAILED (diverged / error) or KILLED for what stopped it."""
    from overfit.training.module import Diverged

    if error is None:
        result.status = "FINISHED"
        runs.end(store, result.run_id, "FINISHED")
        if checkpoints is not None:
            shutil.rmtree(checkpoints, ignore_errors=True)  # a finished run is never resumed
    elif isinstance(error, Exception):
        result.status, result.failure = "FAILED", "diverged" if isinstance(error, Diverged) else "error"
        result.reason = f"{type(error).__name__}: {error}"
        runs.end(store, result.run_id, "FAILED", result.failure, result.reason)
    else:  # KeyboardInterrupt (Lightning turns it into SystemExit(1)), SystemExit, a signal
        result.status, result.failure, result.reason = "KILLED", "killed", f"stopped by {error}"
        runs.end(store, result.run_id, "KILLED", "killed", result.reason)
    result.save(job_dir)


def run_point(cfg: DictConfig, overrides: list[str], job_dir: Path, name: str | None = None,
              job_num: int | None = None) -> PointResult:
    """Train one point into its one MLflow run (or reuse a finished one); returns how it ended.

    In a sweep (``cfg.sweep.parent_run_id`` set) a failing point ends FAILED and
    returns, so the sweep goes on; a single run re-raises. A signal always re-raises
    after the run is closed (KILLED) or parked for SLURM's requeue (SCHEDULED).
    """
    validate(cfg)
    name = name or runs.point_name(overrides)
    if _rank() > 0:  # another device's process of a multi-device run: rank 0 records it
        with Signals() as signals:
            return PointResult("", "FINISHED", fit(cfg, job_dir / "checkpoints", signals=signals).metrics)
    store = store_for(cfg.tracking.uri)
    with Signals() as signals:
        with signals.held(honour=False):  # the run is created or reopened here: a signal waits until it can be closed
            claimed = claim(store, cfg, overrides, job_dir, name, job_num)
        result = claimed.result
        if claimed.reused:
            signals.check()
            return result
        try:
            signals.check()
            result.metrics = fit(cfg, claimed.checkpoints, store, result.run_id, signals, claimed.logged, name).metrics
        except Interrupted as exc:
            _interrupted(store, result, exc, signals, job_dir)
            raise
        except StoreError:
            raise  # the store is away: nobody can record anything; `overfit runs reap` closes it later
        except Exception as exc:
            finish(store, result, job_dir, error=exc)
            if cfg.sweep.get("parent_run_id") is None:
                raise
            return result
        except BaseException as exc:
            finish(store, result, job_dir, error=exc)
            raise
        finish(store, result, job_dir, claimed.checkpoints)
        return result


def _interrupted(store: Store, result: PointResult, exc: Interrupted, signals: Signals, job_dir: Path) -> None:
    """Close the run for a signal: parked SCHEDULED if SLURM requeues the job, KILLED otherwise.

    SIGTERM is a cancel, or SLURM requeueing the job (``scontrol requeue``, preemption): only SLURM knows which.
    """
    if exc.signum == signal.SIGTERM and slurm.job_id() is not None and slurm.requeueing():
        result.status = "SCHEDULED"
        runs.end(store, result.run_id, "SCHEDULED")
        result.save(job_dir)
        return
    if exc.signum in REQUEUE_SIGNALS and slurm.job_id() is not None:
        result.status = "SCHEDULED"
        runs.end(store, result.run_id, "SCHEDULED")
        result.save(job_dir)
        try:
            slurm.requeue(exc.signum, signals.previous.get(exc.signum))
        except Exception as err:  # submitit: "timed-out too many times" — no more requeues for this point
            result.status, result.failure, result.reason = "FAILED", "timeout", f"{type(err).__name__}: {err}"
            runs.end(store, result.run_id, "FAILED", "timeout", result.reason)
            result.save(job_dir)
            raise
        return
    finish(store, result, job_dir, error=exc)

