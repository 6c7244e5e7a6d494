"""The feature maps x ↦ φ(x) as modules, applied batch by batch on the device (the expanded dataset never exists).

The specs in :mod:`overfit.maths.features` check the knobs and build these; this module
imports PyTorch, that one does not. Every map flattens its input to (N, d) and returns
(N, out_features).

    IdentityMap       φ(x) = x
    PolynomialMap     every product of inputs of total degree 1..k: C(d+k, k) − 1 columns
                      (the constant term is the bias of the linear layer that follows)
    OrthonormalMap    a Legendre PolynomialMap centred and whitened on the training set
    SeedTransformMap  φ(x) = x / (2·x1·x2 + 0.5), the syllabus's XOR example (d = 2)

The polynomial map builds each term from a lower-degree one times one univariate
factor: a term whose last variable j appears m times is (term without j)·φ_m(x_j).
With basis "monomial" φ_m(x) = x^m; with "legendre" φ_m(u) = √(2m+1)·P_m(u) on
inputs scaled to u ∈ [−1, 1] by the training set's range: the same span, far
better conditioned at high order. The orthonormal map then centres and whitens the
Legendre terms on the training set, Σ = ΦᵀΦ/N = V·diag(e)·Vᵀ,
φ' = (φ − μ)·V·diag(e)^(−1/2): orthonormal polynomials of the training points
(R's ``poly()`` idea). The MSE Hessian becomes 2·I for every order, so gradient
descent reaches each order's least-squares optimum at the same, fast rate.
Directions the training set does not determine (e ≈ 0) are dropped.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["IdentityMap", "OrthonormalMap", "PolynomialMap", "SeedTransformMap"]


class IdentityMap(nn.Module):
    """φ(x) = x, flattened."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.out_features = d

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


class SeedTransformMap(nn.Module):
    """x' = x / (2·x1·x2 + 0.5): maps XOR's corners to points that x1' + x2' = 1 separates."""

    out_features = 2

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        return x / (2 * x[:, :1] * x[:, 1:2] + 0.5)


def _term_structure(d: int, k: int) -> list[tuple[Tensor, Tensor]]:
    """For each degree t = 1..k: (base, column) index tensors such that

        term_t = terms[:, base] * phi[:, column]

    where `terms` holds the constant (index 0) and every term of lower degree, and
    phi[:, j·(k+1) + m] = φ_m(x_j). Terms are sorted variable tuples i1 ≤ … ≤ it; the
    children of a degree-(t−1) term are its tuple extended by every j ≥ its last variable.
    """
    steps = []
    last = torch.arange(d)  # degree 1: x_j = 1·φ_1(x_j)
    power = torch.ones(d, dtype=torch.long)
    base = torch.zeros(d, dtype=torch.long)
    offset = 1  # global index of the first degree-1 term
    for t in range(1, k + 1):
        if t > 1:
            counts = d - last
            parent = torch.repeat_interleave(torch.arange(len(last)), counts)
            first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
            j = last[parent] + torch.arange(len(parent)) - first
            repeat = j == last[parent]  # one more power of the parent's last variable
            base = torch.where(repeat, base[parent], offset + parent)
            power = torch.where(repeat, power[parent] + 1, 1)
            offset += len(last)
            last = j
        steps.append((base, last * (k + 1) + power))
    return steps


class PolynomialMap(nn.Module):
    """Every product of total degree 1..k of the d inputs, in a monomial or Legendre basis."""

    def __init__(self, d: int, order: int, basis: str, low: Tensor, high: Tensor) -> None:
        super().__init__()
        self.order = order
        self.basis = basis
        self.out_features = math.comb(d + order, order) - 1  # C(d+k, k) terms, less the constant (the bias)
        # Legendre scaling u = (2x − (low + high)) / (high − low); a constant input maps to 0.
        self.register_buffer("low", low)
        self.register_buffer("high", high)
        for t, (base, column) in enumerate(_term_structure(d, order), start=1):
            self.register_buffer(f"base{t}", base, persistent=False)
            self.register_buffer(f"column{t}", column, persistent=False)

    def _univariate(self, x: Tensor) -> Tensor:
        """(N, d, k+1) table φ_m(x_j) for m = 0..k."""
        if self.basis == "monomial":
            return x.unsqueeze(-1) ** torch.arange(self.order + 1, device=x.device, dtype=x.dtype)
        span = torch.where(self.high > self.low, self.high - self.low, 1)
        u = (2 * x - (self.low + self.high)) / span
        p = [torch.ones_like(u), u]  # Legendre: (m+1)P_{m+1} = (2m+1)·u·P_m − m·P_{m−1}
        for m in range(1, self.order):
            p.append(((2 * m + 1) * u * p[m] - m * p[m - 1]) / (m + 1))
        return torch.stack([math.sqrt(2 * m + 1) * p[m] for m in range(self.order + 1)], dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        if self.order == 0:
            return x.new_zeros(len(x), 0)
        phi = self._univariate(x).flatten(1)
        blocks = [x.new_ones(len(x), 1)]  # the constant, base of the pure powers
        for t in range(1, self.order + 1):
            base, column = getattr(self, f"base{t}"), getattr(self, f"column{t}")
            blocks.append(torch.cat(blocks, 1)[:, base] * phi[:, column])
        return torch.cat(blocks[1:], 1)

    def extra_repr(self) -> str:
        return f"order={self.order}, basis={self.basis}, out_features={self.out_features}"


class OrthonormalMap(nn.Module):
    """Legendre terms centred and whitened on the training set: φ' = (φ − μ)·M."""

    def __init__(self, polynomial: PolynomialMap, x_train: Tensor) -> None:
        super().__init__()
        self.polynomial = polynomial
        phi = polynomial(x_train).double()
        mean = phi.mean(0)
        e, v = torch.linalg.eigh((phi - mean).T @ (phi - mean) / len(phi))
        keep = e > 1e-10 * e.max().clamp_min(1e-300)
        self.register_buffer("mean", mean.to(x_train.dtype))
        self.register_buffer("whiten", (v[:, keep] / e[keep].sqrt()).to(x_train.dtype))
        self.out_features = int(keep.sum())

    def forward(self, x: Tensor) -> Tensor:
        return (self.polynomial(x) - self.mean) @ self.whiten

    def extra_repr(self) -> str:
        return f"out_features={self.out_features} (of {self.polynomial.out_features})"
