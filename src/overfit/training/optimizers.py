"""The optimizer group: gradient descent and its relatives, all from torch.optim.

``batch_size: null`` means the full training set per step, i.e. plain gradient
descent; a number makes the same step minibatch SGD.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from omegaconf import DictConfig

from overfit.errors import ConfigError

OPTIMIZERS = ("gd", "sgd", "momentum", "adam", "lbfgs")


def build_optimizer(cfg: DictConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.name in ("gd", "sgd"):
        return torch.optim.SGD(params, lr=cfg.lr)
    if cfg.name == "momentum":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    return torch.optim.LBFGS(
        params,
        lr=cfg.lr,
        max_iter=cfg.max_iter,
        history_size=cfg.history_size,
        line_search_fn="strong_wolfe",
    )


def check(cfg: DictConfig) -> None:
    if cfg.name not in OPTIMIZERS:
        raise ConfigError("optimizer", f"unknown optimizer {cfg.name!r}", ", ".join(OPTIMIZERS))
    if not cfg.lr > 0:
        raise ConfigError("optimizer.lr", f"got {cfg.lr}", "a number > 0")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise ConfigError("optimizer.batch_size", f"got {cfg.batch_size}", "an integer ≥ 1, or null for the full batch")
    if cfg.name == "lbfgs" and cfg.batch_size is not None:
        raise ConfigError("optimizer.batch_size", "L-BFGS needs the full batch", "null with optimizer=lbfgs")
    if cfg.name == "momentum" and not 0 <= cfg.momentum < 1:
        raise ConfigError("optimizer.momentum", f"got {cfg.momentum}", "0 ≤ momentum < 1")
    if cfg.name == "lbfgs" and (cfg.max_iter < 1 or cfg.history_size < 1):
        raise ConfigError("optimizer.max_iter", "max_iter and history_size must be ≥ 1", "integers ≥ 1")
