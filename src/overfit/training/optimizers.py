"""The optimizer group: gradient descent and its relatives, from torch.optim, or any torch.optim class.

``batch_size: null`` means the full training set per step, i.e. plain gradient descent; a
number makes the same step minibatch SGD. Each option is a component: it checks its knobs,
builds its ``torch.optim`` optimizer, and — if it has one — its batched form for a
vectorized sweep (:meth:`Optimizer.batched`), with the knobs that may differ per point
(``per_point``). Any ``torch.optim.Optimizer`` class named by ``_target_`` is adopted by
:class:`Torch`; it trains one point at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from overfit.errors import Alone, ConfigError

if TYPE_CHECKING:
    import torch

    from overfit.training.batched_optim import BatchedOptimizer

MAX_LR = 3.4e38  # the largest float32: torch casts lr to the parameters' dtype and overflows beyond it
MAX_ITER = 10_000  # L-BFGS iterations per step: each one is a full forward and backward pass
MAX_HISTORY = 10_000  # L-BFGS keeps 2 × history_size copies of the parameters


def _defines(cls: type, name: str) -> type:
    """The class in ``cls``'s MRO that defines ``name``: a batched form counts only beside the update it mirrors."""
    return next(c for c in cls.__mro__ if name in vars(c))


def _fraction(value: Any, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:  # also false for NaN
        raise ConfigError(f"optimizer.{key}", f"got {value}", f"a number in [0, 1): 0 ≤ {key} < 1")


class Optimizer:
    """An optimizer component: ``lr`` and ``batch_size`` (None: the full batch), its update built by :meth:`build`."""

    per_point: ClassVar[tuple[str, ...]] = ("lr",)  # knobs a batched group takes point by point

    def __init__(self, lr: float = 0.1, batch_size: int | None = None) -> None:
        self.lr, self.batch_size = lr, batch_size

    def check(self, parameters: int | None = None, memory: int | None = None) -> None:
        """Reject settings torch.optim would refuse or choke on, before anything runs."""
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not (
                math.isfinite(self.lr) and 0 < self.lr <= MAX_LR):
            raise ConfigError("optimizer.lr", f"got {self.lr}",
                              f"a number in (0, {MAX_LR:.3g}]: one a float32 weight update can hold")
        if self.batch_size is not None and (type(self.batch_size) is not int or self.batch_size < 1):
            raise ConfigError("optimizer.batch_size", f"got {self.batch_size}",
                              "an integer ≥ 1, or null for the full batch")

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        raise NotImplementedError

    def batched(self, params: Iterable[torch.Tensor], active: torch.Tensor,
                members: list[Optimizer]) -> BatchedOptimizer:
        """One optimizer for a group of points (``members``, this one among them), each with its own knobs."""
        raise Alone(f"{type(self).__name__} has no batched form")

    def batch_key(self) -> tuple:
        """Points whose optimizers have equal keys can step together: the same kind, batch and fixed knobs.

        An optimizer without a batched form of its own never batches (it would step as another one).
        """
        if _defines(type(self), "build") is not _defines(type(self), "batched"):
            raise Alone(f"{type(self).__name__} has no batched form of its own update")
        fixed = tuple(sorted((k, repr(v)) for k, v in vars(self).items() if k not in self.per_point))
        return (f"{type(self).__module__}.{type(self).__qualname__}", fixed)

    def _per_point(self, members: list[Optimizer], key: str, device: torch.device) -> torch.Tensor:
        import torch

        return torch.tensor([getattr(m, key) for m in members], dtype=torch.float64, device=device)

    @staticmethod
    def adopt(made: Any) -> Optimizer:
        return made if isinstance(made, Optimizer) else Torch(made)


class SGD(Optimizer):
    """w ← w − lr·∂L/∂w on each batch: gradient descent with the full batch, minibatch SGD with a batch size."""

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.SGD(params, lr=self.lr)

    def batched(self, params: Iterable[torch.Tensor], active: torch.Tensor,
                members: list[Optimizer]) -> BatchedOptimizer:
        from overfit.training.batched_optim import BatchedSGD

        return BatchedSGD(params, active, self._per_point(members, "lr", active.device))


class Momentum(SGD):
    """SGD with (heavy-ball) momentum."""

    per_point: ClassVar[tuple[str, ...]] = ("lr", "momentum")

    def __init__(self, lr: float = 0.05, momentum: float = 0.9, batch_size: int | None = None) -> None:
        super().__init__(lr, batch_size)
        self.momentum = momentum

    def check(self, parameters: int | None = None, memory: int | None = None) -> None:
        super().check(parameters, memory)
        _fraction(self.momentum, "momentum")

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)

    def batched(self, params: Iterable[torch.Tensor], active: torch.Tensor,
                members: list[Optimizer]) -> BatchedOptimizer:
        from overfit.training.batched_optim import BatchedSGD

        return BatchedSGD(params, active, self._per_point(members, "lr", active.device),
                          self._per_point(members, "momentum", active.device))


class Adam(Optimizer):
    """Adam, ε 1e-8, no weight decay."""

    per_point: ClassVar[tuple[str, ...]] = ("lr", "beta1", "beta2")

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, batch_size: int | None = 64) -> None:
        super().__init__(lr, batch_size)
        self.beta1, self.beta2 = beta1, beta2

    def check(self, parameters: int | None = None, memory: int | None = None) -> None:
        super().check(parameters, memory)
        _fraction(self.beta1, "beta1")
        _fraction(self.beta2, "beta2")

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.Adam(params, lr=self.lr, betas=(self.beta1, self.beta2))

    def batched(self, params: Iterable[torch.Tensor], active: torch.Tensor,
                members: list[Optimizer]) -> BatchedOptimizer:
        from overfit.training.batched_optim import BatchedAdam

        device = active.device
        return BatchedAdam(params, active, self._per_point(members, "lr", device),
                           self._per_point(members, "beta1", device), self._per_point(members, "beta2", device))


class LBFGS(Optimizer):
    """Full-batch L-BFGS with a strong-Wolfe line search: a linear model's exact (ridge) optimum in a few epochs."""

    def __init__(self, lr: float = 1.0, max_iter: int = 20, history_size: int = 100,
                 batch_size: int | None = None) -> None:
        super().__init__(lr, batch_size)
        self.max_iter, self.history_size = max_iter, history_size

    def check(self, parameters: int | None = None, memory: int | None = None) -> None:
        super().check(parameters, memory)
        if self.batch_size is not None:
            raise ConfigError("optimizer.batch_size", "L-BFGS needs the full batch", "null with optimizer=lbfgs")
        for key, most in (("max_iter", MAX_ITER), ("history_size", MAX_HISTORY)):
            value = getattr(self, key)
            if type(value) is not int or not 1 <= value <= most:
                raise ConfigError(f"optimizer.{key}", f"got {value}", f"an integer in [1, {most:,}]")
        need = 2 * 4 * self.history_size * (parameters or 0)
        if memory is not None and parameters and need > memory:
            size = f"{need / 1e9:,.1f} GB, more than the {memory / 1e9:,.1f} GB here"
            problem = f"{self.history_size} × 2 copies of {parameters:,} parameters need about {size}"
            raise ConfigError("optimizer.history_size", problem, f"1..{max(memory // (8 * parameters), 1):,}")

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.LBFGS(params, lr=self.lr, max_iter=self.max_iter, history_size=self.history_size,
                                 line_search_fn="strong_wolfe")

    def batch_key(self) -> tuple:
        raise Alone("L-BFGS searches a step length for one objective at a time")


class Torch(Optimizer):
    """Any ``torch.optim.Optimizer`` class with its keyword arguments (``batch_size`` is the trainer's)."""

    def __init__(self, made: Any) -> None:
        func = getattr(made, "func", made)  # a partial of the class, from the YAML's _target_ and keys
        kwargs = dict(getattr(made, "keywords", {}))
        super().__init__(kwargs.pop("lr", 1e-3), kwargs.pop("batch_size", None))
        self.cls, self.kwargs = func, kwargs

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return self.cls(params, lr=self.lr, **self.kwargs)

    def batch_key(self) -> tuple:
        raise Alone(f"{getattr(self.cls, '__name__', self.cls)} has no batched form in overfit")
