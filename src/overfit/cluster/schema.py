"""``hydra/launcher=slurm``'s schema, and the two defaults it derives from the job (light: no submitit import).

Registered in Hydra's ConfigStore by the plugin module ``hydra_plugins.overfit_plugins``,
where Hydra finds plugins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf


@dataclass
class SlurmConf(SlurmQueueConf):
    """submitit_slurm's schema with the keys this project adds (conf/hydra/launcher/slurm.yaml sets the defaults)."""

    _target_: str = "hydra_plugins.overfit_plugins.SlurmLauncher"
    signal_delay_s: Optional[int] = None  # type: ignore[assignment]  # None: a quarter of the limit, 10-120 s
    begin: Optional[str] = None  # sbatch --begin: "now+60", "02:00", "2026-12-01T02:00"
    driver_timeout_min: int = 1440  # the time limit of the job that runs a detached sweep or pipeline


def gpus(accelerator: str) -> Optional[int]:
    """One GPU per job when the trainer asks for one; none for cpu or auto."""
    return 1 if str(accelerator) in ("gpu", "cuda") else None


def signal_delay(timeout_min: int) -> int:
    """Seconds before the time limit that a job checkpoints: a quarter of the limit, 10 to 120 s."""
    return int(min(120, max(10, int(timeout_min) * 15)))
