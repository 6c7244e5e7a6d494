"""The network: standardise → feature map → linear model or MLP.

Standardisation and the feature map live inside the network (buffers fitted on
the training inputs), so a saved model predicts from raw inputs and the plots
draw the fitted function in the data's own coordinates.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from overfit.maths import activations
from overfit.errors import ConfigError
from overfit.maths.layers import Linear

MODELS = ("linear", "mlp")
ACTIVATIONS = ("sigmoid", "tanh", "relu")
PARAMETER_BYTES = 16  # float32 weight, its gradient and Adam's two moments
ACTIVATION_BYTES = 12  # per unit of a training batch: the value kept for backward, its gradient, a temporary


class Standardize(nn.Module):
    """x ↦ (x − μ) / σ with μ, σ from the training inputs (σ = 1 where constant)."""

    def __init__(self, x_train: torch.Tensor) -> None:
        super().__init__()
        std = x_train.std(dim=0, unbiased=False)
        self.register_buffer("mean", x_train.mean(dim=0))
        self.register_buffer("std", torch.where(std > 1e-8, std, torch.ones_like(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class AnalyticSigmoid(nn.Module):
    """σ with the syllabus's hand-written backward σ(1 − σ)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return activations.sigmoid(x)


def _activation(name: str, analytic: bool) -> nn.Module:
    if name == "sigmoid":
        return AnalyticSigmoid() if analytic else nn.Sigmoid()
    return nn.Tanh() if name == "tanh" else nn.ReLU()


def build_model(
    cfg: DictConfig, in_features: int, out_features: int, *, bias: bool = True, analytic: bool = False
) -> nn.Module:
    """``linear``: s = Wx + b. ``mlp``: hidden layers of linear → activation (→ BN, dropout)."""
    if cfg.name == "linear":
        return Linear(in_features, out_features, bias=bias, analytic=analytic)
    layers: list[nn.Module] = []
    width = in_features
    for hidden in cfg.hidden:
        layers.append(Linear(width, hidden, bias=not cfg.batch_norm, analytic=analytic))
        if cfg.batch_norm:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(_activation(cfg.activation, analytic))
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        width = hidden
    layers.append(Linear(width, out_features, bias=bias, analytic=analytic))
    return nn.Sequential(*layers)


def weight_matrices(net: nn.Module) -> list[torch.Tensor]:
    """The weights a regularizer sees: every linear map's W, never biases or BN."""
    return [m.weight for m in net.modules() if isinstance(m, (Linear, nn.Linear))]


def check(cfg: DictConfig) -> None:
    """Reject impossible model settings before anything runs."""
    if cfg.name not in MODELS:
        raise ConfigError("model", f"unknown model {cfg.name!r}", ", ".join(MODELS))
    if cfg.name == "mlp":
        if cfg.activation not in ACTIVATIONS:
            raise ConfigError("model.activation", f"unknown activation {cfg.activation!r}", ", ".join(ACTIVATIONS))
        if not cfg.hidden or any(h < 1 for h in cfg.hidden):
            raise ConfigError("model.hidden", f"got {list(cfg.hidden)}", "a non-empty list of sizes ≥ 1")
        if not 0 <= cfg.dropout < 1:  # also false for NaN
            raise ConfigError("model.dropout", f"got {cfg.dropout}", "0 ≤ dropout < 1")


def check_fit(
    cfg: DictConfig, in_features: int, out_features: int, n_train: int, batch_size: int | None, memory: int
) -> None:
    """A checked model on these sizes: every training batch trainable, weights and one batch within ``memory`` bytes.

    ``batch_size`` None is the full batch (gradient descent).
    """
    rows = min(batch_size or n_train, n_train)
    if cfg.name == "mlp" and cfg.batch_norm and 1 in (rows, n_train % rows):
        problem = f"batch_size={batch_size} on {n_train} training points gives a batch of 1: batch norm cannot train on it"
        raise ConfigError("model.batch_norm", problem, "batch_norm=false, or a batch_size that leaves no batch of 1")
    widths = [in_features, *(cfg.hidden if cfg.name == "mlp" else ()), out_features]
    here = f"more than the {memory / 1e9:,.1f} GB here"
    weights = PARAMETER_BYTES * parameter_count(cfg, in_features, out_features)
    if weights > memory:
        key = "model.hidden" if cfg.name == "mlp" else "features.order"
        problem = f"layers {widths} need about {weights / 1e9:,.1f} GB for their weights, {here}"
        raise ConfigError(key, problem, "smaller layers")
    per_row = ACTIVATION_BYTES * sum(widths)
    need = weights + rows * per_row
    if need > memory:
        problem = f"a batch of {rows:,} rows through layers {widths} needs about {need / 1e9:,.1f} GB, {here}"
        raise ConfigError("optimizer.batch_size", problem, f"1..{(memory - weights) // per_row:,}")


def parameter_count(cfg: DictConfig, in_features: int, out_features: int) -> int:
    """Weights and biases of a checked model on these sizes: what the memory checks count."""
    widths = [in_features, *(cfg.hidden if cfg.name == "mlp" else ()), out_features]
    return sum((a + 1) * b for a, b in zip(widths, widths[1:]))
