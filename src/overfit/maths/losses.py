"""The syllabus's losses (§4) with their analytic gradients (§7), one class each.

Every loss is a mean over examples of a per-example sum over outputs,
L = (1/N)·Σ_n L_n, so ∂L/∂s_n = (1/N)·∂L_n/∂s_n. Each loss below is written
beside its gradient of L_n, as in this table; :meth:`Loss.formula` adds the 1/N:

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

Each option of the ``loss`` group is a YAML whose ``_target_`` names one of these
classes (``overfit.maths.losses.MSE``) with the knobs ``output`` and ``gradient``; a
user's own ``fn(scores, target) -> mean loss`` is adopted by :class:`FromCallable`.
The plain functions (``losses.mse(input, target)``...) read scores or probabilities.

Nothing here imports PyTorch at import time: configs are validated without it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from overfit.errors import Alone, ConfigError
from overfit.maths import activations

if TYPE_CHECKING:
    from torch import Tensor

GRADIENTS = ("analytic", "autograd")
TASKS = ("regression", "classification")


# --- shapes: every loss reads canonical (N, ·) tensors -------------------------------


def _one_hot(y: Tensor, classes: int) -> Tensor:
    import torch.nn.functional as F

    return F.one_hot(y, classes)


def _values(input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(N, D) scores and targets: values of the input's shape, or class indices one-hot encoded."""
    if target.shape == input.shape:
        y = target.to(input.dtype)
    elif not target.is_floating_point() and input.dim() == 2 and target.shape == input.shape[:1]:
        y = _one_hot(target.long(), input.shape[1]).to(input.dtype)
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
    import torch

    return p.clamp_min(torch.finfo(p.dtype).tiny)


def _ceil(p: Tensor) -> Tensor:
    """p, at most the largest float under 1: log(1 − p) stays finite."""
    import torch

    return p.clamp_max(1 - torch.finfo(p.dtype).eps / 2)


def _p_y(p: Tensor, y: Tensor) -> Tensor:
    """(N, 1) probabilities of the true classes, floored."""
    return _floor(p.gather(1, y[:, None]))


def _is_y(p: Tensor, y: Tensor) -> Tensor:
    """The one-hot z of the true classes, as a mask."""
    return _one_hot(y, p.shape[1]).bool()


def _margins(s: Tensor, y: Tensor) -> Tensor:
    """s_j − s_y + 1 for j ≠ y, and 0 at j = y (the true class is not a violation)."""
    at_y = y[:, None]
    return (s - s.gather(1, at_y) + 1).scatter(1, at_y, 0.0)


# --- the component ----------------------------------------------------------------------


class Loss:
    """Output activation then loss, averaged over the batch; also sizes and reads the model's output.

    A subclass owns its formula: ``prepare`` (canonical tensors), ``value`` (the mean loss)
    and ``grad`` (the table's ∂L_n/∂s_n of one example), all usable without an instance;
    ``tasks`` and ``outputs`` say what it fits (the first output is the default).
    """

    tasks: tuple[str, ...] = TASKS
    outputs: tuple[str, ...] = activations.OUTPUTS

    def __init__(self, output: str | None = None, gradient: str = "autograd") -> None:
        self.output = self.outputs[0] if output is None else output
        self.gradient = gradient
        self.task: str | None = None  # set by `fit`
        self.num_classes: int | None = None

    @property
    def name(self) -> str:
        """The option's name in messages: ``MulticlassHinge`` → ``multiclass_hinge``."""
        return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", type(self).__name__).lower()

    # --- the formula, for a subclass to give ---------------------------------------------

    prepare: ClassVar[Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]] = staticmethod(_values)

    @staticmethod
    def value(s: Tensor, y: Tensor) -> Tensor:
        """The mean loss of canonical tensors."""
        raise NotImplementedError

    @staticmethod
    def grad(s: Tensor, y: Tensor) -> Tensor:
        """∂L_n/∂s_n of each example (no 1/N), the syllabus's closed form."""
        raise NotImplementedError

    def fused(self, scores: Tensor, target: Tensor) -> Tensor | None:
        """A numerically stable activation + loss of raw scores, where one exists for this output."""
        return None

    # --- configuration -------------------------------------------------------------------

    def check(self, task: str, num_classes: int | None) -> None:
        """Reject a loss that cannot work for this task, before anything runs."""
        if self.gradient not in GRADIENTS:
            raise ConfigError("loss.gradient", f"unknown gradient {self.gradient!r}", ", ".join(GRADIENTS))
        if self.output not in self.outputs:
            raise ConfigError("loss.output", f"output {self.output!r} does not fit loss {self.name}",
                              ", ".join(self.outputs))
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        if task not in self.tasks:
            raise ConfigError("loss", f"{self.name} is a {' and '.join(self.tasks)} loss "
                              f"but the dataset is a {task} task", f"a loss whose tasks include {task}")

    def fit(self, task: str, num_classes: int | None) -> Loss:
        """Check against the data, then remember its task and classes (``predict`` reads the task)."""
        self.check(task, num_classes)
        self.task, self.num_classes = task, num_classes
        return self

    # --- use -----------------------------------------------------------------------------

    def __call__(self, scores: Tensor, target: Tensor) -> Tensor:
        """Mean loss of raw model scores against targets (class indices or regression values)."""
        analytic = self.gradient == "analytic"
        fused = None if analytic else self.fused(scores, target)
        if fused is not None:
            return fused
        return self.formula(activations.apply(self.output, scores, analytic), target, analytic)

    def formula(self, input: Tensor, target: Tensor, analytic: bool) -> Tensor:
        """The loss of `input` (scores or probabilities); `analytic` picks the closed-form backward."""
        s, y = self.prepare(input, target)
        if not analytic:
            return self.value(s, y)
        # ∂L/∂s_n = g · ∂L_n/∂s_n / N for the mean L; the target gets no gradient.
        grad = self.grad
        return activations.closed_form().apply(self.value, lambda g, _, s, y: (g * grad(s, y) / len(s), None), s, y)

    def example(self, s: Tensor, y: Tensor) -> Tensor:
        """The loss of one example (no batch dimension), for ``torch.vmap`` in the batched trainer.

        An analytic loss runs its plain forward here: autograd's gradient of it is the same.
        """
        if self.gradient == "analytic":
            return self.formula(activations.apply(self.output, s[None], analytic=False), y[None], analytic=False)
        return self(s[None], y[None])

    def output_dim(self, task: str, num_classes: int | None, target_dim: int | None) -> int:
        """How many scores the model must produce for this loss."""
        if task == "regression":
            if target_dim is None:
                raise ValueError("a regression task needs target_dim")
            return target_dim
        if num_classes is None:
            raise ValueError("a classification task needs num_classes")
        return num_classes

    def predict(self, scores: Tensor) -> Tensor:
        """Class indices for classification, the activated output for regression."""
        if self.task == "regression":
            return activations.apply(self.output, scores, analytic=False)
        return scores.argmax(-1)  # every output activation is monotone: argmax of scores = of p

    def batch_key(self) -> tuple:
        """Points whose losses have equal keys may train as one batched model."""
        cls = type(self)
        return (f"{cls.__module__}.{cls.__qualname__}", self.output, self.gradient)

    @staticmethod
    def adopt(made: object) -> Loss:
        """``made`` if it is a Loss, else a user's callable adopted by :class:`FromCallable`."""
        return made if isinstance(made, Loss) else FromCallable(made)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(output={self.output!r}, gradient={self.gradient!r})"


# --- each loss beside its gradient ----------------------------------------------------


class MSE(Loss):
    """L2: (1/N) Σ_n Σ_j (y_nj − s_nj)²; class indices become one-hot targets."""

    @staticmethod
    def value(s: Tensor, y: Tensor) -> Tensor:
        return ((y - s) ** 2).sum(1).mean()

    @staticmethod
    def grad(s: Tensor, y: Tensor) -> Tensor:
        return -2 * (y - s)


class L1(Loss):
    """L1: (1/N) Σ_n Σ_j |y_nj − s_nj|; class indices become one-hot targets."""

    @staticmethod
    def value(s: Tensor, y: Tensor) -> Tensor:
        return (y - s).abs().sum(1).mean()

    @staticmethod
    def grad(s: Tensor, y: Tensor) -> Tensor:
        return -(y - s).sign()


class Hinge(Loss):
    """Binary hinge: (1/N) Σ_n max(0, 1 − y_n s_n) with y_n = ±1; one score per example."""

    tasks = ("classification",)
    outputs = ("identity",)
    prepare = staticmethod(_binary)

    @staticmethod
    def value(s: Tensor, y: Tensor) -> Tensor:
        return (1 - y * s).clamp_min(0).mean()

    @staticmethod
    def grad(s: Tensor, y: Tensor) -> Tensor:
        return -y * (1 - y * s > 0)

    def check(self, task: str, num_classes: int | None) -> None:
        super().check(task, num_classes)
        if num_classes is not None and num_classes > 2:
            raise ConfigError("loss", f"hinge is binary but the dataset has {num_classes} classes; "
                              "use loss=multiclass_hinge", "a loss for several classes, e.g. multiclass_hinge")

    def output_dim(self, task: str, num_classes: int | None, target_dim: int | None) -> int:
        return 1  # the sign of one score is the class

    def predict(self, scores: Tensor) -> Tensor:
        return (scores.reshape(len(scores)) > 0).long()


class MulticlassHinge(Loss):
    """SVM loss: (1/N) Σ_n Σ_{j≠y} max(0, s_j − s_y + 1)."""

    tasks = ("classification",)
    outputs = ("identity",)
    prepare = staticmethod(_indices)

    @staticmethod
    def value(s: Tensor, y: Tensor) -> Tensor:
        return _margins(s, y).clamp_min(0).sum(1).mean()

    @staticmethod
    def grad(s: Tensor, y: Tensor) -> Tensor:
        active = (_margins(s, y) > 0).to(s.dtype)  # 1(s_j − s_y + 1 > 0), 0 at j = y
        return active.scatter(1, y[:, None], -active.sum(1, keepdim=True))


class LogLikelihood(Loss):
    """Negative log-likelihood of probabilities: (1/N) Σ_n −log p_{n,y_n}.

    Softmax only: −log σ(s_y) would ignore the other classes, and not classify.
    """

    tasks = ("classification",)
    outputs = ("softmax",)
    prepare = staticmethod(_indices)

    @staticmethod
    def value(p: Tensor, y: Tensor) -> Tensor:
        return -_p_y(p, y).log().mean()

    @staticmethod
    def grad(p: Tensor, y: Tensor) -> Tensor:
        return p.new_zeros(p.shape).scatter(1, y[:, None], -1 / _p_y(p, y))

    def fused(self, scores: Tensor, target: Tensor) -> Tensor | None:
        """−log softmax(s)_y = −(s_y − logsumexp s)."""
        if self.output != "softmax":
            return None
        import torch.nn.functional as F

        s, y = _indices(scores, target)
        return F.nll_loss(F.log_softmax(s, dim=1), y)


def _log1m_softmax(s: Tensor, log_p: Tensor) -> Tensor:
    """log(1 − p_j) without cancellation.

    For the top class 1 − p_top = Σ_{k≠top} e^{s_k} / Σ_k e^{s_k}, a log-sum-exp over
    the others; every other class has p_j ≤ 1/2, where log1p(−p_j) is accurate.
    """
    top = _one_hot(s.argmax(1), s.shape[1]).bool()
    rest = s.masked_fill(top, float("-inf")).logsumexp(1, keepdim=True)
    log_1m_top = rest - s.logsumexp(1, keepdim=True)
    return log_1m_top.where(top, (-log_p.exp().masked_fill(top, 0)).log1p())


class CrossEntropy(Loss):
    """The slides' one-vs-all cross-entropy of probabilities: −Σ_j [z_j log p_j + (1−z_j) log(1−p_j)]."""

    tasks = ("classification",)
    outputs = ("softmax", "sigmoid")
    prepare = staticmethod(_indices)

    @staticmethod
    def value(p: Tensor, y: Tensor) -> Tensor:
        return -_floor(p).log().where(_is_y(p, y), (-_ceil(p)).log1p()).sum(1).mean()

    @staticmethod
    def grad(p: Tensor, y: Tensor) -> Tensor:
        return (-1 / _floor(p)).where(_is_y(p, y), 1 / (1 - _ceil(p)))

    def fused(self, scores: Tensor, target: Tensor) -> Tensor | None:
        """From the logits: softmax through log-softmax and :func:`_log1m_softmax`, sigmoid per class."""
        import torch.nn.functional as F

        if self.output == "sigmoid":
            s, y = _indices(scores, target)
            z = _one_hot(y, s.shape[1]).to(s.dtype)
            return F.binary_cross_entropy_with_logits(s, z, reduction="none").sum(1).mean()
        if self.output == "softmax":
            s, y = _indices(scores, target)
            log_p = F.log_softmax(s, dim=1)
            return -log_p.where(_is_y(s, y), _log1m_softmax(s, log_p)).sum(1).mean()
        return None


SHIPPED = (MSE, L1, Hinge, MulticlassHinge, LogLikelihood, CrossEntropy)  # the syllabus's set, gradient-checked


# --- a loss of the user's own -------------------------------------------------------------


class FromCallable(Loss):
    """A user's ``fn(scores, target) -> mean loss`` (a function or an nn.Module) as a loss component.

    It reads raw scores (output ``identity``) and is differentiated by autograd. Its tasks are
    ``fn.tasks`` where it declares them, else both; it has no closed form, and does not batch:
    nothing says which other losses equal it.
    """

    outputs = ("identity",)

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__("identity", "autograd")
        self.fn = fn
        self.tasks = tuple(getattr(self._func, "tasks", Loss.tasks))

    @property
    def _func(self) -> Any:
        """The user's function, out of the partial that carries a YAML's knobs."""
        return getattr(self.fn, "func", self.fn)

    @property
    def name(self) -> str:
        return getattr(self._func, "__qualname__", type(self._func).__name__)

    def check(self, task: str, num_classes: int | None) -> None:
        if not callable(self.fn):
            raise ConfigError("loss", f"{self.fn!r} is neither a Loss nor a callable",
                              "a Loss subclass, or a callable fn(scores, target) -> mean loss")
        super().check(task, num_classes)

    def __call__(self, scores: Tensor, target: Tensor) -> Tensor:
        return self.fn(scores, target)

    def formula(self, input: Tensor, target: Tensor, analytic: bool) -> Tensor:
        if analytic:
            raise ConfigError("loss.gradient", f"{self.name}: a loss of your own has no closed-form gradient",
                              "autograd")
        return self.fn(input, target)

    def batch_key(self) -> tuple:
        raise Alone(f"{self.name} declares no batch_key: a loss of your own trains one point at a time")

    def __repr__(self) -> str:
        return f"FromCallable({self.name})"


# --- the plain functions: overfit.maths.losses.<name>(input, target) -------------------


def mse(input: Tensor, target: Tensor) -> Tensor:
    """L2 of scores: (1/N) Σ_n Σ_j (y_nj − s_nj)²; class indices become one-hot targets."""
    return MSE.value(*MSE.prepare(input, target))


def l1(input: Tensor, target: Tensor) -> Tensor:
    """L1 of scores: (1/N) Σ_n Σ_j |y_nj − s_nj|; class indices become one-hot targets."""
    return L1.value(*L1.prepare(input, target))


def hinge(input: Tensor, target: Tensor) -> Tensor:
    """Binary hinge of (N,) or (N, 1) scores against {0, 1} or ±1 labels."""
    return Hinge.value(*Hinge.prepare(input, target))


def multiclass_hinge(input: Tensor, target: Tensor) -> Tensor:
    """SVM loss of (N, C) scores against class indices."""
    return MulticlassHinge.value(*MulticlassHinge.prepare(input, target))


def log_likelihood(input: Tensor, target: Tensor) -> Tensor:
    """Negative log-likelihood of (N, C) probabilities against class indices."""
    return LogLikelihood.value(*LogLikelihood.prepare(input, target))


def cross_entropy(input: Tensor, target: Tensor) -> Tensor:
    """The slides' one-vs-all cross-entropy of (N, C) probabilities against class indices."""
    return CrossEntropy.value(*CrossEntropy.prepare(input, target))
