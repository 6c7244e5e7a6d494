"""Where the project lives on disk, independent of the working directory.

Hydra jobs may run in any directory (multirun, joblib workers, SLURM), so every
default path is anchored at the project root: the folder holding ``conf/``.
``OVERFIT_ROOT`` moves it (tests point it at a temporary copy).
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The project root: ``$OVERFIT_ROOT`` or the checkout this package lives in."""
    env = os.environ.get("OVERFIT_ROOT")
    return Path(env).resolve() if env else Path(__file__).resolve().parents[2]


def config_dir() -> Path:
    """Hydra's config root (``conf/``), always the checkout's own."""
    return Path(__file__).resolve().parents[2] / "conf"


def config_groups() -> tuple[str, ...]:
    """The config groups users pick options from: the folders of ``conf/``."""
    return tuple(sorted(d.name for d in config_dir().iterdir() if d.is_dir() and d.name != "hydra"))


def resolve(path: str | os.PathLike[str]) -> Path:
    """A user path: absolute as given, relative ones against the project root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


def default_tracking_uri() -> str:
    """The default local MLflow store: SQLite under ``<root>/mlruns``."""
    return f"sqlite:///{project_root() / 'mlruns' / 'mlflow.db'}"
