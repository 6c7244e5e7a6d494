"""Vectorized sweeps: the points of a sweep that share a shape, trained as one batched model.

Model m of M keeps its own data, feature map, λ, learning rate, momentum/betas and
shuffling stream; its weights get a leading model dimension, so one forward and one
backward serve all M:

    Φ_m = features_m(standardise_m(x_m))        once, on the device, by the point's own modules
    s_m = Φ_m[batch_m] · W_mᵀ + b_m             one baddbmm (orders padded with zero columns)
    J   = Σ_m [ (1/|batch_m|)·Σ_i L(s_mi, y_mi) + λ_m·R(W_m) ]

The models share no parameter, so ∂J/∂W_m is model m's own gradient, and the batched
optimizers (batched_optim.py) apply torch's own update to each. A padded column of
Φ is zero, so its weight gets gradient 0 + λ·R'(0) = 0 and stays 0. A model that
diverges stops moving; the others train on.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from overfit.data.base import Splits
from overfit.training.batched_optim import BatchedOptimizer
from overfit.training.module import DIVERGENCE_GROWTH, EVAL_ELEMENTS, Diverged, Learner, build_learner
from overfit.training.parts import build
from overfit.training.planning import group_key
from overfit.training.trainer import build_trainer

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import Callback

EpochCallback = Callable[[int, dict[str, Tensor], Tensor], None]
_SPLITS = ("train", "val", "test")


def _plain(node: DictConfig) -> str:
    """A config node as a hashable key (to_yaml costs ten times as much)."""
    return str(OmegaConf.to_container(node, resolve=True))


# --- the batches: each model's own permutation stream -----------------------------
class _Schedule:
    """Per step, (idx [M, B], valid [M, B]): every model's batch, drawn as TensorBatches would draw it alone.

    A model whose set fits one batch takes it whole and in order (no permutation drawn);
    the others draw a permutation per epoch from their own generator, seeded like the
    single run's, and walk it in slices of batch_size. A model with fewer slices than
    the longest sits out the last steps (valid all False). The generators are the
    module's (their states travel in its checkpoint).
    """

    def __init__(self, n: list[int], batch_size: int | None, generators: dict[int, torch.Generator],
                 device: torch.device) -> None:
        width = min(batch_size or max(n), max(n))
        self.shuffled = [m for m, k in enumerate(n) if k > width]
        self.n, self.steps = n, max(math.ceil(k / width) for k in n)
        position = torch.arange(self.steps * width, device=device)
        self.valid = (position < torch.tensor(n, device=device)[:, None]).view(len(n), self.steps, width)
        self.idx = torch.where(self.valid, position.view(self.steps, width), 0)  # in order: the whole set
        self.generators = generators

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        idx = self.idx
        if self.shuffled:
            idx = idx.clone()
            for m in self.shuffled:
                order = torch.randperm(self.n[m], device=idx.device, generator=self.generators[m])
                idx[m].view(-1)[: self.n[m]] = order
        for step in range(self.steps):
            yield idx[:, step], self.valid[:, step]


# --- the batched model --------------------------------------------------------------
class VectorizedLearner(L.LightningModule):
    """M points' Learners as one module: (1/N)·Σ L_i + λ_m·R(W_m) for every m in one pass.

    ``learners`` are the points' own modules from build_learner (their feature stages are
    reused, their initial weights copied in); ``splits`` their data. Per evaluated epoch
    ``on_epoch(epoch, metrics, alive)`` receives host tensors [M] (one sync per epoch).
    A checkpoint holds, besides the weights and the optimizer, each model's shuffling
    stream, which models are still alive, where the others diverged, and ``members``
    (what the caller says the models are), so a resumed group continues every trajectory.
    """

    def __init__(self, cfgs: list[DictConfig], learners: list[Learner], splits: list[Splits],
                 on_epoch: EpochCallback | None = None) -> None:
        super().__init__()
        template = learners[0]
        self.cfgs, self.on_epoch = cfgs, on_epoch
        self.loss, self.regularizer = template.loss, template.regularizer
        self.learners_optimizers = [lrn.optimizer_spec for lrn in learners]
        self.classification = template.classification
        self.eval_every_n_epochs = template.eval_every_n_epochs
        strength = torch.tensor([lrn.regularizer.strength for lrn in learners], dtype=torch.float64)
        self.register_buffer("strength", strength, persistent=False)
        self.penalized = bool((strength != 0).any())  # λ = 0 everywhere: no penalty to compute (as the Learner)
        # One feature stack per distinct (data, feature config): sweeps over λ and lr share Φ.
        slots: dict[tuple, int] = {}
        slot, firsts = [], []  # each point's slot, the first point of each slot
        for m, (cfg, data) in enumerate(zip(cfgs, splits)):
            slot.append(slots.setdefault((id(data), build(cfg).dataset.standardize, _plain(cfg.features)), len(slots)))
            if slot[-1] == len(firsts):
                firsts.append(m)
        self.slot = torch.tensor(slot)
        self.stacks = nn.ModuleList(copy.deepcopy(learners[m].net[:-1]) for m in firsts)
        self.data = [splits[m] for m in firsts]
        # Layers: every point's weights, stacked along a leading model dimension.
        layers = [[m for m in lrn.net[-1].modules() if isinstance(m, nn.Linear)] for lrn in learners]
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for depth in range(len(layers[0])):
            stack = [point[depth] for point in layers]
            w = torch.zeros(len(stack), stack[0].out_features, max(lin.in_features for lin in stack))
            for m, lin in enumerate(stack):
                w[m, :, : lin.in_features] = lin.weight.detach()
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.stack([lin.bias.detach() for lin in stack])))
        top = template.net[-1]
        self.between = nn.ModuleList(c for c in (top.children() if isinstance(top, nn.Sequential) else ())
                                     if not isinstance(c, nn.Linear))  # the activations, parameterless
        self.widest = max(max(w.shape[1:]) for w in self.weights)
        self._per_example = torch.vmap(self._one_loss())
        self._r = torch.vmap(self.regularizer.r)
        self.first_objective: Tensor | None = None  # [M], float64, on the host
        self.diverged: list[tuple[int, float] | None] = [None] * len(cfgs)
        self.last: dict[str, Tensor] = {}  # each model's last logged train/val metrics (host)
        self.test_metrics: dict[str, Tensor] = {}
        self.alive_host = torch.ones(len(cfgs), dtype=torch.bool)
        self.generators: dict[int, torch.Generator] = {}
        self._generator_states: dict[int, Tensor] = {}  # from a checkpoint, applied once the device is known
        self.members: list[str] = []  # set by the caller: saved in checkpoints, compared on resume

    def _one_loss(self) -> Callable[[Tensor, Tensor], Tensor]:
        """L of one example: the point's Loss on a batch of one (an analytic backward is autograd's here)."""
        return self.loss.example

    # --- data on the device, features computed once -----------------------------------
    def on_fit_start(self) -> None:
        dtype, device = self.weights[0].dtype, self.device
        self.slot = self.slot.to(device)
        self.alive = self.alive_host.to(device)
        self.phi, self.y, self.n = {}, {}, {}
        with torch.no_grad():
            for split in _SPLITS:
                xs = [getattr(s, f"x_{split}").to(device) for s in self.data]
                phis = [stack(x.to(dtype)) for stack, x in zip(self.stacks, xs)]
                ys = [getattr(s, f"y_{split}").to(device) for s in self.data]
                ys = [y.to(dtype) if y.is_floating_point() else y for y in ys]
                self.phi[split] = _padded(phis, (max(len(p) for p in phis), max(p.shape[1] for p in phis)))
                self.y[split] = _padded(ys, (max(len(y) for y in ys), *ys[0].shape[1:]))
                self.n[split] = torch.tensor([len(y) for y in ys], device=device)[self.slot]
        self.own_data = len(self.data) == len(self.cfgs)  # slot m is model m's: no rows to gather
        self._valid: dict[tuple[str, int], Tensor] = {}

    def train_dataloader(self) -> _Schedule:
        n = self.n["train"].tolist()
        batch_size = self.learners_optimizers[0].batch_size
        width = min(batch_size or max(n), max(n))
        for m, k in enumerate(n):
            if k > width and m not in self.generators:  # seeded like the single run's stream
                self.generators[m] = torch.Generator(self.device).manual_seed(self.cfgs[m].seed)
                if m in self._generator_states:
                    self.generators[m].set_state(self._generator_states[m])
        return _Schedule(n, batch_size, self.generators, self.device)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["overfit_group"] = {
            "members": list(self.members), "alive": self.alive_host.clone(), "diverged": list(self.diverged),
            "first_objective": self.first_objective, "last": dict(self.last),
            "generators": {m: g.get_state() for m, g in self.generators.items()}}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["overfit_group"]
        if state["members"] != self.members:
            raise ValueError("the checkpoint belongs to another group of points")
        self.alive_host, self.first_objective, self.last = state["alive"], state["first_objective"], state["last"]
        self.diverged = [None if d is None else (int(d[0]), float(d[1])) for d in state["diverged"]]
        self._generator_states = dict(state["generators"])

    def configure_optimizers(self) -> BatchedOptimizer:
        """Every point's own optimizer knobs in one batched update (the component's batched form)."""
        self.active = torch.zeros(len(self.cfgs), dtype=torch.bool, device=self.device)
        optimizers = self.learners_optimizers
        return optimizers[0].batched(self.parameters(), self.active, optimizers)

    # --- the maths -----------------------------------------------------------------------
    def forward(self, phi: Tensor) -> Tensor:
        """[M, B, P] features → [M, B, O] scores, every model through its own layers."""
        h = phi
        for depth, (w, b) in enumerate(zip(self.weights, self.biases)):
            if depth:
                h = self.between[depth - 1](h)
            h = torch.baddbmm(b.unsqueeze(1), h, w.mT)
        return h

    def penalty(self) -> Tensor:
        """λ_m·Σ_l R(W_lm) per model, weights only."""
        if not self.penalized:
            return torch.zeros(len(self.cfgs), dtype=self.weights[0].dtype, device=self.device)
        total = sum(self._r(w) for w in self.weights)
        return self.strength.to(total) * total

    def _rows(self, split: str, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Each model's features and targets at idx [M, B]: rows of its slot, one index_select."""
        phi, y = self.phi[split], self.y[split]
        flat = (self.slot[:, None] * phi.shape[1] + idx).flatten()
        pick = lambda t: t.flatten(0, 1).index_select(0, flat).view(*idx.shape, *t.shape[2:])  # noqa: E731
        return pick(phi), pick(y)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        idx, valid = batch
        count = valid.sum(1)
        self.active.copy_((count > 0) & self.alive)  # the optimizer steps these models only
        phi, y = self._rows("train", idx)
        per = self._per_example(self(phi).flatten(0, 1), y.flatten(0, 1)).view(valid.shape)
        objective = torch.where(valid, per, 0).sum(1) / count.clamp_min(1) + self.penalty()
        return torch.where(self.active, objective, 0).sum()

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.regularizer.projects:  # a constraint (max-norm): a projection per row of every model, where it stepped
            with torch.no_grad():
                for w in self.weights:
                    projected = w.detach().clone()
                    self.regularizer.project_([projected.flatten(0, -2)])
                    w.copy_(torch.where(self.active[:, None, None], projected, w))

    # --- evaluation: Σ loss, Σ error per model, on the device ------------------------------
    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, Tensor]:
        """{split}/loss, /error (and /acc) per model [M], over its whole set, in chunks."""
        n, size = self.n[split], self.phi[split].shape[1]
        chunk = max(1, EVAL_ELEMENTS // (len(n) * self.widest))
        sums = torch.zeros(2, len(n), dtype=self.weights[0].dtype, device=self.device)
        for start in range(0, size, chunk):
            stop = min(size, start + chunk)
            if (split, start) not in self._valid:  # the data never changes: each chunk's mask is made once
                self._valid[split, start] = torch.arange(start, stop, device=self.device) < n[:, None]
            valid = self._valid[split, start]
            phi, y = self.phi[split][:, start:stop], self.y[split][:, start:stop]
            if not self.own_data:  # models that share a slot read its rows (replicates each have their own)
                phi, y = phi.index_select(0, self.slot), y.index_select(0, self.slot)
            scores = self(phi).flatten(0, 1)
            y = y.flatten(0, 1)
            per = self._per_example(scores, y).view(valid.shape)
            prediction = self.loss.predict(scores)
            wrong = (prediction != y) if self.classification else (prediction - y).pow(2).flatten(1).sum(1)
            errors = wrong.to(per.dtype).view(valid.shape)
            sums += torch.stack([torch.where(valid, per, 0).sum(1), torch.where(valid, errors, 0).sum(1)])
        metrics = {f"{split}/loss": sums[0] / n, f"{split}/error": sums[1] / n}
        if self.classification:
            metrics[f"{split}/acc"] = 1 - metrics[f"{split}/error"]
        return metrics

    def on_train_epoch_end(self) -> None:
        epoch = self.current_epoch + 1
        if epoch % self.eval_every_n_epochs and epoch != self.trainer.max_epochs:
            return
        metrics = {**self.evaluate("train"), **self.evaluate("val")}
        metrics["train/objective"] = metrics["train/loss"] + self.penalty().detach()
        host = torch.stack(list(metrics.values())).double().cpu()  # the one host sync per evaluated epoch
        values = dict(zip(metrics, host))
        # The single Learner's rule, in float64 on the host: non-finite, or a millionfold the first value.
        objective = values["train/objective"]
        if self.first_objective is None:
            self.first_objective = objective
        bad = ~torch.isfinite(objective) | (objective > DIVERGENCE_GROWTH * self.first_objective.clamp_min(1e-12))
        was_alive = self.alive_host
        self.alive_host = alive = was_alive & ~bad
        for m in (was_alive & bad).nonzero().flatten().tolist():
            self.diverged[m] = (epoch, float(objective[m]))
        if not alive.equal(was_alive):
            self.alive.copy_(alive)  # the diverged stop moving from the next step on
        for key, value in values.items():
            values[key] = torch.where(was_alive, value, math.nan)  # the dead are out of the results
            self.last[key] = torch.where(alive, value, self.last.get(key, torch.full_like(value, math.nan)))
        if self.on_epoch is not None:
            self.on_epoch(epoch, values, alive)
        if not alive.any():
            self.trainer.should_stop = True

    def on_train_end(self) -> None:
        test = self.evaluate("test")
        host = torch.stack(list(test.values())).double().cpu()
        self.test_metrics = {k: torch.where(self.alive_host, v, math.nan) for k, v in zip(test, host)}
        self.phi = self.y = {}  # the device copies are no longer needed

    def write_back(self, m: int, learner: Learner) -> None:
        """Model m's trained weights into its point's own Learner (CPU, the trained dtype)."""
        learner.to(device="cpu", dtype=self.weights[0].dtype)
        layers = [lin for lin in learner.net[-1].modules() if isinstance(lin, nn.Linear)]
        with torch.no_grad():
            for lin, w, b in zip(layers, self.weights, self.biases):
                lin.weight.copy_(w[m, :, : lin.in_features])
                lin.bias.copy_(b[m])


def _padded(tensors: list[Tensor], shape: tuple[int, ...]) -> Tensor:
    """Stack tensors of different leading sizes, zero-padded to ``shape``."""
    out = tensors[0].new_zeros(len(tensors), *shape)
    for i, t in enumerate(tensors):
        out[(i, *(slice(0, k) for k in t.shape))] = t
    return out


# --- the entry point -----------------------------------------------------------------
@dataclass
class GroupResult:
    """One point of a group, as its single run would have left it.

    ``metrics``: the last evaluated epoch's train/* and val/*, then test/* and
    generalization_gap (a diverged point keeps only what it had logged before diverging).
    ``diverged``: (1-based epoch, train objective) where the divergence rule fired.
    ``learner``: the point's own Learner from build_learner, holding the trained weights.
    """

    cfg: DictConfig
    metrics: dict[str, float]
    diverged: tuple[int, float] | None
    learner: Learner

    @property
    def net(self) -> nn.Sequential:
        """standardise → features → model with the trained weights: what the single run's checkpoint holds."""
        return self.learner.net

    def error(self) -> Diverged | None:
        """The exception the single run would have raised."""
        return None if self.diverged is None else Diverged(*self.diverged)


def _trainer_config(cfg: DictConfig, device: torch.device | str | None) -> DictConfig:
    """The group's trainer config, on ``device`` if one is named."""
    trainer = copy.deepcopy(cfg.trainer)
    if device is not None:
        device = torch.device(device)
        cpu = device.type == "cpu"
        trainer.accelerator = "cpu" if cpu else "gpu"
        trainer.devices = 1 if cpu else [device.index or 0]
    return trainer


def load_splits(cfgs: list[DictConfig]) -> list[Splits]:
    """Each point's data, loaded once per distinct (dataset, seed) and shared (so is its Φ)."""
    keys = [(_plain(c.dataset), c.seed) for c in cfgs]
    loaded: dict[tuple[str, int], Splits] = {}
    for key, c in zip(keys, cfgs):
        if key not in loaded:
            loaded[key] = build(c).dataset.load(c.seed)
    return [loaded[key] for key in keys]


def train_group(
    cfgs: list[DictConfig],
    splits_per_model: list[Splits] | None = None,
    *,
    on_epoch: EpochCallback | None = None,
    device: torch.device | str | None = None,
    output_dir: Path | None = None,
    callbacks: list[Callback] | None = None,
    members: list[str] | None = None,
    ckpt_path: Path | None = None,
) -> list[GroupResult]:
    """Train points of one group (equal group_key) as one batched model; one result per point, in order.

    ``splits_per_model``: each point's data (None: loaded here, shared where dataset and seed
    agree; pass the same Splits object to points with the same data to share Φ). Each
    point's network is built by build_learner under its own seed, exactly as its single
    run starts. ``on_epoch(epoch, metrics, alive)``: per evaluated epoch (1-based), host
    tensors [M] of train/loss, train/objective, train/error, val/loss, val/error (+ acc);
    alive[m] False means model m has diverged (at this epoch or before): don't log it.
    ``device``: "cpu", "cuda", "cuda:1"... (None: the config's accelerator).
    ``callbacks`` (a :class:`~overfit.training.resume.Resume`: checkpoints and signals), ``members``
    (names of the points, kept in its checkpoints) and ``ckpt_path`` (a checkpoint of the same
    members to continue from) make the group resumable like a single run.
    """
    keys = {group_key(c) for c in cfgs}
    if None in keys or len(keys) != 1:
        raise ValueError("train_group needs points of one group: see overfit.training.planning.plan_groups")
    splits = splits_per_model if splits_per_model is not None else load_splits(cfgs)
    learners = []
    with torch.random.fork_rng(devices=[]):
        for cfg, data in zip(cfgs, splits, strict=True):
            # The single run's initial weights: seed_everything's seed of the CPU generator they come from.
            torch.default_generator.manual_seed(cfg.seed)
            learners.append(build_learner(build(cfg), cfg, data))
    module = VectorizedLearner(cfgs, learners, splits, on_epoch)
    module.members = list(members or [])
    trainer = build_trainer(_trainer_config(cfgs[0], device), False, output_dir or Path.cwd(), callbacks or [])
    trainer.fit(module, ckpt_path=ckpt_path, weights_only=True)
    results = []
    for m, (cfg, learner) in enumerate(zip(cfgs, learners)):
        module.write_back(m, learner)
        metrics = {k: float(v[m]) for k, v in module.last.items() if not math.isnan(v[m])}
        if module.diverged[m] is None:
            metrics.update({k: float(v[m]) for k, v in module.test_metrics.items()})
            metrics["generalization_gap"] = metrics["test/error"] - metrics["train/error"]
        results.append(GroupResult(cfg, metrics, module.diverged[m], learner))
    return results
