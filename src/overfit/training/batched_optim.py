"""torch.optim.SGD and Adam for M models at once: every parameter has a leading model dimension.

Hyperparameters are [M] tensors broadcast over each parameter's other dims, cast
to the parameter's dtype the way torch casts a Python scalar. ``active`` ([M] bool,
owned by the caller and updated in place before each step) says which models step
now; the others keep their weights and state bit for bit (a model with no batch at
this step, or one that diverged). Each update is the single-model formula, element
by element and in torch's own order of operations, so given the same gradient a
model moves exactly as torch.optim would move it alone:

    SGD       b ← μ·b + g            (PyTorch's form: no dampening; b starts at 0, so b₁ = g)
              w ← w − α·b            (no momentum: w ← w − α·g)
    Adam      m ← m + (1 − β₁)(g − m),   v ← β₂·v + (1 − β₂)·g²,   t ← t + 1
              w ← w − α/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor


def per_model(h: Tensor, like: Tensor) -> Tensor:
    """[M] → [M, 1, …, 1], to broadcast over one parameter; numbers in ``like``'s dtype."""
    h = h if h.dtype == torch.bool else h.to(like.dtype)
    return h.view(-1, *(1,) * (like.dim() - 1))


class BatchedOptimizer(torch.optim.Optimizer):
    """One step for every active model; subclasses give the per-parameter update."""

    def __init__(self, params: Iterable[Tensor], active: Tensor, defaults: dict[str, Tensor | float | None]) -> None:
        super().__init__(params, defaults)
        self.active = active

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, p.grad, self.state[p], group, per_model(self.active, p))
        return loss

    def _update(self, p: Tensor, g: Tensor, state: dict, group: dict, active: Tensor) -> None:
        raise NotImplementedError


def _keep(active: Tensor, new: Tensor, old: Tensor) -> None:
    """old ← new where the model is active (in place)."""
    old.copy_(torch.where(active, new, old))


class BatchedSGD(BatchedOptimizer):
    """torch.optim.SGD(lr, momentum) per model; ``momentum=None`` is plain (minibatch) gradient descent."""

    def __init__(self, params: Iterable[Tensor], active: Tensor, lr: Tensor, momentum: Tensor | None = None) -> None:
        super().__init__(params, active, {"lr": lr, "momentum": momentum})

    def _update(self, p: Tensor, g: Tensor, state: dict, group: dict, active: Tensor) -> None:
        if group["momentum"] is not None:
            buf = state.setdefault("momentum_buffer", torch.zeros_like(p))
            _keep(active, buf * per_model(group["momentum"], p) + g, buf)
            g = buf
        # addcmul(w, g, −α) is w.add_(g, alpha=−α) with a per-model α: the same fused multiply-add.
        _keep(active, torch.addcmul(p, g, per_model(-group["lr"], p)), p)


class BatchedAdam(BatchedOptimizer):
    """torch.optim.Adam(lr, betas=(β₁, β₂)) per model, eps 1e-8, no weight decay, no amsgrad."""

    def __init__(
        self, params: Iterable[Tensor], active: Tensor, lr: Tensor, beta1: Tensor, beta2: Tensor, eps: float = 1e-8
    ) -> None:
        super().__init__(params, active, {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps})

    def _update(self, p: Tensor, g: Tensor, state: dict, group: dict, active: Tensor) -> None:
        if not state:
            state["step"] = torch.zeros(len(p), dtype=torch.float64, device=p.device)  # t per model
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        beta1, beta2 = group["beta1"].double(), group["beta2"].double()
        state["step"] += self.active
        _keep(active, m.lerp(g, per_model(1 - beta1, p)), m)
        _keep(active, torch.addcmul(v * per_model(beta2, p), g * per_model(1 - beta2, p), g), v)
        # The bias corrections in float64, like torch's Python floats.
        t = state["step"]
        step_size = group["lr"].double() / (1 - beta1**t)
        bias_correction2_sqrt = (1 - beta2**t) ** 0.5
        denom = (v.sqrt() / per_model(bias_correction2_sqrt, p)).add_(group["eps"])
        # torch's addcdiv_(m, denom, value=−s) is w + (−s·m)/denom, rounded in that order.
        _keep(active, torch.addcdiv(p, m * per_model(-step_size, p), denom), p)
