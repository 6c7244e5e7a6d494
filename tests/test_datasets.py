"""Datasets: shapes, reproducible splits, the syllabus examples, offline image files, bad input."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from fakes import accept_fake_cifar10, write_cifar10, write_mnist
from overfit import paths
from overfit.data import base, images
from overfit.data.base import Dataset
from overfit.errors import ConfigError
from overfit.training.parts import component

IMAGES = ("mnist", "fashion_mnist", "cifar10")
SHIPPED = ("line", "polynomial", "xor", "digits", "breast_cancer", "mnist", "fashion_mnist", "cifar10", "table")


def config(name: str, **overrides) -> dict:
    """conf/dataset/<name>.yaml with ``overrides``, as the dataset group's node."""
    node = OmegaConf.load(paths.config_dir() / "dataset" / f"{name}.yaml")
    node.pop("defaults", None)
    return {**OmegaConf.to_container(node), **overrides}


def dataset(name: str, **overrides) -> Dataset:
    return component(OmegaConf.create({"dataset": config(name, **overrides)}), "dataset")


@pytest.fixture
def image_root(tmp_path, monkeypatch):
    """Fake MNIST, FashionMNIST (200 train / 50 test) and CIFAR-10 (200 / 40) files, found via a relative root."""
    write_mnist(tmp_path / "data", kind="MNIST")
    write_mnist(tmp_path / "data", kind="FashionMNIST", seed=1)
    write_cifar10(tmp_path / "data", n_per_batch=40)
    accept_fake_cifar10(monkeypatch)
    monkeypatch.setenv("OVERFIT_ROOT", str(tmp_path))
    return tmp_path


def load(name: str, seed: int = 0, **overrides) -> base.Splits:
    if name in IMAGES:
        overrides.setdefault("val_size", 30)
    return dataset(name, **overrides).load(seed)


def test_every_shipped_option_is_a_component_with_a_target() -> None:
    found = sorted(p.stem for p in (paths.config_dir() / "dataset").glob("*.yaml"))
    assert found == sorted(SHIPPED)
    for name in found:
        assert isinstance(dataset(name), Dataset), name


@pytest.mark.parametrize(
    "name, dims, sizes, classes",
    [
        ("line", (1, 1), (4, 1, 1), None),
        ("polynomial", (1, 1), (20, 100, 1000), None),
        ("xor", (2, 1), (4, 4, 4), 2),
        ("digits", (64, 1), (1079, 359, 359), 10),
        ("breast_cancer", (30, 1), (341, 114, 114), 2),
        ("mnist", (784, 1), (170, 30, 50), 10),
        ("fashion_mnist", (784, 1), (170, 30, 50), 10),
        ("cifar10", (3072, 1), (170, 30, 40), 10),
    ],
)
def test_shapes_dtypes_and_task(image_root, name, dims, sizes, classes):
    s = load(name)
    assert s.task == dataset(name).task
    assert (s.input_dim, s.target_dim) == dims
    assert (len(s.x_train), len(s.x_val), len(s.x_test)) == sizes
    assert s.num_classes == classes
    for x, y in ((s.x_train, s.y_train), (s.x_val, s.y_val), (s.x_test, s.y_test)):
        assert x.dtype == torch.float32 and x.device.type == "cpu" and x.shape == (len(y), s.input_dim)
        if s.task == "regression":
            assert y.dtype == torch.float32 and y.shape == (len(x), 1)
        else:
            assert y.dtype == torch.int64 and y.ndim == 1 and 0 <= y.min() and y.max() < classes
    if classes is not None:
        assert len(s.class_names) == classes
    if name in IMAGES or name == "digits":
        assert 0.0 <= s.x_train.min() and s.x_train.max() <= 1.0


def test_class_names():
    assert load("digits").class_names == tuple("0123456789")
    assert load("breast_cancer").class_names == ("malignant", "benign")


def test_image_class_names(image_root):
    assert load("mnist").class_names == tuple("0123456789")
    assert load("fashion_mnist").class_names[0] == "T-shirt/top"
    syllabus = "airplane automobile bird cat deer dog frog horse ship truck".split()
    assert load("cifar10").class_names == tuple(syllabus)


def test_fake_images_round_trip_through_torchvision(image_root):
    """The flattened tensors are torchvision's own pixels (CIFAR in CHW order), scaled to [0, 1]."""
    import torchvision.datasets

    raw = torchvision.datasets.CIFAR10(image_root / "data", train=False)
    s = load("cifar10")
    assert torch.equal(s.x_test[0].reshape(3, 32, 32), torch.as_tensor(raw.data[0]).permute(2, 0, 1) / 255.0)
    assert s.y_test.tolist() == raw.targets


def test_line_matches_syllabus():
    s = load("line")
    assert s.x_train.flatten().tolist() == [2, 4, 6, 8] and s.y_train.flatten().tolist() == [3, 4, 5, 6]
    for x, y in ((s.x_val, s.y_val), (s.x_test, s.y_test)):
        assert x.tolist() == [[10.0]] and y.tolist() == [[7.0]]


def test_xor_matches_syllabus():
    s = load("xor")
    points = [[0, 0], [1, 0], [0, 1], [1, 1]]  # a, b, c, d
    for x, y in ((s.x_train, s.y_train), (s.x_val, s.y_val), (s.x_test, s.y_test)):
        assert x.tolist() == points and y.tolist() == [0, 1, 1, 0]


@pytest.mark.parametrize("name", ["polynomial", "digits", "breast_cancer", "mnist", "cifar10"])
def test_splits_reproducible_per_seed_and_differ_across_seeds(image_root, name):
    a, b, c = load(name, seed=3), load(name, seed=3), load(name, seed=4)
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.x_train, c.x_train) and not torch.equal(a.x_val, c.x_val)
    # Replicates are scored on the same test set: the seed redraws training and validation data only.
    assert torch.equal(a.x_test, c.x_test) and torch.equal(a.y_test, c.y_test)


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "mnist", "fashion_mnist", "cifar10"])
def test_n_train_nests_and_keeps_val_and_test(image_root, name):
    small, large, full = load(name, n_train=10), load(name, n_train=50), load(name)
    assert len(small.x_train) == 10 and len(large.x_train) == 50
    assert torch.equal(large.x_train[:10], small.x_train) and torch.equal(full.x_train[:50], large.x_train)
    assert torch.equal(small.x_val, full.x_val) and torch.equal(small.x_test, full.x_test)


def test_polynomial_n_train_leaves_val_and_test_alone():
    small, large = load("polynomial", n_train=10), load("polynomial", n_train=40)
    assert len(small.x_train) == 10 and len(large.x_train) == 40
    assert torch.equal(small.x_val, large.x_val) and torch.equal(small.y_test, large.y_test)


def test_polynomial_range_noise_and_sine():
    s = load("polynomial", x_min=2.0, x_max=3.0, noise=0.0, target="sine")
    assert 2.0 <= s.x_train.min() and s.x_test.max() <= 3.0
    assert torch.allclose(s.y_test, torch.sin(torch.pi * s.x_test), atol=1e-5)
    noisy = load("polynomial")
    x = noisy.x_test.double()
    clean = 1.5 * x**3 - 0.5 * x**2 - x + 0.3
    assert 0.15 < (noisy.y_test - clean).std() < 0.25  # test noise is there too


def _least_squares_errors(s: base.Splits, order: int) -> tuple[float, float]:
    """Train and test MSE of the closed-form least-squares polynomial fit (Legendre basis, well conditioned)."""
    x, y = s.x_train[:, 0].double().numpy(), s.y_train[:, 0].double().numpy()
    xt, yt = s.x_test[:, 0].double().numpy(), s.y_test[:, 0].double().numpy()
    w, *_ = np.linalg.lstsq(np.polynomial.legendre.legvander(x, order), y, rcond=None)
    train = np.mean((np.polynomial.legendre.legvander(x, order) @ w - y) ** 2)
    test = np.mean((np.polynomial.legendre.legvander(xt, order) @ w - yt) ** 2)
    return float(train), float(test)


@pytest.mark.parametrize("seed", range(5))
def test_polynomial_defaults_show_under_and_over_fitting(seed):
    """The dataset's purpose (syllabus section 2): orders 1-2 under-fit, 3-4 generalize best, 12 over-fits."""
    s = load("polynomial", seed=seed)
    train, test = zip(*(_least_squares_errors(s, k) for k in (1, 2, 3, 4, 12)))
    errors = dict(zip((1, 2, 3, 4, 12), test))
    assert min(errors, key=errors.get) in (3, 4)
    assert train[4] < train[2] < train[0]  # order 12 < order 3 < order 1 on the training set
    assert errors[12] > errors[3]


def test_missing_mnist_says_how_to_get_it(tmp_path):
    data = dataset("mnist", root=str(tmp_path / "nowhere"))
    for call in (data.check, lambda: data.load(0)):
        with pytest.raises(ConfigError) as err:
            call()
        assert err.value.key == "dataset.root"
        assert "MNIST not found" in str(err.value) and "dataset.download=true" in str(err.value)


def test_check_needs_no_torchvision_when_files_are_missing(tmp_path):
    """check() runs at compose time; it only looks for the expected files."""
    import subprocess
    import sys

    code = (
        "import sys; from overfit import errors; from overfit.data.images import CIFAR10\n"
        f"try: CIFAR10(root={str(tmp_path)!r}).check()\nexcept errors.ConfigError: pass\n"
        "assert 'torchvision' not in sys.modules and 'sklearn' not in sys.modules and 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_corrupt_cifar_is_a_config_error(tmp_path):
    """Without the test-only md5 bypass, fake files fail torchvision's check: one clear error, not a traceback."""
    write_cifar10(tmp_path, n_per_batch=10)
    data = dataset("cifar10", root=str(tmp_path), val_size=5)
    data.check()  # the files are there
    with pytest.raises(ConfigError, match="CIFAR10 not found or corrupted") as err:
        data.load(0)
    assert err.value.key == "dataset.root"


def test_download_true_needs_the_host_not_the_files(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "unreachable", lambda host, port: None)
    dataset("mnist", root=str(tmp_path), download=True).check()
    monkeypatch.setattr(images, "unreachable", lambda host, port: "timed out")
    with pytest.raises(ConfigError, match="no network: cannot reach ossci-datasets.s3.amazonaws.com:443") as err:
        dataset("mnist", root=str(tmp_path), download=True).check()
    assert err.value.key == "dataset.download"


def test_the_network_probe_is_bounded_and_cached(monkeypatch):
    """DNS has no timeout of its own: a resolver that hangs costs NETWORK_TIMEOUT_S once per process, no more."""
    import socket
    import threading
    import time

    hang = threading.Event()

    def hanging(*args, **kwargs):
        hang.wait(30)
        raise OSError("released")  # the abandoned probe ends quietly once the test lets it go

    monkeypatch.setattr(socket, "create_connection", hanging)
    monkeypatch.setattr(images, "NETWORK_TIMEOUT_S", 0.2)
    images.unreachable.cache_clear()
    try:
        start = time.monotonic()
        assert "no answer within 0.2 s" in images.unreachable("example.invalid", 443)
        assert images.unreachable("example.invalid", 443) is not None
        assert time.monotonic() - start < 2
    finally:
        hang.set()
        images.unreachable.cache_clear()


@pytest.mark.parametrize(
    "name, overrides, key",
    [
        ("polynomial", dict(_target_="overfit.data.synthetic.Nope"), "dataset._target_"),
        ("polynomial", dict(order=3), "dataset.order"),
        ("polynomial", dict(n_train=1e9), "dataset.n_train"),
        ("polynomial", dict(noise=-0.1), "dataset.noise"),
        ("polynomial", dict(noise=float("inf")), "dataset.noise"),
        ("polynomial", dict(x_max=1e300), "dataset.x_max"),
        ("polynomial", dict(x_min=float("nan")), "dataset.x_min"),
        ("polynomial", dict(x_min=1.0, x_max=1.0), "dataset.x_min"),
        ("polynomial", dict(target="quartic"), "dataset.target"),
        ("polynomial", dict(n_train=0), "dataset.n_train"),
        ("polynomial", dict(n_val=0), "dataset.n_val"),
        ("polynomial", dict(n_test=-1), "dataset.n_test"),
        ("polynomial", dict(n_train=None), "dataset.n_train"),
        ("table", dict(path="nowhere.csv"), "dataset.path"),
        ("digits", dict(val_fraction=0.0), "dataset.val_fraction"),
        ("digits", dict(test_fraction=1.0), "dataset.test_fraction"),
        ("digits", dict(val_fraction=0.5, test_fraction=0.5), "dataset.val_fraction"),
        ("digits", dict(test_fraction=0.001), "dataset.test_fraction"),
        ("digits", dict(n_train=0), "dataset.n_train"),
        ("digits", dict(n_train=1080), "dataset.n_train"),
        ("breast_cancer", dict(n_train=342), "dataset.n_train"),
        ("mnist", dict(val_size=0), "dataset.val_size"),
        ("mnist", dict(val_size=60_000), "dataset.val_size"),
        ("mnist", dict(n_train=55_001), "dataset.n_train"),
        ("cifar10", dict(n_train=45_001), "dataset.n_train"),
        ("fashion_mnist", dict(n_train=0), "dataset.n_train"),
    ],
)
def test_check_rejects_bad_values(name, overrides, key):
    with pytest.raises(ConfigError) as err:
        dataset(name, **overrides).check()
    assert err.value.key == key and "\n" not in str(err.value)


def test_check_accepts_the_defaults(image_root):
    for name in SHIPPED:  # the fake image files hold 200 training images: val_size 5000 would not fit
        if name != "table":
            dataset(name, **({"val_size": 30} if name in IMAGES else {})).check()


@pytest.mark.parametrize("name", IMAGES)
def test_sizes_beyond_the_files_fail_at_check(image_root, name):
    """The fake files hold 200 training images: check reads the count from the files, before any run exists."""
    with pytest.raises(ConfigError, match="170 training points") as err:
        dataset(name, val_size=30, n_train=171).check()
    assert err.value.key == "dataset.n_train"
    with pytest.raises(ConfigError, match="none of the 200 training images") as err:
        dataset(name, val_size=200).check()
    assert err.value.key == "dataset.val_size"
    assert dataset(name, val_size=30).train_size() == 170


def _corrupt(kind: str, data: bytes) -> bytes:
    """A damaged copy of a valid file's bytes."""
    import pickle
    import struct

    if kind == "empty":
        return b""
    if kind == "truncated":
        return data[: len(data) // 2]
    if kind == "magic":
        return struct.pack(">I", 0x0D0A0D0A) + data[4:]
    if kind == "extra":
        return data + b"\0"
    if kind == "dims":  # an images header that says 27 columns
        return data[:12] + struct.pack(">I", 27) + data[16:]
    if kind == "label":
        return data[:-1] + bytes([10])
    if kind == "shape":
        batch = pickle.loads(data, encoding="latin1")
        return pickle.dumps({**batch, "data": batch["data"][:, :100]})
    if kind == "labels":
        batch = pickle.loads(data, encoding="latin1")
        return pickle.dumps({**batch, "labels": batch["labels"][:-1]})
    if kind == "meta":
        return pickle.dumps({"label_names": ["cat"]})
    if kind == "code":  # a pickle that would run a command: refused, never executed
        return b"cos\nsystem\n(S'touch /tmp/overfit-pwned'\ntR."
    raise ValueError(kind)


@pytest.mark.parametrize(
    "name, file, kind, fragment",
    [
        ("mnist", "MNIST/raw/train-images-idx3-ubyte", "empty", "empty or truncated"),
        ("mnist", "MNIST/raw/train-images-idx3-ubyte", "truncated", "its header says"),
        ("mnist", "MNIST/raw/train-images-idx3-ubyte", "magic", "magic number 0x0d0a0d0a, not 0x00000803"),
        ("mnist", "MNIST/raw/train-images-idx3-ubyte", "extra", "its header says"),
        ("mnist", "MNIST/raw/train-images-idx3-ubyte", "dims", "not 28x28"),
        ("mnist", "MNIST/raw/train-labels-idx1-ubyte", "empty", "empty or truncated"),
        ("mnist", "MNIST/raw/train-labels-idx1-ubyte", "magic", "not 0x00000801"),
        ("mnist", "MNIST/raw/t10k-labels-idx1-ubyte", "label", "labels outside 0..9"),
        ("mnist", "MNIST/raw/t10k-images-idx3-ubyte", "truncated", "t10k-images-idx3-ubyte has"),
        ("fashion_mnist", "FashionMNIST/raw/train-images-idx3-ubyte", "empty", "empty or truncated"),
        ("cifar10", "cifar-10-batches-py/data_batch_3", "empty", "not a readable pickle (EOFError)"),
        ("cifar10", "cifar-10-batches-py/data_batch_1", "truncated", "not a readable pickle"),
        ("cifar10", "cifar-10-batches-py/test_batch", "shape", "no N x 3072 uint8 'data' array"),
        ("cifar10", "cifar-10-batches-py/data_batch_5", "labels", "no list of 40 labels"),
        ("cifar10", "cifar-10-batches-py/batches.meta", "meta", "lacks the 10 label_names"),
        ("cifar10", "cifar-10-batches-py/data_batch_2", "code", "not a readable pickle (UnpicklingError)"),
    ],
)
def test_corrupt_files_fail_at_check_in_one_line(image_root, name, file, kind, fragment):
    path = image_root / "data" / file
    path.write_bytes(_corrupt(kind, path.read_bytes()))
    for download in (False, True):  # torchvision downloads nothing when the files are there
        with pytest.raises(ConfigError) as err:
            dataset(name, val_size=30, download=download).check()
        assert err.value.key == "dataset.root" and fragment in str(err.value) and "corrupt" in str(err.value)
        assert "\n" not in str(err.value)
    assert not Path("/tmp/overfit-pwned").exists()


def test_image_and_label_counts_must_agree(tmp_path):
    write_mnist(tmp_path, n_train=200)
    other = write_mnist(tmp_path / "other", n_train=150)
    raw = "MNIST/raw/train-labels-idx1-ubyte"
    (tmp_path / raw).write_bytes((other / raw).read_bytes())
    with pytest.raises(ConfigError, match="disagree on the number of examples"):
        dataset("mnist", root=str(tmp_path), val_size=30).check()


def test_files_are_read_once_while_unchanged(image_root, monkeypatch):
    """A 180-point sweep validates every point: each file is parsed once per process, again only when it changes."""
    dataset("cifar10", val_size=30).check()
    calls = []
    monkeypatch.setattr(images, "_cifar_examples", lambda path: calls.append(path) or 40)
    for _ in range(3):
        dataset("cifar10", val_size=30).check()
    assert calls == []
    batch = image_root / "data" / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes() + b".")  # changed size: read again
    dataset("cifar10", val_size=30).check()
    assert calls == [batch]


def test_relative_root_is_relative_to_the_project_not_the_cwd(image_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path / "data")
    assert len(load("mnist").x_train) == 170


def test_to_moves_every_tensor():
    s = load("xor").to("meta")
    assert all(t.device.type == "meta" for t in (s.x_train, s.y_train, s.x_val, s.y_val, s.x_test, s.y_test))
    assert s.num_classes == 2 and s.class_names == ("0", "1")


@pytest.mark.parametrize("kind,name", [("MNIST", "mnist"), ("FashionMNIST", "fashion_mnist")])
@pytest.mark.parametrize("gzipped", [True, False])
def test_the_original_idx_files_are_read_where_they_lie(kind, name, gzipped, tmp_path, monkeypatch):
    """As Debian's dataset-fashion-mnist installs them: the four files, gzipped, in one folder of their own."""
    write_mnist(tmp_path / "tv", kind=kind)
    flat = tmp_path / "flat"
    flat.mkdir()
    for file in (tmp_path / "tv" / kind / "raw").iterdir():
        if gzipped:
            with gzip.open(flat / f"{file.name}.gz", "wb") as out:
                out.write(file.read_bytes())
        else:
            shutil.copy(file, flat / file.name)
    monkeypatch.setenv("OVERFIT_ROOT", str(tmp_path))
    ours = dataset(name, root=str(flat), val_size=30)
    ours.check()
    assert ours.train_size() == 170
    theirs = load(name, root=str(tmp_path / "tv"))
    mine = ours.load(0)
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(mine, field), getattr(theirs, field)), field
    broken = flat / ("train-labels-idx1-ubyte.gz" if gzipped else "train-labels-idx1-ubyte")
    broken.write_bytes(broken.read_bytes()[:5])
    with pytest.raises(ConfigError, match="corrupt") as err:
        dataset(name, root=str(flat), val_size=30).check()
    assert err.value.key == "dataset.root"


def test_a_csv_table_of_your_own(tmp_path, monkeypatch):
    monkeypatch.setenv("OVERFIT_ROOT", str(tmp_path))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    rows = ["a,b,price,c"] + [f"{a},{b},{2 * a - b + 0.1 * c:.6f},{c}" for a, b, c in x]
    (tmp_path / "houses.csv").write_text("\n".join(rows) + "\n")
    table = dataset("table", path="houses.csv", target="price")
    table.check()
    assert (table.task, table.input_dim, table.num_classes) == ("regression", 3, None)
    s = table.load(1)
    assert s.y_train.shape == (len(s.x_train), 1) and len(s.x_train) + len(s.x_val) + len(s.x_test) == 200
    assert torch.equal(s.x_test, table.load(2).x_test)  # the test split is the same for every seed
    with pytest.raises(ConfigError, match="no column 'cost'") as err:
        dataset("table", path="houses.csv", target="cost").check()
    assert err.value.key == "dataset.target" and "price" in str(err.value)


def test_a_numpy_table_with_classes(tmp_path, monkeypatch):
    monkeypatch.setenv("OVERFIT_ROOT", str(tmp_path))
    x = np.random.default_rng(0).normal(size=(300, 4))
    np.savez(tmp_path / "t.npz", x=x, y=(x[:, 0] > 0).astype(int) + 3)  # labels 3 and 4
    table = dataset("table", path=str(tmp_path / "t.npz"))
    assert (table.task, table.num_classes, table.class_names) == ("classification", 2, ("3", "4"))
    s = table.load(0)
    assert set(s.y_train.tolist()) == {0, 1} and s.y_train.dtype == torch.int64


def my_loader(seed: int, n: int = 30) -> tuple:
    """A loader of a user's: any callable taking seed= and returning the six arrays."""
    gen = np.random.default_rng(seed)
    xs = [gen.normal(size=(k, 2)) for k in (n, 10, 10)]
    return tuple(v for x in xs for v in (x, (x[:, 0] > 0).astype(np.int64)))


def test_a_loader_of_your_own_is_a_dataset():
    data = component(OmegaConf.create({"dataset": {"_target_": f"{__name__}.my_loader", "n": 40}}), "dataset")
    data.check()
    assert (data.task, data.input_dim, data.num_classes, data.train_size()) == ("classification", 2, 2, 40)
    assert len(data.load(3).x_train) == 40
    with pytest.raises(ConfigError) as err:
        component(OmegaConf.create({"dataset": {"_target_": f"{__name__}.my_loader", "m": 1}}), "dataset")
    assert err.value.key == "dataset.m" and "seed, n" in str(err.value)


def test_no_dataset_module_imports_torch_until_it_loads() -> None:
    import subprocess
    import sys

    code = ("import sys; import overfit.data.base, overfit.data.synthetic, overfit.data.tabular, overfit.data.images\n"
            "assert 'torch' not in sys.modules, 'torch'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
