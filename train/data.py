"""What every task is made of: a data set of padded sequences with one target each, and a task's
train and test sets with the score of chance."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class Dataset:
    """N padded sequences with one target each.

    inputs: int64 (N, T) token ids (0 = padding) or float64 (N, T, F) features.
    lengths: int64 (N,), 1 <= lengths[n] <= T; positions >= lengths[n] are padding (zeros).
    targets: float64 (N,), 0.0/1.0 labels (kind "binary") or real values (kind "regression").
    vocab: token id -> word (vocab[0] == "<pad>", vocab[1] == "<unk>"), None for features.
    """

    name: str
    inputs: np.ndarray
    lengths: np.ndarray
    targets: np.ndarray
    kind: str
    vocab: tuple[str, ...] | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.lengths.shape[0]
        if self.kind not in ("binary", "regression"):
            raise ValueError(f"dataset {self.name}: kind must be binary or regression")
        shape = self.inputs.shape
        if self.inputs.ndim not in (2, 3) or shape[0] != n or self.targets.shape != (n,):
            raise ValueError(f"dataset {self.name}: inputs (N, T[, F]), lengths and targets (N,) "
                             f"disagree: {shape}, {self.lengths.shape}, "
                             f"{self.targets.shape}")
        if n and (self.lengths.min() < 1 or self.lengths.max() > self.inputs.shape[1]):
            raise ValueError(f"dataset {self.name}: lengths must lie in [1, T]")

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def tokens(self) -> bool:
        """True when inputs are token ids (N, T), False for features (N, T, F)."""
        return self.inputs.ndim == 2 and np.issubdtype(self.inputs.dtype, np.integer)

    def subset(self, index: np.ndarray) -> Dataset:
        """The rows `index` (int array (M,) or bool mask (N,)), T trimmed to their longest."""
        lengths = self.lengths[index]
        T = int(lengths.max()) if lengths.size else 0
        return Dataset(self.name, self.inputs[index][:, :T], lengths, self.targets[index],
                       self.kind, self.vocab, dict(self.info))


@dataclass(frozen=True, eq=False)
class Task:
    """A train and a test set; chance is the majority-class accuracy on the test set (binary)
    or the MSE of the best constant prediction (regression). draw(e) gives a generated task's
    fresh training rows of epoch e (1-based; train is epoch 1's); None for a fixed corpus."""

    name: str
    train: Dataset
    test: Dataset
    description: str
    chance: float
    draw: Callable[[int], Dataset] | None = None

    @property
    def fresh(self) -> bool:
        """True when every epoch trains on rows of its own."""
        return self.draw is not None

    def epoch_rows(self, epoch: int) -> Dataset:
        """The training rows of epoch `epoch` (1-based): fresh rows for a generated task, the
        same rows every epoch for a fixed corpus."""
        if self.draw is None or epoch == 1:
            return self.train
        return self.draw(epoch)


def majority_share(targets: np.ndarray) -> float:
    """Accuracy of always guessing the majority class of 0/1 targets (N,)."""
    p = float(np.mean(targets)) if targets.size else 0.5
    return max(p, 1.0 - p)
