"""Regularizer components (syllabus §5): the λ·R(W) added to the data loss, or a constraint on W.

    L = (1/N) Σ_n L_n + λ·R(W)

    NoPenalty   R = 0
    L2          R = Σ W²                 ∂(λR)/∂W = 2λW
    L1          R = Σ |W|                ∂(λR)/∂W = λ·sign(W)
    ElasticNet  R = Σ (β·W² + |W|)       ∂(λR)/∂W = λ(2βW + sign(W))
    MaxNorm     ‖w_j‖₂ ≤ c for every row j: a projection after each optimizer step, no penalty

Each option of the ``regularizer`` group is a YAML whose ``_target_`` names one of these
classes (``overfit.maths.regularizers.L2``) and whose keys are its constructor's kwargs;
a user's own regularizer subclasses :class:`Regularizer`.

Weights only: the caller passes weight matrices, never biases (a penalty on the
bias would pull the fit's offset towards zero, which is not what R(W) means).

Nothing here imports PyTorch at import time: configs are validated without it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from overfit.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor


def _number(value: Any) -> bool:
    """A finite int or float; bools are not numbers here."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Regularizer:
    """No penalty, and the base of the others: R = 0, no projection.

    ``per_point``: the knobs the vectorized trainer takes per point (λ is a vector there),
    so points that differ only in them still batch. ``projects``: a constraint applied
    after each optimizer step by :meth:`project_`, rather than a penalty.
    """

    per_point: ClassVar[tuple[str, ...]] = ("strength",)
    projects: ClassVar[bool] = False
    simpler: ClassVar[dict[str, str]] = {"strength": "higher"}  # a larger λ shrinks the weights more

    def __init__(self, strength: float = 0.0) -> None:
        self.strength = strength

    def check(self) -> None:
        """Reject impossible knobs before anything runs."""
        if not _number(self.strength) or self.strength < 0:
            raise ConfigError("regularizer.strength", f"must be ≥ 0, got {self.strength!r}", "a finite number λ ≥ 0")

    def r(self, w: Tensor) -> Tensor:
        """R of one weight tensor."""
        return w.new_zeros(())

    def dr(self, w: Tensor) -> Tensor:
        """∂R/∂W of one weight tensor."""
        return w.new_zeros(w.shape)

    def penalty(self, weights: Sequence[Tensor]) -> Tensor:
        """λ·Σ R(W) over the weight tensors, a 0-dim tensor on their device (any iterable will do)."""
        weights = list(weights)
        if not weights:
            import torch  # no tensor to take the device and dtype from

            return torch.zeros(())
        total = weights[0].new_zeros(())
        if self.strength == 0:
            return total
        for w in weights:
            total = total + self.r(w)
        return self.strength * total

    def grad(self, weights: Sequence[Tensor]) -> list[Tensor]:
        """The analytic ∂(λR)/∂W for each weight tensor (checked against autograd by gradcheck)."""
        return [self.strength * self.dr(w) for w in weights]

    def project_(self, weights: Sequence[Tensor]) -> None:
        """Enforce a constraint in place after an optimizer step (nothing to do for a penalty)."""

    def batch_key(self) -> tuple:
        """Points whose regularizers have equal keys may train as one batched model.

        Built from every instance attribute except ``per_point``, so a subclass's new knob
        is in it without overriding anything.
        """
        cls = type(self)
        knobs = tuple(sorted((k, repr(v)) for k, v in vars(self).items() if k not in self.per_point))
        return (f"{cls.__module__}.{cls.__qualname__}", knobs)

    def __repr__(self) -> str:
        knobs = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({knobs})"


class NoPenalty(Regularizer):
    """The "none" option: R = 0. It keeps a strength knob so that ``regularizer.strength=0`` sweeps still compose."""


class L2(Regularizer):
    """R = Σ W²: weight decay, pulls every weight towards zero in proportion to its size."""

    def r(self, w: Tensor) -> Tensor:
        return (w**2).sum()

    def dr(self, w: Tensor) -> Tensor:
        return 2 * w


class L1(Regularizer):
    """R = Σ |W|: a constant pull towards zero, which makes weights sparse."""

    def r(self, w: Tensor) -> Tensor:
        return w.abs().sum()

    def dr(self, w: Tensor) -> Tensor:
        return w.sign()


class ElasticNet(Regularizer):
    """R = Σ (β·W² + |W|): L1's sparsity with some of L2's grouping; ``beta`` weighs the L2 part."""

    def __init__(self, strength: float = 0.0, beta: float | None = None) -> None:
        super().__init__(strength)
        self.beta = beta

    def check(self) -> None:
        super().check()
        if self.beta is None:
            raise ConfigError("regularizer.beta", "elastic_net needs beta, the weight of its L2 part", "a number ≥ 0")
        if not _number(self.beta) or self.beta < 0:
            raise ConfigError("regularizer.beta", f"must be ≥ 0, got {self.beta!r}", "a finite number ≥ 0")

    def r(self, w: Tensor) -> Tensor:
        return (self.beta * w**2 + w.abs()).sum()

    def dr(self, w: Tensor) -> Tensor:
        return 2 * self.beta * w + w.sign()


class MaxNorm(Regularizer):
    """A constraint, not a penalty: after each step every row w_j is scaled back to ‖w_j‖₂ ≤ c.

    It has no strength knob (a λ would do nothing): ``regularizer.strength`` is refused
    when the config is instantiated.
    """

    strength = 0.0  # no penalty: λ·R is never added
    per_point: ClassVar[tuple[str, ...]] = ()
    projects: ClassVar[bool] = True
    simpler: ClassVar[dict[str, str]] = {"c": "lower"}  # a tighter bound on every row

    def __init__(self, c: float = 3.0) -> None:
        self.c = c

    def check(self) -> None:
        if not _number(self.c) or self.c <= 0:
            raise ConfigError("regularizer.c", f"must be > 0, got {self.c!r}", "a finite number c > 0")

    def project_(self, weights: Sequence[Tensor]) -> None:
        for w in weights:
            w = w.detach()  # same storage, outside autograd: the step is not part of the graph
            rows = tuple(range(1, w.dim()))  # a 1-D weight is a single row
            norms = ((w**2).sum(dim=rows, keepdim=True) if rows else (w**2).sum()).sqrt()
            w.mul_(self.c / norms.clamp_min(self.c))  # factor 1 where ‖w_j‖ ≤ c, c/‖w_j‖ elsewhere


SHIPPED = (NoPenalty, L2, L1, ElasticNet, MaxNorm)  # the syllabus's set, every one gradient-checked
