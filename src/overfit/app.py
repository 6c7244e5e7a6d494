"""The Hydra entry point for ``overfit train``: thin, the task lives in training.py."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from overfit import paths
from overfit.config import register

register()


@hydra.main(version_base="1.3", config_path=str(paths.config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """One job of ``overfit train`` (one sweep point under ``-m``)."""
    from overfit.tracking import sweeps

    hc = HydraConfig.get()
    metrics = sweeps.run_point(cfg, list(hc.overrides.task), Path(hc.runtime.output_dir))
    return None if metrics is None else metrics.get("val/error")
