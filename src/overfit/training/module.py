"""The Lightning module: network, loss + λ·R(W), optimizer, device-side metrics.

Metrics are sums kept on the device (loss, errors, count) and turned into
means once per epoch, so the hot loop never waits for the host. At the end of
an epoch the training and validation sets are evaluated with the same weights
(a no-grad pass over the device tensors), so train and val errors compare.
"""

from __future__ import annotations

import lightning as L
import torch
from omegaconf import DictConfig
from torch import nn

from overfit.maths.losses import Loss
from overfit.training.models import weight_matrices
from overfit.training.optimizers import build_optimizer
from overfit.maths.regularizers import Regularizer

EVAL_ELEMENTS = 2**24  # activations per evaluation chunk (64 MB in float32)
DIVERGENCE_GROWTH = 1e6  # an objective this many times its first value has diverged


class Diverged(FloatingPointError):
    """The training objective became non-finite, or grew a millionfold."""

    def __init__(self, epoch: int, value: float) -> None:
        super().__init__(f"training objective {value:.3g} at epoch {epoch}")
        self.epoch = epoch


class Learner(L.LightningModule):
    """Minimise (1/N)·Σ L_i + λ·R(W) over the network's parameters."""

    def __init__(
        self, net: nn.Module, loss: Loss, regularizer: Regularizer, optimizer: DictConfig, eval_every_n_epochs: int = 1
    ) -> None:
        super().__init__()
        self.net = net
        self.loss = loss
        self.regularizer = regularizer
        self.optimizer_cfg = optimizer
        self.eval_every_n_epochs = eval_every_n_epochs
        self.classification = loss.task == "classification"
        self._sums: dict[str, torch.Tensor] = {}
        self._first_objective: torch.Tensor | None = None
        # The regularized weights, found once: moving the module to a device keeps the Parameter objects.
        self._weights = weight_matrices(net)
        widest = max((getattr(m, "out_features", 0) for m in net.modules()), default=1)
        # Evaluation chunks sized by the widest layer: order-2 features on MNIST are 307k wide.
        self.eval_batch = max(64, min(8192, EVAL_ELEMENTS // max(widest, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions (classes or values) for any number of inputs, chunk by chunk."""
        return torch.cat([self.loss.predict(self(chunk)) for chunk in x.split(self.eval_batch)])

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
        self.eval()
        metrics = {**self._evaluate("train", data.x_train, data.y_train), **self._evaluate("val", data.x_val, data.y_val)}
        self.train(True)
        objective = metrics["train/objective"] = metrics["train/loss"] + self.penalty().detach()
        if self._first_objective is None:
            self._first_objective = objective
        diverged = ~torch.isfinite(objective) | (objective > DIVERGENCE_GROWTH * self._first_objective.clamp_min(1e-12))
        if diverged:  # one host sync per evaluated epoch
            raise Diverged(self.current_epoch, objective.item())
        self.log_dict(metrics)

    def test_step(self, batch, batch_idx: int) -> None:
        self._accumulate("test", batch)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self._means("test"))
