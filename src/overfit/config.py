"""What a config may say, checked before any run exists.

The six component groups (``dataset``, ``features``, ``model``, ``loss``, ``regularizer``,
``optimizer``) are YAMLs with a ``_target_``: their callable's signature is their schema and
each component checks its own values (:mod:`overfit.training.parts`). ``trainer`` and
``tracking`` have dataclass schemas, checked the same way (keys and types). :func:`validate` adds the checks that need the whole config (a
loss that fits the task, layers that fit in memory). Checks of the machine itself (a GPU
present, how many) run in the job, where the work runs (:func:`overfit.training.trainer.check_machine`).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from overfit.errors import ConfigError


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
    log_model: str = "best"  # which runs get an MLflow LoggedModel: best | all | none (overfit.tracking.models)


# The groups that are not components, and their schemas: keys and types checked like a component's signature.
SCHEMAS: dict[str, type] = {"trainer": TrainerConfig, "tracking": TrackingConfig}


MAX_RETRY_SECONDS = 86_400.0  # a day: an outage deadline beyond that is a typo
MAX_SEED = 2**32 - 1  # the largest seed numpy and Lightning's seed_everything accept
# The experiment name becomes a folder under the artifact store: no separators, no leading dot, no control characters.
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_. -]{0,199}")
EXPERIMENT_ALLOWED = "letters, digits, _ . - and spaces, not starting with . - or a space, at most 200 characters"
RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # an MLflow run id (it ends up in search filters)


def validate(cfg: DictConfig, groups: bool = True) -> None:
    """Reject impossible values and unknown keys; each check raises one ConfigError.

    ``groups=False``: the keys and top-level values only, leaving :func:`check_groups` for later.
    """
    _check_keys(cfg)
    _check_top_level(cfg)
    if groups:
        check_groups(cfg)


@functools.cache
def _declared() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The top-level and ``sweep`` keys conf/train.yaml declares; ``hydra`` lives in Hydra's own view only."""
    from overfit import paths

    own = OmegaConf.load(paths.config_dir() / "train.yaml")
    top = tuple(key for key in own if key not in ("defaults", "hydra"))
    return top, tuple(own.get("sweep") or ())


def _groups() -> tuple[str, ...]:
    from overfit.training.parts import GROUPS

    return (*GROUPS, *SCHEMAS)


def _check_keys(cfg: DictConfig) -> None:
    """Keys added with ``+`` must exist in conf/train.yaml or the group's schema: nothing is silently ignored."""
    top, sweep = _declared()
    known = (*_groups(), *top)
    for key in cfg:
        if key not in (*known, "hydra"):
            raise ConfigError(str(key), "unknown top-level key", ", ".join(known))
    for key in known:
        if key not in cfg:
            raise ConfigError(key, "is missing (a ~ override removed it)", "a value: conf/train.yaml sets the default")
    from overfit.training.parts import check_signature

    for group, schema in SCHEMAS.items():
        node = cfg[group]
        if not isinstance(node, DictConfig):
            raise ConfigError(group, f"got {node!r}", "an option of conf/" + group)
        check_signature(group, group, schema, OmegaConf.to_container(node, resolve=True))
    if not isinstance(cfg.sweep, DictConfig):
        raise ConfigError("sweep", f"got {cfg.sweep!r}", "its keys: " + ", ".join(sweep))
    for key in cfg.sweep:
        if key not in sweep:
            raise ConfigError(f"sweep.{key}", "unknown key", ", ".join(sweep))


def _check_top_level(cfg: DictConfig) -> None:
    """seed, experiment_name, sweep.* and tracking: plain keys that no component owns."""
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
    replicates = cfg.sweep.get("replicates")
    if replicates != 1:  # a sweep turns it into its seed axis (overfit.compose.replicated): a job never sees another
        raise ConfigError("sweep.replicates", f"got {replicates!r} for one run",
                          "1, or with -m (overfit's grid sweeper) a whole number ≥ 1: the seeds of each point")
    wait = cfg.tracking.retry_seconds
    if not (isinstance(wait, (int, float)) and math.isfinite(wait) and 0 < wait <= MAX_RETRY_SECONDS):
        raise ConfigError("tracking.retry_seconds", f"got {wait!r}", f"a number of seconds in (0, {MAX_RETRY_SECONDS:g}]")
    from overfit.tracking.models import MODES

    if (mode := cfg.tracking.get("log_model", "best")) not in MODES:
        raise ConfigError("tracking.log_model", f"got {mode!r}",
                          "best (a single run and each sweep's winner), all (every finished point) or none")


def check_groups(cfg: DictConfig) -> None:
    """Each component's own checks, then what needs several: a loss that fits the data, sizes that fit in memory.

    Builds the components (no PyTorch): a sweep whose points are all reused never comes here.
    """
    from overfit.data.base import memory_budget
    from overfit.training import trainer
    from overfit.training.parts import build

    parts = build(cfg)
    data = parts.dataset
    data.check()
    d, n_train = data.input_dim, data.train_size()
    memory = memory_budget()
    parts.features.check(d, n_train, memory, data.standardize)
    parts.model.check()
    parts.regularizer.check()
    parts.loss.check(data.task, data.num_classes)
    width, outputs = parts.features.width(d), parts.loss.output_dim(data.task, data.num_classes, 1)
    parts.optimizer.check(parts.model.parameter_count(width, outputs) if width is not None else None, memory)
    trainer.check(cfg.trainer)
    if width is not None:
        parts.model.check_fit(width, outputs, n_train, parts.optimizer.batch_size, memory)
