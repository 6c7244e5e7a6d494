"""The pictures a run keeps, logged as MLflow images: the fitted curve or a confusion matrix, and its
learning curve (train and validation error against the epoch, log axes).

Each is titled with the run's point and its test result, so that MLflow's image grid and
compare views, which set the children's pictures side by side, say which is which and which
is better without a click. MLflow's own metric charts group keys by prefix (train/ apart
from val/) on linear axes; the learning curve shows the two together where over-fitting
shows: the validation error turning up while the training error keeps falling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # headless: jobs run in workers and on cluster nodes

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from overfit.tracking import runs
from overfit.tracking.curves import SPLIT_STYLE, log_ticks, number
from overfit.tracking.store import Store
from overfit.tracking.writer import CURVE_KEYS

if TYPE_CHECKING:
    from overfit.data.base import Splits
    from overfit.training.module import Learner

TRUTH_LABEL = "true function"
LEFT, RIGHT, TOP = 0.13, 0.98, 0.91  # every picture's axes: titles sit at the same place on each
TITLE_ROWS = 38  # the pixel rows above the axes of a 430-pixel picture: the title's band, nothing else is there


def canvas_figure() -> tuple[Figure, Any]:
    """A figure of its own (not pyplot's: a sweep over many seeds keeps one canvas per dataset open at once,
    and pyplot would hold every one of them and warn), with one pair of axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = Figure(figsize=(6, 4.3))
    FigureCanvasAgg(figure)
    return figure, figure.subplots()


class Blitted:
    """A figure drawn once: each picture redraws only the artists that change over the saved background
    (milliseconds, where laying out and drawing a whole figure takes a tenth of a second)."""

    figure: Figure
    _background: Any = None

    def _blit(self, moving: list[Any], show: Callable[[], None], band: np.ndarray | None = None) -> np.ndarray:
        """RGB pixels: the background (drawn the first time, without ``moving``), then ``show()``'s artists,
        then ``band`` (a :class:`TitleBand`'s pixels) over the top rows."""
        canvas = self.figure.canvas
        if self._background is None:
            for artist in moving:
                artist.set_animated(True)
            canvas.draw()
            self._background = canvas.copy_from_bbox(self.figure.bbox)
        show()
        canvas.restore_region(self._background)
        for artist in moving:
            self.figure.draw_artist(artist)
        rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()
        if band is not None:
            rgb[: len(band)] = band
        return rgb

    def close(self) -> None:
        self.figure.clear()


class TitleBand(Blitted):
    """A point's title as the band of pixels above its pictures' axes, drawn once and laid over each picture.

    A text costs milliseconds to draw, more than a picture's lines; a point's pictures share
    their size and axes, so the band is the same pixels on each of them.
    """

    def __init__(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        self.figure = Figure(figsize=(6, TITLE_ROWS / 100))  # 100 dpi, as every picture
        FigureCanvasAgg(self.figure)
        # Where the axes title would be: centred over the axes, its baseline 6 points above their top.
        above = (TOP * 430 + 6 * 100 / 72 - (430 - TITLE_ROWS)) / TITLE_ROWS
        self.text = self.figure.text((LEFT + RIGHT) / 2, above, "", ha="center", va="baseline", fontsize=11)

    def pixels(self, title: str) -> np.ndarray:
        return self._blit([self.text], lambda: self.text.set_text(title))


class FitCanvas(Blitted):
    """The fitted-curve picture of models over one dataset: axes, data and true function drawn once.

    Each model adds only its curve and title. A sweep draws hundreds of these pictures;
    :meth:`pixels` blits a model onto the saved background instead of laying out and
    drawing a whole figure again (milliseconds, not a tenth of a second).
    """

    def __init__(self, splits: Splits, truth: Callable[[Tensor], Tensor] | None = None) -> None:
        # The fit is drawn where the model has seen data, no further: a polynomial past its last training
        # point says nothing about the study, and would read as over-fitting where there is none.
        lo, hi = splits.x_train.min().item(), splits.x_train.max().item()
        self.grid = torch.linspace(lo, hi, 400).unsqueeze(1)
        self.figure, self.ax = canvas_figure()
        self.figure.subplots_adjust(left=LEFT, right=RIGHT, bottom=0.12, top=TOP)  # fixed: no layout pass per model
        ax = self.ax
        few = len(splits.x_test) <= 50  # the line example's one test point must show; a thousand must not hide the fit
        ax.scatter(splits.x_test[:, 0].numpy(), splits.y_test[:, 0].numpy(), s=30 if few else 6,
                   alpha=0.8 if few else 0.25, color="tab:gray", zorder=6 if few else 2, label="test data")
        ax.scatter(splits.x_train[:, 0].numpy(), splits.y_train[:, 0].numpy(), s=26, color=SPLIT_STYLE["train"]["color"],
                   edgecolor="white", linewidth=0.5, zorder=6, label="train data")
        (self.line,) = ax.plot(self.grid[:, 0].numpy(), np.zeros(len(self.grid)), color="#D55E00", lw=2.2, zorder=4,
                               label="model")
        y = torch.cat([splits.y_train, splits.y_test])[:, 0]
        if truth is not None:  # dashed over the model, so an exact fit still shows both
            true_y = truth(self.grid)[:, 0]
            ax.plot(self.grid[:, 0].numpy(), true_y.numpy(), color="black", lw=1.4, ls="--", zorder=5,
                    label=TRUTH_LABEL)
            y = torch.cat([y, true_y])
        span = (y.max() - y.min()).item() or 1.0  # an over-fitted model's wild ends are clipped, not the data
        ax.set_ylim(y.min().item() - 0.3 * span, y.max().item() + 0.3 * span)
        ax.set(xlabel="x", ylabel="y")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)

    @torch.no_grad()
    def _show(self, net: nn.Module) -> None:
        net = net.eval().cpu()
        self.line.set_ydata(net(self.grid.to(next(net.parameters()).dtype))[:, 0].double().numpy())

    def figure_for(self, net: nn.Module, title: str) -> Figure:
        """The whole figure showing ``net`` (one picture, drawn when saved)."""
        self._show(net)
        self.ax.set_title(title, fontsize=11)
        return self.figure

    def pixels(self, net: nn.Module, band: np.ndarray) -> np.ndarray:
        """RGB pixels of the picture of ``net``: the saved background, its curve, its title's ``band``."""
        return self._blit([self.line], lambda: self._show(net), band)


Curve = dict[str, tuple[list[int], list[float]]]  # key → (steps, values), as the metric writer keeps them
LEARNING_KEY = "learning_curve"


class LearningCanvas(Blitted):
    """Learning-curve pictures on shared axes: epochs 1…``epochs`` and errors ``lo``…``hi``, both log scale.

    The runs of one group share the axes (so their pictures compare at a glance) and the
    drawn background; each run adds only its two lines and title (:meth:`pixels`).
    """

    def __init__(self, epochs: int, lo: float, hi: float) -> None:
        from matplotlib.ticker import FuncFormatter

        self.figure, self.ax = canvas_figure()
        self.figure.subplots_adjust(left=LEFT, right=RIGHT, bottom=0.12, top=TOP)
        ax = self.ax
        ax.set_xscale("log")
        ax.set_xlim(1, max(epochs, 2))
        if lo > 0 and hi > lo:
            ax.set_yscale("log")
            ax.set_ylim(lo / 1.15, hi * 1.15)
            log_ticks(ax.yaxis, lo, hi)
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, pos: ""))
        else:
            ax.set_ylim(lo - 0.05 * (abs(lo) or 1), hi + 0.05 * (abs(hi) or 1))
        ax.xaxis.set_major_formatter(FuncFormatter(number))
        ax.set(xlabel="epoch", ylabel="error")
        ax.grid(alpha=0.3)
        ax.grid(which="minor", alpha=0.1)
        self.lines = {}
        for key in CURVE_KEYS:
            split = key.split("/")[0]
            style = SPLIT_STYLE[split]
            (self.lines[key],) = ax.plot([], [], color=style["color"], linestyle=style["linestyle"] if split != "train"
                                         else "-", lw=1.8, label=f"{'validation' if split == 'val' else split} error")
        ax.legend(loc="upper right", fontsize=8)

    @classmethod
    def over(cls, curves: list[Curve], epochs: int) -> LearningCanvas:
        """A canvas whose axes hold every one of ``curves`` (finite values only)."""
        values = [v for c in curves for _, vs in c.values() for v in vs if np.isfinite(v)]
        positive = [v for v in values if v > 0]
        lo = min(positive) if positive and len(positive) == len(values) else min(values, default=0.0)
        return cls(epochs, lo, max(values, default=1.0))

    def _show(self, curve: Curve) -> None:
        for key, line in self.lines.items():
            steps, values = curve.get(key, ([], []))
            line.set_data(steps, values)

    def pixels(self, curve: Curve, band: np.ndarray) -> np.ndarray:
        """RGB pixels of ``curve``'s picture: the saved background, its lines, its title's ``band``."""
        return self._blit(list(self.lines.values()), lambda: self._show(curve), band)


def learning_curve(curve: Curve, title: str, epochs: int) -> np.ndarray:
    """One run's learning-curve picture as RGB pixels (a canvas of its own)."""
    canvas, band = LearningCanvas.over([curve], epochs), TitleBand()
    try:
        return canvas.pixels(curve, band.pixels(title))
    finally:
        canvas.close()
        band.close()


def fitted_curve(net: nn.Module, splits: Splits, title: str,
                 truth: Callable[[Tensor], Tensor] | None = None) -> Figure:
    """1-D regression: the model's function over train and test points, beside the true function when known."""
    return FitCanvas(splits, truth).figure_for(net, title)


def confusion_matrix(predicted: torch.Tensor, target: torch.Tensor, class_names: tuple[str, ...], title: str) -> Figure:
    """Classification: counts of (true, predicted) pairs on the test set, titled with the test accuracy."""
    k = len(class_names)
    counts = torch.bincount(target.cpu() * k + predicted.cpu(), minlength=k * k).reshape(k, k).numpy()
    correct, total = int(counts.trace()), int(counts.sum())
    fig, ax = plt.subplots(figsize=(max(3.6, 1.5 + 0.45 * k), 1.6 + 0.45 * k), layout="constrained")
    ax.imshow(counts, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if counts[i, j] > counts.max() / 2 else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(f"{title}\ntest accuracy {correct / max(total, 1):.2%} ({correct}/{total})", fontsize=9)
    return fig


def picture(learner: Learner, splits: Splits, title: str,
            truth: Callable[[Tensor], Tensor] | None = None) -> tuple[str, Figure] | None:
    """The run's picture: fitted curve (1-D regression, beside ``truth`` when known) or test confusion matrix."""
    if splits.task == "regression":
        if splits.input_dim != 1 or splits.target_dim != 1:
            return None
        return "fit", fitted_curve(learner.net, splits, title, truth)
    predicted = learner.eval().cpu().predict(splits.x_test.cpu())
    names = splits.class_names or tuple(str(i) for i in range(splits.num_classes or 0))
    return "confusion_matrix", confusion_matrix(predicted, splits.y_test.cpu(), names, title)


def pixels(fig: Figure) -> np.ndarray:
    """The figure drawn once, as RGB pixels (the figure is closed)."""
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return rgb


def log_pixels(store: Store, run_id: str, key: str, rgb: np.ndarray, step: int) -> None:
    """As an MLflow image (key, step): the UI sets the runs' images side by side, reports find it there."""
    store.call("log_image", run_id, rgb, key=key, step=step)
