"""The Lightning module: network, loss + λ·R(W), optimizer, device-side metrics.

Metrics are sums kept on the device (loss, errors, count) and turned into
means once per epoch, so the hot loop never waits for the host. At the end of
an epoch the training and validation sets are evaluated with the same weights
(a no-grad pass over the device tensors), so train and val errors compare.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from torch import nn

from overfit.data.datasets import Splits
from overfit.maths import features, losses, regularizers
from overfit.maths.losses import Loss
from overfit.maths.regularizers import Regularizer
from overfit.training.models import Standardize, build_model, weight_matrices
from overfit.training.optimizers import build_optimizer

ENCODED_BYTES = 2**28  # encoded training, validation and test inputs kept on the device up to 256 MB
EVAL_ELEMENTS = 2**24  # activations per evaluation chunk (64 MB in float32)
DIVERGENCE_GROWTH = 1e6  # an objective this many times its first value has diverged


class Diverged(FloatingPointError):
    """The training objective became non-finite, or grew a millionfold."""

    def __init__(self, epoch: int, value: float) -> None:
        super().__init__(f"training objective {value:.3g} at epoch {epoch}")
        self.value = value
        self.epoch = epoch


class Learner(L.LightningModule):
    """Minimise (1/N)·Σ L_i + λ·R(W) over the network's parameters."""

    def __init__(
        self, net: nn.Module, loss: Loss, regularizer: Regularizer, optimizer: DictConfig, eval_every_n_epochs: int = 1
    ) -> None:
        super().__init__()
        self.net = net
        self.encoded = False  # True once the data module holds encode()d inputs
        self.mode_dependent = any(isinstance(m, (nn.Dropout, nn.BatchNorm1d)) for m in net.modules())
        self.loss = loss
        self.regularizer = regularizer
        self.optimizer_cfg = optimizer
        self.eval_every_n_epochs = eval_every_n_epochs
        self.classification = loss.task == "classification"
        self._sums: dict[str, torch.Tensor] = {}
        self.first_objective: float | None = None  # the training objective at the first evaluated epoch
        self.last_metrics: dict[str, float] = {}  # train/val metrics of the last evaluated epoch
        self.test_metrics: dict[str, float] = {}
        # The regularized weights, found once: moving the module to a device keeps the Parameter objects.
        self._weights = weight_matrices(net)
        widest = max((getattr(m, "out_features", 0) for m in net.modules()), default=1)
        # Evaluation chunks sized by the widest layer: order-2 features on MNIST are 307k wide.
        self.eval_batch = max(64, min(8192, EVAL_ELEMENTS // max(widest, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores of inputs as the data module holds them: raw, or already through the fixed stages."""
        return self.net[-1](x) if self.encoded else self.net(x)

    def encode(self, splits: Splits) -> Splits:
        """The fixed stages (standardise → features: buffers, no parameters) applied once to every split.

        Training then runs the model alone instead of recomputing a fixed map every step;
        only when the encoded sets fit in :data:`ENCODED_BYTES` (order 2 on MNIST does not).
        """
        stages = self.net[:-1]
        width = getattr(stages[-1], "out_features", None) if len(stages) else None
        names = [f"x_{s}" for s in ("train", "val", "test")]
        size = sum(len(getattr(splits, n)) for n in names) * (width or 0) * splits.x_train.element_size()
        if width is None or any(p.requires_grad for p in stages.parameters()) or size > ENCODED_BYTES:
            return splits
        with torch.no_grad():
            encoded = {n: torch.cat([stages(c) for c in getattr(splits, n).split(self.eval_batch)]) for n in names}
        self.encoded = True
        return replace(splits, **encoded)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions (classes or values) for any number of inputs, chunk by chunk."""
        return torch.cat([self.loss.predict(self.net(chunk)) for chunk in x.split(self.eval_batch)])

    def penalty(self) -> torch.Tensor:
        return self.regularizer.penalty(self._weights)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return self.loss(self(x), y) + self.penalty()

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.regularizer.project_(self._weights)  # max-norm: a projection, not a penalty

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return build_optimizer(self.optimizer_cfg, self.parameters())

    # --- evaluation: [Σ loss, Σ error, n] per split, on the device ------------
    def _accumulate(self, split: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        scores = self(x)
        prediction = self.loss.predict(scores)
        if self.classification:
            errors = (prediction != y).sum()
        else:
            errors = (prediction - y).pow(2).sum()  # Σ_i Σ_j (y − ŷ)²: MSE after dividing by n
        row = torch.stack([self.loss(scores, y) * len(x), errors.to(scores.dtype), scores.new_tensor(len(x))])
        self._sums[split] = self._sums[split] + row if split in self._sums else row

    def _means(self, split: str) -> dict[str, torch.Tensor]:
        total_loss, total_error, n = self._sums.pop(split)
        metrics = {f"{split}/loss": total_loss / n, f"{split}/error": total_error / n}
        if self.classification:
            metrics[f"{split}/acc"] = 1 - metrics[f"{split}/error"]
        return metrics

    @torch.no_grad()
    def _evaluate(self, split: str, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        for batch in zip(x.split(self.eval_batch), y.split(self.eval_batch)):
            self._accumulate(split, batch)
        return self._means(split)

    def on_train_epoch_end(self) -> None:
        epoch = self.current_epoch + 1
        if epoch % self.eval_every_n_epochs and epoch != self.trainer.max_epochs:
            return
        data = self.trainer.datamodule.splits
        if self.mode_dependent:  # eval mode only matters to dropout and batch norm; switching costs
            self.eval()
        metrics = {**self._evaluate("train", data.x_train, data.y_train), **self._evaluate("val", data.x_val, data.y_val)}
        if self.mode_dependent:
            self.train(True)
        metrics["train/objective"] = metrics["train/loss"] + self.penalty().detach()
        values = dict(zip(metrics, torch.stack(list(metrics.values())).tolist()))  # one host sync per evaluated epoch
        objective = values["train/objective"]
        if self.first_objective is None:
            self.first_objective = objective
        if not math.isfinite(objective) or objective > DIVERGENCE_GROWTH * max(self.first_objective, 1e-12):
            raise Diverged(epoch, objective)
        self.last_metrics = values
        if self.logger is not None:  # straight to the logger: the epoch is the step
            self.logger.log_metrics(values, step=epoch)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["first_objective"] = self.first_objective  # the divergence rule's reference survives a resume

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.first_objective = checkpoint.get("first_objective")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._accumulate("test", batch)

    def on_test_epoch_end(self) -> None:
        means = self._means("test")
        self.test_metrics = dict(zip(means, torch.stack(list(means.values())).tolist()))


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
