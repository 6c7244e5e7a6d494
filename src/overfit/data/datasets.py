"""The eight datasets, each loaded as in-memory train / validation / test tensors.

Every dataset is small enough to live on the training device whole, so ``load``
returns plain tensors (no DataLoader). Features are raw: the model standardises
them from training statistics itself, so nothing from the held-out data leaks
into the inputs. Images are flattened and scaled to [0, 1].
"""

from __future__ import annotations

import functools
import math
import os
import pickle
import socket
import struct
import threading
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

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

# Where torchvision downloads each set from (its first mirror): download=true needs to reach it.
_HOSTS = {
    "mnist": ("ossci-datasets.s3.amazonaws.com", 443),
    "fashion_mnist": ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),
    "cifar10": ("www.cs.toronto.edu", 443),
}
NETWORK_TIMEOUT_S = 2.0
_ORIGINALS = "the original files (delete them and set dataset.download=true)"
MAX_ABS_X = 1e3  # the targets' squared errors stay far inside float32 (the cubic of 1e3 is 1.5e9)
MAX_NOISE = 1e6  # a noise std whose square, summed over any size that fits in memory, is still finite in float32
# Bytes per stored value (float32) and copies of the data a run holds at once
# (generated or read, on the device, standardised): the data-size bound.
_BYTES = 4
_COPIES = 4

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

    def floating(self, dtype: torch.dtype) -> Splits:
        """The same splits with floating tensors (inputs, regression targets) in ``dtype`` (64-true training)."""
        tensors = [f.name for f in fields(self) if f.name.startswith(("x_", "y_"))]
        return replace(self, **{n: getattr(self, n).to(dtype) for n in tensors if getattr(self, n).is_floating_point()})

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
        _in_range(cfg, "noise", 0.0, MAX_NOISE)
        for key in ("x_min", "x_max"):
            _in_range(cfg, key, -MAX_ABS_X, MAX_ABS_X)
        if not cfg.x_min < cfg.x_max:
            problem = f"x_min={cfg.x_min} is not below x_max={cfg.x_max}"
            raise ConfigError("dataset.x_min", problem, allowed="x_min < x_max")
        if cfg.target not in _CURVES:
            raise ConfigError("dataset.target", f"unknown target {cfg.target!r}", allowed=", ".join(_CURVES))
        _check_memory(cfg)
    elif name in _SKLEARN_SIZES:
        _check_tabular(cfg)
    elif name in _IMAGES:
        _check_images(cfg)


def load(cfg: DictConfig, seed: int) -> Splits:
    """The dataset ``cfg`` names, split reproducibly by ``seed``, as CPU tensors."""
    check(cfg)
    return _LOADERS[cfg.name](cfg, seed)


def true_function(cfg: DictConfig) -> Callable[[Tensor], Tensor] | None:
    """The noise-free curve the dataset samples, where one is known, so a picture can set the fit beside it."""
    if cfg.name == "polynomial":
        return _CURVES[cfg.target]
    if cfg.name == "line":
        return lambda x: 0.5 * x + 2.0  # the exact fit w=0.5, b=2 the example is about
    return None


def train_size(cfg: DictConfig) -> int:
    """Training examples of a checked ``cfg``: what a full batch (gradient descent) holds."""
    if cfg.name in ("line", "xor"):
        return 4
    if cfg.name == "polynomial":
        return cfg.n_train
    if cfg.name in _SKLEARN_SIZES:
        available = _tabular_sizes(cfg)[0]
    else:
        available = _image_count(cfg) - cfg.val_size
    return available if cfg.n_train is None else cfg.n_train


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


def _at_least_one(cfg: DictConfig, key: str, nullable: bool = True) -> None:
    """A count must be >= 1; null (where allowed) means "all of them"."""
    if cfg[key] is None and nullable:
        return
    if cfg[key] is None or cfg[key] < 1:
        raise ConfigError(f"dataset.{key}", f"{key}={cfg[key]} is not a count >= 1", allowed="an integer >= 1")


def _in_range(cfg: DictConfig, key: str, low: float, high: float) -> None:
    """A float knob must be a finite number in [low, high]: NaN or inf would only surface as a diverged run."""
    value = cfg[key]
    if not (math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"dataset.{key}", f"got {value}", allowed=f"a finite number in [{low:g}, {high:g}]")


def _check_memory(cfg: DictConfig) -> None:
    """The generated splits must fit in memory (n_train=1e11 would try to allocate 400 GB)."""
    sizes = {key: cfg[key] for key in ("n_train", "n_val", "n_test")}
    per_example = (INPUT_DIMS[cfg.name] + 1) * _BYTES * _COPIES
    budget = memory_budget()
    if sum(sizes.values()) * per_example <= budget:
        return
    key, total = max(sizes, key=sizes.get), sum(sizes.values())
    most = max(budget // per_example - (total - sizes[key]), 1)
    need = f"{total * per_example / 1e9:,.1f} GB, more than the {budget / 1e9:,.1f} GB here"
    problem = f"{key}={sizes[key]:,}: {total:,} examples need about {need}"
    raise ConfigError(f"dataset.{key}", problem, allowed=f"1..{most:,}")


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
    """Sizes against the official counts, then the files: present and readable, or a network to download them."""
    _, folder, files, official = _IMAGES[cfg.name]
    if not cfg.root or not cfg.root.isprintable():
        raise ConfigError("dataset.root", f"got {cfg.root!r}", allowed="a folder path (printable, not empty)")
    _at_least_one(cfg, "val_size", nullable=False)
    if cfg.val_size >= official:
        problem = f"val_size={cfg.val_size} leaves no training data"
        raise ConfigError("dataset.val_size", problem, allowed=f"1..{official - 1}")
    _check_n_train(cfg, official - cfg.val_size)
    if not all((_data_dir(cfg) / folder / f).is_file() for f in files):
        if not cfg.download:
            raise _missing(cfg, "not found")
        host, port = _HOSTS[cfg.name]
        why = _unreachable(host, port)
        if why is not None:
            how = f"download=false with the {cfg.name} files under {_data_dir(cfg)}"
            raise ConfigError("dataset.download", f"no network: cannot reach {host}:{port} ({why})", allowed=how)
        return
    available = _image_count(cfg)
    if cfg.val_size >= available:
        problem = f"val_size={cfg.val_size} leaves none of the {available} training images under {_data_dir(cfg)}"
        raise ConfigError("dataset.val_size", problem, allowed=f"1..{available - 1}")
    _check_n_train(cfg, available - cfg.val_size)


def _image_count(cfg: DictConfig) -> int:
    """Training images in the files under root (each checked readable), or the official count before a download."""
    _, folder, files, official = _IMAGES[cfg.name]
    where = _data_dir(cfg) / folder
    if not all((where / f).is_file() for f in files):
        return official
    try:
        counts = [_examples(where / f) for f in files]
    except ValueError as err:
        problem = f"{cfg.name} files under {where} are corrupt: {err}"
        raise ConfigError("dataset.root", problem, allowed=_ORIGINALS) from err
    if cfg.name == "cifar10":
        return sum(counts[:5])
    train_images, train_labels, test_images, test_labels = counts
    if train_images != train_labels or test_images != test_labels:
        problem = f"{cfg.name} image and label files under {where} disagree on the number of examples"
        raise ConfigError("dataset.root", problem, allowed=_ORIGINALS)
    return train_images


def _examples(path: Path) -> int:
    """Examples in one data file; read once per process while its size and mtime stay the same."""
    stat = path.stat()
    return _read_examples(str(path), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _read_examples(path: str, size: int, mtime_ns: int) -> int:
    """Parse an IDX file's header or a CIFAR pickle; ValueError says how the file is broken."""
    name = Path(path).name
    if name.endswith("-ubyte"):
        return _idx_examples(Path(path), size, ndim=3 if "idx3" in name else 1)
    return _cifar_examples(Path(path))


def _idx_examples(path: Path, size: int, ndim: int) -> int:
    """IDX (MNIST's format): magic 0x0800 + ndim (uint8), big-endian dims, then exactly prod(dims) bytes."""
    with path.open("rb") as f:
        header = f.read(4 + 4 * ndim)
        if len(header) < 4 + 4 * ndim:
            raise ValueError(f"{path.name} is empty or truncated ({size} bytes)")
        magic, *dims = struct.unpack(f">{1 + ndim}I", header)
        if magic != 0x0800 + ndim:
            raise ValueError(f"{path.name} has magic number {magic:#010x}, not {0x0800 + ndim:#010x}")
        if ndim == 3 and dims[1:] != [28, 28]:
            raise ValueError(f"{path.name} holds {dims[1]}x{dims[2]} images, not 28x28")
        expected = len(header) + math.prod(dims)
        if dims[0] < 1 or size != expected:
            raise ValueError(f"{path.name} has {size:,} bytes, its header says {expected:,}")
        if ndim == 1 and max(f.read()) > 9:
            raise ValueError(f"{path.name} holds labels outside 0..9")
    return dims[0]


class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only: checking a file never runs code from it."""

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] == "numpy" and name in ("_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name}")


def _cifar_examples(path: Path) -> int:
    """A CIFAR-10 pickle as torchvision reads it: a batch of N x 3072 uint8 rows with N labels 0..9, or the meta."""
    with path.open("rb") as f:
        try:
            entry = _ArraysOnly(f, encoding="latin1").load()
        except Exception as err:  # whatever fails to parse is a corrupt file, and nothing of it is trusted
            raise ValueError(f"{path.name} is not a readable pickle ({type(err).__name__})") from err
    if not isinstance(entry, dict):
        raise ValueError(f"{path.name} holds a {type(entry).__name__}, not a dict")
    if path.name == "batches.meta":
        names = entry.get("label_names")
        if not isinstance(names, list) or len(names) != 10:
            raise ValueError(f"{path.name} lacks the 10 label_names")
        return len(names)
    data, labels = entry.get("data"), entry.get("labels", entry.get("fine_labels"))
    if getattr(data, "ndim", None) != 2 or data.shape[1] != 3072 or str(data.dtype) != "uint8":
        raise ValueError(f"{path.name} has no N x 3072 uint8 'data' array")
    valid = isinstance(labels, list) and len(labels) == len(data)
    if not (valid and all(type(y) is int and 0 <= y < 10 for y in labels)):
        raise ValueError(f"{path.name} has no list of {len(data)} labels in 0..9")
    return len(data)


@functools.cache
def _unreachable(host: str, port: int) -> str | None:
    """None when a TCP connection to the download host (or the proxy) opens in time, else why not.

    Cached: a sweep probes once per process. DNS has no timeout of its own, so the
    probe runs in a daemon thread that is abandoned after NETWORK_TIMEOUT_S.
    """
    from urllib.parse import urlsplit
    from urllib.request import getproxies

    proxy = getproxies().get("https" if port == 443 else "http")
    if proxy:
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = parts.hostname or host, parts.port or 80
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=NETWORK_TIMEOUT_S):
                outcome.append(None)
        except OSError as err:
            outcome.append(str(err) or type(err).__name__)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(NETWORK_TIMEOUT_S)
    return outcome[0] if outcome else f"no answer within {NETWORK_TIMEOUT_S:g} s"


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
