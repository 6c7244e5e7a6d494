"""The Lightning module: network, loss + λ·R(W), optimizer, device-side metrics.

On one device the module optimizes manually and one training step is a
whole epoch: its mini-batches are stepped through in a loop here, with
Lightning's own ``manual_backward`` and optimizer wrapper (precision, hooks and
step counts stay Lightning's), because Lightning's fixed cost per step is as
large as a small model's whole update. Several processes (DDP) step
automatically, one batch per Lightning step: DDP syncs gradients once per forward.

Metrics stay on the device: each split's mean loss and error are computed
at the end of an epoch with the same weights (a no-grad pass over the device
tensors, so train and val errors compare) and read on the host together, once
per evaluated epoch; the hot loop never waits for the host.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import partial
from typing import Any

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from omegaconf import DictConfig
from torch import nn

from overfit.data.base import Splits
from overfit.errors import Diverged
from overfit.maths.losses import Loss
from overfit.maths.regularizers import Regularizer
from overfit.training.networks import weight_matrices
from overfit.training.optimizers import Optimizer
from overfit.training.parts import Parts

ENCODED_BYTES = 2**28  # encoded training, validation and test inputs kept on the device up to 256 MB
EVAL_ELEMENTS = 2**24  # activations per evaluation chunk (64 MB in float32)
DIVERGENCE_GROWTH = 1e6  # an objective this many times its first value has diverged


class Learner(L.LightningModule):
    """Minimise (1/N)·Σ L_i + λ·R(W) over the network's parameters."""

    def __init__(
        self, net: nn.Module, loss: Loss, regularizer: Regularizer, optimizer: Optimizer, eval_every_n_epochs: int = 1
    ) -> None:
        super().__init__()
        self.net = net
        self.encoded = False  # True once the data module holds encode()d inputs
        self.mode_dependent = any(isinstance(m, (nn.Dropout, nn.BatchNorm1d)) for m in net.modules())
        self.loss = loss
        self.regularizer = regularizer
        self.optimizer_spec = optimizer
        self.eval_every_n_epochs = eval_every_n_epochs
        self.classification = loss.task == "classification"
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

    def objective(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(1/B)·Σ L_i + λ·R(W) on one batch."""
        loss = self.loss(self(x), y)
        return loss + self.penalty() if self.regularizer.strength else loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        """Automatic: ``batch`` is one (x, y). Manual: ``batch`` is an epoch, an iterable of (x, y), stepped here."""
        if self.automatic_optimization:
            return self.objective(*batch)
        optimizer = self.optimizers()
        for x, y in batch:
            optimizer.step(closure=partial(self._closure, optimizer, x, y))  # L-BFGS calls it more than once
            self.regularizer.project_(self._weights)
        return None

    def _closure(self, optimizer: LightningOptimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad()
        objective = self.objective(x, y)
        self.manual_backward(objective)
        return objective

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.regularizer.project_(self._weights)  # max-norm: a projection, not a penalty

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_spec.build(self.parameters())

    # --- evaluation: [mean loss, mean error] per split, on the device; one host read per epoch ----------
    def _loss_and_error(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[mean loss, mean error] of one batch: the 0-1 error for classes, Σ_j (y − ŷ)² per example for values."""
        scores = self(x)
        prediction = self.loss.predict(scores)
        if self.classification:
            error = (prediction != y).to(scores.dtype).mean()
        else:
            error = (prediction - y).pow(2).sum() / len(x)
        return torch.stack([self.loss(scores, y), error])

    @torch.no_grad()
    def _evaluate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[mean loss, mean error] over a whole split, in chunks the device holds (one, for small sets)."""
        if len(x) <= self.eval_batch:
            return self._loss_and_error(x, y)
        chunks = zip(x.split(self.eval_batch), y.split(self.eval_batch))
        return sum(self._loss_and_error(xc, yc) * len(xc) for xc, yc in chunks) / len(x)

    def _named(self, split: str, loss: float, error: float) -> dict[str, float]:
        accuracy = {f"{split}/acc": 1 - error} if self.classification else {}
        return {f"{split}/loss": loss, f"{split}/error": error, **accuracy}

    def on_train_epoch_end(self) -> None:
        epoch = self.current_epoch + 1
        if epoch % self.eval_every_n_epochs and epoch != self.trainer.max_epochs:
            return
        data = self.trainer.datamodule.splits
        if self.mode_dependent:  # eval mode only matters to dropout and batch norm; switching costs
            self.eval()
        rows = [self._evaluate(data.x_train, data.y_train), self._evaluate(data.x_val, data.y_val)]
        if self.mode_dependent:
            self.train(True)
        if self.regularizer.strength:
            rows.append(self.penalty().detach().reshape(1))
        train_loss, train_error, val_loss, val_error, *penalty = torch.cat(rows).tolist()  # the epoch's one host sync
        objective = train_loss + sum(penalty)
        if self.first_objective is None:
            self.first_objective = objective
        if not math.isfinite(objective) or objective > DIVERGENCE_GROWTH * max(self.first_objective, 1e-12):
            raise Diverged(epoch, objective)
        values = {**self._named("train", train_loss, train_error), "train/objective": objective,
                  **self._named("val", val_loss, val_error)}
        self.last_metrics = values
        if self.logger is not None:  # straight to the logger: the epoch is the step
            self.logger.log_metrics(values, step=epoch)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["first_objective"] = self.first_objective  # the divergence rule's reference survives a resume

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.first_objective = checkpoint.get("first_objective")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """The whole test set is one batch (see TensorDataModule), evaluated as train and val are."""
        self.test_metrics = self._named("test", *self._evaluate(*batch).tolist())


def build_learner(parts: Parts, cfg: DictConfig, splits: Splits) -> Learner:
    """standardise → features → model, with the loss, regularizer and optimizer of ``parts``."""
    from overfit.training.networks import Standardize

    loss = parts.loss.fit(splits.task, splits.num_classes)
    stages: list[torch.nn.Module] = []
    x = splits.x_train
    if parts.dataset.standardize:
        stages.append(Standardize(x))
        x = stages[-1](x)
    feature_map = parts.features.build(x)
    stages.append(feature_map)
    out = loss.output_dim(splits.task, splits.num_classes, splits.target_dim)
    stages.append(parts.model.build(feature_map.out_features, out, analytic=loss.gradient == "analytic"))
    return Learner(torch.nn.Sequential(*stages), loss, parts.regularizer, parts.optimizer,
                   cfg.trainer.eval_every_n_epochs)
