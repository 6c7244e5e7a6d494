"""Tables of features: scikit-learn's embedded sets (offline) and a user's own CSV or NumPy file.

Each is split stratified by class (for classification): the test set once, with a fixed
seed, so every replicate is scored on the same examples; validation and training by the
run's seed. ``n_train`` takes the first n of a seeded permutation, so learning curves nest.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from overfit import paths
from overfit.data.base import Dataset, Splits, check_n_train, count, first, fraction, names
from overfit.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

TEST_SPLIT_SEED = 0  # the test split is the same for every seed


def _split(labels: np.ndarray | None, n: int, n_val: int, n_test: int, seed: int) -> tuple[Any, Any, Any]:
    """Indices of train / val / test: test fixed, the rest by ``seed``; stratified when there are labels."""
    from sklearn.model_selection import train_test_split

    everything = list(range(n))
    rest, test = train_test_split(everything, test_size=n_test, stratify=labels, random_state=TEST_SPLIT_SEED)
    strata = None if labels is None else labels[rest]
    train, val = train_test_split(rest, test_size=n_val, stratify=strata, random_state=seed)
    return train, val, test


class Tabular(Dataset):
    """Rows of features with a held-out validation and test fraction (the base of the sets below)."""

    examples: ClassVar[int] = 0  # rows in the set (known without reading it, for the checks)

    def __init__(self, val_fraction: float = 0.2, test_fraction: float = 0.2, n_train: int | None = None,
                 standardize: bool = True) -> None:
        super().__init__(standardize)
        self.val_fraction, self.test_fraction, self.n_train = val_fraction, test_fraction, n_train

    def rows(self) -> int:
        return self.examples

    def sizes(self) -> tuple[int, int, int]:
        """(train, val, test) sizes; fixed integers so check() and the split agree exactly."""
        total = self.rows()
        n_val, n_test = round(self.val_fraction * total), round(self.test_fraction * total)
        return total - n_val - n_test, n_val, n_test

    def check(self) -> None:
        super().check()
        for key in ("val_fraction", "test_fraction"):
            fraction(getattr(self, key), key)
        held_out = self.val_fraction + self.test_fraction
        if held_out >= 1:
            problem = f"val_fraction + test_fraction = {held_out} leaves no training data"
            raise ConfigError("dataset.val_fraction", problem, allowed="val_fraction + test_fraction < 1")
        n_train, n_val, n_test = self.sizes()
        smallest = self.num_classes or 1  # a stratified split needs every class in every split
        for key, size in (("val_fraction", n_val), ("test_fraction", n_test), ("val_fraction", n_train)):
            if size < smallest:
                problem = f"the split gives a set of {size} examples, fewer than the {smallest} classes of {self.describe()}"
                allowed = f"fractions that leave >= {smallest} examples in train, val and test"
                raise ConfigError(f"dataset.{key}", problem, allowed=allowed)
        check_n_train(self.n_train, n_train, self.describe())

    def train_size(self) -> int:
        return self.sizes()[0] if self.n_train is None else self.n_train

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(features, targets) of every row."""
        raise NotImplementedError

    def load(self, seed: int) -> Splits:
        import torch

        x_all, y_all = self.arrays()
        classification = self.task == "classification"
        _, n_val, n_test = self.sizes()
        train, val, test = (torch.as_tensor(i) for i in _split(y_all if classification else None, len(x_all),
                                                               n_val, n_test, seed))
        train = train[first(len(train), self.n_train, seed)]
        x = torch.as_tensor(x_all, dtype=torch.float32)
        if classification:
            y = torch.as_tensor(y_all, dtype=torch.int64)
        else:
            y = torch.as_tensor(y_all, dtype=torch.float32).reshape(len(y_all), -1)
        return Splits(x[train], y[train], x[val], y[val], x[test], y[test], self.task,
                      self.num_classes, self.class_names)


class Digits(Tabular):
    """scikit-learn's 8×8 handwritten digits (1,797 images, 10 classes), pixels scaled to [0, 1]."""

    task: ClassVar[str] = "classification"
    input_dim: ClassVar[int] = 64
    num_classes: ClassVar[int] = 10
    class_names: ClassVar[tuple[str, ...]] = names(range(10))
    examples: ClassVar[int] = 1797

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.data / 16.0, bunch.target  # pixel values 0..16, scaled like the other images


class BreastCancer(Tabular):
    """scikit-learn's Wisconsin breast cancer set (569 tumours, 30 measurements, malignant or benign)."""

    task: ClassVar[str] = "classification"
    input_dim: ClassVar[int] = 30
    num_classes: ClassVar[int] = 2
    class_names: ClassVar[tuple[str, ...]] = ("malignant", "benign")
    examples: ClassVar[int] = 569

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_breast_cancer

        bunch = load_breast_cancer()
        return bunch.data, bunch.target


class Table(Tabular):
    """A table of your own: a CSV file with a header row, or a NumPy ``.npy`` (2-D) / ``.npz`` (``x``, ``y``).

    ``target``: the column to predict (its header name, or its index). ``task``: null infers it —
    a column of whole numbers with at most ``max_classes`` distinct values is a class label,
    anything else a regression target.
    """

    def __init__(self, path: str = "", target: str | int = -1, task: str | None = None, max_classes: int = 50,
                 val_fraction: float = 0.2, test_fraction: float = 0.2, n_train: int | None = None,
                 standardize: bool = True) -> None:
        super().__init__(val_fraction, test_fraction, n_train, standardize)
        self.path, self.target, self.wanted, self.max_classes = path, target, task, max_classes
        self._read: tuple[np.ndarray, np.ndarray, list[str]] | None = None

    def describe(self) -> str:
        return Path(str(self.path)).name or "table"

    def _file(self) -> Path:
        return paths.resolve(str(self.path))

    def _table(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(features, target column, feature names), read once."""
        if self._read is not None:
            return self._read
        import numpy as np

        file = self._file()
        if not self.path or not file.is_file():
            raise ConfigError("dataset.path", f"no such file {file}", "a .csv, .npy or .npz file")
        try:
            if file.suffix == ".npz":
                with np.load(file) as found:
                    x, y = np.asarray(found["x"], dtype=float), np.asarray(found["y"])
                self._read = (x.reshape(len(x), -1), y, [f"x{i}" for i in range(x.size // max(len(x), 1))])
                return self._read
            if file.suffix == ".npy":
                data, header = np.load(file), None
            else:
                with file.open() as f:
                    header = [h.strip() for h in f.readline().split(",")]
                data = np.loadtxt(file, delimiter=",", skiprows=1, ndmin=2)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError("dataset.path", f"{file} cannot be read as a table: {exc}",
                              "a CSV with a header row of names and numbers below, .npy or .npz (x, y)") from exc
        columns = header or [str(i) for i in range(data.shape[1])]
        if isinstance(self.target, str) and self.target in columns:
            index = columns.index(self.target)
        elif isinstance(self.target, int) and -len(columns) <= self.target < len(columns):
            index = self.target % len(columns)
        else:
            raise ConfigError("dataset.target", f"no column {self.target!r} in {file.name}", ", ".join(columns))
        keep = [i for i in range(len(columns)) if i != index]
        self._read = (data[:, keep], data[:, index], [columns[i] for i in keep])
        return self._read

    def _classes(self) -> list[float] | None:
        """The target's distinct values when the task is classification."""
        import numpy as np

        y = self._table()[1]
        values = sorted(set(np.unique(y).tolist()))
        whole = all(float(v).is_integer() for v in values)
        task = self.wanted or ("classification" if whole and len(values) <= self.max_classes else "regression")
        return values if task == "classification" else None

    @property  # type: ignore[override]
    def task(self) -> str:
        return "regression" if self._classes() is None else "classification"

    @property  # type: ignore[override]
    def input_dim(self) -> int:
        return self._table()[0].shape[1]

    @property  # type: ignore[override]
    def num_classes(self) -> int | None:
        found = self._classes()
        return None if found is None else len(found)

    @property  # type: ignore[override]
    def class_names(self) -> tuple[str, ...] | None:
        found = self._classes()
        return None if found is None else tuple(f"{v:g}" for v in found)

    def rows(self) -> int:
        return len(self._table()[0])

    def check(self) -> None:
        if self.wanted not in (None, "regression", "classification"):
            raise ConfigError("dataset.task", f"got {self.wanted!r}", "null (inferred), regression, classification")
        count(self.max_classes, "max_classes", nullable=False)
        self._table()
        super().check()

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        x, y, _ = self._table()
        classes = self._classes()
        if classes is None:
            return x, y
        return x, np.searchsorted(np.asarray(classes), y)
