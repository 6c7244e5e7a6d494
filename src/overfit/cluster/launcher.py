"""``hydra/launcher=slurm``: hydra-submitit-launcher's SLURM launcher, made to survive a real cluster.

The plugin submits a sweep as one array job and waits for every result; one
cancelled job, a requeue or a timeout breaks it. This subclass keeps its
submission and changes what happens around it:

- **In the job** (:meth:`SlurmLauncher.__call__`): SIGTERM before the point's run
  exists stops the job at once (submitit "bypasses" it, which left runs RUNNING);
  SIGUSR1 is handled like submitit's preemption signal SIGUSR2 (checkpoint,
  requeue), so one mechanism requeues, never Lightning's own; a timer sends the
  job SIGUSR2 ``signal_delay_s`` before its time limit (SLURM's own warning
  arrives up to a minute early, on a short limit before Python has even set its
  handlers, so SLURM is asked for the harmless SIGURG instead). A point that
  ended FAILED or KILLED fails the job after its run is recorded: ``sacct`` tells
  the truth.
- **In the launching process** (:meth:`SlurmLauncher.launch`): the array's id,
  the sweep directory and a state are recorded on the sweep's parent run; results
  are gathered tolerantly (a failed, cancelled or timed-out job is a failed point
  whose run says why, and the other jobs go on); Ctrl-C or SIGTERM cancels the
  sweep's jobs and closes their runs KILLED before the signal propagates.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from overfit.cluster import slurm
from overfit.cluster.schema import gpus, signal_delay

log = logging.getLogger(__name__)

POLL_SECONDS = 5.0  # how often the launcher asks SLURM about jobs that have no result yet
RESULT_GRACE_SECONDS = 15.0  # an ended job's result file may reach a shared file system this late
CANCEL_WAIT_SECONDS = 20.0  # after scancel: time for running points to close their own runs at an epoch end


class PointFailed(RuntimeError):
    """Raised in a job whose point did not finish, after its run is closed: the SLURM job fails with it."""


def _stop(signum: int, frame: FrameType | None) -> None:
    from overfit.interrupts import Interrupted

    raise Interrupted(signum)


def _job_signals(delay_s: float) -> threading.Timer | None:
    """Signals of a job before its point takes them over; returns the time-limit timer (to cancel at the end)."""
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    preempt = signal.getsignal(signal.SIGUSR2)  # submitit's checkpoint_and_try_requeue
    if callable(preempt):
        signal.signal(signal.SIGUSR1, preempt)
    end = slurm.end_time()
    if end is None:
        return None
    timer = threading.Timer(max(0.0, end - delay_s - time.time()), os.kill, (os.getpid(), signal.SIGUSR2))
    timer.daemon = True
    timer.start()
    return timer


def _error_line(message: str) -> str:
    """The exception line of a failed job's trace (submitit quotes the trace between dashed lines)."""
    parts = message.split("-" * 22)
    lines = [ln.strip() for ln in (parts[1] if len(parts) > 2 else message).splitlines() if ln.strip()]
    return lines[-1] if lines else ""


@dataclass
class _Point:
    """One point of a job: its directory (``point.json``, checkpoints) and how to create its run if it has none."""

    directory: Path
    cfg: DictConfig  # the point's own config (no hydra node)
    overrides: list[str]
    name: str

    def result(self) -> Any:
        from overfit.tracking.pointfile import read_point

        return read_point(self.directory, self.cfg.sweep.get("parent_run_id") or None)

    def create_run(self, store: Any, parent: str) -> str:
        """The run of a point whose job never got to create it: named, keyed and configured like any point."""
        from overfit.tracking import runs

        cfg = self.cfg
        tags = {**runs.Key.of(cfg).tags, **runs.component_tags(cfg), "overrides": " ".join(self.overrides),
                runs.TAG_CHECKPOINT: str(self.directory / "checkpoints"), runs.TAG_POINT: runs.replicate_group(self.name)}
        run_id = runs.create(store, store.experiment(cfg.experiment_name), "point", self.name, tags, parent=parent)
        runs.log_config(store, run_id, cfg, self.overrides)
        return run_id


def _points(job_dir: Path, task_cfg: DictConfig, overrides: Sequence[str]) -> list[_Point]:
    """The points one job trains: itself, or the members of its unit in a vectorized sweep."""
    from overfit.tracking import runs

    if task_cfg.sweep.get("unit") is not None:
        from overfit.lifecycle.plan import read_unit

        parent = task_cfg.sweep.get("parent_run_id")
        return [_Point(job_dir / str(m.num), m.cfg(parent), m.overrides, m.name)
                for m in read_unit(Path(task_cfg.sweep.plan), int(task_cfg.sweep.unit))]
    shown = [o for o in overrides if not o.startswith(("sweep.parent_run_id=", "sweep.axes=", "hydra."))]
    return [_Point(job_dir, task_cfg, shown, runs.point_name(shown, list(task_cfg.sweep.axes)))]


class SlurmLauncher(SubmititSlurmLauncher):
    """hydra-submitit-launcher's SlurmLauncher: honest job endings, tolerant gathering, cancel on Ctrl-C."""

    def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: dict[type, Singleton]) -> JobReturn:
        """One job: its point(s) run; one that did not finish fails the job, after its run is recorded."""
        from overfit.interrupts import REQUEUE_SIGNALS, Interrupted

        timer = _job_signals(float(self._signal_delay()))
        try:
            ret = super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
        except Interrupted as exc:  # a group of points stops at once (no checkpoint): requeued all the same
            preempt = signal.getsignal(signal.SIGUSR2)
            if exc.signum in REQUEUE_SIGNALS and callable(preempt):
                slurm.requeue(exc.signum, preempt)  # submitit: checkpoint() and requeue, then exit
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if ret.status == JobStatus.FAILED:
            raise ret._return_value  # the task itself raised (an unreachable store, a bug): the job fails with it
        assert ret.hydra_cfg is not None and ret.cfg is not None
        ended = [p.result() for p in _points(Path(ret.hydra_cfg.hydra.runtime.output_dir), ret.cfg, sweep_overrides)]
        unfinished = [r for r in ended if r is not None and r.status != "FINISHED"]
        if unfinished:
            raise PointFailed("; ".join(f"point {r.run_id} {r.status}" + (f" ({r.failure})" if r.failure else "")
                                        + f": {r.reason}" for r in unfinished))
        return ret

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Submit the jobs as one array, record it on the parent, gather every job's outcome."""
        import submitit

        assert self.config is not None
        params = copy.deepcopy(self.params)
        params["signal_delay_s"] = self._signal_delay()
        if params.get("gpus_per_node") is None:  # the trainer's wish, not the submitting host's hardware
            params["gpus_per_node"] = gpus(self.config.trainer.accelerator)
        begin = params.pop("begin", None)
        params.pop("driver_timeout_min", None)
        extra = {**(params.pop("additional_parameters", None) or {})}
        if begin:
            extra["begin"] = begin
        extra.setdefault("signal", f"URG@{params['signal_delay_s']}")  # harmless: the job's own timer warns it
        folder = params.pop("submitit_folder")
        if not any(o.startswith("hydra.launcher.submitit_folder=") for o in self.config.hydra.overrides.hydra):
            folder = str(Path(str(self.config.hydra.sweep.dir)) / ".submitit" / "%j")  # the sweep's own folder
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm",
                                         slurm_max_num_timeout=params.pop("max_num_timeout"))
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()},
                                   slurm_additional_parameters=extra)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        job_params = []
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*job_params))
        array = jobs[0].job_id.split("_")[0]
        self._record(f"{array}@{initial_job_idx}:{len(jobs)}", sweep_dir, begin)
        log.info(f"SLURM array {array}: {len(jobs)} job(s) in {sweep_dir}" + (f", begins {begin}" if begin else ""))
        try:
            returns = self._gather(jobs, job_overrides, initial_job_idx)
        except BaseException:  # Ctrl-C or SIGTERM of this command: the jobs go with it
            self._cancel(array)
            raise
        self._set_state("finished")
        return returns

    def _signal_delay(self) -> int:
        """``signal_delay_s``, or (null) a quarter of the time limit, 10-120 s."""
        given = self.params.get("signal_delay_s")
        return int(given) if given is not None else signal_delay(self.params.get("timeout_min", 60))

    # --- the parent run -------------------------------------------------------------------------------------
    def _parent(self) -> tuple[Any, str] | None:
        """The sweep's store and parent run id, from its directory's record (None outside an overfit sweep)."""
        from overfit.sweeping import record
        from overfit.tracking.store import store_for

        assert self.config is not None
        parent = record.parent_of(Path(str(self.config.hydra.sweep.dir)))
        return (store_for(self.config.tracking.uri), parent) if parent else None

    def _record(self, array: str, sweep_dir: Path, begin: str | None) -> None:
        """``array`` (``<id>@<first job number>:<jobs>``), the sweep dir and the state, on the parent."""
        from mlflow.entities import RunTag

        found = self._parent()
        if found is None:
            return
        store, parent = found
        arrays = store.call("get_run", parent).data.tags.get(slurm.TAG_ARRAYS)
        tags = {slurm.TAG_ARRAYS: ",".join(filter(None, [arrays, array])),
                slurm.TAG_DIR: str(sweep_dir), slurm.TAG_STATE: "scheduled" if begin else "queued"}
        if begin:
            tags[slurm.TAG_BEGIN] = begin
        store.call("log_batch", parent, tags=[RunTag(k, v) for k, v in tags.items()])

    def _set_state(self, state: str) -> None:
        found = self._parent()
        if found is not None:
            found[0].call("set_tag", found[1], slurm.TAG_STATE, state)

    def _job_points(self, overrides: Sequence[str], idx: int) -> list[_Point]:
        """A job's points, from its config as the job itself composes it."""
        assert self.hydra_context is not None and self.config is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = idx
        job_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        task_cfg = copy.deepcopy(cfg)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        return _points(job_dir, task_cfg, overrides)

    # --- gathering ------------------------------------------------------------------------------------------
    def _gather(self, jobs: list[Any], job_overrides: Sequence[Sequence[str]], first: int) -> list[JobReturn]:
        """Every job's JobReturn, in order, as each ends; a job that failed or vanished holds failed points."""
        array = jobs[0].job_id.split("_")[0]
        results: dict[int, JobReturn] = {}
        ended_at: dict[int, float] = {}  # when SLURM first said a job without a result file had ended
        polled = -math.inf
        while len(results) < len(jobs):
            for i, job in enumerate(jobs):
                if i not in results and job.paths.result_pickle.exists():
                    results[i] = self._returned(job, job_overrides[i], first + i)
            if len(results) < len(jobs) and time.monotonic() - polled >= POLL_SECONDS:
                polled = time.monotonic()
                known = slurm.states([array])
                for i, job in enumerate(jobs):
                    # A task absent from an array SLURM knows was cancelled while pending.
                    state = known.get(job.job_id, "CANCELLED" if known else None)
                    if i in results or state is None or slurm.is_active(state):
                        ended_at.pop(i, None)
                    elif time.monotonic() - ended_at.setdefault(i, time.monotonic()) >= RESULT_GRACE_SECONDS:
                        if not job.paths.result_pickle.exists():
                            results[i] = self._lost(job.job_id, state, "", job_overrides[i], first + i)
            time.sleep(1.0)
        return [results[i] for i in range(len(jobs))]

    def _returned(self, job: Any, overrides: Sequence[str], idx: int) -> JobReturn:
        """A job that wrote its result: its JobReturn, or (the job raised) failed points."""
        from submitit.core.utils import FailedJobError, UncompletedJobError

        try:
            return job.results()[0]
        except (FailedJobError, UncompletedJobError) as exc:
            return self._lost(job.job_id, "FAILED", _error_line(str(exc)), overrides, idx)

    def _lost(self, job_id: str, state: str, why: str, overrides: Sequence[str], idx: int) -> JobReturn:
        """A job that did not return: each point's run already says why, else it is closed (or created) now."""
        from overfit.tracking import runs

        found = self._parent()
        for point in self._job_points(overrides, idx):
            result = point.result()
            if found is None or (result is not None and result.status not in ("RUNNING", "SCHEDULED")):
                continue
            store, parent = found
            status, failure = (("KILLED", "killed") if state in ("CANCELLED", "PREEMPTED") else
                               ("FAILED", "timeout") if state == "TIMEOUT" else ("FAILED", "error"))
            if result is None:
                run_id = point.create_run(store, parent)
                reason = f"SLURM job {job_id} {state} before its run started" + (f": {why}" if why else "")
            else:
                run_id, reason = result.run_id, f"SLURM job {job_id} ended {state} without closing its run"
            runs.end(store, run_id, status, failure, reason)
        # The worst value, as app.task returns for a point that did not finish (Optuna's sweeper fails on NaN).
        return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=math.inf)

    # --- cancelling -----------------------------------------------------------------------------------------
    def _cancel(self, array: str) -> None:
        """Cancel the array; the sweep's runs still open once its jobs are gone (or after a short wait) end KILLED."""
        from overfit.tracking import runs

        slurm.cancel([array])
        slurm.wait_inactive([array], CANCEL_WAIT_SECONDS)
        found = self._parent()
        if found is None:
            return
        store, parent = found
        experiment = store.call("get_run", parent).info.experiment_id
        for run in store.call("search_runs", [experiment], f"tags.`{runs.TAG_PARENT}` = '{parent}'",
                              max_results=50_000):
            if run.info.status in ("RUNNING", "SCHEDULED"):
                runs.end(store, run.info.run_id, "KILLED", "killed", f"SLURM array {array} cancelled with its sweep")
        store.call("set_tag", parent, slurm.TAG_STATE, "cancelled")
