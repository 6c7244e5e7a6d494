"""Feature maps x ↦ φ(x), applied batch by batch on the device (the expanded dataset never exists).

Every map flattens its input to (N, d) and returns (N, out_features).

    identity        φ(x) = x
    polynomial      every product of inputs of total degree 1..k: C(d+k, k) − 1 columns
                    (the constant term is the bias of the linear layer that follows)
    seed_transform  φ(x) = x / (2·x1·x2 + 0.5), the syllabus's XOR example (d = 2)

The polynomial map builds each term from a lower-degree one times one univariate
factor: a term whose last variable j appears m times is (term without j)·φ_m(x_j).
With basis "monomial" φ_m(x) = x^m; with "legendre" φ_m(u) = √(2m+1)·P_m(u) on
inputs scaled to u ∈ [−1, 1] by the training set's range: the same span, far
better conditioned at high order. With "orthonormal" (the default) the Legendre
terms are then centred and whitened on the training set, Σ = ΦᵀΦ/N = V·diag(e)·Vᵀ,
φ' = (φ − μ)·V·diag(e)^(−1/2): orthonormal polynomials of the training points
(R's ``poly()`` idea). The MSE Hessian becomes 2·I for every order, so gradient
descent reaches each order's least-squares optimum at the same, fast rate.
Directions the training set does not determine (e ≈ 0) are dropped.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from overfit.errors import ConfigError

FEATURES = ("identity", "polynomial", "seed_transform")
BASES = ("orthonormal", "legendre", "monomial")
MAX_FEATURES = 10_000_000  # beyond this the linear layer alone would not fit in memory
MAX_ORTHONORMAL = 4096  # whitening needs the P×P covariance and its eigenvectors
MAX_ORDER = 1000  # the Legendre recursion takes `order` steps on every batch


def polynomial_terms(d: int, k: int) -> int:
    """Terms of a full order-k polynomial in d variables, constant included: C(d+k, k)."""
    return math.comb(d + k, k)


class Identity(nn.Module):
    """φ(x) = x, flattened."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.out_features = d

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


class SeedTransform(nn.Module):
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


class Polynomial(nn.Module):
    """Every product of total degree 1..k of the d inputs, in a monomial or Legendre basis."""

    def __init__(self, d: int, order: int, basis: str, low: Tensor, high: Tensor) -> None:
        super().__init__()
        self.order = order
        self.basis = basis
        self.out_features = polynomial_terms(d, order) - 1
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


class Orthonormal(nn.Module):
    """Legendre terms centred and whitened on the training set: φ' = (φ − μ)·M."""

    def __init__(self, polynomial: Polynomial, x_train: Tensor) -> None:
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


def check(cfg: Any, d: int | None = None, rows: int | None = None, memory: int | None = None) -> None:
    """Validation before any data is loaded; with the input dimension d, the sizes too.

    With the training-set size ``rows`` and the machine's ``memory`` in bytes, also
    the orthonormal whitening, which holds every training row's features at once.
    """
    name = getattr(cfg, "name", None)
    if name not in FEATURES:
        raise ConfigError("features", f"unknown feature map {name!r}", ", ".join(FEATURES))
    if name == "polynomial":
        order = getattr(cfg, "order", None)
        if not isinstance(order, int) or isinstance(order, bool) or not 0 <= order <= MAX_ORDER:
            problem = f"must be an integer ≥ 0 and ≤ {MAX_ORDER}, got {order!r}"
            raise ConfigError("features.order", problem, f"0, 1, 2, …, {MAX_ORDER}")
        basis = getattr(cfg, "basis", None) or "orthonormal"
        if basis not in BASES:
            raise ConfigError("features.basis", f"unknown basis {basis!r}", ", ".join(BASES))
    if d is None:
        return
    if name == "seed_transform" and d != 2:
        raise ConfigError("features", f"seed_transform needs 2-D inputs, the data has d={d}", "a 2-D dataset (xor)")
    if name == "polynomial":
        n = polynomial_terms(d, order) - 1
        if n > MAX_FEATURES:
            raise ConfigError(
                "features.order", f"order {order} on {d} inputs gives {n:,} features", f"at most {MAX_FEATURES:,}"
            )
        if basis == "orthonormal" and n > MAX_ORTHONORMAL:
            raise ConfigError(
                "features.basis", f"orthonormal needs the {n:,}×{n:,} covariance of the features", "legendre or monomial"
            )
        need = 3 * 8 * (rows or 0) * n  # float64 features of every training row, centred, and their product
        if basis == "orthonormal" and memory is not None and need > memory:
            size = f"{need / 1e9:,.1f} GB of {memory / 1e9:,.1f} GB"
            problem = f"whitening {rows:,} rows × {n:,} features needs about {size}"
            raise ConfigError("features.basis", problem, "legendre or monomial, or fewer training points")


def width(cfg: Any, d: int) -> int:
    """Columns the checked map gives on d inputs (at most: whitening may drop some), the model's input width."""
    if cfg.name == "polynomial":
        return polynomial_terms(d, cfg.order) - 1
    return 2 if cfg.name == "seed_transform" else d


def build_features(cfg: Any, x_train: Tensor) -> nn.Module:
    """The configured feature map, sized (and for Legendre, scaled) by the training inputs."""
    x = x_train.flatten(1)
    d = x.shape[1]
    check(cfg, d)
    if cfg.name == "identity":
        return Identity(d)
    if cfg.name == "seed_transform":
        return SeedTransform()
    low, high = torch.aminmax(x, dim=0)
    basis = getattr(cfg, "basis", None) or "orthonormal"
    if basis != "orthonormal" or cfg.order == 0:
        return Polynomial(d, cfg.order, "legendre" if basis == "orthonormal" else basis, low, high)
    return Orthonormal(Polynomial(d, cfg.order, "legendre", low, high), x)
