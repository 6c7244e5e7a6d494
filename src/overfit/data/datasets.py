"""The eight datasets, each loaded as in-memory train / validation / test tensors.

Every dataset is small enough to live on the training device whole, so ``load``
returns plain tensors (no DataLoader). Features are raw: the model standardises
them from training statistics itself, so nothing from the held-out data leaks
into the inputs. Images are flattened and scaled to [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor

from overfit import paths
from overfit.errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig

TASKS: dict[str, str] = {
    "line": "regression",
    "polynomial": "regression",
    "xor": "classification",
    "digits": "classification",
    "breast_cancer": "classification",
    "mnist": "classification",
    "fashion_mnist": "classification",
    "cifar10": "classification",
}
DATASETS: tuple[str, ...] = tuple(TASKS)
INPUT_DIMS: dict[str, int] = {
    "line": 1, "polynomial": 1, "xor": 2, "digits": 64, "breast_cancer": 30,
    "mnist": 784, "fashion_mnist": 784, "cifar10": 3072,
}
NUM_CLASSES: dict[str, int] = {
    "xor": 2, "digits": 10, "breast_cancer": 2, "mnist": 10, "fashion_mnist": 10, "cifar10": 10,
}

# (examples, classes) of the scikit-learn sets, so check() needs no sklearn import.
_SKLEARN_SIZES = {"digits": (1797, 10), "breast_cancer": (569, 2)}

# torchvision class, folder under root, files that must be there, official training-set size.
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
_IMAGES = {
    "mnist": ("MNIST", "MNIST/raw", _IDX_FILES, 60_000),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", _IDX_FILES, 60_000),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", _CIFAR_FILES, 50_000),
}

_CURVES: dict[str, Callable[[Tensor], Tensor]] = {
    # Clear linear, quadratic and cubic parts: orders 1-2 under-fit, 3-4 fit.
    "cubic": lambda x: 1.5 * x**3 - 0.5 * x**2 - x + 0.3,
    "sine": lambda x: torch.sin(math.pi * x),
}


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

    def to(self, device: torch.device | str) -> Splits:
        """The same splits on ``device`` (the trainer keeps small datasets on the accelerator)."""
        tensors = [f.name for f in fields(self) if f.name.startswith(("x_", "y_"))]
        return replace(self, **{name: getattr(self, name).to(device) for name in tensors})


def check(cfg: DictConfig) -> None:
    """Reject impossible dataset settings before any run exists (cheap: imports neither sklearn nor torchvision)."""
    name = cfg.name
    if name not in TASKS:
        raise ConfigError("dataset", f"unknown dataset {name!r}", allowed=", ".join(DATASETS))
    if name == "polynomial":
        for key in ("n_train", "n_val", "n_test"):
            _at_least_one(cfg, key, nullable=False)
        if cfg.noise < 0:
            raise ConfigError("dataset.noise", f"noise={cfg.noise} is negative", allowed=">= 0")
        if not cfg.x_min < cfg.x_max:
            problem = f"x_min={cfg.x_min} is not below x_max={cfg.x_max}"
            raise ConfigError("dataset.x_min", problem, allowed="x_min < x_max")
        if cfg.target not in _CURVES:
            raise ConfigError("dataset.target", f"unknown target {cfg.target!r}", allowed=", ".join(_CURVES))
    elif name in _SKLEARN_SIZES:
        _check_tabular(cfg)
    elif name in _IMAGES:
        _check_images(cfg)


def load(cfg: DictConfig, seed: int) -> Splits:
    """The dataset ``cfg`` names, split reproducibly by ``seed``, as CPU tensors."""
    check(cfg)
    return _LOADERS[cfg.name](cfg, seed)


def _at_least_one(cfg: DictConfig, key: str, nullable: bool = True) -> None:
    """A count must be >= 1; null (where allowed) means "all of them"."""
    if cfg[key] is None and nullable:
        return
    if cfg[key] is None or cfg[key] < 1:
        raise ConfigError(f"dataset.{key}", f"{key}={cfg[key]} is not a count >= 1", allowed="an integer >= 1")


def _check_n_train(cfg: DictConfig, available: int) -> None:
    _at_least_one(cfg, "n_train")
    if cfg.n_train is not None and cfg.n_train > available:
        problem = f"n_train={cfg.n_train} exceeds the {available} training points of {cfg.name}"
        raise ConfigError("dataset.n_train", problem, allowed=f"1..{available} or null (all)")


def _tabular_sizes(cfg: DictConfig) -> tuple[int, int, int]:
    """(train, val, test) sizes; fixed integers so check() and the split agree exactly."""
    total = _SKLEARN_SIZES[cfg.name][0]
    n_val, n_test = round(cfg.val_fraction * total), round(cfg.test_fraction * total)
    return total - n_val - n_test, n_val, n_test


def _check_tabular(cfg: DictConfig) -> None:
    for key in ("val_fraction", "test_fraction"):
        if not 0 < cfg[key] < 1:
            raise ConfigError(f"dataset.{key}", f"{key}={cfg[key]} is not a fraction", allowed="0 < fraction < 1")
    held_out = cfg.val_fraction + cfg.test_fraction
    if held_out >= 1:
        problem = f"val_fraction + test_fraction = {held_out} leaves no training data"
        raise ConfigError("dataset.val_fraction", problem, allowed="val_fraction + test_fraction < 1")
    classes = _SKLEARN_SIZES[cfg.name][1]
    n_train, n_val, n_test = _tabular_sizes(cfg)
    # A stratified split needs every class in every split.
    for key, size in (("val_fraction", n_val), ("test_fraction", n_test), ("val_fraction", n_train)):
        if size < classes:
            problem = f"the split gives a set of {size} examples, fewer than the {classes} classes of {cfg.name}"
            allowed = f"fractions that leave >= {classes} examples in train, val and test"
            raise ConfigError(f"dataset.{key}", problem, allowed=allowed)
    _check_n_train(cfg, n_train)


def _data_dir(cfg: DictConfig) -> Path:
    """Where torchvision looks for the files; relative roots are relative to the project root, not the cwd."""
    return paths.resolve(cfg.root)


def _missing(cfg: DictConfig, problem: str) -> ConfigError:
    how = "set dataset.download=true (needs network) or put the files there"
    return ConfigError("dataset.root", f"{cfg.name} {problem} under {_data_dir(cfg)}", allowed=how)


def _check_images(cfg: DictConfig) -> None:
    _, folder, files, official = _IMAGES[cfg.name]
    _at_least_one(cfg, "val_size", nullable=False)
    if cfg.val_size >= official:
        problem = f"val_size={cfg.val_size} leaves no training data"
        raise ConfigError("dataset.val_size", problem, allowed=f"1..{official - 1}")
    _check_n_train(cfg, official - cfg.val_size)
    if not cfg.download and not all((_data_dir(cfg) / folder / f).is_file() for f in files):
        raise _missing(cfg, "not found")


def _line(cfg: DictConfig, seed: int) -> Splits:
    """The syllabus's 4-point regression; val and test are both its single test point x=10, y=7.

    There is no other held-out data: the example is about the exact fit w=0.5, b=2.
    """
    x, y = torch.tensor([[2.0], [4.0], [6.0], [8.0]]), torch.tensor([[3.0], [4.0], [5.0], [6.0]])
    x_held, y_held = torch.tensor([[10.0]]), torch.tensor([[7.0]])
    return Splits(x, y, x_held, y_held, x_held.clone(), y_held.clone(), "regression", None, None)


def _xor(cfg: DictConfig, seed: int) -> Splits:
    """The syllabus's XOR points a, b, c, d, used for train, val and test alike.

    The question is whether a feature map makes the four points separable, not
    generalization, so there is nothing else to hold out.
    """
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([0, 1, 1, 0])
    return Splits(x, y, x.clone(), y.clone(), x.clone(), y.clone(), "classification", 2, ("0", "1"))


def _polynomial(cfg: DictConfig, seed: int) -> Splits:
    """Noisy samples of a 1-D curve; each split has its own stream, so resizing one leaves the others unchanged."""
    curve = _CURVES[cfg.target]
    streams = torch.randint(2**62, (3,), generator=torch.Generator().manual_seed(seed)).tolist()

    def draw(n: int, stream: int) -> tuple[Tensor, Tensor]:
        gen = torch.Generator().manual_seed(stream)
        x = cfg.x_min + (cfg.x_max - cfg.x_min) * torch.rand(n, 1, generator=gen)
        return x, curve(x) + cfg.noise * torch.randn(n, 1, generator=gen)

    parts = [draw(n, s) for n, s in zip((cfg.n_train, cfg.n_val, cfg.n_test), streams)]
    return Splits(*parts[0], *parts[1], *parts[2], "regression", None, None)


def _first(n: int, n_train: int | None, seed: int) -> Tensor:
    """The first n_train of a seeded permutation of n indices: training sets for growing n_train nest."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_train]


def _tabular(cfg: DictConfig, seed: int) -> Splits:
    """A scikit-learn bundled set (offline), split stratified by class with ``seed``."""
    from sklearn.datasets import load_breast_cancer, load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits() if cfg.name == "digits" else load_breast_cancer()
    x = torch.as_tensor(bunch.data, dtype=torch.float32)
    if cfg.name == "digits":
        x = x / 16.0  # 8x8 images with pixel values 0..16, scaled like the other images
    labels = bunch.target
    _, n_val, n_test = _tabular_sizes(cfg)
    rest, test = train_test_split(range(len(labels)), test_size=n_test, stratify=labels, random_state=seed)
    train, val = train_test_split(rest, test_size=n_val, stratify=labels[rest], random_state=seed)
    train, val, test = (torch.as_tensor(idx) for idx in (train, val, test))
    train = train[_first(len(train), cfg.n_train, seed)]
    y = torch.as_tensor(labels, dtype=torch.int64)
    names = tuple(str(c) for c in bunch.target_names)
    return Splits(x[train], y[train], x[val], y[val], x[test], y[test], "classification", len(names), names)


def _images(cfg: DictConfig, seed: int) -> Splits:
    """A torchvision image set read from its files; val_size images of the official training set are held out."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, _IMAGES[cfg.name][0])
    root = _data_dir(cfg)
    try:
        train_set = cls(root, train=True, download=cfg.download)
        test_set = cls(root, train=False, download=cfg.download)
    except RuntimeError as err:  # torchvision's "not found or corrupted"
        raise _missing(cfg, f"not found or corrupted ({err})") from err
    available = len(train_set.targets)
    if cfg.val_size >= available:
        problem = f"val_size={cfg.val_size} leaves none of the {available} training images under {root}"
        raise ConfigError("dataset.val_size", problem, allowed=f"1..{available - 1}")
    _check_n_train(cfg, available - cfg.val_size)
    images, labels = torch.as_tensor(train_set.data), torch.as_tensor(train_set.targets, dtype=torch.int64)
    perm = torch.randperm(available, generator=torch.Generator().manual_seed(seed))
    val, train = perm[: cfg.val_size], perm[cfg.val_size :][: cfg.n_train]
    names = tuple(str(i) for i in range(10)) if cfg.name == "mnist" else tuple(train_set.classes)
    return Splits(
        _pixels(images[train]), labels[train], _pixels(images[val]), labels[val],
        _pixels(torch.as_tensor(test_set.data)), torch.as_tensor(test_set.targets, dtype=torch.int64),
        "classification", len(names), names,
    )


def _pixels(images: Tensor) -> Tensor:
    """uint8 images as float (N, pixels) in [0, 1]; CIFAR's HWC arrays become CHW first, torch's channel order."""
    if images.ndim == 4:
        images = images.permute(0, 3, 1, 2)
    return images.reshape(len(images), -1).to(torch.float32) / 255.0


_LOADERS: dict[str, Callable[[DictConfig, int], Splits]] = {
    "line": _line,
    "polynomial": _polynomial,
    "xor": _xor,
    "digits": _tabular,
    "breast_cancer": _tabular,
    "mnist": _images,
    "fashion_mnist": _images,
    "cifar10": _images,
}
