"""Config schemas (Hydra's ConfigStore) and the checks OmegaConf cannot express.

Each YAML option in ``conf/<group>/`` extends one schema below, so a wrong type
or an unknown key fails while Hydra composes. :func:`validate` adds the value
checks (λ ≥ 0, lr > 0, a loss that fits the task, ...) that need the whole
config; it runs for every job of a sweep before any MLflow run exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from overfit.data import datasets
from overfit.maths import features, losses, regularizers
from overfit.training import models, optimizers, trainer
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
    progress_bar: bool = False
    eval_every_n_epochs: int = 1


@dataclass
class TrackingConfig:
    uri: Optional[str] = None
    artifact_location: Optional[str] = None
    run_name: Optional[str] = None


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
    on the working directory.
    """
    from overfit import paths

    OmegaConf.register_new_resolver("project_root", lambda: str(paths.project_root()), replace=True)
    cs = ConfigStore.instance()
    for group, nodes in SCHEMAS.items():
        for name, node in nodes.items():
            cs.store(group=f"schema/{group}", name=name, node=node)


def validate(cfg: DictConfig) -> None:
    """Reject impossible values; each check raises one :class:`ConfigError`."""
    datasets.check(cfg.dataset)
    features.check(cfg.features, datasets.INPUT_DIMS[cfg.dataset.name])
    models.check(cfg.model)
    regularizers.check(cfg.regularizer)
    optimizers.check(cfg.optimizer)
    task = datasets.TASKS[cfg.dataset.name]
    num_classes = datasets.NUM_CLASSES.get(cfg.dataset.name)
    losses.check(cfg.loss, task, num_classes)
    trainer.check(cfg.trainer)
    if cfg.features.name == "seed_transform" and cfg.dataset.get("standardize", False):
        raise ConfigError(
            "dataset.standardize",
            "seed_transform works on the raw coordinates of the toy example",
            "false with features=seed_transform",
        )


def flatten(cfg: DictConfig, prefix: str = "") -> dict[str, Any]:
    """``{"optimizer.lr": 0.1, ...}``: the resolved config as MLflow params."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, DictConfig):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, ListConfig):
            out[name] = OmegaConf.to_container(value)
        else:
            out[name] = value
    return out


def _one_line(exc: Exception) -> ConfigError:
    """Hydra's and OmegaConf's multi-line composition errors as one ConfigError."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        options = ", ".join(sorted(exc.options or [])) or None
        return ConfigError(group or option, f"unknown option {option!r}", options)
    cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else exc
    key = getattr(cause, "full_key", None)
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    if isinstance(cause, OmegaConfBaseException) and key:
        problem = next((ln for ln in lines if not ln.startswith(("full_key", "object_type", "reference_type"))), lines[0])
        node = getattr(cause, "parent_node", None)
        if "not in" in problem and isinstance(node, DictConfig):
            option = node.get("name", "this option")
            return ConfigError(key, f"no such key for {option!r}", ", ".join(map(str, node.keys())))
        return ConfigError(key, problem)
    return ConfigError("overrides", " ".join(lines[:2]))


def compose_jobs(overrides: list[str], multirun: bool) -> list[DictConfig]:
    """Compose and validate every job a command would launch, before anything runs.

    A sweep is expanded the way Hydra's basic sweeper expands it, so a bad value
    in any sweep point stops the whole sweep before its parent run exists.
    """
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from overfit import paths

    register()
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:  # a typo in the command line
        raise _one_line(exc) from exc
    jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch] if multirun else [overrides]
    composed = []
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(paths.config_dir()), version_base="1.3", job_name="train"):
        for job in jobs:
            try:
                cfg = compose(config_name="train", overrides=list(job))
            except (HydraException, OmegaConfBaseException) as exc:
                raise _one_line(exc) from exc
            validate(cfg)
            composed.append(cfg)
    return composed
