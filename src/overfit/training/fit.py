"""Training one config: data → module → Lightning Trainer, resumable from its checkpoint, logging nowhere itself.

:func:`fit` knows nothing of MLflow: the caller hands it a Lightning ``Logger`` (or none)
and the checkpoint directory of the run it trains for. A checkpoint belongs to one run
(its ``owner``): one left by another run, or one that cannot be read, is reported in
one line and set aside, and training starts from epoch 0.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from overfit.interrupts import Signals

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger

    from overfit.data.base import Splits
    from overfit.training.module import Learner

warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")


@dataclass
class Fitted:
    """A trained model with its data and final metrics (train/val of the last epoch, test, the gap)."""

    learner: Learner
    splits: Splits
    metrics: dict[str, float]


@dataclass(frozen=True)
class Start:
    """A checkpoint to resume from, and the epochs it has trained."""

    path: Path
    epoch: int


def usable_checkpoint(path: Path, owner: str) -> Start | None:
    """``path`` if it is a readable checkpoint of ``owner``'s run; else None, the file set aside with one line.

    An empty or truncated file (a full disk, a kill mid-write by something other than
    Lightning's atomic save) or one another run left is never loaded: the run starts over.
    """
    if not path.is_file():
        return None
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        found = state.get("callbacks", {}).get("Resume", {}).get("owner", "") if isinstance(state, dict) else None
        epoch = int(state.get("epoch", -1)) + 1 if isinstance(state, dict) else 0
    except Exception as exc:  # any way of failing to read it means the same: it cannot be resumed from
        problem = f"cannot be read ({type(exc).__name__})"
    else:
        if found == owner or not owner:
            return Start(path, epoch)
        problem = f"belongs to run {found or '(unknown)'}, not {owner}"
    aside = path.with_name(f"{path.name}.unusable")
    path.replace(aside)
    print(f"[overfit] checkpoint {path} {problem}: kept as {aside.name}; the run starts again from epoch 0",
          file=sys.stderr, flush=True)
    return None


def fit(cfg: DictConfig, checkpoints: Path, logger: Logger | None = None, signals: Signals | None = None,
        owner: str = "") -> Fitted:
    """Train and test one config, resuming from ``checkpoints/last.ckpt`` when it is ``owner``'s.

    ``logger`` receives each evaluated epoch's metrics (step = epoch); without one nothing is recorded.
    """
    signals = signals or Signals()
    with signals.held():  # seconds of cold imports, which a signal must not cut in half
        import lightning as L
        import torch

        from overfit.data.datamodule import TensorDataModule
        from overfit.training.module import build_learner
        from overfit.training.parts import build
        from overfit.training.resume import CHECKPOINT, Resume
        from overfit.training.trainer import build_trainer

    parts = build(cfg)
    L.seed_everything(cfg.seed, verbose=False)
    splits = parts.dataset.load(cfg.seed)
    learner = build_learner(parts, cfg, splits)
    if str(cfg.trainer.precision) == "64-true":  # Lightning restores a checkpoint before converting: float64 throughout
        learner, splits = learner.double(), splits.floating(torch.float64)
    resume = Resume(checkpoints, signals, logger, cfg.trainer.checkpoint_every_n_epochs,
                    cfg.trainer.checkpoint_every_seconds, owner) if cfg.trainer.checkpoint else None
    trainer = build_trainer(cfg.trainer, logger if logger is not None else False, checkpoints.parent,
                            [resume] if resume is not None else [])
    learner.automatic_optimization = trainer.world_size > 1  # one process: an epoch per step (overfit.training.module)
    data = TensorDataModule(learner.encode(splits), cfg.optimizer.batch_size, cfg.seed,
                            whole_epochs=not learner.automatic_optimization)
    start = usable_checkpoint(checkpoints / CHECKPOINT, owner) if resume is not None else None
    trainer.fit(learner, datamodule=data, ckpt_path=start.path if start else None, weights_only=True)
    trainer.test(learner, datamodule=data, verbose=False)
    final = {**learner.last_metrics, **learner.test_metrics}
    final["generalization_gap"] = final["test/error"] - final["train/error"]
    return Fitted(learner, splits, final)
