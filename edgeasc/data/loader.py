"""Training-time data: a torch Dataset over the feature cache, time roll and mixup
(docs/method.md §3), deterministic under a seed.

Randomness is derived from (seed, epoch, index) rather than from global state, so the same
seed gives the same batches whatever the number of DataLoader workers or processes, and a
resumed run sees exactly the augmentation an uninterrupted one would have.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from edgeasc.data.cache import FeatureCache

ROLL_FRAMES = 50
MIXUP_ALPHA = 0.3


class CachedFeatures(Dataset):
    """Normalised features of one split: items are (float32 tensor (C, mels, frames), label)."""

    def __init__(self, cache: FeatureCache, split: str, train: bool = False,
                 roll: int = ROLL_FRAMES, seed: int = 0) -> None:
        self.path: Path = cache.directory / f"{split}.npy"
        self.labels = cache.labels(split)
        self.mean, self.std = cache.mean, cache.std
        self.train, self.roll, self.seed = train, roll, seed
        self.epoch = 0
        self._array: np.ndarray | None = None  # opened lazily: a memmap must not be pickled to workers

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        x = (np.asarray(self._array[index], dtype=np.float32) - self.mean) / self.std
        if self.train and self.roll:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            x = np.roll(x, int(rng.integers(-self.roll, self.roll + 1)), axis=-1)
        return torch.from_numpy(np.ascontiguousarray(x)), int(self.labels[index])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}


def mixup(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator, alpha: float = MIXUP_ALPHA
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample λ ~ Beta(α, α), λ ← max(λ, 1 − λ), partner = a random permutation of the batch.

    Returns (mixed x, y, partner y, λ); the loss is λ·CE(y) + (1 − λ)·CE(partner y).
    """
    n = x.shape[0]
    lam = rng.beta(alpha, alpha, size=n)
    lam = np.maximum(lam, 1.0 - lam)
    perm = torch.from_numpy(rng.permutation(n))
    lam_t = torch.as_tensor(lam, dtype=x.dtype, device=x.device)
    shape = (n,) + (1,) * (x.dim() - 1)
    mixed = x * lam_t.view(shape) + x[perm.to(x.device)] * (1.0 - lam_t.view(shape))
    return mixed, y, y[perm.to(y.device)], lam_t


def mixup_cross_entropy(logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor,
                        lam: torch.Tensor) -> torch.Tensor:
    ce = torch.nn.functional.cross_entropy
    return (lam * ce(logits, y_a, reduction="none") + (1 - lam) * ce(logits, y_b, reduction="none")).mean()
