"""The task function: config → data → module → trainer → tracker, for one run."""

from __future__ import annotations

import logging
import signal
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import mlflow
import torch
from omegaconf import DictConfig

from overfit.data import datasets
from overfit.maths import features, losses, regularizers
from overfit.tracking import plots, runs as tracking
from overfit.config import validate
from overfit.data.datamodule import TensorDataModule
from overfit.data.datasets import Splits
from overfit.tracking.logger import BatchedMLFlowLogger
from overfit.training.models import Standardize, build_model
from overfit.training.module import Learner
from overfit.training.trainer import build_trainer


# Lightning's start-up banners and hints say nothing about the run; keep its warnings.
for _name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")


def build_learner(cfg: DictConfig, splits: Splits) -> Learner:
    """standardise → features → model, with the loss, regularizer and optimizer."""
    loss = losses.build_loss(cfg.loss, splits.task, splits.num_classes)
    analytic = cfg.loss.gradient == "analytic"
    stages: list[torch.nn.Module] = []
    x = splits.x_train
    if cfg.dataset.standardize:
        stages.append(Standardize(x))
        x = stages[-1](x)
    feature_map = features.build_features(cfg.features, x)
    stages.append(feature_map)
    out = loss.output_dim(splits.task, splits.num_classes, splits.target_dim)
    stages.append(build_model(cfg.model, feature_map.out_features, out, analytic=analytic))
    return Learner(
        torch.nn.Sequential(*stages),
        loss,
        regularizers.build_regularizer(cfg.regularizer),
        cfg.optimizer,
        cfg.trainer.eval_every_n_epochs,
    )


@dataclass(frozen=True)
class RunResult:
    """What a finished run left in MLflow: its id and final metrics."""

    run_id: str
    metrics: dict[str, float]


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler or ``kill``): end the run KILLED, like Ctrl-C."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(f"signal {signum}")


def picture(learner: Learner, splits: Splits, title: str) -> tuple[str, Any] | None:
    """The run's picture: fitted curve (1-D regression) or test confusion matrix."""
    if splits.task == "regression":
        if splits.input_dim != 1 or splits.target_dim != 1:
            return None
        return "fit.png", plots.fitted_curve(learner.net, splits, title)
    predicted = learner.eval().cpu().predict(splits.x_test.cpu())
    names = splits.class_names or tuple(str(i) for i in range(splits.num_classes or 0))
    return "confusion_matrix.png", plots.confusion_matrix(predicted, splits.y_test.cpu(), names, title)


def train(
    cfg: DictConfig,
    overrides: list[str] | None = None,
    output_dir: Path | None = None,
    parent_run_id: str | None = None,
) -> RunResult:
    """Train one configuration and record it as one MLflow run; returns its final metrics.

    The config is validated before the run exists (bad input leaves no trace);
    anything that fails later, loading the data included, ends the run FAILED.
    """
    validate(cfg)
    experiment_id = tracking.connect(cfg)
    output_dir = output_dir or Path.cwd()
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_terminated)
    with tracking.training_run(cfg, experiment_id, overrides or [], parent_run_id) as run:
        L.seed_everything(cfg.seed, verbose=False)
        splits = datasets.load(cfg.dataset, cfg.seed)
        learner = build_learner(cfg, splits)
        logger = BatchedMLFlowLogger(run.info.run_id, mlflow.get_tracking_uri())
        trainer = build_trainer(cfg.trainer, logger, output_dir)
        data = TensorDataModule(splits, cfg.optimizer.batch_size, learner.eval_batch)
        trainer.fit(learner, datamodule=data)
        final = {k: float(v) for k, v in trainer.callback_metrics.items() if k.split("/")[0] in ("train", "val")}
        final.update(trainer.test(learner, datamodule=data, verbose=False)[0])
        final["generalization_gap"] = final["test/error"] - final["train/error"]
        mlflow.log_metric("generalization_gap", final["generalization_gap"])
        shown = picture(learner, splits, f"{cfg.dataset.name} · {cfg.model.name} · {cfg.loss.name}")
        if shown is not None:
            mlflow.log_figure(shown[1], shown[0])
            plots.plt.close(shown[1])
    return RunResult(run.info.run_id, final)
