"""Regularizers: penalty values, analytic gradients, max-norm projection, config validation."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from overfit.maths import regularizers
from overfit.errors import ConfigError

W = [torch.tensor([[1.0, -2.0], [0.5, 0.0]]), torch.tensor([[3.0, -4.0, 0.0]])]


def build(**cfg: object) -> regularizers.Regularizer:
    return regularizers.build_regularizer(OmegaConf.create(cfg))


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        ({"name": "none", "strength": 0.5}, 0.0),
        ({"name": "l2", "strength": 0.5}, 0.5 * (1 + 4 + 0.25 + 9 + 16)),
        ({"name": "l1", "strength": 0.5}, 0.5 * (1 + 2 + 0.5 + 3 + 4)),
        ({"name": "elastic_net", "strength": 0.5, "beta": 2.0}, 0.5 * (2 * 30.25 + 10.5)),
        ({"name": "max_norm", "strength": 0.5, "c": 1.0}, 0.0),
    ],
)
def test_penalty_is_lambda_times_r(cfg: dict, expected: float) -> None:
    reg = build(**cfg)
    penalty = reg.penalty(W)
    assert penalty.dim() == 0
    assert penalty.item() == pytest.approx(expected)
    assert reg.strength == 0.5


def test_zero_strength_gives_zero_penalty() -> None:
    assert build(name="l2", strength=0.0).penalty(W).item() == 0


@pytest.mark.parametrize(
    "cfg",
    [
        {"name": "l2", "strength": 0.3},
        {"name": "l1", "strength": 0.3},
        {"name": "elastic_net", "strength": 0.3, "beta": 0.7},
    ],
)
def test_analytic_grad_equals_autograd(cfg: dict) -> None:
    reg = build(**cfg)
    weights = [torch.randn(3, 4, dtype=torch.float64, requires_grad=True), torch.randn(2, 3, dtype=torch.float64)]
    weights[1].requires_grad_()
    auto = torch.autograd.grad(reg.penalty(weights), weights)
    for a, r in zip(reg.grad(weights), auto, strict=True):
        torch.testing.assert_close(a, r)


def test_penalty_accepts_a_generator_and_keeps_dtype() -> None:
    weights = [torch.ones(2, 2, dtype=torch.float64)]
    penalty = build(name="l2", strength=1.0).penalty(w for w in weights)
    assert penalty.dtype == torch.float64 and penalty.item() == 4


def test_max_norm_projects_rows_onto_the_ball() -> None:
    reg = build(name="max_norm", strength=0.0, c=2.0)
    w = torch.tensor([[3.0, 4.0], [0.6, 0.8], [0.0, 0.0]], requires_grad=True)
    before = w.detach().clone()
    reg.project_([w])
    torch.testing.assert_close(torch.linalg.vector_norm(w.detach(), dim=1), torch.tensor([2.0, 1.0, 0.0]))
    torch.testing.assert_close(w.detach()[0], before[0] * 2 / 5)  # rescaled, direction kept
    assert torch.equal(w.detach()[1:], before[1:])  # rows inside the ball untouched


@pytest.mark.parametrize("name", ["none", "l2", "l1"])
def test_projection_is_a_no_op_for_penalties(name: str) -> None:
    w = torch.randn(3, 3) * 10
    before = w.clone()
    build(name=name, strength=1.0).project_([w])
    assert torch.equal(w, before)


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"name": "l2", "strength": -0.1}, "regularizer.strength"),
        ({"name": "l1", "strength": "big"}, "regularizer.strength"),
        ({"name": "elastic_net", "strength": 0.1, "beta": None}, "regularizer.beta"),
        ({"name": "elastic_net", "strength": 0.1}, "regularizer.beta"),
        ({"name": "elastic_net", "strength": 0.1, "beta": -1.0}, "regularizer.beta"),
        ({"name": "max_norm", "strength": 0.0, "c": 0.0}, "regularizer.c"),
        ({"name": "max_norm", "strength": 0.0}, "regularizer.c"),
        ({"name": "dropout", "strength": 0.1}, "regularizer"),
    ],
)
def test_check_rejects_bad_configs(cfg: dict, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(**cfg)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")


def test_negative_strength_message() -> None:
    with pytest.raises(ConfigError, match="must be ≥ 0"):
        regularizers.check(OmegaConf.create({"name": "l2", "strength": -1}))


def test_names() -> None:
    assert regularizers.REGULARIZERS == ("none", "l2", "l1", "elastic_net", "max_norm")
    for name in regularizers.REGULARIZERS:
        assert build(name=name, strength=0.1, beta=0.5, c=1.0).name == name
