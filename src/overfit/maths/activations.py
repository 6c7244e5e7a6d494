"""Output activations that turn a model's scores into what a loss reads.

Each has an analytic backward (syllabus §7) so the gradient check can compare
the closed forms with autograd:

    sigmoid  p = σ(x) = 1 / (1 + e^{-x})      ∂p/∂x = σ(1 − σ)          (diagonal)
    softmax  p_a = e^{x_a} / Σ_b e^{x_b}      D_ab = p_a (δ_ab − p_b)

The softmax Jacobian is never built (N×C×C); its vector-Jacobian product is

    (gᵀD)_b = Σ_a g_a p_a (δ_ab − p_b) = p_b (g_b − Σ_a g_a p_a).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from overfit.errors import ConfigError

OUTPUTS = ("identity", "sigmoid", "softmax")


class _Sigmoid(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor) -> Tensor:
        p = torch.sigmoid(x)
        ctx.save_for_backward(p)
        return p

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, g: Tensor) -> Tensor:
        (p,) = ctx.saved_tensors
        return g * p * (1 - p)


class _Softmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor) -> Tensor:
        p = torch.softmax(x, dim=-1)
        ctx.save_for_backward(p)
        return p

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, g: Tensor) -> Tensor:
        (p,) = ctx.saved_tensors
        return p * (g - (g * p).sum(dim=-1, keepdim=True))


def sigmoid(x: Tensor) -> Tensor:
    """σ(x) elementwise, backward σ(1 − σ)."""
    return _Sigmoid.apply(x)


def softmax(x: Tensor) -> Tensor:
    """Softmax over the last (class) dimension, backward p ⊙ (g − ⟨g, p⟩)."""
    return _Softmax.apply(x)


def apply(name: str, scores: Tensor, analytic: bool) -> Tensor:
    """Apply output activation `name`; `analytic` picks the closed-form backward over autograd's."""
    if name == "identity":
        return scores
    if name == "sigmoid":
        return sigmoid(scores) if analytic else torch.sigmoid(scores)
    if name == "softmax":
        return softmax(scores) if analytic else torch.softmax(scores, dim=-1)
    raise ConfigError("loss.output", f"unknown output activation {name!r}", ", ".join(OUTPUTS))
