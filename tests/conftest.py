"""Shared fixtures: every test gets its own project root, store and data folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated, empty MLflow database, copied into each test's root (migrating takes seconds)."""
    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture()
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_store: Path) -> Path:
    """A fresh project root: the default store is ``<root>/mlruns/mlflow.db``."""
    (tmp_path / "mlruns").mkdir()
    shutil.copy(empty_store, tmp_path / "mlruns" / "mlflow.db")
    monkeypatch.setenv("OVERFIT_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture()
def store(root: Path) -> MlflowClient:
    """A client on the root's default store."""
    return MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
