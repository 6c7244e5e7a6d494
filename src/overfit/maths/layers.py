"""A linear layer whose backward can be the syllabus's closed form instead of autograd's.

For s = x Wᵀ + b with upstream gradient g = ∂L/∂s (one row per example):

    ∂L/∂W = gᵀ x          (∂s_i/∂w_j = x if i = j else 0)
    ∂L/∂x = g W           (∂s/∂x = Wᵀ)
    ∂L/∂b = Σ_n g_n       (∂L/∂b = ∂L/∂s, summed over the batch)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable


class _LinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)  # x Wᵀ + b

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, g: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        # Leading dims are batch dims; cast to the weight's dtype so mixed precision works too.
        g = g.reshape(-1, weight.shape[0]).to(weight.dtype)
        need_x, need_w, need_b = ctx.needs_input_grad
        grad_x = (g @ weight).reshape(x.shape) if need_x else None
        grad_w = g.T @ x.reshape(-1, weight.shape[1]).to(weight.dtype) if need_w else None
        grad_b = g.sum(0) if ctx.has_bias and need_b else None
        return grad_x, grad_w, grad_b


class Linear(nn.Linear):
    """Drop-in for nn.Linear (same shapes and init); `analytic=True` uses the closed-form backward."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        analytic: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.analytic = analytic

    def forward(self, x: Tensor) -> Tensor:
        if self.analytic:
            return _LinearFunction.apply(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, analytic={self.analytic}"
