"""Tiny image datasets in the real on-disk formats, so torchvision's own loaders read them offline.

Each class gets its own bright block (plus noise), so a small model can beat chance
on them and a training test means something.
"""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _images(rng: np.random.Generator, labels: np.ndarray, side: int, channels: int) -> np.ndarray:
    """(N, channels, side, side) uint8: noise plus a block whose cell in a 3x4 grid (and colour) is the class."""
    images = rng.integers(0, 60, size=(len(labels), channels, side, side))
    cell = side // 4
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 4)
        images[i, label % channels, row * cell + 1 : (row + 1) * cell - 1, col * cell + 1 : (col + 1) * cell - 1] += 180
    return images.astype(np.uint8)


def _labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """Balanced, shuffled labels 0..9."""
    return rng.permutation(np.arange(n) % 10)


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX file: magic (0, 0, type 0x08 = uint8, ndim), big-endian dims, then the bytes."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(
    root: str | os.PathLike, n_train: int = 200, n_test: int = 50, kind: str = "MNIST", seed: int = 0
) -> Path:
    """Uncompressed IDX files in ``root/<kind>/raw/``, where torchvision's MNIST / FashionMNIST look. Returns root."""
    if kind not in ("MNIST", "FashionMNIST"):
        raise ValueError(f"kind must be MNIST or FashionMNIST, not {kind!r}")
    rng = np.random.default_rng(seed)
    raw = Path(root) / kind / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = _labels(rng, n)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", _images(rng, labels, 28, 1)[:, 0])  # magic 2051
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)  # magic 2049
    return Path(root)


def write_cifar10(root: str | os.PathLike, n_per_batch: int = 40, seed: int = 0) -> Path:
    """The python-pickle CIFAR-10 layout under ``root/cifar-10-batches-py/``: 5 training batches, a test batch, meta.

    Returns root. The files cannot match torchvision's md5 sums; see :func:`accept_fake_cifar10`.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = _labels(rng, n_per_batch)
        batch = {
            "batch_label": name,
            "labels": labels.tolist(),
            "data": _images(rng, labels, 32, 3).reshape(n_per_batch, 3072),  # rows are CHW, like the real files
            "filenames": [f"{name}_{i}.png" for i in range(n_per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {"label_names": CIFAR10_CLASSES, "num_cases_per_batch": n_per_batch, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return Path(root)


def accept_fake_cifar10(monkeypatch) -> None:
    """Let torchvision's CIFAR10 read fake files: in tests only, its md5 check becomes a presence check.

    CIFAR10 verifies every file against the md5 of the real download (MNIST only checks
    that the files exist), so no fake file can pass it and there is no offline switch.
    """
    import torchvision.datasets.cifar

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
