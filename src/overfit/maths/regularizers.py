"""Regularizers (syllabus §5): the λ·R(W) added to the data loss, or a constraint on W.

    L = (1/N) Σ_n L_n + λ·R(W)

    l2           R = Σ W²                 ∂(λR)/∂W = 2λW
    l1           R = Σ |W|                ∂(λR)/∂W = λ·sign(W)
    elastic_net  R = Σ (β·W² + |W|)       ∂(λR)/∂W = λ(2βW + sign(W))
    max_norm     ‖w_j‖₂ ≤ c for every row j: a projection after each optimizer step, no penalty

Weights only: the caller passes weight matrices, never biases (a penalty on the
bias would pull the fit's offset towards zero, which is not what R(W) means).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from overfit.errors import ConfigError

REGULARIZERS = ("none", "l2", "l1", "elastic_net", "max_norm")


class Regularizer:
    """No regularization; the base of the others: R = 0, no projection."""

    name = "none"

    def __init__(self, strength: float) -> None:
        self.strength = strength

    def r(self, w: Tensor) -> Tensor:
        """R of one weight tensor."""
        return w.new_zeros(())

    def dr(self, w: Tensor) -> Tensor:
        """∂R/∂W of one weight tensor."""
        return torch.zeros_like(w)

    def penalty(self, weights: Sequence[Tensor]) -> Tensor:
        """λ·Σ R(W) over the weight tensors, a 0-dim tensor on their device."""
        weights = list(weights)
        total = weights[0].new_zeros(()) if weights else torch.zeros(())
        if self.strength == 0:
            return total
        for w in weights:
            total = total + self.r(w)
        return self.strength * total

    def grad(self, weights: Sequence[Tensor]) -> list[Tensor]:
        """The analytic ∂(λR)/∂W for each weight tensor (checked against autograd by gradcheck)."""
        return [self.strength * self.dr(w) for w in weights]

    @torch.no_grad()
    def project_(self, weights: Sequence[Tensor]) -> None:
        """Enforce a constraint in place after an optimizer step (nothing to do by default)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(strength={self.strength})"


class L2(Regularizer):
    name = "l2"

    def r(self, w: Tensor) -> Tensor:
        return (w**2).sum()

    def dr(self, w: Tensor) -> Tensor:
        return 2 * w


class L1(Regularizer):
    name = "l1"

    def r(self, w: Tensor) -> Tensor:
        return w.abs().sum()

    def dr(self, w: Tensor) -> Tensor:
        return torch.sign(w)


class ElasticNet(Regularizer):
    name = "elastic_net"

    def __init__(self, strength: float, beta: float) -> None:
        super().__init__(strength)
        self.beta = beta

    def r(self, w: Tensor) -> Tensor:
        return (self.beta * w**2 + w.abs()).sum()

    def dr(self, w: Tensor) -> Tensor:
        return 2 * self.beta * w + torch.sign(w)

    def __repr__(self) -> str:
        return f"ElasticNet(strength={self.strength}, beta={self.beta})"


class MaxNorm(Regularizer):
    """A constraint, not a penalty: after each step every row w_j is scaled back to ‖w_j‖₂ ≤ c."""

    name = "max_norm"

    def __init__(self, strength: float, c: float) -> None:
        super().__init__(strength)
        self.c = c

    @torch.no_grad()
    def project_(self, weights: Sequence[Tensor]) -> None:
        for w in weights:
            rows = tuple(range(1, w.dim()))  # a 1-D weight is a single row
            norms = torch.linalg.vector_norm(w, dim=rows, keepdim=True) if rows else torch.linalg.vector_norm(w)
            w.mul_(self.c / norms.clamp_min(self.c))  # factor 1 where ‖w_j‖ ≤ c, c/‖w_j‖ elsewhere

    def __repr__(self) -> str:
        return f"MaxNorm(c={self.c})"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _strength(cfg: Any) -> Any:
    strength = getattr(cfg, "strength", None)
    return 0.0 if strength is None else strength


def check(cfg: Any) -> None:
    """Reject impossible regularizer settings before anything runs."""
    name = getattr(cfg, "name", None)
    if name not in REGULARIZERS:
        raise ConfigError("regularizer", f"unknown regularizer {name!r}", ", ".join(REGULARIZERS))
    strength = _strength(cfg)
    if not _number(strength) or strength < 0:
        raise ConfigError("regularizer.strength", f"must be ≥ 0, got {strength!r}", "a finite number λ ≥ 0")
    if name == "elastic_net":
        beta = getattr(cfg, "beta", None)
        if beta is None:
            raise ConfigError("regularizer.beta", "elastic_net needs beta, the weight of its L2 part", "a number ≥ 0")
        if not _number(beta) or beta < 0:
            raise ConfigError("regularizer.beta", f"must be ≥ 0, got {beta!r}", "a finite number ≥ 0")
    if name == "max_norm":
        c = getattr(cfg, "c", None)
        if not _number(c) or c <= 0:
            raise ConfigError("regularizer.c", f"must be > 0, got {c!r}", "a finite number c > 0")


def build_regularizer(cfg: Any) -> Regularizer:
    """The configured regularizer; `cfg` has name, strength and, per name, beta or c."""
    check(cfg)
    strength = float(_strength(cfg))
    if cfg.name == "l2":
        return L2(strength)
    if cfg.name == "l1":
        return L1(strength)
    if cfg.name == "elastic_net":
        return ElasticNet(strength, float(cfg.beta))
    if cfg.name == "max_norm":
        return MaxNorm(strength, float(cfg.c))
    return Regularizer(strength)
