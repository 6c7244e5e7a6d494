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
    if cfg.name not in MODELS:
        raise ConfigError("model", f"unknown model {cfg.name!r}", ", ".join(MODELS))
    if cfg.name == "mlp":
        if cfg.activation not in ACTIVATIONS:
            raise ConfigError("model.activation", f"unknown activation {cfg.activation!r}", ", ".join(ACTIVATIONS))
        if not cfg.hidden or any(h < 1 for h in cfg.hidden):
            raise ConfigError("model.hidden", f"got {list(cfg.hidden)}", "a non-empty list of sizes ≥ 1")
        if not 0 <= cfg.dropout < 1:
            raise ConfigError("model.dropout", f"got {cfg.dropout}", "0 ≤ dropout < 1")
