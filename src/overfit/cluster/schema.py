"""``hydra/launcher=slurm``'s schema and the resolvers its YAML uses: light enough for :mod:`overfit.config`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
from omegaconf import OmegaConf


@dataclass
class SlurmConf(SlurmQueueConf):
    """submitit_slurm's schema with the keys this project adds (conf/hydra/launcher/slurm.yaml sets the defaults)."""

    _target_: str = "hydra_plugins.overfit_slurm.SlurmLauncher"
    begin: Optional[str] = None  # sbatch --begin: "now+60", "02:00", "2026-12-01T02:00"
    driver_timeout_min: int = 1440  # the time limit of the job that runs a detached sweep or pipeline


def gpus(accelerator: str) -> Optional[int]:
    """One GPU per job when the trainer asks for one; none for cpu or auto."""
    return 1 if str(accelerator) in ("gpu", "cuda") else None


def signal_delay(timeout_min: int) -> int:
    """Seconds before the time limit that a job checkpoints: a quarter of the limit, 10 to 120 s."""
    return int(min(120, max(10, int(timeout_min) * 15)))


def register() -> None:
    """The launcher's schema and the resolvers its YAML uses (called by :func:`overfit.config.register`)."""
    OmegaConf.register_new_resolver("overfit_gpus", gpus, replace=True)
    OmegaConf.register_new_resolver("overfit_signal_delay", signal_delay, replace=True)
    ConfigStore.instance().store(group="hydra/launcher", name="overfit_slurm_schema", node=SlurmConf,
                                 provider="overfit")
