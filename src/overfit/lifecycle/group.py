"""A vectorized sweep's unit: its points claimed one by one, those it holds trained as one batched model.

Each point is claimed like a single point (:mod:`overfit.lifecycle.claim`): reused,
reopened, waited for while another process trains it, or created — so every point is
one MLflow run for its whole life and no two processes train it at once. The points
this job holds train together through :func:`overfit.training.vectorized.train_group`,
their metrics queued for their runs as they train (a thread sends them every few seconds);
each run is then ended — its last points, files, pictures and status — by a
:class:`~overfit.tracking.recorder.Recorder`. A run has its params from its claim on; its
files (``config.yaml`` among them) come with its ending, in the one upload of its files.

A group checkpoints like a single run (``trainer.checkpoint_every_n_epochs`` /
``_seconds``, and at once on a signal) into one directory that every member's
``overfit.checkpoint`` tag names, beside ``group.json``: which runs its models are and
their configs. A rerun (or a SLURM requeue) that reopens any of those runs continues the
whole group from there — members finished since train along silently — so a kill loses
at most one checkpoint interval.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from overfit.interrupts import Interrupted, Signals
from overfit.lifecycle.claim import CHECKPOINTS, WAIT_SECONDS, Claim, Claimer, Target
from overfit.lifecycle.plan import Member
from overfit.lifecycle.point import finish, linker, remove_checkpoints, store_of
from overfit.tracking import runs
from overfit.tracking.pointfile import PointResult
from overfit.tracking.recorder import Record, Recorder
from overfit.tracking.store import CLOSE_SECONDS, Store, StoreError
from overfit.tracking.writer import MetricWriter, Point

if TYPE_CHECKING:
    from torch import Tensor

    from overfit.data.base import Splits
    from overfit.training.vectorized import GroupResult

GROUP_FILE = "group.json"


def run_group(members: list[Member], parent: str | None, job_dir: Path) -> list[PointResult]:
    """Every member's result, in order: reused, or trained (with the others this job holds) into its run."""
    cfgs = [m.cfg(parent) for m in members]
    store = store_of(cfgs[0])
    experiment_id = store.experiment(cfgs[0].experiment_name)
    group_dir = job_dir / CHECKPOINTS / uuid.uuid4().hex[:12]
    targets = [Target(cfg, m.overrides, m.name, m.num, job_dir / str(m.num), group_dir) for m, cfg in zip(members, cfgs)]
    results: dict[int, PointResult] = {}
    with Signals() as signals:
        signals.hooks.append(lambda stop: store.hurry(CLOSE_SECONDS, stop))  # a signal: stop waiting for the store
        claimer = Claimer(store, experiment_id, parent, cfgs[0].sweep.rerun, on_reused=linker(store, parent),
                          signals=signals, config_files=False)  # the params now; the files with each record
        pending = list(range(len(targets)))
        while pending:
            claims = claimer.claim([targets[i] for i in pending], wait=False)
            won: dict[str, tuple[int, Claim]] = {}
            for i, c in zip(pending, claims):
                if c is not None and (c.reused or c.result.run_id in won):
                    results[i] = c.result if c.reused else PointResult(**{**c.result.__dict__, "reused": True})
                elif c is not None:
                    won[c.result.run_id] = (i, c)
            if signals.received is not None:
                store.hurry(CLOSE_SECONDS)
                stopped = Interrupted(signals.received)
                _close_killed(store, [c for _, c in won.values()], stopped)
                raise stopped
            if won:
                trained = _train(store, targets, list(won.values()), group_dir, signals)
                results.update(trained)
                for i, c in zip(pending, claims):  # a value listed twice: the same run stands for both
                    if i not in results and c is not None:
                        results[i] = PointResult(**{**results[won[c.result.run_id][0]].__dict__, "reused": True})
            pending = [i for i, c in zip(pending, claims) if c is None]
            if pending:
                time.sleep(WAIT_SECONDS)  # another process trains them: their results come to the store
    return [results[i] for i in range(len(members))]


@dataclass
class _Model:
    """One model of a batched group: its run and config, and — if this job records it — its target's index and claim."""

    run_id: str
    config: dict[str, Any]
    index: int | None = None
    claim: Claim | None = None
    cfg: DictConfig | None = None  # ``config`` as this job composed it (a fresh group's): not made again from it

    def composed(self) -> DictConfig:
        return self.cfg if self.cfg is not None else OmegaConf.create(self.config)


def _sources(won: list[tuple[int, Claim]]) -> dict[Path, dict[str, Any]]:
    """The group checkpoints the won runs name, with their ``group.json``, where both exist."""
    found = {}
    for _, c in won:
        folder = c.checkpoints
        if folder not in found and (folder / GROUP_FILE).is_file() and (folder / "last.ckpt").is_file():
            try:
                found[folder] = json.loads((folder / GROUP_FILE).read_text())
            except ValueError:  # half a file: nothing to continue from
                continue
    return found


def _train(store: Store, targets: list[Target], won: list[tuple[int, Claim]], group_dir: Path,
           signals: Signals) -> dict[int, PointResult]:
    """Train the won points: each group checkpoint that covers some of them continues, the rest start fresh."""
    remaining = {c.result.run_id: (i, c) for i, c in won}
    sources = _sources(won)
    results: dict[int, PointResult] = {}
    while remaining:
        covering = {d: sum(m["run_id"] in remaining for m in g["models"]) for d, g in sources.items()}
        folder = max(covering, key=covering.__getitem__, default=None)
        if folder is not None and covering[folder]:
            group = sources.pop(folder)
            models = [_Model(m["run_id"], m["config"], *remaining.get(m["run_id"], (None, None)))
                      for m in group["models"]]
            resume_from: Path | None = folder / "last.ckpt"
        else:
            folder = group_dir if not (group_dir / GROUP_FILE).exists() else group_dir.with_name(uuid.uuid4().hex[:12])
            models = [_Model(c.result.run_id, OmegaConf.to_container(targets[i].cfg), i, c,  # type: ignore[arg-type]
                             targets[i].cfg) for i, c in remaining.values()]
            group = {"id": folder.name, "models": [{"run_id": m.run_id, "config": m.config} for m in models]}
            folder.mkdir(parents=True, exist_ok=True)
            aside = folder / f".{GROUP_FILE}.tmp"
            aside.write_text(json.dumps(group))
            aside.replace(folder / GROUP_FILE)
            resume_from = None
        recorded = [m for m in models if m.claim is not None]
        for m in recorded:  # every recorded run's checkpoint tag names the group's folder: a rerun finds it there
            if m.claim.checkpoints != folder:  # type: ignore[union-attr]
                store.call("set_tag", m.run_id, runs.TAG_CHECKPOINT, str(folder))
        results.update(_train_models(store, targets, folder, group["id"], models, resume_from, signals))
        for m in recorded:
            remaining.pop(m.run_id)
    return results


class _Buffers:
    """The unsent metric points of a group's runs, as one thing a checkpoint carries."""

    def __init__(self, writer: MetricWriter, run_ids: list[str]) -> None:
        self.writer, self.run_ids = writer, run_ids

    def pending(self) -> dict[str, list[Point]]:
        return {r: self.writer.pending(r) for r in self.run_ids}

    def restore(self, points: dict[str, list[Point]]) -> None:
        for run_id, found in points.items():
            if run_id in self.run_ids:
                self.writer.restore(run_id, found)


def _stream(writer: MetricWriter, models: list[_Model]) -> Any:
    """Per evaluated epoch, each recorded living model's metrics to its run (step = epoch)."""
    recorded = [(k, m.run_id) for k, m in enumerate(models) if m.claim is not None]

    def on_epoch(epoch: int, metrics: dict[str, Tensor], alive: Tensor) -> None:
        now = int(time.time() * 1000)
        rows = {key: values.tolist() for key, values in metrics.items()}
        for k, run_id in recorded:
            if alive[k]:
                writer.add(run_id, {key: rows[key][k] for key in rows}, epoch, now)

    return on_epoch


def _train_models(store: Store, targets: list[Target], folder: Path, group_id: str, models: list[_Model],
                  resume_from: Path | None, signals: Signals) -> dict[int, PointResult]:
    """One batched model over ``models``; the recorded ones end in their runs (results by target index)."""
    from overfit.training.fit import usable_checkpoint
    from overfit.training.resume import Resume
    from overfit.training.trainer import check_machine
    from overfit.training.vectorized import load_splits, train_group

    cfgs = [m.composed() for m in models]
    recorded = [m for m in models if m.claim is not None]
    open_claims = [m.claim for m in recorded if m.claim is not None]
    writer = MetricWriter(store)
    for c in open_claims:
        writer.open_run(c.result.run_id, c.logged)
    try:
        with Recorder(len(recorded), store.uri) as recorder:
            check_machine(cfgs[0].trainer)  # in the job, where the work runs: its runs end FAILED saying why
            splits = load_splits(cfgs)
            trainer = cfgs[0].trainer
            resume = Resume(folder, signals, _Buffers(writer, [m.run_id for m in recorded]),
                            trainer.checkpoint_every_n_epochs, trainer.checkpoint_every_seconds, group_id)
            start = usable_checkpoint(resume_from, group_id) if resume_from is not None else None
            if start is not None:
                print(f"[overfit] {len(models)} points resume together from epoch {start.epoch} of "
                      f"{trainer.max_epochs} (their group's checkpoint)", flush=True)
            trained = train_group(cfgs, splits, on_epoch=_stream(writer, models), output_dir=folder,
                                  callbacks=[resume] if trainer.checkpoint else [],
                                  members=[m.run_id for m in models], ckpt_path=start.path if start else None)
            now = int(time.time() * 1000)
            for k, m in enumerate(models):
                point = trained[k]
                if m.claim is not None and point.diverged is None:
                    writer.add(m.run_id, {key: v for key, v in point.metrics.items()
                                          if key.startswith("test/") or key == "generalization_gap"},
                               point.cfg.trainer.max_epochs, now)
            unsent = writer.take([m.run_id for m in recorded])  # sent by the writers, each before its run's end
            # Each record goes to the writers as soon as it is drawn. A signal now: what is written stays, the
            # rest is closed KILLED.
            with signals.held(honour=False), closing(_records(store, targets, models, trained, splits, writer,
                                                              unsent)) as records:
                done = recorder.record_all(records, signals)
            done += [None] * (len(open_claims) - len(done))
            open_claims = [c for c, result in zip(open_claims, done) if result is None]
            signals.check()
    except StoreError:
        raise  # nobody can record anything: the next attempt resumes these runs
    except Interrupted as exc:
        store.hurry(CLOSE_SECONDS)
        try:
            writer.flush(budget=CLOSE_SECONDS)
        except StoreError:
            pass
        _close_killed(store, open_claims, exc)
        raise
    except Exception as exc:  # the whole group failed (not a divergence: that is one point's result)
        for m in recorded:  # each open run ends FAILED with the reason, and its job's point file says so
            if m.claim in open_claims:
                target = targets[m.index]  # type: ignore[index]
                runs.log_files(store, m.run_id, runs.config_files(target.cfg, target.overrides))
                finish(store, m.claim.result, target.job_dir, error=exc)  # type: ignore[union-attr]
        if cfgs[0].sweep.get("parent_run_id") is None:
            raise
        return {m.index: m.claim.result for m in recorded}  # type: ignore[misc, union-attr]
    finally:
        writer.close()
    remove_checkpoints(folder)  # every recorded run ended: nothing resumes from here any more
    return {m.index: result for m, result in zip(recorded, done)}  # type: ignore[misc]


def _close_killed(store: Store, claims: list[Claim], exc: Interrupted) -> None:
    """End the runs a signal stopped KILLED, waiting briefly on a failing store; say so on the exception."""
    closed = 0
    for c in claims:
        c.result.status, c.result.failure, c.result.reason = "KILLED", "killed", f"stopped by {exc}"
        try:
            runs.end(store, c.result.run_id, "KILLED", "killed", c.result.reason, budget=CLOSE_SECONDS)
            closed += 1
        except StoreError:
            c.result.status = "RUNNING"
    if claims:
        exc.outcome = (f"{closed} of {len(claims)} open point run(s) closed KILLED; the same command resumes them "
                       "from their group's last checkpoint")


def _records(store: Store, targets: list[Target], models: list[_Model], trained: list[GroupResult],
             splits: list[Splits], writer: MetricWriter, unsent: dict[str, list[Point]]) -> Iterator[Record]:
    """What each recorded run still needs, one run at a time: its last metric points, its weights and
    predictions, its pictures, its datasets, its ending."""
    from overfit.lifecycle.pictures import LEARNING_KEY, LearningCanvas, TitleBand
    from overfit.lifecycle.predictions import grid_file
    from overfit.tracking.models import dataset_inputs, logs_model, weights
    from overfit.training.parts import build

    pictures, titles = _Pictures(), TitleBand()
    kept = [(m, point) for m, point in zip(models, trained) if m.claim is not None and point.diverged is None]
    curves = {m.run_id: writer.curve(m.run_id) for m, _ in kept}
    epochs = trained[0].cfg.trainer.max_epochs  # a group's members share their shape, epochs included
    learning = LearningCanvas.over(list(curves.values()), epochs) if curves else None  # one pair of axes for all
    try:
        for m, point, data in zip(models, trained, splits):
            if m.claim is None or m.index is None:
                continue
            target, result = targets[m.index], m.claim.result
            result.metrics = dict(point.metrics)
            shots: list[tuple[str, np.ndarray, int]] = []
            if point.diverged is None:
                result.status = "FINISHED"
                title = f"{target.name} · test error {point.metrics['test/error']:.4g}"
                band = titles.pixels(title)  # drawn once, laid over both pictures
                shown = pictures.render(point, data, title, band)
                shots = [] if shown is None else [(shown[0], shown[1], epochs)]
                assert learning is not None
                shots.append((LEARNING_KEY, learning.pixels(curves[m.run_id], band), epochs))
            else:
                error = point.error()
                result.status, result.failure, result.reason = "FAILED", "diverged", f"{type(error).__name__}: {error}"
            files = runs.config_files(target.cfg, target.overrides)  # its params were logged at its claim
            if point.diverged is None:
                files.update(grid_file(point.net, build(point.cfg).dataset, len(data.y_test), point.cfg))
                files.update(weights(point.net, point.learner.loss, data))  # model/: the member as a single network
            yield Record(store.uri, store.deadline, files, shots, result, str(target.job_dir),
                         unsent.get(m.run_id, []), dataset_inputs(target.cfg, data),
                         point.diverged is None and logs_model(target.cfg))
    finally:
        pictures.close()
        titles.close()
        if learning is not None:
            learning.close()


class _Pictures:
    """Each finished point's picture; fitted curves over the same data share one canvas (drawn once)."""

    def __init__(self) -> None:
        self.canvases: dict[int, Any] = {}

    def render(self, point: GroupResult, data: Splits, title: str, band: np.ndarray) -> tuple[str, np.ndarray] | None:
        from overfit.lifecycle.pictures import FitCanvas, picture, pixels
        from overfit.training.parts import build

        if data.task == "regression" and data.input_dim == 1 and data.target_dim == 1:
            if id(data) not in self.canvases:
                self.canvases[id(data)] = FitCanvas(data, build(point.cfg).dataset.true_function())
            return "fit", self.canvases[id(data)].pixels(point.learner.net, band)
        shown = picture(point.learner, data, title)
        return None if shown is None else (shown[0], pixels(shown[1]))

    def close(self) -> None:
        for canvas in self.canvases.values():
            canvas.close()
