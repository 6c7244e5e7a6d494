"""A sweep's batchable points as one job: trained as one batched model, each still its own MLflow run.

Each point is found like a single point (a finished run with its reuse key is reused,
an interrupted one reopened); the others train together through
:func:`overfit.training.vectorized.train_group`, their per-epoch metrics collected
(step = epoch), and each new point's run is written when it ends — params, history,
config, picture and status, under the sweep's parent, dated from the group's start —
by a :class:`~overfit.tracking.recorder.Recorder`, in parallel when there are many.
A diverging point ends FAILED ``failure=diverged`` while the others train on.

A group has no checkpoint of its own: batched training takes seconds, and an
interrupted group trains again from the start (a reopened run's stored steps are
not sent twice).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from overfit.data.datasets import true_function
from overfit.interrupts import Signals
from overfit.tracking import runs
from overfit.tracking.plots import FitCanvas, plt
from overfit.tracking.pointfile import PointResult, read_point
from overfit.tracking.reap import owner_alive
from overfit.tracking.recorder import Record, Recorder
from overfit.tracking.store import Store, store_for
from overfit.training.task import Claim, claim, finish, picture

if TYPE_CHECKING:
    from torch import Tensor

    from overfit.data.datasets import Splits
    from overfit.training.vectorized import GroupResult

PLAN_FILE = "groups.json"
MAX_GROUP = 256  # points per batched model: beyond this, a group is split (memory grows with M)


@dataclass
class Member:
    """One point of a group: its job number in the sweep, overrides, run name and composed config."""

    num: int
    overrides: list[str]
    name: str
    config: dict[str, Any]  # the composed config, interpolations unresolved (a JSON document: YAML costs 10×)

    def cfg(self, parent_run_id: str | None) -> DictConfig:
        cfg = OmegaConf.create(self.config)
        cfg.sweep.parent_run_id = parent_run_id
        return cfg


def write_plan(path: Path, units: list[list[Member]]) -> None:
    """The groups a vectorized sweep launches, where every job (any launcher, any node) reads them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([[m.__dict__ for m in unit] for unit in units]))


def read_unit(path: Path, unit: int) -> list[Member]:
    return [Member(**m) for m in json.loads(path.read_text())[unit]]


def run_group(members: list[Member], parent_run_id: str | None, job_dir: Path) -> list[PointResult]:
    """Train the group's points that need it as one batched model; each point ends in its own run.

    A finished point is reused; an interrupted one's run is reopened; a new point's run is
    written when it ends (the group trains in seconds), by a :class:`Recorder`.
    """
    from overfit.training.vectorized import load_splits, train_group

    cfgs = [m.cfg(parent_run_id) for m in members]
    store = store_for(cfgs[0].tracking.uri)
    experiment_id = store.experiment(cfgs[0].experiment_name)
    with Signals():
        keys = [runs.Key.of(cfg) for cfg in cfgs]
        one_experiment = len({cfg.experiment_name for cfg in cfgs}) == 1
        found = runs.find_all(store, experiment_id, keys) if one_experiment else {}
        claims = [_claim(store, cfg, m, job_dir, found.get(key)) for m, cfg, key in zip(members, cfgs, keys)]
        results: list[PointResult | None] = [c.result if c is not None and c.reused else None for c in claims]
        todo = [i for i, r in enumerate(results) if r is None]
        if not todo:
            return [r for r in results if r is not None]
        histories: list[list[tuple[str, float, int, int]]] = [[] for _ in todo]
        with Recorder(len(todo), store.uri) as recorder:
            splits = load_splits([cfgs[i] for i in todo])
            start_ms = int(time.time() * 1000)
            try:
                trained = train_group([cfgs[i] for i in todo], splits,
                                      on_epoch=_collect(histories, [claims[i] for i in todo]), output_dir=job_dir)
            except BaseException as exc:  # the reopened runs end with the reason; new points have no run yet
                for i in todo:
                    if claims[i] is not None:
                        finish(store, claims[i].result, job_dir / str(members[i].num), error=exc)
                raise
            pictures = _Pictures()
            for i, point, data, history in zip(todo, trained, splits, histories):
                recorder.submit(_record(store, experiment_id, members[i], cfgs[i], keys[i], claims[i], point, data,
                                        history, pictures, start_ms, job_dir / str(members[i].num)))
            done = recorder.results()
        pictures.close()
    for i, result in zip(todo, done):
        results[i] = result
    return [r for r in results if r is not None]


def _claim(store: Store, cfg: DictConfig, member: Member, job_dir: Path, found: list | None) -> Claim | None:
    """A finished run to reuse or an interrupted one reopened (:func:`claim`); None: a new point, run comes later."""
    point_dir = job_dir / str(member.num)
    if read_point(point_dir) is None and found is not None:
        reusable = bool(cfg.sweep.get("parent_run_id")) and not cfg.sweep.rerun and runs.finished(found) is not None
        if not reusable and runs.resumable(found, owner_alive) is None:
            return None
    return claim(store, cfg, member.overrides, point_dir, member.name, member.num, found, params=False)


def _collect(histories: list[list[tuple[str, float, int, int]]], claims: list[Claim | None]) -> Callable[
        [int, dict[str, Tensor], Tensor], None]:
    """Per evaluated epoch, each living point's metrics into its history (step = epoch; a reopened run's
    steps already stored are skipped)."""

    def on_epoch(epoch: int, metrics: dict[str, Tensor], alive: Tensor) -> None:
        now = int(time.time() * 1000)
        rows = {key: values.tolist() for key, values in metrics.items()}
        for m, history in enumerate(histories):
            logged = claims[m].logged if claims[m] is not None else {}
            if alive[m]:
                history += [(key, rows[key][m], now, epoch) for key in rows if epoch > logged.get(key, -1)]

    return on_epoch


class _Pictures:
    """Each finished point's picture; fitted curves over the same data share one canvas (drawn once)."""

    def __init__(self) -> None:
        self.canvases: dict[int, FitCanvas] = {}

    def render(self, point: GroupResult, data: Splits, title: str) -> tuple[str, np.ndarray] | None:
        if data.task == "regression" and data.input_dim == 1 and data.target_dim == 1:
            if id(data) not in self.canvases:
                self.canvases[id(data)] = FitCanvas(data, true_function(point.cfg.dataset))
            return "fit", self.canvases[id(data)].pixels(point.learner.net, title)
        shown = picture(point.learner, data, title)
        if shown is None:
            return None
        fig = shown[1]
        fig.canvas.draw()
        rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        plt.close(fig)
        return shown[0], rgb

    def close(self) -> None:
        for canvas in self.canvases.values():
            canvas.close()


def _record(store: Store, experiment_id: str, member: Member, cfg: DictConfig, key: runs.Key, claimed: Claim | None,
            point: GroupResult, data: Splits, history: list[tuple[str, float, int, int]], pictures: _Pictures,
            start_ms: int, point_dir: Path) -> Record:
    """Everything a trained point's run needs, as plain data for the recorder."""
    epochs = point.cfg.trainer.max_epochs
    metrics = dict(point.metrics)
    result = claimed.result if claimed is not None else PointResult("", "RUNNING")
    result.metrics = metrics
    picture = None
    if point.diverged is None:
        now = int(time.time() * 1000)
        history = history + [(k, v, now, epochs) for k, v in metrics.items()
                             if k.startswith("test/") or k == "generalization_gap"]
        result.status = "FINISHED"
        shown = pictures.render(point, data, f"{member.name} · test error {metrics['test/error']:.4g}")
        picture = None if shown is None else (shown[0], shown[1], epochs)
    else:
        error = point.error()
        result.status, result.failure, result.reason = "FAILED", "diverged", f"{type(error).__name__}: {error}"
    tags = {**key.tags, "overrides": " ".join(member.overrides), "dataset": cfg.dataset.name, "model": cfg.model.name,
            "loss": cfg.loss.name}
    files = {} if claimed is not None else {"config.yaml": OmegaConf.to_yaml(cfg, resolve=True),
                                            "overrides.txt": "\n".join(member.overrides) + "\n"}
    return Record(store.uri, experiment_id, claimed.result.run_id if claimed is not None else None, member.name, tags,
                  cfg.sweep.get("parent_run_id"), start_ms, [(p.key, p.value) for p in runs.params_of(cfg)], history,
                  files, picture, result, str(point_dir))
