"""Feeding device-resident tensors to Lightning without a DataLoader.

Small datasets are moved to the training device once; an epoch is a sequence
of slices of one random permutation, so no Python object is touched per
example and no batch crosses the host–device boundary. On one device the
whole epoch is handed to Lightning as one item (its batches, drawn lazily):
the module runs an epoch's optimizer steps inside one training step, so
Lightning's fixed cost per step is paid once per epoch, not once per batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import lightning as L
import torch

from overfit.data.base import Splits


class TensorBatches:
    """Batches ``(x[idx], y[idx])`` for consecutive slices of a permutation.

    ``batch_size=None`` yields the whole set as one batch (gradient descent).
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int | None, generator: torch.Generator | None = None
    ) -> None:
        self.x, self.y = x, y
        self.batch_size = batch_size or len(x)
        self.generator = generator  # None: in order (evaluation); a generator: shuffled each epoch

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        if self.batch_size >= n:
            yield self.x, self.y
            return
        if self.generator is not None:
            order = torch.randperm(n, device=self.x.device, generator=self.generator)
            for idx in order.split(self.batch_size):
                yield self.x[idx], self.y[idx]
        else:
            yield from zip(self.x.split(self.batch_size), self.y.split(self.batch_size))


class WholeEpochs:
    """One item per epoch: the epoch's :class:`TensorBatches` (a sequence would be read as several loaders)."""

    def __init__(self, batches: TensorBatches) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[TensorBatches]:
        yield self.batches


class TensorDataModule(L.LightningDataModule):
    """Train / val / test splits as tensors on the trainer's device.

    Training and validation sets are evaluated by the module itself at the end
    of an epoch (see :class:`overfit.module.Learner`); the test set goes
    through Lightning's test loop once, at the end, as one batch that the
    module evaluates in chunks the same way.
    """

    def __init__(self, splits: Splits, batch_size: int | None, seed: int, whole_epochs: bool = False) -> None:
        super().__init__()
        self.splits = splits
        self.batch_size = batch_size
        self.seed = seed
        self.whole_epochs = whole_epochs  # one item per epoch, for a module that steps through it itself
        self.generator: torch.Generator | None = None

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device
        self.splits = self.splits.to(device)
        if self.generator is None:  # its own stream, seeded by the config: resumable, and the same for a batched sweep
            self.generator = torch.Generator(device).manual_seed(self.seed)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The shuffling stream's state, so a resumed run draws the permutations it would have drawn."""
        return {} if self.generator is None else {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if "generator" in state:
            device = self.trainer.strategy.root_device if self.trainer is not None else "cpu"
            self.generator = torch.Generator(device)
            self.generator.set_state(state["generator"])

    def train_dataloader(self) -> TensorBatches | WholeEpochs:
        s = self.splits
        batches = TensorBatches(s.x_train, s.y_train, self.batch_size, self.generator)
        return WholeEpochs(batches) if self.whole_epochs else batches

    def test_dataloader(self) -> TensorBatches:
        s = self.splits
        return TensorBatches(s.x_test, s.y_test, None)
