"""The network's stages that are not a feature map: input standardisation, the hand-written sigmoid, layer lookup.

Standardisation lives inside the network (buffers fitted on the training inputs), so a
saved model predicts from raw inputs and the plots draw the fitted function in the data's
own coordinates.
"""

from __future__ import annotations

import torch
from torch import nn

from overfit.maths import activations
from overfit.maths.layers import Linear


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


def weight_matrices(net: nn.Module) -> list[torch.Tensor]:
    """The weights a regularizer sees: every linear map's W, never biases or batch-norm parameters."""
    return [m.weight for m in net.modules() if isinstance(m, (Linear, nn.Linear))]
