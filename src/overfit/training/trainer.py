"""The trainer group: a Lightning Trainer configured for small, fast runs."""

from __future__ import annotations

import math
import os
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, ListConfig

from overfit.errors import ConfigError

if TYPE_CHECKING:  # lightning costs seconds to import: only the training path pays
    import lightning as L
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import Logger

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
PRECISIONS = ("64-true", "32-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true")
MAX_EPOCHS = 10**7  # an upper bound that still finishes: a typo like 1e23 would train forever
DEVICES = "a positive integer, a list of device indices like [0, 1], or auto"


def build_trainer(cfg: DictConfig, logger: Logger | bool, output_dir: Path, callbacks: list[Callback]) -> L.Trainer:
    """A quiet Trainer: no progress bar, no summary, no checkpoints but the ``callbacks`` given."""
    import lightning as L
    from lightning.pytorch.callbacks import Checkpoint

    for name in ("lightning.pytorch", "lightning.fabric"):  # banners and hints say nothing about the run
        logging.getLogger(name).setLevel(logging.WARNING)

    return L.Trainer(
        max_epochs=cfg.max_epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        precision=cfg.precision,
        deterministic=cfg.deterministic,
        logger=logger,
        callbacks=callbacks,
        # Checkpoints are the Resume callback's (overfit.training.resume); without it, none at all.
        enable_checkpointing=any(isinstance(c, Checkpoint) for c in callbacks),
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=output_dir,
    )


def check(cfg: DictConfig) -> None:
    """Reject trainer settings Lightning would refuse, before any run exists (on any machine: see check_machine)."""
    if cfg.accelerator not in ACCELERATORS:
        raise ConfigError("trainer.accelerator", f"unknown accelerator {cfg.accelerator!r}", ", ".join(ACCELERATORS))
    if str(cfg.precision) not in PRECISIONS:
        raise ConfigError("trainer.precision", f"unknown precision {cfg.precision!r}", ", ".join(PRECISIONS))
    for key in ("max_epochs", "eval_every_n_epochs", "checkpoint_every_n_epochs"):
        if not 1 <= cfg[key] <= MAX_EPOCHS:
            raise ConfigError(f"trainer.{key}", f"got {cfg[key]}", f"an integer in [1, {MAX_EPOCHS:,}]")
    if not (math.isfinite(cfg.checkpoint_every_seconds) and cfg.checkpoint_every_seconds >= 0):
        seconds = cfg.checkpoint_every_seconds
        raise ConfigError("trainer.checkpoint_every_seconds", f"got {seconds}", "a finite number ≥ 0")
    devices = cfg.devices
    if isinstance(devices, ListConfig):
        devices = list(devices)
        if not devices or not all(type(d) is int and d >= 0 for d in devices) or len(set(devices)) < len(devices):
            raise ConfigError("trainer.devices", f"got {devices}", DEVICES)
    elif devices != "auto" and (type(devices) is not int or devices < 1):
        raise ConfigError("trainer.devices", f"got {devices!r}", DEVICES)


def check_machine(cfg: DictConfig) -> None:
    """What this machine can run: checked in the job, where the work runs (a login node needs no GPU)."""
    devices = list(cfg.devices) if isinstance(cfg.devices, ListConfig) else cfg.devices
    kind, count = _machine(cfg.accelerator)
    if isinstance(devices, list) and kind == "cpu":
        raise ConfigError("trainer.devices", f"got {devices} on the CPU", f"a number of processes, 1..{count}, or auto")
    wanted = max(devices) + 1 if isinstance(devices, list) else devices
    if wanted != "auto" and wanted > count:
        what = f"{count} CPU cores" if kind == "cpu" else f"{count} {kind} device(s)"
        allowed = f"indices 0..{count - 1}" if isinstance(devices, list) else f"at most {count} on {kind}"
        raise ConfigError("trainer.devices", f"got {devices} but this machine has {what}", allowed)


def _machine(accelerator: str) -> tuple[str, int]:
    """What ``accelerator`` runs on here and how many of it: ("cuda", GPUs), ("mps", 1) or ("cpu", cores).

    Only gpu, cuda and mps are refused when absent; auto falls back to the CPU as Lightning does.
    GPUs are counted through NVML (``torch.cuda.device_count``), which unlike ``is_available``
    does not initialise CUDA in this process: a launcher that forks keeps the GPU usable.
    """
    import torch

    gpus = torch.cuda.device_count() if accelerator in ("auto", "gpu", "cuda") else 0
    if gpus:
        return "cuda", gpus
    if accelerator in ("auto", "gpu", "mps") and torch.backends.mps.is_available():
        return "mps", 1
    if accelerator not in ("auto", "cpu"):
        wanted = "an Apple MPS GPU" if accelerator == "mps" else "a CUDA GPU"
        problem = f"{accelerator} needs {wanted} but this machine has none"
        raise ConfigError("trainer.accelerator", problem, "auto or cpu")
    return "cpu", os.cpu_count() or 1
