"""MNIST, Fashion-MNIST and CIFAR-10 from their files under ``dataset.root``, offline unless asked to download.

Two layouts are read: torchvision's (``<root>/MNIST/raw/``, ``<root>/FashionMNIST/raw/``,
``<root>/cifar-10-batches-py/``), through torchvision's own dataset classes; and, for the
IDX sets, the original files as published (gzipped or not) directly in ``root`` — what
Debian's ``dataset-fashion-mnist`` installs in ``/usr/share/datasets/fashion-mnist``.
``val_size`` images of the official training set are held out for validation (by seed);
the official test set is the test split, the same for every seed. Images are flattened
and scaled to [0, 1]. Every file is checked (header, sizes, labels) before any run exists,
without importing torchvision.
"""

from __future__ import annotations

import functools
import gzip
import math
import pickle
import socket
import struct
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

from overfit import paths
from overfit.data.base import Dataset, Splits, check_n_train, count, names
from overfit.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor

NETWORK_TIMEOUT_S = 2.0
_ORIGINALS = "the original files (delete them and set dataset.download=true)"
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class Images(Dataset):
    """An image set read by torchvision (the base of the three below)."""

    task: ClassVar[str] = "classification"
    num_classes: ClassVar[int] = 10
    torchvision: ClassVar[str] = ""  # the torchvision.datasets class
    folder: ClassVar[str] = ""  # where torchvision keeps the files under root
    files: ClassVar[tuple[str, ...]] = ()
    official: ClassVar[int] = 0  # images in the official training set
    host: ClassVar[tuple[str, int]] = ("", 0)  # where torchvision downloads from (its first mirror)

    def __init__(self, root: str = "data", download: bool = False, val_size: int = 5000, n_train: int | None = None,
                 standardize: bool = True) -> None:
        super().__init__(standardize)
        self.root, self.download, self.val_size, self.n_train = root, download, val_size, n_train

    def directory(self) -> Path:
        """Where the files are looked for; a relative root is relative to the project root, not the cwd."""
        return paths.resolve(self.root)

    def layout(self) -> tuple[Path, tuple[str, ...]] | None:
        """(folder, file names) of the files found, in torchvision's layout or as published; None if absent."""
        where = self.directory() / self.folder
        if all((where / f).is_file() for f in self.files):
            return where, self.files
        return None

    def missing(self, problem: str) -> ConfigError:
        how = "set dataset.download=true (needs network), or put the files there (see scripts/get-data)"
        return ConfigError("dataset.root", f"{self.describe()} {problem} under {self.directory()}", allowed=how)

    def check(self) -> None:
        super().check()
        if not isinstance(self.root, str) or not self.root or not self.root.isprintable():
            raise ConfigError("dataset.root", f"got {self.root!r}", allowed="a folder path (printable, not empty)")
        count(self.val_size, "val_size", nullable=False)
        if self.val_size >= self.official:
            raise ConfigError("dataset.val_size", f"val_size={self.val_size} leaves no training data",
                              f"1..{self.official - 1}")
        check_n_train(self.n_train, self.official - self.val_size, self.describe())
        if self.layout() is None:
            if not self.download:
                raise self.missing("not found")
            host, port = self.host
            why = unreachable(host, port)
            if why is not None:
                how = f"download=false with the {self.describe()} files under {self.directory()}"
                raise ConfigError("dataset.download", f"no network: cannot reach {host}:{port} ({why})", allowed=how)
            return
        available = self.image_count()
        if self.val_size >= available:
            problem = f"val_size={self.val_size} leaves none of the {available} training images under {self.directory()}"
            raise ConfigError("dataset.val_size", problem, allowed=f"1..{available - 1}")
        check_n_train(self.n_train, available - self.val_size, self.describe())

    def train_size(self) -> int:
        available = (self.image_count() if self.layout() is not None else self.official) - self.val_size
        return available if self.n_train is None else self.n_train

    def image_count(self) -> int:
        """Training images in the files (each checked readable)."""
        found = self.layout()
        assert found is not None
        where, files = found
        try:
            counts = [examples(where / f) for f in files]
        except ValueError as err:
            raise ConfigError("dataset.root", f"{self.describe()} files under {where} are corrupt: {err}",
                              allowed=_ORIGINALS) from err
        return self.counted(counts, where)

    def counted(self, counts: list[int], where: Path) -> int:
        raise NotImplementedError

    def raw(self) -> tuple[Tensor, Tensor, Tensor, Tensor, tuple[str, ...]]:
        """(train images, train labels, test images, test labels, class names) as uint8 / int64 tensors."""
        import torch
        import torchvision.datasets

        cls = getattr(torchvision.datasets, self.torchvision)
        root = self.directory()
        try:
            train_set = cls(root, train=True, download=self.download)
            test_set = cls(root, train=False, download=self.download)
        except RuntimeError as err:  # torchvision's "not found or corrupted"
            raise self.missing(f"not found or corrupted ({err})") from err
        return (torch.as_tensor(train_set.data), torch.as_tensor(train_set.targets, dtype=torch.int64),
                torch.as_tensor(test_set.data), torch.as_tensor(test_set.targets, dtype=torch.int64),
                self.class_names or names(train_set.classes))

    def load(self, seed: int) -> Splits:
        import torch

        images, labels, test_images, test_labels, classes = self.raw()
        available = len(labels)
        if self.val_size >= available:
            problem = f"val_size={self.val_size} leaves none of the {available} training images under {self.directory()}"
            raise ConfigError("dataset.val_size", problem, allowed=f"1..{available - 1}")
        check_n_train(self.n_train, available - self.val_size, self.describe())
        perm = torch.randperm(available, generator=torch.Generator().manual_seed(seed))
        val, train = perm[: self.val_size], perm[self.val_size :][: self.n_train]
        return Splits(_pixels(images[train]), labels[train], _pixels(images[val]), labels[val],
                      _pixels(test_images), test_labels, "classification", len(classes), classes)


class IdxImages(Images):
    """MNIST-format sets: four IDX files, in torchvision's layout or as published (gzipped or not) in root."""

    input_dim: ClassVar[int] = 784
    files: ClassVar[tuple[str, ...]] = IDX_FILES
    official: ClassVar[int] = 60_000

    def layout(self) -> tuple[Path, tuple[str, ...]] | None:
        found = super().layout()
        if found is not None:
            return found
        root = self.directory()
        for suffix in ("", ".gz"):  # the originals, as published
            if all((root / f"{f}{suffix}").is_file() for f in self.files):
                return root, tuple(f"{f}{suffix}" for f in self.files)
        return None

    def counted(self, counts: list[int], where: Path) -> int:
        train_images, train_labels, test_images, test_labels = counts
        if train_images != train_labels or test_images != test_labels:
            problem = f"{self.describe()} image and label files under {where} disagree on the number of examples"
            raise ConfigError("dataset.root", problem, allowed=_ORIGINALS)
        return train_images

    def raw(self) -> tuple[Tensor, Tensor, Tensor, Tensor, tuple[str, ...]]:
        found = self.layout()
        if found is None or found[0] == self.directory() / self.folder:
            return super().raw()  # torchvision's layout (or a download): torchvision reads it
        import torch

        where, files = found
        tensors = [torch.as_tensor(read_idx(where / f)) for f in files]
        train_x, train_y, test_x, test_y = tensors
        return train_x, train_y.long(), test_x, test_y.long(), self.class_names or names(range(10))


class MNIST(IdxImages):
    """Handwritten digits, 28×28 grey."""

    torchvision: ClassVar[str] = "MNIST"
    folder: ClassVar[str] = "MNIST/raw"
    class_names: ClassVar[tuple[str, ...]] = names(range(10))
    host: ClassVar[tuple[str, int]] = ("ossci-datasets.s3.amazonaws.com", 443)


class FashionMNIST(IdxImages):
    """Zalando's clothing images, 28×28 grey, 10 classes (T-shirt/top ... ankle boot)."""

    torchvision: ClassVar[str] = "FashionMNIST"
    folder: ClassVar[str] = "FashionMNIST/raw"
    class_names: ClassVar[tuple[str, ...]] = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                              "Shirt", "Sneaker", "Bag", "Ankle boot")
    host: ClassVar[tuple[str, int]] = ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80)


class CIFAR10(Images):
    """32×32 colour photographs of 10 kinds of object."""

    input_dim: ClassVar[int] = 3072
    torchvision: ClassVar[str] = "CIFAR10"
    folder: ClassVar[str] = "cifar-10-batches-py"
    files: ClassVar[tuple[str, ...]] = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
    official: ClassVar[int] = 50_000
    host: ClassVar[tuple[str, int]] = ("www.cs.toronto.edu", 443)

    def counted(self, counts: list[int], where: Path) -> int:
        return sum(counts[:5])


def _pixels(images: Tensor) -> Tensor:
    """uint8 images as float (N, pixels) in [0, 1]; CIFAR's HWC arrays become CHW first, torch's channel order."""
    import torch

    if images.ndim == 4:
        images = images.permute(0, 3, 1, 2)
    return images.reshape(len(images), -1).to(torch.float32) / 255.0


# --- the files: checked without torchvision, IDX read without it too -----------------------------------
def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def examples(path: Path) -> int:
    """Examples in one data file; read once per process while its size and mtime stay the same."""
    stat = path.stat()
    return _read_examples(str(path), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _read_examples(path: str, size: int, mtime_ns: int) -> int:
    """Parse an IDX file's header or a CIFAR pickle; ValueError says how the file is broken."""
    name = Path(path).name.removesuffix(".gz")
    if name.endswith("-ubyte"):
        return _idx_examples(Path(path), size, ndim=3 if "idx3" in name else 1)
    return _cifar_examples(Path(path))


def _idx_header(f: IO[bytes], name: str, ndim: int) -> list[int]:
    header = f.read(4 + 4 * ndim)
    if len(header) < 4 + 4 * ndim:
        raise ValueError(f"{name} is empty or truncated")
    magic, *dims = struct.unpack(f">{1 + ndim}I", header)
    if magic != 0x0800 + ndim:
        raise ValueError(f"{name} has magic number {magic:#010x}, not {0x0800 + ndim:#010x}")
    if ndim == 3 and dims[1:] != [28, 28]:
        raise ValueError(f"{name} holds {dims[1]}x{dims[2]} images, not 28x28")
    return dims


def _idx_examples(path: Path, size: int, ndim: int) -> int:
    """IDX (MNIST's format): magic 0x0800 + ndim (uint8), big-endian dims, then exactly prod(dims) bytes."""
    try:
        with _open(path) as f:
            dims = _idx_header(f, path.name, ndim)
            body = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ValueError(f"{path.name} cannot be read ({type(exc).__name__})") from exc
    expected = math.prod(dims)
    if dims[0] < 1 or len(body) != expected:
        raise ValueError(f"{path.name} has {len(body) + 4 + 4 * ndim:,} bytes, its header says {expected + 4 + 4 * ndim:,}")
    if ndim == 1 and max(body) > 9:
        raise ValueError(f"{path.name} holds labels outside 0..9")
    return dims[0]


def read_idx(path: Path) -> Any:
    """An IDX file's array (uint8, shape from its header), gzipped or not."""
    import numpy as np

    ndim = 3 if "idx3" in path.name else 1
    with _open(path) as f:
        dims = _idx_header(f, path.name, ndim)
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(dims).copy()


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
        labels = entry.get("label_names")
        if not isinstance(labels, list) or len(labels) != 10:
            raise ValueError(f"{path.name} lacks the 10 label_names")
        return len(labels)
    data, labels = entry.get("data"), entry.get("labels", entry.get("fine_labels"))
    if getattr(data, "ndim", None) != 2 or data.shape[1] != 3072 or str(data.dtype) != "uint8":
        raise ValueError(f"{path.name} has no N x 3072 uint8 'data' array")
    valid = isinstance(labels, list) and len(labels) == len(data)
    if not (valid and all(type(y) is int and 0 <= y < 10 for y in labels)):
        raise ValueError(f"{path.name} has no list of {len(data)} labels in 0..9")
    return len(data)


@functools.cache
def unreachable(host: str, port: int) -> str | None:
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
