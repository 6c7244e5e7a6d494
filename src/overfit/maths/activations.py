"""Output activations that turn a model's scores into what a loss reads.

Each has an analytic backward (syllabus §7) so the gradient check can compare
the closed forms with autograd:

    sigmoid  p = σ(x) = 1 / (1 + e^{-x})      ∂p/∂x = σ(1 − σ)          (diagonal)
    softmax  p_a = e^{x_a} / Σ_b e^{x_b}      D_ab = p_a (δ_ab − p_b)

The softmax Jacobian is never built (N×C×C); its vector-Jacobian product is

    (gᵀD)_b = Σ_a g_a p_a (δ_ab − p_b) = p_b (g_b − Σ_a g_a p_a).

:class:`ClosedForm` is the one autograd Function behind these and the losses'
closed forms: a formula is a forward and its vector-Jacobian product, nothing more.
It is made on first use (``activations.ClosedForm`` or :func:`closed_form`), so that
importing this module does not import PyTorch: configs are validated without it.

The names ``identity``, ``sigmoid`` and ``softmax`` are values of a loss's ``output``
knob, not components: :func:`apply` reads them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from overfit.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor

OUTPUTS = ("identity", "sigmoid", "softmax")

# vjp(g, output, *inputs): one gradient per input (None for one that needs none), g = ∂L/∂output.
VJP = Callable[..., Sequence["Tensor | None"]]


@functools.cache
def closed_form() -> type:
    """The autograd Function ``ClosedForm.apply(forward, vjp, *inputs)``: forward(*inputs), differentiated by vjp.

    Made once, on first use: an autograd Function subclass needs torch where it is defined.
    """
    import torch
    from torch.autograd.function import FunctionCtx, once_differentiable

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

    return ClosedForm


def __getattr__(name: str) -> Any:
    """``activations.ClosedForm``: the lazily made Function, read like a module attribute."""
    if name == "ClosedForm":
        return closed_form()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _sigmoid(x: Tensor) -> Tensor:
    return x.sigmoid()


def _softmax(x: Tensor) -> Tensor:
    return x.softmax(dim=-1)


def sigmoid(x: Tensor) -> Tensor:
    """σ(x) elementwise, backward g ⊙ σ(1 − σ)."""
    return closed_form().apply(_sigmoid, lambda g, p, _: (g * p * (1 - p),), x)


def softmax(x: Tensor) -> Tensor:
    """Softmax over the last (class) dimension, backward p ⊙ (g − ⟨g, p⟩)."""
    return closed_form().apply(_softmax, lambda g, p, _: (p * (g - (g * p).sum(dim=-1, keepdim=True)),), x)


def apply(name: str, scores: Tensor, analytic: bool) -> Tensor:
    """Apply output activation `name`; `analytic` picks the closed-form backward over autograd's."""
    if name == "identity":
        return scores
    if name == "sigmoid":
        return sigmoid(scores) if analytic else scores.sigmoid()
    if name == "softmax":
        return softmax(scores) if analytic else scores.softmax(dim=-1)
    raise ConfigError("loss.output", f"unknown output activation {name!r}", ", ".join(OUTPUTS))
