"""The optimizer group: gradient descent and its relatives, all from torch.optim.

``batch_size: null`` means the full training set per step, i.e. plain gradient
descent; a number makes the same step minibatch SGD.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from omegaconf import DictConfig

from overfit.errors import ConfigError

OPTIMIZERS = ("gd", "sgd", "momentum", "adam", "lbfgs")
MAX_LR = 3.4e38  # the largest float32: torch casts lr to the parameters' dtype and overflows beyond it
MAX_ITER = 10_000  # L-BFGS iterations per step: each one is a full forward and backward pass
MAX_HISTORY = 10_000  # L-BFGS keeps 2 × history_size copies of the parameters


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


def check(cfg: DictConfig, parameters: int | None = None, memory: int | None = None) -> None:
    """Reject settings torch.optim would refuse or choke on before anything runs.

    With the model's ``parameters`` and the machine's ``memory`` in bytes, also an L-BFGS history that cannot fit.
    """
    if cfg.name not in OPTIMIZERS:
        raise ConfigError("optimizer", f"unknown optimizer {cfg.name!r}", ", ".join(OPTIMIZERS))
    if not (math.isfinite(cfg.lr) and 0 < cfg.lr <= MAX_LR):
        raise ConfigError("optimizer.lr", f"got {cfg.lr}", f"a number in (0, {MAX_LR:.3g}]: one a float32 weight "
                          "update can hold")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise ConfigError("optimizer.batch_size", f"got {cfg.batch_size}", "an integer ≥ 1, or null for the full batch")
    if cfg.name == "lbfgs" and cfg.batch_size is not None:
        raise ConfigError("optimizer.batch_size", "L-BFGS needs the full batch", "null with optimizer=lbfgs")
    fractions = {"momentum": ("momentum",), "adam": ("beta1", "beta2")}.get(cfg.name, ())
    for key in fractions:
        if not 0 <= cfg[key] < 1:  # also false for NaN
            raise ConfigError(f"optimizer.{key}", f"got {cfg[key]}", f"a number in [0, 1): 0 ≤ {key} < 1")
    if cfg.name != "lbfgs":
        return
    for key, most in (("max_iter", MAX_ITER), ("history_size", MAX_HISTORY)):
        if not 1 <= cfg[key] <= most:
            raise ConfigError(f"optimizer.{key}", f"got {cfg[key]}", f"an integer in [1, {most:,}]")
    need = 2 * 4 * cfg.history_size * (parameters or 0)
    if memory is not None and need > memory:
        size = f"{need / 1e9:,.1f} GB, more than the {memory / 1e9:,.1f} GB here"
        problem = f"{cfg.history_size} × 2 copies of {parameters:,} parameters need about {size}"
        raise ConfigError("optimizer.history_size", problem, f"1..{max(memory // (8 * parameters), 1):,}")
