"""Output activations that turn a model's scores into what a loss reads.

Each has an analytic backward (syllabus §7) so the gradient check can compare
the closed forms with autograd:

    sigmoid  p = σ(x) = 1 / (1 + e^{-x})      ∂p/∂x = σ(1 − σ)          (diagonal)
    softmax  p_a = e^{x_a} / Σ_b e^{x_b}      D_ab = p_a (δ_ab − p_b)

The softmax Jacobian is never built (N×C×C); its vector-Jacobian product is

    (gᵀD)_b = Σ_a g_a p_a (δ_ab − p_b) = p_b (g_b − Σ_a g_a p_a).

:class:`ClosedForm` is the one autograd Function behind these and the losses'
closed forms: a formula is a forward and its vector-Jacobian product, nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from overfit.errors import ConfigError

OUTPUTS = ("identity", "sigmoid", "softmax")

# vjp(g, output, *inputs): one gradient per input (None for one that needs none), g = ∂L/∂output.
VJP = Callable[..., Sequence[Tensor | None]]


class ClosedForm(torch.autograd.Function):
    """`ClosedForm.apply(forward, vjp, *inputs)`: forward(*inputs), differentiated by the hand-written vjp."""

    @staticmethod
    def forward(ctx: FunctionCtx, forward: Callable[..., Tensor], vjp: VJP, *inputs: Tensor) -> Tensor:
        output = forward(*inputs)
        ctx.vjp = vjp
        ctx.save_for_backward(output, *inputs)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, g: Tensor) -> tuple[Tensor | None, ...]:
        output, *inputs = ctx.saved_tensors
        return None, None, *ctx.vjp(g, output, *inputs)  # forward and vjp get no gradient


def sigmoid(x: Tensor) -> Tensor:
    """σ(x) elementwise, backward g ⊙ σ(1 − σ)."""
    return ClosedForm.apply(torch.sigmoid, lambda g, p, _: (g * p * (1 - p),), x)


def softmax(x: Tensor) -> Tensor:
    """Softmax over the last (class) dimension, backward p ⊙ (g − ⟨g, p⟩)."""
    return ClosedForm.apply(
        partial(torch.softmax, dim=-1), lambda g, p, _: (p * (g - (g * p).sum(dim=-1, keepdim=True)),), x
    )


def apply(name: str, scores: Tensor, analytic: bool) -> Tensor:
    """Apply output activation `name`; `analytic` picks the closed-form backward over autograd's."""
    if name == "identity":
        return scores
    if name == "sigmoid":
        return sigmoid(scores) if analytic else torch.sigmoid(scores)
    if name == "softmax":
        return softmax(scores) if analytic else torch.softmax(scores, dim=-1)
    raise ConfigError("loss.output", f"unknown output activation {name!r}", ", ".join(OUTPUTS))
