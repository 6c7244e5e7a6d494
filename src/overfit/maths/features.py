"""Feature-map components: each option of the ``features`` group is a class that owns its knobs and checks.

A ``features`` YAML names one with ``_target_`` (``overfit.maths.features.Polynomial``) and
its keys are the constructor's kwargs. A spec checks its knobs (and, given the data's
sizes, whether the map fits), says how wide its output is, and builds the fixed map, an
``nn.Module`` from :mod:`overfit.maths.feature_maps`, fitted on the training inputs.

    Identity       φ(x) = x
    Polynomial     every product of inputs of total degree 1..order: C(d+order, order) − 1 columns,
                   in an orthonormal (default), Legendre or monomial basis
    SeedTransform  φ(x) = x / (2·x1·x2 + 0.5), the syllabus's XOR example (d = 2)
    FromCallable   a user's ``fn(x_train) -> nn.Module``

Nothing here imports PyTorch at import time: configs are validated without it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from overfit.errors import Alone, ConfigError

if TYPE_CHECKING:
    from torch import Tensor, nn

BASES = ("orthonormal", "legendre", "monomial")
MAX_FEATURES = 10_000_000  # beyond this the linear layer alone would not fit in memory
MAX_ORTHONORMAL = 4096  # whitening needs the P×P covariance and its eigenvectors
MAX_ORDER = 1000  # the Legendre recursion takes `order` steps on every batch


def polynomial_terms(d: int, k: int) -> int:
    """Terms of a full order-k polynomial in d variables, constant included: C(d+k, k)."""
    return math.comb(d + k, k)


def _inputs(x_train: Tensor) -> tuple[Tensor, int]:
    """The training inputs as (N, d), and d."""
    x = x_train.flatten(1)
    return x, x.shape[1]


class Features:
    """A feature-map component: subclasses implement ``width`` and ``build``, and ``check`` their knobs."""

    per_point: ClassVar[tuple[str, ...]] = ()  # knobs the vectorized trainer takes per point: none
    fixed: ClassVar[bool] = True  # no trainable parameters: the vectorized trainer computes Φ once per point
    # Knobs that set capacity, and which way is simpler ("lower" / "higher"): the one-standard-error rule asks.
    simpler: ClassVar[dict[str, str]] = {}

    def check(self, d: int | None = None, rows: int | None = None, memory: int | None = None,
              standardized: bool = False) -> None:
        """Reject impossible knobs before any data is loaded; with the data's sizes, maps that would not fit.

        ``d``: the input dimension; ``rows``: training rows; ``memory``: bytes available;
        ``standardized``: whether the dataset standardises the inputs before the map.
        """

    def width(self, d: int) -> int | None:
        """Columns the checked map gives on d inputs, at most (the model's input width).

        None: unknown until built; the caller then builds the map once and reads its ``out_features``.
        """
        raise NotImplementedError

    def build(self, x_train: Tensor) -> nn.Module:
        """The fixed map, sized (and where the basis needs it, fitted) by the training inputs."""
        raise NotImplementedError

    def batch_key(self) -> tuple:
        """Points whose feature components have equal keys may train as one batched model.

        Built from every instance attribute except ``per_point``, so a subclass's new knob is in it.
        """
        cls = type(self)
        knobs = tuple(sorted((k, repr(v)) for k, v in vars(self).items() if k not in self.per_point))
        return (f"{cls.__module__}.{cls.__qualname__}", knobs)

    def __repr__(self) -> str:
        knobs = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({knobs})"

    @staticmethod
    def adopt(made: Any) -> Features:
        """``made`` if it is a Features, else a user's callable adopted by :class:`FromCallable`."""
        return made if isinstance(made, Features) else FromCallable(made)


class Identity(Features):
    """φ(x) = x, flattened."""

    def width(self, d: int) -> int:
        return d

    def build(self, x_train: Tensor) -> nn.Module:
        from overfit.maths import feature_maps

        _, d = _inputs(x_train)
        self.check(d)
        return feature_maps.IdentityMap(d)


class SeedTransform(Features):
    """x' = x / (2·x1·x2 + 0.5): the syllabus's map that makes XOR linearly separable."""

    def check(self, d: int | None = None, rows: int | None = None, memory: int | None = None,
              standardized: bool = False) -> None:
        if standardized:
            raise ConfigError("dataset.standardize", "seed_transform works on the raw coordinates of the toy example",
                              "false with features=seed_transform")
        if d is not None and d != 2:
            raise ConfigError("features", f"seed_transform needs 2-D inputs, the data has d={d}", "a 2-D dataset (xor)")

    def width(self, d: int) -> int:
        return 2

    def build(self, x_train: Tensor) -> nn.Module:
        from overfit.maths import feature_maps

        _, d = _inputs(x_train)
        self.check(d)
        return feature_maps.SeedTransformMap()


class Polynomial(Features):
    """Every product of total degree 1..order of the inputs (the constant is the next layer's bias).

    ``basis``: "orthonormal" (Legendre terms whitened on the training inputs: gradient
    descent converges at the same rate for every order), "legendre" or "monomial" (the
    same span, without the whitening).
    """

    # Each point's map is computed once, on its own data, and zero-padded to the widest: a batched group
    # may mix orders and bases.
    per_point: ClassVar[tuple[str, ...]] = ("order", "basis")
    simpler: ClassVar[dict[str, str]] = {"order": "lower"}

    def __init__(self, order: int = 3, basis: str = "orthonormal") -> None:
        self.order = order
        self.basis = basis

    def check(self, d: int | None = None, rows: int | None = None, memory: int | None = None,
              standardized: bool = False) -> None:
        order, basis = self.order, self.basis
        if not isinstance(order, int) or isinstance(order, bool) or not 0 <= order <= MAX_ORDER:
            problem = f"must be an integer ≥ 0 and ≤ {MAX_ORDER}, got {order!r}"
            raise ConfigError("features.order", problem, f"0, 1, 2, …, {MAX_ORDER}")
        if basis not in BASES:
            raise ConfigError("features.basis", f"unknown basis {basis!r}", ", ".join(BASES))
        if d is None:
            return
        n = self.width(d)
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

    def width(self, d: int) -> int:
        """C(d+order, order) − 1; whitening may drop directions the training set does not determine."""
        return polynomial_terms(d, self.order) - 1

    def build(self, x_train: Tensor) -> nn.Module:
        from overfit.maths import feature_maps

        x, d = _inputs(x_train)
        self.check(d)
        low, high = x.aminmax(dim=0)
        if self.basis != "orthonormal" or self.order == 0:
            basis = "legendre" if self.basis == "orthonormal" else self.basis
            return feature_maps.PolynomialMap(d, self.order, basis, low, high)
        return feature_maps.OrthonormalMap(feature_maps.PolynomialMap(d, self.order, "legendre", low, high), x)


class FromCallable(Features):
    """A user's ``fn(x_train) -> nn.Module``, adopted as a feature component.

    ``fn`` may be a ``functools.partial`` carrying the YAML's knobs (how Hydra builds a
    callable that is not a Features). Its width is unknown until built (``width`` gives
    None: the caller builds it once to learn). It is fixed only if the function sets
    ``fixed = True``, and batches only if it declares a ``batch_key()``: nothing else tells
    two such maps apart (the partial's knobs join that key).
    """

    def __init__(self, fn: Callable[[Tensor], nn.Module]) -> None:
        self.fn = fn

    def _parts(self) -> tuple[Any, tuple, dict[str, Any]]:
        """The user's function and the knobs a partial binds to it."""
        if isinstance(self.fn, functools.partial):
            return self.fn.func, self.fn.args, self.fn.keywords
        return self.fn, (), {}

    @property  # type: ignore[override]
    def fixed(self) -> bool:
        return bool(getattr(self._parts()[0], "fixed", False))

    def describe(self) -> str:
        """The function's name, for messages."""
        func = self._parts()[0]
        return getattr(func, "__qualname__", type(func).__name__)

    def check(self, d: int | None = None, rows: int | None = None, memory: int | None = None,
              standardized: bool = False) -> None:
        if not callable(self.fn):
            raise ConfigError("features", f"{self.fn!r} is neither a Features nor a callable",
                              "a Features subclass, or a callable fn(x_train) -> nn.Module")

    def width(self, d: int) -> None:
        return None

    def build(self, x_train: Tensor) -> nn.Module:
        """``fn(x_train)``, with ``out_features`` read from one training row where the module does not say it."""
        import torch

        self.check()
        made = self.fn(x_train)
        if not isinstance(made, torch.nn.Module):
            raise ConfigError("features", f"{self.describe()} returned a {type(made).__name__}", "an nn.Module")
        if not isinstance(getattr(made, "out_features", None), int):
            with torch.no_grad():
                made.out_features = made(x_train[:1]).flatten(1).shape[1]
        return made

    def batch_key(self) -> tuple:
        func, args, keywords = self._parts()
        declared = getattr(func, "batch_key", None)
        if declared is None:
            raise Alone(f"{self.describe()} declares no batch_key: nothing says which other maps equal it")
        knobs = (repr(args), tuple(sorted((k, repr(v)) for k, v in keywords.items())))
        return (f"{type(self).__module__}.{type(self).__qualname__}", self.describe(), tuple(declared()), knobs)
