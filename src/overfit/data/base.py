"""What a dataset component is: its task and sizes known before loading, its splits loaded by seed.

Every option of the ``dataset`` group is a YAML whose ``_target_`` names a callable. A
subclass of :class:`Dataset` says what it is (task, input dimension, classes, training
size) without reading anything heavy, checks its own knobs, and loads train / validation /
test tensors for a seed. Any other callable ``loader(seed, **knobs)`` that returns the six
arrays is adopted by :class:`FromLoader`. The test split does not depend on the seed
(replicates differ in their training and validation data, never in what they are scored on).

Nothing here imports PyTorch at import time: configs are validated without it.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from overfit.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

TASKS = ("regression", "classification")
# Bytes per stored value (float32) and copies of the data a run holds at once
# (generated or read, on the device, standardised): the data-size bound.
BYTES = 4
COPIES = 4


@dataclass(frozen=True)
class Splits:
    """Train / validation / test tensors of one dataset, plus what the model needs to know about them."""

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    task: str
    num_classes: int | None
    class_names: tuple[str, ...] | None

    @property
    def input_dim(self) -> int:
        return self.x_train.shape[1]

    @property
    def target_dim(self) -> int:
        return self.y_train.shape[1] if self.task == "regression" else 1

    def floating(self, dtype: torch.dtype) -> Splits:
        """The same splits with floating tensors (inputs, regression targets) in ``dtype`` (64-true training)."""
        tensors = [f.name for f in fields(self) if f.name.startswith(("x_", "y_"))]
        return replace(self, **{n: getattr(self, n).to(dtype) for n in tensors if getattr(self, n).is_floating_point()})

    def to(self, device: torch.device | str) -> Splits:
        """The same splits on ``device`` (the trainer keeps small datasets on the accelerator)."""
        tensors = [f.name for f in fields(self) if f.name.startswith(("x_", "y_"))]
        return replace(self, **{name: getattr(self, name).to(device) for name in tensors})


class Dataset:
    """A dataset component: subclasses set ``task``, ``input_dim``, ``num_classes`` and implement ``load``.

    ``standardize``: inputs are standardised from training statistics inside the network,
    so nothing of the held-out data leaks in and a saved model predicts from raw inputs.
    """

    task: ClassVar[str] = "regression"
    input_dim: ClassVar[int] = 1
    num_classes: ClassVar[int | None] = None
    class_names: ClassVar[tuple[str, ...] | None] = None
    noise_variance: ClassVar[float | None] = None  # σ² of the targets around the true function, where known

    def __init__(self, standardize: bool = True) -> None:
        self.standardize = standardize

    def check(self) -> None:
        """Reject impossible knobs before any run exists (cheap: nothing is read or generated)."""
        if not isinstance(self.standardize, bool):
            raise ConfigError("dataset.standardize", f"got {self.standardize!r}", "true or false")

    def train_size(self) -> int:
        """Training examples of a checked dataset: what a full batch (gradient descent) holds."""
        raise NotImplementedError

    def load(self, seed: int) -> Splits:
        """The splits for ``seed``, as CPU tensors."""
        raise NotImplementedError

    def true_function(self) -> Callable[[Tensor], Tensor] | None:
        """The noise-free function the targets sample, where it is known (pictures, bias–variance)."""
        return None

    def grid(self) -> Tensor | None:
        """Fixed inputs, spread as the test inputs are, where replicates' predictions meet the known true function
        (the bias–variance decomposition); None where there is no such function."""
        return None

    def describe(self) -> str:
        """A short name for the UI: the class, and the knobs that differ from their defaults."""
        return type(self).__name__

    @staticmethod
    def adopt(made: Any) -> Dataset:
        """``made`` if it is a Dataset, else a loader of the user's adopted by :class:`FromLoader`."""
        return made if isinstance(made, Dataset) else FromLoader(made)


class FromLoader(Dataset):
    """A user's ``loader(seed, ...) -> (x_train, y_train, x_val, y_val, x_test, y_test)`` (arrays or a mapping).

    Its task and sizes come from one load (seed 0), cached: integer targets are classes,
    floating ones regression values.
    """

    def __init__(self, loader: Callable[..., Any], standardize: bool = True) -> None:
        super().__init__(standardize)
        self.loader = loader
        self._probe: Splits | None = None

    def describe(self) -> str:
        func = getattr(self.loader, "func", self.loader)
        return getattr(func, "__qualname__", type(func).__name__)

    def _first(self) -> Splits:
        if self._probe is None:
            self._probe = self.load(0)
        return self._probe

    @property  # type: ignore[override]
    def task(self) -> str:
        return self._first().task

    @property  # type: ignore[override]
    def input_dim(self) -> int:
        return self._first().input_dim

    @property  # type: ignore[override]
    def num_classes(self) -> int | None:
        return self._first().num_classes

    def check(self) -> None:
        super().check()
        self._first()

    def train_size(self) -> int:
        return len(self._first().x_train)

    def load(self, seed: int) -> Splits:
        import torch

        try:
            found = self.loader(seed=seed)
        except TypeError as exc:
            raise ConfigError("dataset._target_", f"{self.describe()}(seed=...) failed: {exc}",
                              "a callable taking seed= and the YAML's other keys") from exc
        names = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
        arrays = [found[n] for n in names] if isinstance(found, Mapping) else list(found)
        if len(arrays) != 6:
            raise ConfigError("dataset._target_", f"{self.describe()} returned {len(arrays)} arrays",
                              "x_train, y_train, x_val, y_val, x_test, y_test (a tuple or a mapping)")
        x = [torch.as_tensor(a).float().reshape(len(a), -1) for a in arrays[0::2]]
        ys = [torch.as_tensor(a) for a in arrays[1::2]]
        if ys[0].is_floating_point():
            y = [t.float().reshape(len(t), -1) for t in ys]
            return Splits(x[0], y[0], x[1], y[1], x[2], y[2], "regression", None, None)
        y = [t.long().reshape(-1) for t in ys]
        classes = int(max(int(t.max()) for t in y if len(t))) + 1
        return Splits(x[0], y[0], x[1], y[1], x[2], y[2], "classification", classes, None)


# --- knob checks shared by the shipped datasets ---------------------------------------------------
def count(value: Any, key: str, nullable: bool = True) -> None:
    """A count must be an integer >= 1; null (where allowed) means "all of them"."""
    if value is None and nullable:
        return
    if type(value) is not int or value < 1:
        raise ConfigError(f"dataset.{key}", f"{key}={value} is not a count >= 1", "an integer >= 1")


def finite(value: Any, key: str, low: float, high: float) -> None:
    """A float knob must be a finite number in [low, high]: NaN or inf would only surface as a diverged run."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value)
                                                                             and low <= value <= high):
        raise ConfigError(f"dataset.{key}", f"got {value}", f"a finite number in [{low:g}, {high:g}]")


def fraction(value: Any, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(f"dataset.{key}", f"{key}={value} is not a fraction", "0 < fraction < 1")


def check_n_train(n_train: int | None, available: int, what: str) -> None:
    count(n_train, "n_train")
    if n_train is not None and n_train > available:
        problem = f"n_train={n_train} exceeds the {available} training points of {what}"
        raise ConfigError("dataset.n_train", problem, f"1..{available} or null (all)")


def check_memory(sizes: Mapping[str, int], width: int) -> None:
    """Generated splits must fit in memory (n_train=1e11 would try to allocate 400 GB)."""
    per_example = (width + 1) * BYTES * COPIES
    budget = memory_budget()
    total = sum(sizes.values())
    if total * per_example <= budget:
        return
    key = max(sizes, key=sizes.__getitem__)
    most = max(budget // per_example - (total - sizes[key]), 1)
    need = f"{total * per_example / 1e9:,.1f} GB, more than the {budget / 1e9:,.1f} GB here"
    problem = f"{key}={sizes[key]:,}: {total:,} examples need about {need}"
    raise ConfigError(f"dataset.{key}", problem, allowed=f"1..{most:,}")


@functools.cache
def memory_budget() -> int:
    """Bytes of memory a run may use: the machine's physical memory, or a container's lower limit."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def first(n: int, n_train: int | None, seed: int) -> Tensor:
    """The first n_train of a seeded permutation of n indices: training sets for growing n_train nest."""
    import torch

    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_train]


def names(classes: Sequence[Any]) -> tuple[str, ...]:
    return tuple(str(c) for c in classes)
