"""Config schemas (Hydra's ConfigStore) and the checks OmegaConf cannot express.

Each YAML option in ``conf/<group>/`` extends one schema below, so a wrong type
or an unknown key fails while Hydra composes. :func:`validate` adds the value
checks (λ ≥ 0, lr > 0, a loss that fits the task, ...) that need the whole
config; it runs for every job of a sweep before any MLflow run exists.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from overfit.errors import ConfigError


# --- dataset ---------------------------------------------------------------
@dataclass
class LineData:
    name: str = "line"
    standardize: bool = True


@dataclass
class PolynomialData:
    name: str = "polynomial"
    standardize: bool = True
    n_train: int = 20
    n_val: int = 100
    n_test: int = 1000
    noise: float = 0.2
    target: str = "cubic"
    x_min: float = -1.0
    x_max: float = 1.0


@dataclass
class XorData:
    name: str = "xor"
    standardize: bool = False


@dataclass
class TabularData:
    name: str = "digits"
    standardize: bool = True
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    n_train: Optional[int] = None


@dataclass
class VisionData:
    name: str = "mnist"
    standardize: bool = True
    root: str = "data"
    download: bool = False
    val_size: int = 5000
    n_train: Optional[int] = None


# --- features, model, loss, regularizer, optimizer ---------------------------
@dataclass
class FeaturesConfig:
    name: str = "identity"


@dataclass
class PolynomialFeatures:
    name: str = "polynomial"
    order: int = 3
    basis: str = "orthonormal"


@dataclass
class LinearModel:
    name: str = "linear"


@dataclass
class MLPModel:
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [128])
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False


@dataclass
class LossConfig:
    name: str = "mse"
    output: str = "identity"
    gradient: str = "autograd"


@dataclass
class RegularizerConfig:
    name: str = "none"
    strength: float = 0.0


@dataclass
class ElasticNetConfig(RegularizerConfig):
    beta: Optional[float] = None


@dataclass
class MaxNormConfig(RegularizerConfig):
    c: float = 3.0


@dataclass
class OptimizerConfig:
    name: str = "sgd"
    lr: float = 0.1
    batch_size: Optional[int] = None


@dataclass
class MomentumConfig(OptimizerConfig):
    momentum: float = 0.9


@dataclass
class AdamConfig(OptimizerConfig):
    beta1: float = 0.9
    beta2: float = 0.999


@dataclass
class LBFGSConfig(OptimizerConfig):
    max_iter: int = 20
    history_size: int = 100


# --- trainer, tracking --------------------------------------------------------
@dataclass
class TrainerConfig:
    max_epochs: int = 100
    accelerator: str = "auto"
    devices: Any = 1
    precision: str = "32-true"
    deterministic: bool = False
    checkpoint: bool = True
    checkpoint_every_n_epochs: int = 50
    checkpoint_every_seconds: float = 60.0
    progress_bar: bool = False
    eval_every_n_epochs: int = 1


@dataclass
class TrackingConfig:
    uri: Optional[str] = None
    retry_seconds: float = 120.0  # how long an outage of the store may last before a run gives up on it


SCHEMAS: dict[str, dict[str, type]] = {
    "dataset": {
        "line": LineData,
        "polynomial": PolynomialData,
        "xor": XorData,
        "tabular": TabularData,
        "vision": VisionData,
    },
    "features": {"base": FeaturesConfig, "polynomial": PolynomialFeatures},
    "model": {"linear": LinearModel, "mlp": MLPModel},
    "loss": {"base": LossConfig},
    "regularizer": {
        "base": RegularizerConfig,
        "elastic_net": ElasticNetConfig,
        "max_norm": MaxNormConfig,
    },
    "optimizer": {
        "base": OptimizerConfig,
        "momentum": MomentumConfig,
        "adam": AdamConfig,
        "lbfgs": LBFGSConfig,
    },
    "trainer": {"base": TrainerConfig},
    "tracking": {"base": TrackingConfig},
}


def register() -> None:
    """Store every schema as ``schema/<group>/<name>`` for the YAML files to extend.

    Also registers ``${project_root:}``, so Hydra's output folders never depend
    on the working directory, and ``hydra/launcher=slurm``'s schema and resolvers.
    """
    from overfit import paths
    from overfit.cluster import schema

    OmegaConf.register_new_resolver("project_root", lambda: str(paths.project_root()), replace=True)
    cs = ConfigStore.instance()
    for group, nodes in SCHEMAS.items():
        for name, node in nodes.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
    schema.register()


MAX_RETRY_SECONDS = 86_400.0  # a day: an outage deadline beyond that is a typo
MAX_SEED = 2**32 - 1  # the largest seed numpy and Lightning's seed_everything accept
# The experiment name becomes a folder under the artifact store: no separators, no leading dot, no control characters.
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_. -]{0,199}")
EXPERIMENT_ALLOWED = "letters, digits, _ . - and spaces, not starting with . - or a space, at most 200 characters"
RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # an MLflow run id (it ends up in search filters)


def validate(cfg: DictConfig, groups: bool = True) -> None:
    """Reject impossible values, unknown keys and what this machine cannot run; each check raises one ConfigError.

    ``groups=False``: the keys and top-level values only, leaving :func:`check_groups` for later.
    """
    _check_keys(cfg)
    _check_top_level(cfg)
    if groups:
        check_groups(cfg)


def check_groups(cfg: DictConfig) -> None:
    """Each group's values, and whether data, features, model and optimizer fit this machine."""
    try:
        _check_groups(cfg)
    except (ConfigAttributeError, ConfigKeyError) as err:  # e.g. optimizer.name=lbfgs on the sgd option
        group = str(err.full_key).split(".")[0]
        if group not in SCHEMAS:
            raise
        name = cfg[group].get("name")
        problem = f"{name!r} needs {err.full_key}, which the composed {group} option lacks"
        raise ConfigError(f"{group}.name", problem, f"choose the option itself: {group}={name}") from err


@functools.cache
def _declared() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The top-level and ``sweep`` keys conf/train.yaml declares; ``hydra`` lives in Hydra's own view only."""
    from overfit import paths

    own = OmegaConf.load(paths.config_dir() / "train.yaml")
    top = tuple(key for key in own if key not in ("defaults", "hydra"))
    return (*SCHEMAS, *top), tuple(own.get("sweep") or ())


def _check_keys(cfg: DictConfig) -> None:
    """Keys added with ``+`` must exist in conf/train.yaml or the option's schema: nothing is silently ignored."""
    top, sweep = _declared()
    for key in cfg:
        if key not in (*top, "hydra"):
            raise ConfigError(str(key), "unknown top-level key", ", ".join(top))
    for key in top:
        if key not in cfg:
            raise ConfigError(key, "is missing (a ~ override removed it)", "a value: conf/train.yaml sets the default")
    for group in SCHEMAS:
        node = cfg[group]
        schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
        if not is_dataclass(schema):
            raise ConfigError(group, f"got {node!r}", "an option of conf/" + group)
        known = [f.name for f in fields(schema)]
        for key in node:
            if key not in known:
                raise ConfigError(f"{group}.{key}", f"no such key for {node.get('name', group)!r}", ", ".join(known))
    if not isinstance(cfg.sweep, DictConfig):
        raise ConfigError("sweep", f"got {cfg.sweep!r}", "its keys: " + ", ".join(sweep))
    for key in cfg.sweep:
        if key not in sweep:
            raise ConfigError(f"sweep.{key}", "unknown key", ", ".join(sweep))


def _check_top_level(cfg: DictConfig) -> None:
    """seed, experiment_name and sweep.*: plain keys of conf/train.yaml that no schema types."""
    seed = cfg.seed
    if type(seed) is not int or not 0 <= seed <= MAX_SEED:
        raise ConfigError("seed", f"got {seed!r}", f"an integer in [0, {MAX_SEED}]")
    name = cfg.experiment_name
    if not isinstance(name, str) or not EXPERIMENT_NAME.fullmatch(name):
        raise ConfigError("experiment_name", f"got {name!r}", EXPERIMENT_ALLOWED)
    for flag in ("rerun", "vectorize"):
        if not isinstance(cfg.sweep.get(flag), bool):
            raise ConfigError(f"sweep.{flag}", f"got {cfg.sweep.get(flag)!r}", "true or false")
    parent = cfg.sweep.get("parent_run_id")
    if parent is not None and not (isinstance(parent, str) and RUN_ID.fullmatch(parent)):
        raise ConfigError("sweep.parent_run_id", f"got {parent!r}", "null or an MLflow run id")
    most = cfg.sweep.get("max_points")
    if type(most) is not int or most < 1:
        raise ConfigError("sweep.max_points", f"got {most!r}", "an integer >= 1")
    wait = cfg.tracking.retry_seconds
    if not (isinstance(wait, (int, float)) and math.isfinite(wait) and 0 < wait <= MAX_RETRY_SECONDS):
        raise ConfigError("tracking.retry_seconds", f"got {wait!r}", f"a number of seconds in (0, {MAX_RETRY_SECONDS:g}]")


def _check_groups(cfg: DictConfig) -> None:
    """Each group's own check, then what needs several groups: do data, features, model and optimizer fit in memory.

    The group modules (and PyTorch with them) are imported here, not with the schemas: a sweep whose
    points are all reused composes its configs without them.
    """
    from overfit.data import datasets
    from overfit.maths import features, losses, regularizers
    from overfit.training import models, optimizers, trainer

    datasets.check(cfg.dataset)
    d, n_train = datasets.INPUT_DIMS[cfg.dataset.name], datasets.train_size(cfg.dataset)
    memory = datasets.memory_budget()
    features.check(cfg.features, d, n_train, memory)
    models.check(cfg.model)
    regularizers.check(cfg.regularizer)
    task, num_classes = datasets.TASKS[cfg.dataset.name], datasets.NUM_CLASSES.get(cfg.dataset.name)
    width, outputs = features.width(cfg.features, d), num_classes or 1
    optimizers.check(cfg.optimizer, models.parameter_count(cfg.model, width, outputs), memory)
    losses.check(cfg.loss, task, num_classes)
    trainer.check(cfg.trainer)
    if cfg.features.name == "seed_transform" and cfg.dataset.get("standardize", False):
        raise ConfigError(
            "dataset.standardize",
            "seed_transform works on the raw coordinates of the toy example",
            "false with features=seed_transform",
        )
    models.check_fit(cfg.model, width, outputs, n_train, cfg.optimizer.batch_size, memory)
