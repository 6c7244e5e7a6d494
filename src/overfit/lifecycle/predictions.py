"""What a finished point leaves for the bias–variance decomposition: its predictions on its dataset's grid.

The decomposition needs every replicate's predictions at the same inputs, beside the true
function there (:meth:`overfit.data.base.Dataset.grid`, ``true_function``, ``noise_variance``).
Each run keeps them as one small file, so the sweep's report — on any machine, long after
the models are gone — decomposes from the store alone (:mod:`overfit.tracking.replicates`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from overfit.tracking.replicates import GRID_FILE
from overfit.tracking.runs import REPLICATE_KEY

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from torch import nn

    from overfit.data.base import Dataset


def grid_file(net: nn.Module, dataset: Dataset, n_test: int, cfg: DictConfig) -> dict[str, str]:
    """``{GRID_FILE: json}`` with the grid, the net's predictions, the true function, σ² and the test set's
    size — or nothing: a run that is no replicate (no swept seed: nothing to decompose over), or a dataset
    that declares no true function, grid or noise."""
    import torch

    if REPLICATE_KEY not in (cfg.sweep.get("axes") or []):
        return {}
    truth, grid, noise = dataset.true_function(), dataset.grid(), dataset.noise_variance
    if truth is None or grid is None or noise is None:
        return {}
    weight = next(net.parameters())
    with torch.no_grad():
        was = net.training
        predicted = net.eval()(grid.to(weight))
        net.train(was)
    return {GRID_FILE: json.dumps({"x": grid.tolist(), "prediction": predicted.double().cpu().flatten().tolist(),
                                   "truth": truth(grid.double()).flatten().tolist(), "noise_variance": float(noise),
                                   "n_test": n_test})}
