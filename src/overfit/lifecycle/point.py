"""One point as one MLflow run: claimed, trained by :func:`overfit.training.fit.fit`, recorded, ended honestly.

:func:`run_point` claims the point's run by its reuse key (:mod:`overfit.lifecycle.claim`:
a finished run is reused in a sweep, an interrupted one reopened, one held by a live
process waited for, else a new run), trains into it, logs the test metrics and the
picture, and ends it FINISHED, FAILED (``diverged`` / ``error``), KILLED on SIGTERM or
Ctrl-C, or SCHEDULED while SLURM requeues it.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

from omegaconf import DictConfig

from overfit.cluster import slurm
from overfit.config import validate
from overfit.interrupts import REQUEUE_SIGNALS, Interrupted, Signals
from overfit.lifecycle.claim import CHECKPOINTS, Claimer, Target
from overfit.tracking import runs
from overfit.tracking.pointfile import PointResult
from overfit.tracking.store import CLOSE_SECONDS, Store, StoreError, store_for


def _rank() -> int:
    """This process's rank in multi-device training (0 when alone): only rank 0 talks to MLflow."""
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")) or 0)


def store_of(cfg: DictConfig) -> Store:
    """The config's store, with its outage deadline."""
    return store_for(cfg.tracking.uri, cfg.tracking.retry_seconds)


def linker(store: Store, parent: str | None):
    """What a sweep does with a point an earlier sweep finished: link it from this sweep's parent."""

    def link(target: Target, done) -> None:
        if parent:
            store.call("set_tag", parent, f"{runs.TAG_REUSED}{target.num or 0}", done.info.run_id)

    return link


def remove_checkpoints(folder: Path) -> None:
    """A finished run is never resumed: its checkpoint folder goes, and the job's ``checkpoints/`` once empty."""
    shutil.rmtree(folder, ignore_errors=True)
    if folder.parent.name == CHECKPOINTS:
        try:
            folder.parent.rmdir()
        except OSError:  # another run's checkpoints are still there
            pass


def finish(store: Store, result: PointResult, job_dir: Path, checkpoints: Path | None = None,
           error: BaseException | None = None) -> None:
    """End the point's run: FINISHED, or FAILED (diverged / error) or KILLED for what stopped it.

    A signal's ending waits at most :data:`CLOSE_SECONDS` for a failing store: the run then
    stays open, its owner gone, for the next attempt to resume or ``overfit runs reap`` to close.
    """
    from overfit.errors import Diverged

    if error is None:
        result.status = "FINISHED"
        runs.end(store, result.run_id, "FINISHED")
        if checkpoints is not None:
            remove_checkpoints(checkpoints)
    elif isinstance(error, Exception):
        result.status, result.failure = "FAILED", "diverged" if isinstance(error, Diverged) else "error"
        result.reason = f"{type(error).__name__}: {error}"
        runs.end(store, result.run_id, "FAILED", result.failure, result.reason)
    else:  # KeyboardInterrupt (Lightning turns it into SystemExit(1)), SystemExit, a signal
        result.status, result.failure, result.reason = "KILLED", "killed", f"stopped by {error}"
        try:
            runs.end(store, result.run_id, "KILLED", "killed", result.reason, budget=CLOSE_SECONDS)
        except StoreError:
            result.status = "RUNNING"  # nobody can close it now; its owner is gone once this process exits
    result.save(job_dir)


def run_point(cfg: DictConfig, overrides: list[str], job_dir: Path, name: str | None = None,
              job_num: int | None = None, tags: dict[str, str] | None = None) -> PointResult:
    """Train one point into its one MLflow run (or reuse a finished one); returns how it ended.

    In a sweep (``cfg.sweep.parent_run_id`` set) a failing point ends FAILED and
    returns, so the sweep goes on; a single run re-raises. A signal always re-raises
    after the run is closed (KILLED) or parked for SLURM's requeue (SCHEDULED).
    """
    from overfit.training.fit import fit
    from overfit.training.trainer import check_machine

    validate(cfg)
    name = name or runs.point_name(overrides)
    if _rank() > 0:  # another device's process of a multi-device run: rank 0 records it
        with Signals() as signals:
            return PointResult("", "FINISHED", fit(cfg, job_dir / "checkpoints", signals=signals).metrics)
    store = store_of(cfg)
    parent = cfg.sweep.get("parent_run_id")
    with Signals() as signals:
        signals.hooks.append(lambda stop: store.hurry(CLOSE_SECONDS, stop))  # a signal: stop waiting for the store
        claimer = Claimer(store, store.experiment(cfg.experiment_name), parent, cfg.sweep.rerun,
                          on_reused=linker(store, parent), signals=signals)
        (claimed,) = claimer.claim([Target(cfg, overrides, name, job_num, job_dir, tags=tags or {})])
        if claimed is None:  # a signal came while it waited for another process's result
            signals.check()
        assert claimed is not None
        result = claimed.result
        if claimed.reused:
            signals.check()
            return result
        try:
            signals.check()
            check_machine(cfg.trainer)  # where the work runs (a GPU node, not the login node): FAILED saying why
            result.metrics = _train(store, cfg, claimed.checkpoints, result.run_id, claimed.logged, signals, name)
        except Interrupted as exc:
            store.hurry(CLOSE_SECONDS)
            _interrupted(store, result, exc, signals, job_dir)
            raise
        except StoreError as exc:
            if signals.received:  # the signal cut the wait for an absent store short: the signal ended the run
                stopped = Interrupted(signals.received)
                _interrupted(store, result, stopped, signals, job_dir)
                raise stopped from exc
            raise  # the store is away: nobody can record anything; the next attempt resumes the run
        except Exception as exc:
            finish(store, result, job_dir, error=exc)
            if parent is None:
                raise
            return result
        except BaseException as exc:
            finish(store, result, job_dir, error=exc)
            raise
        finish(store, result, job_dir, claimed.checkpoints)
        return result


def _train(store: Store, cfg: DictConfig, checkpoints: Path, run_id: str, logged: dict[str, int], signals: Signals,
           name: str) -> dict[str, float]:
    """Fit into the run: per-epoch metrics as it trains, then the test metrics and the picture."""
    from overfit.lifecycle.pictures import LEARNING_KEY, learning_curve, log_pixels, picture, pixels
    from overfit.errors import Diverged
    from overfit.lifecycle.predictions import grid_file
    from overfit.training.parts import build
    from overfit.tracking import models
    from overfit.tracking.logger import RunLogger
    from overfit.tracking.writer import MetricWriter
    from overfit.training.fit import fit

    writer = MetricWriter(store)
    logger = RunLogger(writer, run_id, logged)
    try:
        fitted = fit(cfg, checkpoints, logger, signals, owner=run_id)
        final = fitted.metrics
        logger.log_metrics({k: v for k, v in final.items() if k.startswith("test/") or k == "generalization_gap"},
                           step=cfg.trainer.max_epochs)
        logger.flush()
    except StoreError:
        raise
    except Interrupted:  # what was logged so far, if the store answers at once (the checkpoint carries it too)
        store.hurry(CLOSE_SECONDS)
        try:
            logger.flush(CLOSE_SECONDS)
        except StoreError:
            pass
        raise
    except BaseException as exc:  # a diverged or failed run keeps the history it had
        logger.flush()
        if isinstance(exc, Diverged):  # and its datasets (a diverged point is a result)
            models.log_inputs(store, run_id, models.dataset_inputs(cfg, build(cfg).dataset.load(cfg.seed)))
        raise
    finally:
        writer.close()
    dataset = build(cfg).dataset
    title = f"{name} · test error {final['test/error']:.4g}"
    shown = picture(fitted.learner, fitted.splits, title, dataset.true_function())
    epochs = cfg.trainer.max_epochs
    if shown is not None:
        log_pixels(store, run_id, shown[0], pixels(shown[1]), epochs)
    log_pixels(store, run_id, LEARNING_KEY, learning_curve(writer.curve(run_id), title, epochs), epochs)
    predictions = grid_file(fitted.learner.net, dataset, len(fitted.splits.y_test), cfg)
    if predictions:
        runs.log_files(store, run_id, predictions)
    # Its weights (model/), datasets (log_inputs) and, as tracking.log_model says, its LoggedModel.
    models.record_point(store, run_id, cfg, fitted.learner.net, fitted.learner.loss, fitted.splits)
    return final


def _interrupted(store: Store, result: PointResult, exc: Interrupted, signals: Signals, job_dir: Path) -> None:
    """Close the run for a signal: parked SCHEDULED if SLURM requeues the job, KILLED otherwise.

    SIGTERM is a cancel, or SLURM requeueing the job (``scontrol requeue``, preemption): only SLURM knows which.
    """
    requeued = (exc.signum == signal.SIGTERM and slurm.job_id() is not None and slurm.requeueing()) or \
        (exc.signum in REQUEUE_SIGNALS and slurm.job_id() is not None)
    if requeued:
        result.status = "SCHEDULED"
        runs.end(store, result.run_id, "SCHEDULED", budget=CLOSE_SECONDS)
        result.save(job_dir)
        exc.outcome = f"run {result.run_id} waits for SLURM's requeue and resumes from its checkpoint"
        if exc.signum in REQUEUE_SIGNALS:
            try:
                slurm.requeue(exc.signum, signals.previous.get(exc.signum))
            except Exception as err:  # submitit: "timed-out too many times" — no more requeues for this point
                result.status, result.failure, result.reason = "FAILED", "timeout", f"{type(err).__name__}: {err}"
                runs.end(store, result.run_id, "FAILED", "timeout", result.reason, budget=CLOSE_SECONDS)
                result.save(job_dir)
                raise
        return
    finish(store, result, job_dir, error=exc)
    exc.outcome = (f"run {result.run_id} is closed KILLED and resumes from its last checkpoint when the same "
                   "command runs again" if result.status == "KILLED" else
                   f"the store did not answer: run {result.run_id} stays open until the same command resumes it "
                   "(or `overfit runs reap` closes it)")
