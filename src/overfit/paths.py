"""Where the project lives on disk, independent of the working directory.

Hydra jobs may run in any directory (multirun, joblib workers, SLURM), so every default
path is anchored at the project root: ``$OVERFIT_ROOT``; else, run from a checkout, the
checkout; else (an installed package) the directory the command started in — exported as
``OVERFIT_ROOT`` to every job, so they all agree. The configs and studies ship inside the
package (``overfit.conf``, ``overfit.studies``), the checkout's ``conf/`` and ``pipelines/``.
"""

from __future__ import annotations

import os
from functools import cache
from importlib import resources
from pathlib import Path

CONFIG_PATH = "pkg://overfit.conf"  # Hydra's config path: the configs shipped with the package


@cache
def _checkout() -> Path | None:
    """The checkout this package runs from (an editable install), if it does."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "conf" / "train.yaml").is_file() else None


def project_root() -> Path:
    """``$OVERFIT_ROOT``, else the checkout, else the working directory."""
    env = os.environ.get("OVERFIT_ROOT")
    if env:
        return Path(env).resolve()
    return _checkout() or Path.cwd().resolve()


def config_dir() -> Path:
    """The shipped config root (``overfit.conf``: the checkout's ``conf/``)."""
    return Path(str(resources.files("overfit.conf")))


def studies_dir() -> Path:
    """The shipped studies (``overfit.studies``: the checkout's ``pipelines/``)."""
    return Path(str(resources.files("overfit.studies")))


def config_groups() -> tuple[str, ...]:
    """The config groups users pick options from: the folders of ``conf/``."""
    return tuple(sorted(d.name for d in config_dir().iterdir() if d.is_dir() and d.name not in ("hydra", "__pycache__")))


def resolve(path: str | os.PathLike[str]) -> Path:
    """A user path: absolute as given, relative ones against the project root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


def default_tracking_uri() -> str:
    """The default local MLflow store: SQLite under ``<root>/mlruns``."""
    return f"sqlite:///{project_root() / 'mlruns' / 'mlflow.db'}"
