"""The one picture a person wants per run: the fitted curve or a confusion matrix."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: jobs run in workers and on cluster nodes

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import nn

from overfit.data.datasets import Splits


@torch.no_grad()
def fitted_curve(net: nn.Module, splits: Splits, title: str) -> Figure:
    """1-D regression: the model's function drawn over train and test points."""
    net = net.eval().cpu()
    xs = torch.cat([splits.x_train, splits.x_test])
    lo, hi = xs.min().item(), xs.max().item()
    pad = 0.05 * (hi - lo or 1.0)
    grid = torch.linspace(lo - pad, hi + pad, 400).unsqueeze(1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(splits.x_test[:, 0], splits.y_test[:, 0], s=6, alpha=0.25, color="tab:gray", label="test")
    ax.scatter(splits.x_train[:, 0], splits.y_train[:, 0], s=24, color="tab:blue", label="train")
    ax.plot(grid[:, 0], net(grid.to(next(net.parameters()).dtype))[:, 0], color="tab:red", label="model")
    y = torch.cat([splits.y_train, splits.y_test])[:, 0]
    span = (y.max() - y.min()).item() or 1.0
    ax.set_ylim(y.min().item() - 0.3 * span, y.max().item() + 0.3 * span)
    ax.set(xlabel="x", ylabel="y", title=title)
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


def confusion_matrix(predicted: torch.Tensor, target: torch.Tensor, class_names: tuple[str, ...], title: str) -> Figure:
    """Classification: counts of (true, predicted) pairs on the test set."""
    k = len(class_names)
    counts = torch.bincount(target.cpu() * k + predicted.cpu(), minlength=k * k).reshape(k, k)
    fig, ax = plt.subplots(figsize=(1.5 + 0.45 * k, 1.2 + 0.45 * k))
    ax.imshow(counts, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if counts[i, j] > counts.max() / 2 else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return fig
