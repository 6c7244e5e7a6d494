"""Check every analytic gradient (syllabus §7) against autograd and central finite differences.

For each item the analytic gradient g_a is compared with autograd's g_r of the plain
torch ops and with (f(x + h·e_i) − f(x − h·e_i)) / 2h of the same function. Inputs are
small, random, seeded and built away from the kinks of hinge, L1 and |W|, where the
gradient is not defined and finite differences would straddle the kink.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor

from overfit.maths import activations, losses, regularizers
from overfit.maths.layers import Linear

N, C = 4, 3  # examples and classes of every test input


@dataclass(frozen=True)
class Row:
    """One line of the report: how far the analytic gradient is from the two references."""

    what: str
    abs_autograd: float
    rel_autograd: float
    abs_fd: float
    passed: bool


def _flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _autograd(f: Callable[..., Tensor], inputs: Sequence[Tensor]) -> list[Tensor]:
    leaves = [x.detach().requires_grad_() for x in inputs]
    out = f(*leaves)
    if not out.requires_grad:  # a constant (no penalty): its gradient is zero
        return [torch.zeros_like(x) for x in leaves]
    return list(torch.autograd.grad(out, leaves))


@torch.no_grad()
def _finite_differences(f: Callable[..., Tensor], inputs: Sequence[Tensor]) -> Tensor:
    """Central differences ∂f/∂x_i ≈ (f(x + h e_i) − f(x − h e_i)) / 2h, h ∝ ∛eps."""
    xs = [x.detach().clone() for x in inputs]
    step = torch.finfo(xs[0].dtype).eps ** (1 / 3)
    out = []
    for x in xs:
        flat = x.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            h = step * max(1.0, abs(old))
            flat[i] = old + h
            up = f(*xs).item()
            flat[i] = old - h
            down = f(*xs).item()
            flat[i] = old
            out.append((up - down) / (2 * h))
    return torch.tensor(out, dtype=torch.float64)


def _row(what: str, analytic: Sequence[Tensor], reference: Callable[..., Tensor], inputs: Sequence[Tensor]) -> Row:
    eps = torch.finfo(inputs[0].dtype).eps
    a = _flat(analytic).double()
    r = _flat(_autograd(reference, inputs)).double()
    fd = _finite_differences(reference, inputs)
    scale = r.abs().max().item()
    abs_ad = (a - r).abs().max().item()
    rel_ad = abs_ad / max(scale, torch.finfo(torch.float64).tiny)
    abs_fd = (a - fd).abs().max().item()
    passed = rel_ad <= 0.1 * eps**0.5 and abs_fd <= 1e3 * eps ** (2 / 3) * (1 + scale)
    return Row(what, abs_ad, rel_ad, abs_fd, passed)


def _away_from_zero(shape: tuple[int, ...], gen: torch.Generator, dtype: torch.dtype) -> Tensor:
    """Random values with 0.2 ≤ |v| ≤ 1: clear of every kink at 0."""
    magnitude = 0.2 + 0.8 * torch.rand(shape, generator=gen, dtype=dtype)
    sign = torch.randint(0, 2, shape, generator=gen).to(dtype) * 2 - 1
    return sign * magnitude


def _loss_inputs(cls: type[losses.Loss], output: str, gen: torch.Generator,
                 dtype: torch.dtype) -> tuple[str, Tensor, Tensor]:
    """(task, scores, target) for one loss × output, clear of the loss's kinks."""
    labels = torch.randint(0, C, (N,), generator=gen)
    if "regression" in cls.tasks and output == "identity":
        target = torch.randn(N, 2, generator=gen, dtype=dtype)
        return "regression", target + _away_from_zero((N, 2), gen, dtype), target
    if cls is losses.Hinge:
        y = torch.randint(0, 2, (N,), generator=gen)
        margin = _away_from_zero((N,), gen, dtype)  # 1 − y·s = margin
        return "classification", ((y * 2 - 1).to(dtype) * (1 - margin)).reshape(N, 1), y
    if cls is losses.MulticlassHinge:
        scores = _away_from_zero((N, C), gen, dtype) - 1  # s_j − s_y + 1 = the random part
        scores = scores.scatter(1, labels[:, None], 0.0)
        return "classification", scores + torch.randn(N, 1, generator=gen, dtype=dtype), labels
    # Moderate scores keep sigmoid/softmax outputs clear of 0 and 1 (and of one-hot targets for L1).
    return "classification", torch.randn(N, C, generator=gen, dtype=dtype).clamp(-2, 2), labels


def _loss_rows(gen: torch.Generator, dtype: torch.dtype) -> list[Row]:
    rows = []
    for cls in losses.SHIPPED:
        for output in cls.outputs:
            task, scores, target = _loss_inputs(cls, output, gen, dtype)
            classes = 2 if cls is losses.Hinge else C
            analytic = cls(output, "analytic").fit(task, classes)
            reference = cls(output, "autograd").fit(task, classes)
            grads = _autograd(partial(analytic, target=target), [scores])
            rows.append(_row(f"{analytic.name} · {output}", grads, partial(reference, target=target), [scores]))
    return rows


def _pulled_back(name: str, upstream: Tensor, x: Tensor, analytic: bool) -> Tensor:
    """⟨upstream, act(x)⟩, whose gradient is the vector-Jacobian product upstreamᵀ·∂act/∂x."""
    return (activations.apply(name, x, analytic) * upstream).sum()


def _activation_rows(gen: torch.Generator, dtype: torch.dtype) -> list[Row]:
    rows = []
    x = torch.randn(N, C, generator=gen, dtype=dtype)
    upstream = torch.randn(N, C, generator=gen, dtype=dtype)  # a random ∂L/∂p
    for name in ("sigmoid", "softmax"):
        grads = _autograd(partial(_pulled_back, name, upstream, analytic=True), [x])
        rows.append(_row(name, grads, partial(_pulled_back, name, upstream, analytic=False), [x]))
    return rows


def _linear_row(gen: torch.Generator, dtype: torch.dtype) -> Row:
    layer = Linear(3, 2, analytic=True, dtype=dtype)
    x = torch.randn(N, 3, generator=gen, dtype=dtype)
    w = torch.randn(2, 3, generator=gen, dtype=dtype)
    b = torch.randn(2, generator=gen, dtype=dtype)
    upstream = torch.randn(N, 2, generator=gen, dtype=dtype)

    def analytic(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        s = torch.func.functional_call(layer, {"weight": w, "bias": b}, (x,))
        return (s * upstream).sum()

    def reference(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        return ((x @ w.T + b) * upstream).sum()

    return _row("linear layer", _autograd(analytic, [x, w, b]), reference, [x, w, b])


def _penalty(reg: regularizers.Regularizer, *weights: Tensor) -> Tensor:
    return reg.penalty(weights)


REGULARIZER_KNOBS = {"strength": 0.3, "beta": 0.7, "c": 1.0}  # each regularizer takes those its __init__ names


def _shipped_regularizer(shipped: type | regularizers.Regularizer) -> regularizers.Regularizer:
    """An instance of a shipped regularizer (a class is built with the knobs it takes)."""
    if not isinstance(shipped, type):
        return shipped
    takes = inspect.signature(shipped).parameters
    return shipped(**{k: v for k, v in REGULARIZER_KNOBS.items() if k in takes})


def _regularizer_rows(gen: torch.Generator, dtype: torch.dtype) -> list[Row]:
    rows = []
    weights = [_away_from_zero((2, 3), gen, dtype), _away_from_zero((3, 4), gen, dtype)]
    for shipped in regularizers.SHIPPED:
        reg = _shipped_regularizer(shipped)
        rows.append(_row(f"regularizer {type(reg).__name__}", reg.grad(weights), partial(_penalty, reg), weights))
    return rows


def run(dtype: torch.dtype = torch.float64) -> list[Row]:
    """Every gradient check, with a fixed seed."""
    gen = torch.Generator().manual_seed(0)
    return [
        _linear_row(gen, dtype),
        *_activation_rows(gen, dtype),
        *_loss_rows(gen, dtype),
        *_regularizer_rows(gen, dtype),
    ]


def _table(rows: Sequence[Row], dtype: torch.dtype) -> Table:
    table = Table(title=f"analytic gradients vs autograd and finite differences ({str(dtype).removeprefix('torch.')})")
    table.add_column("what", no_wrap=True)
    for header in ("abs err autograd", "rel err autograd", "abs err finite diff"):
        table.add_column(header, justify="right")
    table.add_column("pass", justify="center")
    for row in rows:
        verdict = "[green]pass[/]" if row.passed else "[red]FAIL[/]"
        table.add_row(row.what, f"{row.abs_autograd:.1e}", f"{row.rel_autograd:.1e}", f"{row.abs_fd:.1e}", verdict)
    return table


def main(argv: list[str] | None = None) -> int:
    """`overfit gradcheck`: print the table; exit status 0 when every check passes."""
    parser = argparse.ArgumentParser(prog="overfit gradcheck", description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    rows = run(dtype)
    Console().print(_table(rows, dtype))
    return 0 if all(row.passed for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
