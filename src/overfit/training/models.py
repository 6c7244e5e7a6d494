"""The model group: s = Wx + b, a multilayer perceptron, or a network of your own.

Each option is a component (``_target_`` in ``conf/model/``): it checks its knobs, says how
many parameters and how much memory it needs on given widths (before any data is read),
builds its layers (PyTorch is imported only then), and says whether it can train batched
with other points (:meth:`Model.batch_key`). A user's ``fn(in_features, out_features, ...)``
returning an ``nn.Module`` is adopted by :class:`FromCallable`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from overfit.errors import Alone, ConfigError

if TYPE_CHECKING:
    from torch import nn

PARAMETER_BYTES = 16  # float32 weight, its gradient and Adam's two moments
ACTIVATION_BYTES = 12  # per unit of a training batch: the value kept for backward, its gradient, a temporary
ACTIVATIONS = ("relu", "tanh", "sigmoid")  # the values of an MLP's activation knob (or a _target_ of your own)


class Model:
    """A model component; subclasses implement :meth:`build` and :meth:`widths`.

    ``simpler``: the knobs that set capacity and which way is simpler ("lower" / "higher"), for the
    one-standard-error rule; a list (hidden widths) counts by its sum.
    """

    simpler: ClassVar[dict[str, str]] = {}

    def check(self) -> None:
        """Reject impossible knobs before anything runs."""

    def widths(self, in_features: int, out_features: int) -> list[int]:
        """Layer widths from input to output (for the memory and parameter counts)."""
        return [in_features, out_features]

    def parameter_count(self, in_features: int, out_features: int) -> int:
        """Weights and biases on these sizes: what the memory checks count."""
        widths = self.widths(in_features, out_features)
        return sum((a + 1) * b for a, b in zip(widths, widths[1:]))

    def check_fit(self, in_features: int, out_features: int, n_train: int, batch_size: int | None,
                  memory: int) -> None:
        """Weights and one training batch within ``memory`` bytes (``batch_size`` None: the full batch)."""
        rows = min(batch_size or n_train, n_train)
        widths = self.widths(in_features, out_features)
        here = f"more than the {memory / 1e9:,.1f} GB here"
        weights = PARAMETER_BYTES * self.parameter_count(in_features, out_features)
        if weights > memory:
            key = "model.hidden" if len(widths) > 2 else "features.order"
            problem = f"layers {widths} need about {weights / 1e9:,.1f} GB for their weights, {here}"
            raise ConfigError(key, problem, "smaller layers")
        per_row = ACTIVATION_BYTES * sum(widths)
        need = weights + rows * per_row
        if need > memory:
            problem = f"a batch of {rows:,} rows through layers {widths} needs about {need / 1e9:,.1f} GB, {here}"
            raise ConfigError("optimizer.batch_size", problem, f"1..{(memory - weights) // per_row:,}")

    def build(self, in_features: int, out_features: int, analytic: bool = False) -> nn.Module:
        """The layers; ``analytic``: linear maps with the syllabus's closed-form backward."""
        raise NotImplementedError

    def batch_key(self) -> tuple:
        """Points whose models have equal keys train as one batched model (same layer shapes but the input).

        The batched trainer stacks linear layers with parameterless activations between them: only a
        class that declares ``stacks`` beside the ``build`` it defines is batched.
        """
        owner = next(c for c in type(self).__mro__ if "build" in vars(c))
        if not vars(owner).get("stacks", False):
            raise Alone(f"{type(self).__name__} declares no batched form: it trains one point at a time")
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                tuple(sorted((k, repr(v)) for k, v in vars(self).items())))

    @staticmethod
    def adopt(made: Any) -> Model:
        return made if isinstance(made, Model) else FromCallable(made)


class Linear(Model):
    """s = Wx + b."""

    stacks = True  # linear layers only: the batched trainer stacks them along a leading model dimension

    def build(self, in_features: int, out_features: int, analytic: bool = False) -> nn.Module:
        from overfit.maths.layers import Linear as Layer

        return Layer(in_features, out_features, analytic=analytic)


class MLP(Model):
    """Linear → activation (→ batch norm, dropout) per hidden layer, then a linear output."""

    stacks = True  # linear layers with parameterless activations between: the batched trainer stacks them
    simpler: ClassVar[dict[str, str]] = {"hidden": "lower", "dropout": "higher"}

    def __init__(self, hidden: list[int] | None = None, activation: Any = "relu", dropout: float = 0.0,
                 batch_norm: bool = False) -> None:
        self.hidden = list(hidden) if hidden is not None else [128]
        self.activation, self.dropout, self.batch_norm = activation, dropout, batch_norm

    def check(self) -> None:
        if isinstance(self.activation, str) and self.activation not in ACTIVATIONS:
            raise ConfigError("model.activation", f"unknown activation {self.activation!r}",
                              ", ".join(ACTIVATIONS) + ", or {_target_: an nn.Module}")
        if not self.hidden or any(type(h) is not int or h < 1 for h in self.hidden):
            raise ConfigError("model.hidden", f"got {self.hidden}", "a non-empty list of sizes ≥ 1")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError("model.dropout", f"got {self.dropout}", "0 ≤ dropout < 1")
        if not isinstance(self.batch_norm, bool):
            raise ConfigError("model.batch_norm", f"got {self.batch_norm!r}", "true or false")

    def widths(self, in_features: int, out_features: int) -> list[int]:
        return [in_features, *self.hidden, out_features]

    def check_fit(self, in_features: int, out_features: int, n_train: int, batch_size: int | None,
                  memory: int) -> None:
        rows = min(batch_size or n_train, n_train)
        if self.batch_norm and 1 in (rows, n_train % rows):
            problem = f"batch_size={batch_size} on {n_train} training points gives a batch of 1: batch norm cannot train on it"
            raise ConfigError("model.batch_norm", problem, "batch_norm=false, or a batch_size that leaves no batch of 1")
        super().check_fit(in_features, out_features, n_train, batch_size, memory)

    def _activation(self, analytic: bool) -> nn.Module:
        import copy

        from torch import nn

        from overfit.training.networks import AnalyticSigmoid

        if not isinstance(self.activation, str):
            return copy.deepcopy(self.activation)
        if self.activation == "sigmoid":
            return AnalyticSigmoid() if analytic else nn.Sigmoid()
        return nn.Tanh() if self.activation == "tanh" else nn.ReLU()

    def build(self, in_features: int, out_features: int, analytic: bool = False) -> nn.Module:
        from torch import nn

        from overfit.maths.layers import Linear as Layer

        layers: list[nn.Module] = []
        width = in_features
        for hidden in self.hidden:
            layers.append(Layer(width, hidden, bias=not self.batch_norm, analytic=analytic))
            if self.batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(self._activation(analytic))
            if self.dropout > 0:
                layers.append(nn.Dropout(self.dropout))
            width = hidden
        layers.append(Layer(width, out_features, analytic=analytic))
        return nn.Sequential(*layers)

    def batch_key(self) -> tuple:
        if self.batch_norm:
            raise Alone("batch norm: its statistics would mix the points")
        if self.dropout:
            raise Alone("dropout: its masks come from the global random stream")
        if not isinstance(self.activation, str):
            raise Alone("an activation of your own may hold parameters the batched trainer cannot stack")
        return super().batch_key()


class FromCallable(Model):
    """A user's ``fn(in_features, out_features, ...) -> nn.Module`` as a model component."""

    def __init__(self, fn: Callable[..., nn.Module]) -> None:
        self.fn = fn

    def _name(self) -> str:
        func = getattr(self.fn, "func", self.fn)
        return getattr(func, "__qualname__", type(func).__name__)

    def parameter_count(self, in_features: int, out_features: int) -> int:
        import torch

        with torch.device("meta"):  # built without allocating: only the shapes are needed
            return sum(p.numel() for p in self.fn(in_features, out_features).parameters())

    def build(self, in_features: int, out_features: int, analytic: bool = False) -> nn.Module:
        return self.fn(in_features, out_features)

    def batch_key(self) -> tuple:
        raise Alone(f"{self._name()} declares no batched form: a model of your own trains one point at a time")
