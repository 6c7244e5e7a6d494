"""The syllabus's own data: the 4-point line, the XOR toy example, and a noisy 1-D curve for under/over-fitting."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from overfit.data.base import Dataset, Splits, check_memory, count, finite
from overfit.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor

MAX_ABS_X = 1e3  # the targets' squared errors stay far inside float32 (the cubic of 1e3 is 1.5e9)
MAX_NOISE = 1e6  # a noise std whose square, summed over any size that fits in memory, is still finite in float32
TEST_STREAM = 0x7E57  # the test split's own random stream: one fixed draw, whatever the seed


def _cubic(x: Tensor) -> Tensor:
    """Clear linear, quadratic and cubic parts: orders 1-2 under-fit, 3-4 fit."""
    return 1.5 * x**3 - 0.5 * x**2 - x + 0.3


def _sine(x: Tensor) -> Tensor:
    return (math.pi * x).sin()


CURVES: dict[str, Callable[[Tensor], Tensor]] = {"cubic": _cubic, "sine": _sine}  # the values of `target`


class Line(Dataset):
    """x = 2, 4, 6, 8 → y = 3, 4, 5, 6; val and test are both the single point x = 10, y = 7.

    There is no other held-out data: the example is about the exact fit w = 0.5, b = 2.
    """

    noise_variance: ClassVar[float] = 0.0

    def train_size(self) -> int:
        return 4

    def load(self, seed: int) -> Splits:
        import torch

        x, y = torch.tensor([[2.0], [4.0], [6.0], [8.0]]), torch.tensor([[3.0], [4.0], [5.0], [6.0]])
        x_held, y_held = torch.tensor([[10.0]]), torch.tensor([[7.0]])
        return Splits(x, y, x_held, y_held, x_held.clone(), y_held.clone(), "regression", None, None)

    def true_function(self) -> Callable[[Tensor], Tensor]:
        return lambda x: 0.5 * x + 2.0  # the exact fit the example is about

    def grid(self) -> Tensor:
        import torch

        return torch.tensor([[10.0]])  # the test point itself


class Xor(Dataset):
    """The syllabus's XOR points a, b, c, d, for train, val and test alike: the question is whether
    a feature map makes them separable, not generalization."""

    task: ClassVar[str] = "classification"
    input_dim: ClassVar[int] = 2
    num_classes: ClassVar[int] = 2
    class_names: ClassVar[tuple[str, ...]] = ("0", "1")

    def __init__(self, standardize: bool = False) -> None:
        super().__init__(standardize)

    def train_size(self) -> int:
        return 4

    def load(self, seed: int) -> Splits:
        import torch

        x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        y = torch.tensor([0, 1, 1, 0])
        return Splits(x, y, x.clone(), y.clone(), x.clone(), y.clone(), "classification", 2, self.class_names)


class Polynomial(Dataset):
    """Noisy samples y = f(x) + ε, ε ~ N(0, noise²), of a 1-D curve (``target``) on x ∈ [x_min, x_max].

    Each split has its own random stream: training and validation data are redrawn by the
    seed (replicates), the test set is one fixed draw, so every seed is scored on the same points.
    """

    def __init__(self, n_train: int = 20, n_val: int = 100, n_test: int = 1000, noise: float = 0.2,
                 target: str = "cubic", x_min: float = -1.0, x_max: float = 1.0, standardize: bool = True) -> None:
        super().__init__(standardize)
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.noise, self.target, self.x_min, self.x_max = noise, target, x_min, x_max

    @property
    def noise_variance(self) -> float:  # type: ignore[override]
        return float(self.noise) ** 2

    def check(self) -> None:
        super().check()
        for key in ("n_train", "n_val", "n_test"):
            count(getattr(self, key), key, nullable=False)
        finite(self.noise, "noise", 0.0, MAX_NOISE)
        for key in ("x_min", "x_max"):
            finite(getattr(self, key), key, -MAX_ABS_X, MAX_ABS_X)
        if not self.x_min < self.x_max:
            problem = f"x_min={self.x_min} is not below x_max={self.x_max}"
            raise ConfigError("dataset.x_min", problem, allowed="x_min < x_max")
        if self.target not in CURVES:
            raise ConfigError("dataset.target", f"unknown target {self.target!r}", allowed=", ".join(CURVES))
        check_memory({"n_train": self.n_train, "n_val": self.n_val, "n_test": self.n_test}, self.input_dim)

    def train_size(self) -> int:
        return self.n_train

    def true_function(self) -> Callable[[Tensor], Tensor]:
        return CURVES[self.target]

    def grid(self) -> Tensor:
        """The test inputs: one fixed draw for every seed, so replicates' mean test error is exactly what
        bias² + variance + the test set's noise add up to (σ² estimates that noise)."""
        return self._draw(self.n_test, TEST_STREAM)[0]

    def _draw(self, n: int, stream: int) -> tuple[Tensor, Tensor]:
        import torch

        gen = torch.Generator().manual_seed(stream)
        x = self.x_min + (self.x_max - self.x_min) * torch.rand(n, 1, generator=gen)
        return x, CURVES[self.target](x) + self.noise * torch.randn(n, 1, generator=gen)

    def load(self, seed: int) -> Splits:
        import torch

        train, val = torch.randint(2**62, (2,), generator=torch.Generator().manual_seed(seed)).tolist()
        parts = [self._draw(n, s) for n, s in ((self.n_train, train), (self.n_val, val), (self.n_test, TEST_STREAM))]
        return Splits(*parts[0], *parts[1], *parts[2], "regression", None, None)
