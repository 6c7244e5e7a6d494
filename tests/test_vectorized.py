"""Vectorized sweeps: every point of a batched group trains exactly as it would alone.

Each point is compared with the project's single path (`fit`: build_learner → Lightning
Trainer → fit → test, no MLflow) in float64. The contract is a relative difference
≤ 1e-5 in the final train objective; the models are computed by the same formulas,
so the tests hold every metric to 1e-9 (observed: ~1e-15).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from overfit.compose import compose_jobs
from overfit.training.batched_optim import BatchedAdam, BatchedSGD
from overfit.training.module import Diverged, Learner
from overfit.training.fit import fit
from overfit.training.planning import group_key, plan_groups
from overfit.training.vectorized import train_group

F64 = ("trainer.precision=64-true", "trainer.accelerator=cpu")
POLY = ("dataset=polynomial", "features=polynomial", *F64)
REL, ABS = 1e-9, 1e-12


def points(*overrides: str) -> list[DictConfig]:
    return compose_jobs(list(overrides), multirun=True)


def alone(cfg: DictConfig, tmp_path: Path) -> tuple[dict[str, float], Learner] | Diverged:
    """The point through the project's one-point path (``fit``), without MLflow."""
    try:
        fitted = fit(cfg, tmp_path / "checkpoints")
    except Diverged as exc:
        return exc
    return {k: v for k, v in fitted.metrics.items() if k != "generalization_gap"}, fitted.learner


def assert_same_as_alone(cfgs: list[DictConfig], tmp_path: Path, **kwargs) -> list:
    """Train the points as one group and one by one; every metric and weight agrees."""
    results = train_group(cfgs, **kwargs)
    for cfg, result in zip(cfgs, results):
        single = alone(cfg, tmp_path)
        if isinstance(single, Diverged):
            assert result.diverged == (single.epoch, pytest.approx(single.value, rel=REL))
            assert str(result.error()) == str(single)
            continue
        metrics, learner = single
        assert result.diverged is None
        assert set(result.metrics) == {*metrics, "generalization_gap"}
        assert result.metrics["train/objective"] == pytest.approx(metrics["train/objective"], rel=REL)
        for key, value in metrics.items():
            assert result.metrics[key] == pytest.approx(value, rel=REL, abs=ABS), key
        for mine, theirs in zip(result.net.parameters(), learner.net.parameters()):
            torch.testing.assert_close(mine.cpu(), theirs.cpu(), rtol=REL, atol=ABS)
    return results


def test_a_lambda_by_lr_grid_trains_as_each_point_alone(tmp_path: Path) -> None:
    cfgs = points(*POLY, "features.order=5", "regularizer=l2", "regularizer.strength=0,1e-2,1",
                  "optimizer.lr=0.01,0.1,0.5", "trainer.max_epochs=10")
    assert plan_groups(cfgs) == ([list(range(9))], [])
    assert_same_as_alone(cfgs, tmp_path)


def test_mixed_orders_and_training_sizes(tmp_path: Path) -> None:
    cfgs = points(*POLY, "features.order=1,3,7,12", "dataset.n_train=10,40", "regularizer=l2",
                  "regularizer.strength=1e-3", "trainer.max_epochs=10")
    results = assert_same_as_alone(cfgs, tmp_path)
    # Each net is its own point's, without the padding (orthonormal order 12 on 10 points keeps 9 directions).
    assert [r.net[-1].in_features for r in results] == [1, 1, 3, 3, 7, 7, 9, 12]


@pytest.mark.parametrize(
    "setup",
    [
        ("optimizer=sgd", "optimizer.batch_size=8", "features.order=3,12", "seed=0,1"),
        ("optimizer=momentum", "optimizer.batch_size=8", "optimizer.momentum=0.5,0.9", "dataset.n_train=6,30",
         "features.order=12", "regularizer=max_norm", "regularizer.c=0.5"),
        ("optimizer=adam", "optimizer.batch_size=8", "optimizer.lr=0.05", "optimizer.beta1=0.8,0.9",
         "dataset.n_train=12,30", "features.order=7", "regularizer=l1", "regularizer.strength=0.01"),
    ],
    ids=["sgd-seeds-orders", "momentum-sizes-max-norm", "adam-betas-sizes-l1"],
)
def test_minibatch_optimizers_with_their_own_data_and_shuffling(setup: tuple[str, ...], tmp_path: Path) -> None:
    cfgs = points(*POLY, "trainer.max_epochs=4", *setup)
    assert len(cfgs) == 4 and len(plan_groups(cfgs)[0]) == 1
    assert_same_as_alone(cfgs, tmp_path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_a_group_on_the_gpu_trains_as_each_point_alone_on_the_gpu(tmp_path: Path) -> None:
    cfgs = points("dataset=polynomial", "features=polynomial", "trainer.precision=64-true", "trainer.accelerator=gpu",
                  "features.order=3,7", "regularizer=l2", "regularizer.strength=0,1e-2", "optimizer=sgd",
                  "optimizer.batch_size=8", "optimizer.lr=0.1,0.5", "trainer.max_epochs=10")
    assert_same_as_alone(cfgs, tmp_path, device="cuda")


def test_a_diverging_point_is_masked_and_its_neighbours_train_on(tmp_path: Path) -> None:
    cfgs = points(*POLY, "features.order=12", "optimizer.lr=0.1,3,0.5", "trainer.max_epochs=12",
                  "trainer.eval_every_n_epochs=2")
    seen: list[tuple[int, list[bool]]] = []

    def on_epoch(epoch: int, metrics: dict[str, torch.Tensor], alive: torch.Tensor) -> None:
        assert metrics["train/objective"].shape == alive.shape == (3,)
        seen.append((epoch, alive.tolist()))

    results = assert_same_as_alone(cfgs, tmp_path, on_epoch=on_epoch)
    epoch, value = results[1].diverged
    assert value > 1e6 and epoch % 2 == 0
    assert seen == [(e, [True, e < epoch, True]) for e in range(2, 13, 2)]
    assert "test/error" not in results[1].metrics and "generalization_gap" in results[0].metrics


def test_classification_mlp_with_analytic_gradients(tmp_path: Path) -> None:
    mlp = ("dataset=breast_cancer", "model=mlp", "model.hidden=[8,4]", "model.activation=sigmoid",
           "loss=log_likelihood", "loss.gradient=analytic", "regularizer=l2", "trainer.max_epochs=2", *F64)
    cfgs = [*points(*mlp, "optimizer.lr=0.01", "dataset.n_train=100"),
            *points(*mlp, "optimizer.lr=0.1", "dataset.n_train=300")]
    results = assert_same_as_alone(cfgs, tmp_path)
    assert {"train/acc", "val/acc", "test/acc"} <= set(results[0].metrics)


def test_plan_groups_says_why_a_point_trains_alone() -> None:
    base = ("dataset=polynomial", "features=polynomial")
    cfgs = [
        *points(*base, "features.order=1,2"),  # 0, 1: one group
        *points(*base, "optimizer=lbfgs"),  # 2
        *points("dataset=digits", "model=mlp", "model.batch_norm=true"),  # 3
        *points("dataset=digits", "model=mlp", "model.dropout=0.5"),  # 4
        *points(*base, "features.order=4", "trainer.max_epochs=7"),  # 5: another Trainer
        *points("dataset=polynomial", "features=identity", "regularizer=l2", "regularizer.strength=0,1"),  # 6, 7
    ]
    groups, lone = plan_groups(cfgs)
    assert groups == [[0, 1], [6, 7]]
    reasons = dict(lone)
    assert set(reasons) == {2, 3, 4, 5}
    assert "L-BFGS" in reasons[2] and "batch norm" in reasons[3] and "dropout" in reasons[4]
    assert reasons[5] == "nothing to batch with"
    assert group_key(cfgs[2]) is None and group_key(cfgs[0]) == group_key(cfgs[1])
    with pytest.raises(ValueError, match="one group"):
        train_group([cfgs[0], cfgs[6]])


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_batched_optimizers_move_each_model_bit_for_bit_as_torch_optim(name: str, dtype: torch.dtype) -> None:
    """Given the same gradients, M models step exactly as M torch.optim instances; a skipped model stays put."""
    gen = torch.Generator().manual_seed(0)
    hyper = ([0.01, 0.5, 1e-3], [0.9, 0.5, 0.8], [0.999, 0.9, 0.99])
    lr, beta1, beta2 = (torch.tensor(v, dtype=torch.float64) for v in hyper)
    momentum = torch.tensor([0.9, 0.0, 0.5] if name == "momentum" else [0.0] * 3, dtype=torch.float64)
    weights = [torch.randn(3, 2, 5, generator=gen, dtype=dtype), torch.randn(3, 2, generator=gen, dtype=dtype)]
    batched = [w.clone().requires_grad_() for w in weights]
    singles = [[w[m].clone().requires_grad_() for w in weights] for m in range(3)]
    active = torch.ones(3, dtype=torch.bool)
    if name == "adam":
        opt: torch.optim.Optimizer = BatchedAdam(batched, active, lr, beta1, beta2)
        alone_opts = [torch.optim.Adam(p, lr=lr[m].item(), betas=(beta1[m].item(), beta2[m].item()))
                      for m, p in enumerate(singles)]
    else:
        opt = BatchedSGD(batched, active, lr, momentum if name == "momentum" else None)
        alone_opts = [torch.optim.SGD(p, lr=lr[m].item(), momentum=momentum[m].item()) for m, p in enumerate(singles)]
    for step in range(20):
        grads = [torch.randn(w.shape, generator=gen, dtype=dtype) for w in weights]
        active.copy_(torch.tensor([True, step % 3 != 1, True]))
        for p, g in zip(batched, grads):
            p.grad = g.clone()
        opt.step()
        for m in active.nonzero().flatten().tolist():
            for p, g in zip(singles[m], grads):
                p.grad = g[m].clone()
            alone_opts[m].step()
    for m in range(3):
        for p, q in zip(batched, singles[m]):
            assert torch.equal(p[m], q)
