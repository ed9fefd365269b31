"""Magnitude pruning to an exact parameter target (docs/method.md §3, paper section 3.3).

All conv weights (stem, blocks, shortcuts, decomposed factors, head) are ranked together
by the magnitude of the raw weight W (not W * C): one global threshold. The target counts
every trainable parameter, BatchNorm included (BN is never pruned), so K = total - target
conv weights go. At the start of every epoch exactly k(e) = round(ramp(e) * K) weights are
masked, the smallest |W| with ties broken by flat index, so the count is exact even with
ties and zeros. Masks are buffers on the convs (see layers.Conv2d), owned and saved here.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgeasc.errors import ConfigError
from edgeasc.models.layers import Conv2d

SCHEDULES = ("exp", "linear", "cubic")


def ramp(schedule: str, epoch: int, epochs: int) -> float:
    """Fraction of the final pruning reached at the start of `epoch` (0 at 0, 1 from `epochs`)."""
    if epochs <= 0 or epoch >= epochs:
        return 1.0
    t = max(epoch, 0) / epochs
    if schedule == "exp":  # front-loaded: most weights go early, fewer as the model converges
        return (1.0 - math.exp(-5.0 * t)) / (1.0 - math.exp(-5.0))
    if schedule == "linear":
        return t
    if schedule == "cubic":
        return 1.0 - (1.0 - t) ** 3
    raise ConfigError(f"unknown prune schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


class Pruner:
    def __init__(self, model: nn.Module, target: int | None = None, ratio: float | None = None,
                 schedule: str = "exp", epochs: int = 100, monotone: bool = False, start: int = 0) -> None:
        if (target is None) == (ratio is None):
            raise ConfigError("give exactly one of a prune target or a prune ratio")
        ramp(schedule, 0, 1)  # validates the name
        if not isinstance(epochs, int) or epochs < 0:
            raise ConfigError(f"--prune-epochs must be an integer >= 0, got {epochs!r}")
        self.convs: list[tuple[str, Conv2d]] = [(n, m) for n, m in model.named_modules() if isinstance(m, Conv2d)]
        others = [m for m in model.modules() if isinstance(m, nn.Conv2d) and not isinstance(m, Conv2d)]
        if others or not self.convs:
            raise ConfigError("pruning needs an edgeasc model (its convs carry the masks)")
        self.n_conv = sum(m.weight.numel() for _, m in self.convs)
        self.total = sum(p.numel() for p in model.parameters() if p.requires_grad)
        fixed = self.total - self.n_conv
        if target is not None:
            if isinstance(target, bool) or not isinstance(target, int) or not fixed < target <= self.total:
                raise ConfigError(f"prune target must be an integer in ({fixed:,}, {self.total:,}] for this model "
                                  f"(all parameters, BatchNorm's {fixed:,} included), got {target!r}")
            self.k_final = self.total - target
        else:
            if not 0.0 <= ratio < 1.0:
                raise ConfigError(f"prune ratio must be in [0, 1), got {ratio!r}")
            self.k_final = round(ratio * self.n_conv)
        self.target = self.total - self.k_final
        self.schedule, self.epochs, self.monotone = schedule, epochs, monotone
        self.start = start  # the ramp's epoch 0 (after channel pruning, the epoch its ramp ended)
        self.k_current = 0

    @property
    def ratio(self) -> float:
        return self.k_final / self.n_conv

    def k_at(self, epoch: int) -> int:
        return round(ramp(self.schedule, max(0, epoch - self.start), self.epochs) * self.k_final)

    @torch.no_grad()
    def update(self, epoch: int) -> int:
        """Recompute the masks for `epoch` from the current raw weights; returns k pruned."""
        k = self.k_at(epoch)
        weights = [m.weight.detach().reshape(-1) for _, m in self.convs]
        scores = torch.cat(weights).abs().float()
        if self.monotone and self.k_current:
            scores[~torch.cat([m.weight_mask.reshape(-1) for _, m in self.convs]).bool()] = -1.0
        keep = torch.ones_like(scores, dtype=torch.bool)
        if k:
            # stable sort: equal magnitudes are pruned in flat-index order, so exactly k go
            order = torch.sort(scores, stable=True).indices
            keep[order[:k]] = False
        self._set_masks(keep)
        self.k_current = k
        return k

    def _set_masks(self, keep: torch.Tensor) -> None:
        offset = 0
        for _, m in self.convs:
            n = m.weight.numel()
            m.weight_mask = keep[offset:offset + n].view_as(m.weight).to(m.weight.dtype)
            offset += n

    @torch.no_grad()
    def finalize(self) -> None:
        """Multiply the masks into the weights and drop them: the model carries no masks."""
        for _, m in self.convs:
            m.fold_mask()

    def state_dict(self) -> dict:
        masks = {name: m.weight_mask.bool().cpu() for name, m in self.convs if m.weight_mask is not None}
        return {"k_current": self.k_current, "masks": masks}

    def load_state_dict(self, state: dict) -> None:
        self.k_current = int(state["k_current"])
        for name, m in self.convs:
            if name in state["masks"]:
                m.weight_mask = state["masks"][name].to(m.weight.device, m.weight.dtype)

    def describe(self) -> dict:
        return {"target": self.target, "k_final": self.k_final, "ratio": self.ratio, "schedule": self.schedule,
                "epochs": self.epochs, "start": self.start, "monotone": self.monotone, "conv_weights": self.n_conv,
                "total_params": self.total}

