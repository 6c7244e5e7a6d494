"""Sweeps as MLflow parent/child runs.

A Hydra callback opens one parent run in the launching process before any job
starts (which also initialises the store once, so parallel jobs never race to
migrate a fresh SQLite database) and writes its id into the sweep directory,
where every job finds it: in this process, in joblib workers, on SLURM nodes.
When the sweep ends the callback logs the summary table and the curves.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

if TYPE_CHECKING:
    from overfit.tracking.report import Point

PARENT_FILE = "mlflow_parent_run_id"
TAG_SWEEP = "overfit.sweep"
TAG_REUSED = "overfit.reused."  # + job number → the finished run standing in for that point


@dataclass
class Outcome:
    """What the last sweep in this process left: its parent and failed points."""

    parent_run_id: str
    points: list[Point] = field(default_factory=list)
    failed: list[Point] = field(default_factory=list)


_last: Outcome | None = None


def parent_run_id() -> str | None:
    """The sweep's parent run, when this job is one point of a multirun."""
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    marker = Path(hc.sweep.dir) / PARENT_FILE
    return marker.read_text().strip() if marker.is_file() else None


def sweep_axes(task_overrides: list[str]) -> dict[str, list[str]]:
    """``{"features.order": ["1", "3", "12"]}`` for the overrides that sweep.

    Sweeping a group (``model=linear,mlp``) is the param ``model.name``.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from overfit.config import SCHEMAS

    axes = {}
    for o in OverridesParser.create().parse_overrides(task_overrides):
        if o.is_sweep_override():
            key = o.get_key_element()
            axes[f"{key}.name" if key in SCHEMAS else key] = [str(v) for v in o.sweep_string_iterator()]
    return axes


def open_parent(cfg: DictConfig, overrides: list[str], launcher: str) -> str:
    """Create a sweep's parent run (nested under ``sweep.parent_run_id`` when set)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from overfit.tracking import runs as tracking

    experiment_id = tracking.connect(cfg)
    axes = sweep_axes(overrides)
    tags = {
        TAG_SWEEP: "true",
        "overrides": " ".join(overrides),
        "launcher": launcher,
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        "mlflow.runName": "sweep " + " ".join(f"{k}={','.join(v)}" for k, v in axes.items()),
    }
    commit = tracking.git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if cfg.sweep.get("parent_run_id"):
        tags["mlflow.parentRunId"] = cfg.sweep.parent_run_id
    client = MlflowClient(mlflow.get_tracking_uri())
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    for key, values in axes.items():
        client.log_param(run_id, f"sweep.{key}", ",".join(values)[:6000])
    client.log_text(run_id, "\n".join(overrides) + "\n", "sweep/overrides.txt")
    print(f"[overfit] sweep parent run {run_id} in experiment {cfg.experiment_name!r}", flush=True)
    return run_id


def close_parent(parent_run_id: str) -> Outcome:
    """Log the sweep's report on its parent, end it FINISHED, say which points failed."""
    from overfit.tracking import report

    points = report.publish(parent_run_id)
    report.close_parent(parent_run_id, "FINISHED")
    return Outcome(parent_run_id, points, [p for p in points if p.status != "FINISHED"])


class ParentRun(Callback):
    """Hydra callback: one MLflow parent run per multirun, its report at the end.

    The parent's id is written into the sweep directory, where every job finds
    it (this process, joblib workers, SLURM nodes).
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _last
        launcher = config.hydra.launcher._target_.rsplit(".", 1)[-1]
        run_id = open_parent(config, list(config.hydra.overrides.task), launcher)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_FILE).write_text(run_id)
        _last = Outcome(run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _last
        assert _last is not None
        _last = close_parent(_last.parent_run_id)


def run_point(cfg: DictConfig, overrides: list[str], output_dir: Path) -> dict[str, float] | None:
    """One job: reuse a finished run with the same config hash, or train.

    A failing sweep point ends its own run FAILED and lets the sweep go on;
    a single run lets the exception reach the user.
    """
    parent = parent_run_id()
    if parent is None:
        from overfit.tracking import runs as tracking
        from overfit.training.task import train

        result = train(cfg, overrides, output_dir)
        shown = "  ".join(
            f"{k}={v:.4g}" for k, v in result.metrics.items() if k.startswith("test/") or k == "generalization_gap"
        )
        print(f"[overfit] run {result.run_id} FINISHED in experiment {cfg.experiment_name!r}: {shown}")
        print(f"[overfit] store: {tracking.tracking_uri(cfg.tracking)}")
        print(f"[overfit] open the MLflow UI: {tracking.ui_command(tracking.tracking_uri(cfg.tracking))}")
        return result.metrics
    from overfit.tracking import runs as tracking

    if not cfg.sweep.rerun:
        found = tracking.find_finished(cfg)
        if found is not None:
            tracking.link_reused(parent, HydraConfig.get().job.num, found.info.run_id)
            print(f"[overfit] reused finished run {found.info.run_id} for {' '.join(overrides)}", flush=True)
            return dict(found.data.metrics)
    from overfit.training.task import train

    try:
        return train(cfg, overrides, output_dir, parent_run_id=parent).metrics
    except Exception as exc:  # the run is already FAILED with the reason; the sweep goes on
        print(f"[overfit] point {' '.join(overrides)} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return None


def _reuse_all(task: list[str], jobs: list[DictConfig]) -> Outcome | None:
    """When every point already has a FINISHED run: a parent linking them, nothing launched."""
    from overfit.tracking import runs as tracking

    if any(job.sweep.rerun for job in jobs):
        return None
    experiments: dict[str, str] = {}  # one store lookup per experiment, not per point
    found = []
    for job in jobs:
        if job.experiment_name not in experiments:
            experiments[job.experiment_name] = tracking.connect(job)
        run = tracking.find_finished(job, experiments[job.experiment_name])
        if run is None:
            return None
        found.append(run.info.run_id)
    shown = [a for a in task if not a.startswith(("hydra.", "hydra/", "+hydra."))]
    parent = open_parent(jobs[0], shown, launcher="none (every point reused)")
    for num, run_id in enumerate(found):
        tracking.link_reused(parent, num, run_id)
        print(f"[overfit] reused finished run {run_id} for point #{num}", flush=True)
    return close_parent(parent)


def run_sweep(args: list[str]) -> Outcome:
    """``overfit train -m ARGS`` in this process: validate every point, launch, report.

    A sweep whose every point already finished launches nothing: its parent
    links the earlier runs. Ctrl-C or SIGTERM ends the parent run KILLED.
    """
    from overfit import app, config
    from overfit.tracking import report

    global _last
    _last = None
    task = [a for a in args if not a.startswith("-")]
    jobs = config.compose_jobs(task, multirun=True)
    reused = _reuse_all(task, jobs)
    if reused is not None:
        _last = reused
        return reused
    saved = sys.argv
    sys.argv = ["overfit train", "-m", *task]
    try:
        app.main()
    except BaseException:
        if _last is not None:
            report.close_parent(_last.parent_run_id, "KILLED")
        raise
    finally:
        sys.argv = saved
    if _last is None:
        raise RuntimeError("the sweep ended before its parent run was created")
    return _last


def report_outcome() -> int:
    """After ``train -m``: say which points failed and why; non-zero if any did."""
    if _last is None:
        return 0
    if not _last.failed:
        print(f"[overfit] sweep {_last.parent_run_id}: {len(_last.points)} points finished")
        return 0
    print(f"[overfit] sweep {_last.parent_run_id}: {len(_last.failed)} of {len(_last.points)} points did not finish:")
    for p in _last.failed:
        print(f"  {p.label}: {p.status} — {p.reason}")
    return 1
