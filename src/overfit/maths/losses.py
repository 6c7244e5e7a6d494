"""The syllabus's losses (§4) with their analytic gradients (§7).

Every loss is a mean over examples of a per-example sum over outputs,
L = (1/N)·Σ_n L_n, so ∂L/∂s_n = (1/N)·∂L_n/∂s_n. Each loss below is written
beside its gradient of L_n, as in this table; :func:`apply` adds the 1/N:

    loss              L_n                                     gradient of L_n
    mse               Σ_j (y_j − s_j)²                        ∂/∂s_j = −2(y_j − s_j)
    l1                Σ_j |y_j − s_j|                         ∂/∂s_j = −sign(y_j − s_j)
    hinge             max(0, 1 − y·s), y = ±1                 ∂/∂s   = −y if 1 − y·s > 0 else 0
    multiclass_hinge  Σ_{j≠y} max(0, s_j − s_y + 1)           ∂/∂s_j = 1(s_j − s_y + 1 > 0) for j ≠ y
                                                              ∂/∂s_y = −Σ_{j≠y} 1(s_j − s_y + 1 > 0)
    log_likelihood    −log p_y                                ∂/∂p_y = −1/p_y, 0 elsewhere
    cross_entropy     −Σ_j [z_j log p_j + (1−z_j) log(1−p_j)]  ∂/∂p_y = −1/p_y
                                                              ∂/∂p_j = 1/(1 − p_j) for j ≠ y

mse/l1/hinge/multiclass_hinge read scores, log_likelihood/cross_entropy read
probabilities: :class:`Loss` puts the configured output activation in between.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from overfit.maths import activations
from overfit.errors import ConfigError

LOSSES = ("mse", "l1", "hinge", "multiclass_hinge", "log_likelihood", "cross_entropy")
CLASSIFICATION_ONLY = ("hinge", "multiclass_hinge", "log_likelihood", "cross_entropy")
# The first output listed is the default when the config leaves `output` out.
SUPPORTED_OUTPUTS: dict[str, tuple[str, ...]] = {
    "mse": ("identity", "sigmoid", "softmax"),
    "l1": ("identity", "sigmoid", "softmax"),
    "hinge": ("identity",),
    "multiclass_hinge": ("identity",),
    "log_likelihood": ("softmax",),  # −log σ(s_y) ignores the other classes: not a classifier
    "cross_entropy": ("softmax", "sigmoid"),
}
GRADIENTS = ("analytic", "autograd")
TASKS = ("regression", "classification")


# --- shapes: every loss reads canonical (N, ·) tensors -------------------------------


def _values(input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(N, D) scores and targets: values of the input's shape, or class indices one-hot encoded."""
    if target.shape == input.shape:
        y = target.to(input.dtype)
    elif not target.is_floating_point() and input.dim() == 2 and target.shape == input.shape[:1]:
        y = F.one_hot(target.long(), input.shape[1]).to(input.dtype)
    else:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not fit input shape {tuple(input.shape)}: "
            "give values of the input's shape, or class indices of shape (N,) for (N, C) scores"
        )
    n = len(input)
    return input.reshape(n, -1), y.reshape(n, -1)


def _binary(input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(N,) scores and labels ±1; labels may come as {0, 1} or already as ±1."""
    n = len(input)
    if input.shape not in ((n,), (n, 1)):
        raise ValueError(f"binary hinge needs scores of shape (N,) or (N, 1), got {tuple(input.shape)}")
    if target.shape not in ((n,), (n, 1)):
        raise ValueError(f"binary hinge needs {n} labels of shape (N,), got {tuple(target.shape)}")
    y = (target.reshape(n) > 0).to(input.dtype) * 2 - 1  # 0 → −1, 1 → +1, ±1 unchanged
    return input.reshape(n), y


def _indices(input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(N, C) scores or probabilities and (N,) int64 class indices."""
    if input.dim() != 2:
        raise ValueError(f"expected (N, C) scores or probabilities, got shape {tuple(input.shape)}")
    if target.is_floating_point() or target.shape != input.shape[:1]:
        raise ValueError(
            f"expected integer class indices of shape ({len(input)},), "
            f"got {target.dtype} of shape {tuple(target.shape)}"
        )
    return input, target.long()


# Clamp probabilities only as far as keeps the logs finite.
def _floor(p: Tensor) -> Tensor:
    """p, at least the smallest positive float: log p stays finite."""
    return p.clamp_min(torch.finfo(p.dtype).tiny)


def _ceil(p: Tensor) -> Tensor:
    """p, at most the largest float under 1: log(1 − p) stays finite."""
    return p.clamp_max(1 - torch.finfo(p.dtype).eps / 2)


def _p_y(p: Tensor, y: Tensor) -> Tensor:
    """(N, 1) probabilities of the true classes, floored."""
    return _floor(p.gather(1, y[:, None]))


def _is_y(p: Tensor, y: Tensor) -> Tensor:
    """The one-hot z of the true classes, as a mask."""
    return F.one_hot(y, p.shape[1]).bool()


def _margins(s: Tensor, y: Tensor) -> Tensor:
    """s_j − s_y + 1 for j ≠ y, and 0 at j = y (the true class is not a violation)."""
    at_y = y[:, None]
    return (s - s.gather(1, at_y) + 1).scatter(1, at_y, 0.0)


# --- each loss beside its gradient ----------------------------------------------------
# A loss is written on canonical tensors (s, y) and returns the mean over examples; its
# `grad` is the table's ∂L_n/∂s_n of one example, and `apply` adds the mean's 1/N.

Formula = Callable[[Tensor, Tensor], Tensor]
Prepare = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
_TABLE: dict[str, tuple[Prepare, Formula, Formula]] = {}


def _loss(prepare: Prepare, grad: Formula) -> Callable[[Formula], Formula]:
    """Register the decorated loss with its gradient; what it returns reads raw input and target."""

    def register(value: Formula) -> Formula:
        _TABLE[value.__name__] = (prepare, value, grad)

        @functools.wraps(value)
        def plain(input: Tensor, target: Tensor) -> Tensor:
            return value(*prepare(input, target))

        return plain

    return register


@_loss(_values, grad=lambda s, y: -2 * (y - s))
def mse(s: Tensor, y: Tensor) -> Tensor:
    """L2: (1/N) Σ_n Σ_j (y_nj − s_nj)²; class indices become one-hot targets."""
    return ((y - s) ** 2).sum(1).mean()


@_loss(_values, grad=lambda s, y: -torch.sign(y - s))
def l1(s: Tensor, y: Tensor) -> Tensor:
    """L1: (1/N) Σ_n Σ_j |y_nj − s_nj|; class indices become one-hot targets."""
    return (y - s).abs().sum(1).mean()


@_loss(_binary, grad=lambda s, y: -y * (1 - y * s > 0))
def hinge(s: Tensor, y: Tensor) -> Tensor:
    """Binary hinge: (1/N) Σ_n max(0, 1 − y_n s_n) with y_n = ±1."""
    return (1 - y * s).clamp_min(0).mean()


def _multiclass_hinge_grad(s: Tensor, y: Tensor) -> Tensor:
    active = (_margins(s, y) > 0).to(s.dtype)  # 1(s_j − s_y + 1 > 0), 0 at j = y
    return active.scatter(1, y[:, None], -active.sum(1, keepdim=True))


@_loss(_indices, grad=_multiclass_hinge_grad)
def multiclass_hinge(s: Tensor, y: Tensor) -> Tensor:
    """SVM loss: (1/N) Σ_n Σ_{j≠y} max(0, s_j − s_y + 1)."""
    return _margins(s, y).clamp_min(0).sum(1).mean()


@_loss(_indices, grad=lambda p, y: torch.zeros_like(p).scatter(1, y[:, None], -1 / _p_y(p, y)))
def log_likelihood(p: Tensor, y: Tensor) -> Tensor:
    """Negative log-likelihood of probabilities: (1/N) Σ_n −log p_{n,y_n}."""
    return -torch.log(_p_y(p, y)).mean()


@_loss(_indices, grad=lambda p, y: torch.where(_is_y(p, y), -1 / _floor(p), 1 / (1 - _ceil(p))))
def cross_entropy(p: Tensor, y: Tensor) -> Tensor:
    """The slides' one-vs-all cross-entropy of probabilities: −Σ_j [z_j log p_j + (1−z_j) log(1−p_j)]."""
    return -torch.where(_is_y(p, y), torch.log(_floor(p)), torch.log1p(-_ceil(p))).sum(1).mean()


def apply(name: str, input: Tensor, target: Tensor, analytic: bool) -> Tensor:
    """Loss `name` of `input` (scores or probabilities); `analytic` picks the closed-form backward."""
    if name not in _TABLE:
        raise ConfigError("loss", f"unknown loss {name!r}", ", ".join(LOSSES))
    prepare, value, grad = _TABLE[name]
    s, y = prepare(input, target)
    if not analytic:
        return value(s, y)
    # ∂L/∂s_n = g · ∂L_n/∂s_n / N for the mean L; the target gets no gradient.
    return activations.ClosedForm.apply(value, lambda g, _, s, y: (g * grad(s, y) / len(s), None), s, y)


# --- fused activation + loss, numerically stable, for gradient="autograd" ------------


def _softmax_log_likelihood(scores: Tensor, target: Tensor) -> Tensor:
    """−log softmax(s)_y = −(s_y − logsumexp s)."""
    s, y = _indices(scores, target)
    return F.nll_loss(F.log_softmax(s, dim=1), y)


def _sigmoid_cross_entropy(scores: Tensor, target: Tensor) -> Tensor:
    """Σ_j of the binary cross-entropy of σ(s_j) against z_j, from the logits."""
    s, y = _indices(scores, target)
    z = F.one_hot(y, s.shape[1]).to(s.dtype)
    return F.binary_cross_entropy_with_logits(s, z, reduction="none").sum(1).mean()


def _log1m_softmax(s: Tensor, log_p: Tensor) -> Tensor:
    """log(1 − p_j) without cancellation.

    For the top class 1 − p_top = Σ_{k≠top} e^{s_k} / Σ_k e^{s_k}, a log-sum-exp over
    the others; every other class has p_j ≤ 1/2, where log1p(−p_j) is accurate.
    """
    top = F.one_hot(s.argmax(1), s.shape[1]).bool()
    rest = torch.logsumexp(s.masked_fill(top, float("-inf")), 1, keepdim=True)
    log_1m_top = rest - torch.logsumexp(s, 1, keepdim=True)
    return torch.where(top, log_1m_top, torch.log1p(-log_p.exp().masked_fill(top, 0)))


def _softmax_cross_entropy(scores: Tensor, target: Tensor) -> Tensor:
    s, y = _indices(scores, target)
    log_p = F.log_softmax(s, dim=1)
    z = F.one_hot(y, s.shape[1]).bool()
    return -torch.where(z, log_p, _log1m_softmax(s, log_p)).sum(1).mean()


_FUSED: dict[tuple[str, str], Callable[[Tensor, Tensor], Tensor]] = {
    ("softmax", "log_likelihood"): _softmax_log_likelihood,
    ("sigmoid", "cross_entropy"): _sigmoid_cross_entropy,
    ("softmax", "cross_entropy"): _softmax_cross_entropy,
}


class Loss(nn.Module):
    """Output activation then loss, averaged over the batch; also sizes and reads the model's output."""

    def __init__(self, name: str, output: str, gradient: str, task: str) -> None:
        super().__init__()
        self.name = name
        self.output = output
        self.gradient = gradient
        self.task = task

    def forward(self, scores: Tensor, target: Tensor) -> Tensor:
        """Mean loss of raw model scores against targets (class indices or regression values)."""
        analytic = self.gradient == "analytic"
        fused = None if analytic else _FUSED.get((self.output, self.name))
        if fused is not None:
            return fused(scores, target)
        return apply(self.name, activations.apply(self.output, scores, analytic), target, analytic)

    def output_dim(self, task: str, num_classes: int | None, target_dim: int | None) -> int:
        """How many scores the model must produce for this loss."""
        if task == "regression":
            if target_dim is None:
                raise ValueError("a regression task needs target_dim")
            return target_dim
        if self.name == "hinge":
            return 1
        if num_classes is None:
            raise ValueError("a classification task needs num_classes")
        return num_classes

    def predict(self, scores: Tensor) -> Tensor:
        """Class indices for classification (hinge: s > 0), the activated output for regression."""
        if self.task == "regression":
            return activations.apply(self.output, scores, analytic=False)
        if self.name == "hinge":
            return (scores.reshape(len(scores)) > 0).long()
        return scores.argmax(-1)  # every output activation is monotone: argmax of scores = of p

    def extra_repr(self) -> str:
        return f"name={self.name}, output={self.output}, gradient={self.gradient}, task={self.task}"


def _fields(cfg: Any) -> tuple[str, str, str]:
    name = getattr(cfg, "name", None)
    if name not in LOSSES:
        raise ConfigError("loss", f"unknown loss {name!r}", ", ".join(LOSSES))
    output = getattr(cfg, "output", None) or SUPPORTED_OUTPUTS[name][0]
    gradient = getattr(cfg, "gradient", None) or "autograd"
    return name, output, gradient


def check(cfg: Any, task: str, num_classes: int | None) -> None:
    """Reject a loss config that cannot work for this task, before anything runs."""
    name, output, gradient = _fields(cfg)
    if gradient not in GRADIENTS:
        raise ConfigError("loss.gradient", f"unknown gradient {gradient!r}", ", ".join(GRADIENTS))
    if output not in SUPPORTED_OUTPUTS[name]:
        raise ConfigError(
            "loss.output", f"output {output!r} does not fit loss {name}", ", ".join(SUPPORTED_OUTPUTS[name])
        )
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if task == "regression" and name in CLASSIFICATION_ONLY:
        regression = ", ".join(n for n in LOSSES if n not in CLASSIFICATION_ONLY)
        raise ConfigError("loss", f"{name} is a classification loss but the dataset is a regression task", regression)
    if name == "hinge" and num_classes is not None and num_classes > 2:
        raise ConfigError(
            "loss",
            f"hinge is binary but the dataset has {num_classes} classes; use loss=multiclass_hinge",
            ", ".join(n for n in LOSSES if n != "hinge"),
        )


def build_loss(cfg: Any, task: str, num_classes: int | None) -> Loss:
    """The configured loss for a task; `cfg` has name, output and gradient."""
    check(cfg, task, num_classes)
    return Loss(*_fields(cfg), task)
