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
                 roll: int = ROLL_FRAMES, seed: int = 0, targets: np.ndarray | None = None) -> None:
        """`targets`: one row per clip (a teacher's logits) returned as a third item."""
        self.path: Path = cache.directory / f"{split}.npy"
        self.labels = cache.labels(split)
        self.mean, self.std = cache.mean, cache.std
        self.train, self.roll, self.seed = train, roll, seed
        self.epoch = 0
        self.targets = targets
        if targets is not None and len(targets) != len(self.labels):
            raise ValueError(f"{len(targets)} target rows for {len(self.labels)} clips")
        self._array: np.ndarray | None = None  # opened lazily: a memmap must not be pickled to workers

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._item((np.asarray(self._array[index], dtype=np.float32) - self.mean) / self.std, index)

    def _item(self, x: np.ndarray, index: int) -> tuple:
        """The item of normalised features `x` of clip `index`: time roll (training), label, targets."""
        if self.train and self.roll:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            x = np.roll(x, int(rng.integers(-self.roll, self.roll + 1)), axis=-1)
        item = torch.from_numpy(np.ascontiguousarray(x)), int(self.labels[index])
        if self.targets is not None:
            return (*item, torch.from_numpy(np.array(self.targets[index], dtype=np.float32)))
        return item

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}


def mixup(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator, alpha: float = MIXUP_ALPHA
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample λ ~ Beta(α, α), λ ← max(λ, 1 − λ), partner = a random permutation of the batch.

    Returns (mixed x, y, partner y, λ); the loss is λ·CE(y) + (1 − λ)·CE(partner y).
    """
    lam, perm = mixup_plan(x.shape[0], rng, alpha)
    return mix(x, lam, perm), y, y[perm.to(y.device)], lam.to(x.dtype).to(x.device)


def mixup_plan(n: int, rng: np.random.Generator, alpha: float = MIXUP_ALPHA) -> tuple[torch.Tensor, torch.Tensor]:
    """(λ per sample, partner permutation) of one mixup step: what `mix` applies to the
    inputs and, under distillation, to the teachers' soft targets. α = 0: no mixing."""
    if alpha <= 0:
        return torch.ones(n), torch.arange(n)
    lam = rng.beta(alpha, alpha, size=n)
    lam = np.maximum(lam, 1.0 - lam)
    return torch.as_tensor(lam, dtype=torch.float32), torch.from_numpy(rng.permutation(n))


def mix(t: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """λ·t + (1 − λ)·t[perm], λ broadcast over all but the first dimension."""
    lam = lam.to(device=t.device, dtype=t.dtype).view((len(lam),) + (1,) * (t.dim() - 1))
    return t * lam + t[perm.to(t.device)] * (1.0 - lam)


def freq_mixstyle(x: torch.Tensor, rng: np.random.Generator, p: float, alpha: float, eps: float = 1e-6
                  ) -> torch.Tensor:
    """Freq-MixStyle (Schmid et al.; the DCASE 2022-2025 task-1 baselines): with probability `p`
    per batch, normalise every example by its per-frequency-band mean and std (over channels
    and time) and re-scale it with a Beta(α, α) mix of its own statistics and those of a
    shuffled partner, so that device-specific frequency responses are mixed across the batch.
    The statistics carry no gradient. x: (batch, channels, mels, frames)."""
    if rng.random() >= p:
        return x
    n = x.shape[0]
    lam = torch.as_tensor(rng.beta(alpha, alpha, size=n), dtype=x.dtype, device=x.device).view(n, 1, 1, 1)
    perm = torch.from_numpy(rng.permutation(n)).to(x.device)
    mu = x.mean(dim=(1, 3), keepdim=True).detach()
    sig = (x.var(dim=(1, 3), keepdim=True) + eps).sqrt().detach()
    mu_mix = lam * mu + (1 - lam) * mu[perm]
    sig_mix = lam * sig + (1 - lam) * sig[perm]
    return (x - mu) / sig * sig_mix + mu_mix


def freq_mask(x: torch.Tensor, rng: np.random.Generator, max_bins: int) -> torch.Tensor:
    """Frequency masking (SpecAugment; torchaudio's FrequencyMasking with iid masks, as in the
    DCASE 2024/25 baselines): per clip a band of floor(u·max_bins) mel bins, u ~ U[0, 1), from
    bin floor(v·(mels − width)), v ~ U[0, 1), is set to 0 over all channels and frames. The
    features are normalised per band, so 0 is the band's training mean (the baselines mask
    the mel power before the log instead). x: (batch, channels, mels, frames)."""
    if max_bins <= 0:
        return x
    n, mels = x.shape[0], x.shape[2]
    width = rng.random(n) * max_bins
    start = np.floor(rng.random(n) * (mels - width)).astype(np.int64)
    stop = start + np.floor(width).astype(np.int64)
    bins = np.arange(mels)
    keep = ~((bins[None, :] >= start[:, None]) & (bins[None, :] < stop[:, None]))
    return x * torch.from_numpy(keep).to(device=x.device, dtype=x.dtype).view(n, 1, mels, 1)


def parse_freq_mixstyle(text: str | None) -> tuple[float, float] | None:
    """"P,ALPHA" (e.g. "0.4,0.3") -> (p, alpha); None stays None."""
    from edgeasc.errors import ConfigError

    if text is None:
        return None
    try:
        p, alpha = (float(v) for v in str(text).split(","))
    except ValueError:
        raise ConfigError(f"--freq-mixstyle takes P,ALPHA like 0.4,0.3, got {text!r}") from None
    if not (np.isfinite(p) and 0 <= p <= 1 and np.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"--freq-mixstyle needs 0 <= P <= 1 and ALPHA > 0, got {text!r}")
    return p, alpha


def mixup_cross_entropy(logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor,
                        lam: torch.Tensor) -> torch.Tensor:
    ce = torch.nn.functional.cross_entropy
    return (lam * ce(logits, y_a, reduction="none") + (1 - lam) * ce(logits, y_b, reduction="none")).mean()
