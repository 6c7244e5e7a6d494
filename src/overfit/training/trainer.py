"""The trainer group: a Lightning Trainer configured for small, fast runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from overfit.errors import ConfigError

if TYPE_CHECKING:  # lightning costs seconds to import: only the training path pays
    import lightning as L
    from lightning.pytorch.loggers import Logger

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
PRECISIONS = ("64-true", "32-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true")


def build_trainer(cfg: DictConfig, logger: Logger | bool, output_dir: Path) -> L.Trainer:
    """A quiet Trainer; the last checkpoint under ``output_dir``."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    callbacks = []
    if cfg.checkpoint:
        callbacks.append(
            ModelCheckpoint(dirpath=output_dir / "checkpoints", save_top_k=0, save_last=True, every_n_epochs=cfg.max_epochs)
        )
    return L.Trainer(
        max_epochs=cfg.max_epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        precision=cfg.precision,
        deterministic=cfg.deterministic,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=bool(cfg.checkpoint),
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=output_dir,
    )


def check(cfg: DictConfig) -> None:
    if cfg.accelerator not in ACCELERATORS:
        raise ConfigError("trainer.accelerator", f"unknown accelerator {cfg.accelerator!r}", ", ".join(ACCELERATORS))
    if str(cfg.precision) not in PRECISIONS:
        raise ConfigError("trainer.precision", f"unknown precision {cfg.precision!r}", ", ".join(PRECISIONS))
    for key in ("max_epochs", "eval_every_n_epochs"):
        if cfg[key] < 1:
            raise ConfigError(f"trainer.{key}", f"got {cfg[key]}", "an integer ≥ 1")
