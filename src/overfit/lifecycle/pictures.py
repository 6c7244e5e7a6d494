"""The one picture a run keeps: drawn from the trained model, logged as an MLflow image."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from overfit.tracking import runs
from overfit.tracking.store import Store

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure
    from torch import Tensor

    from overfit.data.base import Splits
    from overfit.training.module import Learner


def picture(learner: Learner, splits: Splits, title: str,
            truth: Callable[[Tensor], Tensor] | None = None) -> tuple[str, Figure] | None:
    """The run's picture: fitted curve (1-D regression, beside ``truth`` when known) or test confusion matrix."""
    from overfit.tracking import plots

    if splits.task == "regression":
        if splits.input_dim != 1 or splits.target_dim != 1:
            return None
        return "fit", plots.fitted_curve(learner.net, splits, title, truth)
    predicted = learner.eval().cpu().predict(splits.x_test.cpu())
    names = splits.class_names or tuple(str(i) for i in range(splits.num_classes or 0))
    return "confusion_matrix", plots.confusion_matrix(predicted, splits.y_test.cpu(), names, title)


def pixels(fig: Figure) -> np.ndarray:
    """The figure drawn once, as RGB pixels (the figure is closed)."""
    import numpy as np

    from overfit.tracking.plots import plt

    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return rgb


def log_pixels(store: Store, run_id: str, key: str, rgb: np.ndarray, step: int) -> None:
    """As ``<key>.png`` to look at, and as an MLflow image (key, step) so the UI sets them side by side."""
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(rgb).save(png, format="png")
    runs.log_files(store, run_id, {f"{key}.png": png.getvalue()})
    store.call("log_image", run_id, rgb, key=key, step=step)
