"""The syllabus's losses (§4) with their analytic gradients (§7).

Every loss is a mean over examples of a per-example sum over outputs,
L = (1/N)·Σ_n L_n, so every analytic gradient below carries a 1/N:

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

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

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
def _tiny(p: Tensor) -> float:
    return torch.finfo(p.dtype).tiny


def _below_one(p: Tensor) -> float:
    return 1 - torch.finfo(p.dtype).eps / 2  # the largest float under 1


def _margins(s: Tensor, y: Tensor) -> Tensor:
    """s_j − s_y + 1 for j ≠ y, and 0 at j = y (the true class is not a violation)."""
    at_y = y[:, None]
    return (s - s.gather(1, at_y) + 1).scatter(1, at_y, 0.0)


# --- the losses with autograd's gradient ---------------------------------------------


def mse(input: Tensor, target: Tensor) -> Tensor:
    """L2: (1/N) Σ_n Σ_j (y_nj − s_nj)²; class indices become one-hot targets."""
    s, y = _values(input, target)
    return ((y - s) ** 2).sum(1).mean()


def l1(input: Tensor, target: Tensor) -> Tensor:
    """L1: (1/N) Σ_n Σ_j |y_nj − s_nj|; class indices become one-hot targets."""
    s, y = _values(input, target)
    return (y - s).abs().sum(1).mean()


def hinge(input: Tensor, target: Tensor) -> Tensor:
    """Binary hinge: (1/N) Σ_n max(0, 1 − y_n s_n) with y_n = ±1."""
    s, y = _binary(input, target)
    return (1 - y * s).clamp_min(0).mean()


def multiclass_hinge(input: Tensor, target: Tensor) -> Tensor:
    """SVM loss: (1/N) Σ_n Σ_{j≠y} max(0, s_j − s_y + 1)."""
    s, y = _indices(input, target)
    return _margins(s, y).clamp_min(0).sum(1).mean()


def log_likelihood(input: Tensor, target: Tensor) -> Tensor:
    """Negative log-likelihood of probabilities: (1/N) Σ_n −log p_{n,y_n}."""
    p, y = _indices(input, target)
    p_y = p.gather(1, y[:, None]).squeeze(1)
    return -torch.log(p_y.clamp_min(_tiny(p))).mean()


def cross_entropy(input: Tensor, target: Tensor) -> Tensor:
    """The slides' one-vs-all cross-entropy of probabilities: −Σ_j [z_j log p_j + (1−z_j) log(1−p_j)]."""
    p, y = _indices(input, target)
    z = F.one_hot(y, p.shape[1]).bool()
    log_p = torch.log(p.clamp_min(_tiny(p)))
    log_1mp = torch.log1p(-p.clamp_max(_below_one(p)))
    return -torch.where(z, log_p, log_1mp).sum(1).mean()


# --- the same losses with the analytic gradient --------------------------------------
# Each forward reuses the plain function on already canonical tensors.


class _MSE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, s: Tensor, y: Tensor) -> Tensor:
        ctx.save_for_backward(s, y)
        return mse(s, y)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, g: Tensor) -> tuple[Tensor, None]:
        s, y = ctx.saved_tensors
        return g * -2 * (y - s) / len(s), None


class _L1(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, s: Tensor, y: Tensor) -> Tensor:
        ctx.save_for_backward(s, y)
        return l1(s, y)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, g: Tensor) -> tuple[Tensor, None]:
        s, y = ctx.saved_tensors
        return g * -torch.sign(y - s) / len(s), None


class _Hinge(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, s: Tensor, y: Tensor) -> Tensor:
        ctx.save_for_backward(s, y)
        return hinge(s, y)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, g: Tensor) -> tuple[Tensor, None]:
        s, y = ctx.saved_tensors
        active = (1 - y * s > 0).to(s.dtype)
        return g * -y * active / len(s), None


class _MulticlassHinge(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, s: Tensor, y: Tensor) -> Tensor:
        ctx.save_for_backward(s, y)
        return multiclass_hinge(s, y)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, g: Tensor) -> tuple[Tensor, None]:
        s, y = ctx.saved_tensors
        active = (_margins(s, y) > 0).to(s.dtype)
        grad = active.scatter(1, y[:, None], -active.sum(1, keepdim=True))
        return g * grad / len(s), None


class _LogLikelihood(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, p: Tensor, y: Tensor) -> Tensor:
        ctx.save_for_backward(p, y)
        return log_likelihood(p, y)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, g: Tensor) -> tuple[Tensor, None]:
        p, y = ctx.saved_tensors
        p_y = p.gather(1, y[:, None]).clamp_min(_tiny(p))
        grad = torch.zeros_like(p).scatter(1, y[:, None], -1 / p_y)
        return g * grad / len(p), None


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, p: Tensor, y: Tensor) -> Tensor:
        ctx.save_for_backward(p, y)
        return cross_entropy(p, y)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, g: Tensor) -> tuple[Tensor, None]:
        p, y = ctx.saved_tensors
        z = F.one_hot(y, p.shape[1]).bool()
        grad = torch.where(z, -1 / p.clamp_min(_tiny(p)), 1 / (1 - p.clamp_max(_below_one(p))))
        return g * grad / len(p), None


Prepare = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
_TABLE: dict[str, tuple[Prepare, Callable[[Tensor, Tensor], Tensor], type[torch.autograd.Function]]] = {
    "mse": (_values, mse, _MSE),
    "l1": (_values, l1, _L1),
    "hinge": (_binary, hinge, _Hinge),
    "multiclass_hinge": (_indices, multiclass_hinge, _MulticlassHinge),
    "log_likelihood": (_indices, log_likelihood, _LogLikelihood),
    "cross_entropy": (_indices, cross_entropy, _CrossEntropy),
}


def apply(name: str, input: Tensor, target: Tensor, analytic: bool) -> Tensor:
    """Loss `name` of `input` (scores or probabilities); `analytic` picks the closed-form backward."""
    if name not in _TABLE:
        raise ConfigError("loss", f"unknown loss {name!r}", ", ".join(LOSSES))
    prepare, plain, function = _TABLE[name]
    return function.apply(*prepare(input, target)) if analytic else plain(input, target)


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
