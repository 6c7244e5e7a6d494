"""Which points of a sweep can train together as one batched model: the components say.

Each component declares how it batches (``batch_key``) or raises :class:`~overfit.errors.Alone`
saying why it cannot; points whose every key agrees (and whose trainer settings agree: one
Trainer drives a group) share one batched model. No knob is listed here: a component's new
knob is in its key by construction. PyTorch is not imported.
"""

from __future__ import annotations

from omegaconf import DictConfig

from overfit.errors import Alone
from overfit.training.parts import build

# One Trainer drives the group: these must agree.
SHARED_TRAINER = ("max_epochs", "eval_every_n_epochs", "precision", "accelerator", "devices", "deterministic",
                  "checkpoint", "checkpoint_every_n_epochs", "checkpoint_every_seconds")


def key_or_reason(cfg: DictConfig) -> tuple | str:
    """What must be equal for points to share one batched model, or why this one cannot."""
    parts = build(cfg)
    data = parts.dataset
    try:
        if not parts.features.fixed:
            raise Alone(f"{type(parts.features).__name__} is not a fixed map: it is trained, per point")
        return (
            parts.model.batch_key(),
            (f"{type(data).__module__}.{type(data).__qualname__}", data.task, data.input_dim, data.num_classes,
             data.standardize),
            parts.features.batch_key(),
            parts.loss.batch_key(),
            parts.regularizer.batch_key(),
            parts.optimizer.batch_key(),
            tuple(str(cfg.trainer[k]) for k in SHARED_TRAINER),
        )
    except Alone as why:
        return str(why)


def group_key(cfg: DictConfig) -> tuple | None:
    """Points with equal keys can train as one batched model; None: this point trains alone."""
    key = key_or_reason(cfg)
    return key if isinstance(key, tuple) else None


def plan_groups(cfgs: list[DictConfig]) -> tuple[list[list[int]], list[tuple[int, str]]]:
    """(groups of indices that train together, [(index, why it trains alone)]), in input order."""
    by_key: dict[tuple, list[int]] = {}
    alone: list[tuple[int, str]] = []
    for i, cfg in enumerate(cfgs):
        key = key_or_reason(cfg)
        if isinstance(key, str):
            alone.append((i, key))
        else:
            by_key.setdefault(key, []).append(i)
    groups = [g for g in by_key.values() if len(g) > 1]
    alone += [(g[0], "nothing to batch with") for g in by_key.values() if len(g) == 1]
    return groups, sorted(alone)
