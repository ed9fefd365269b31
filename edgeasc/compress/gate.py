"""Gate pruning, the method of the released DCASE'20 winner (`--prune-method gate`).

Only the 1x1 convs inside the stages are prunable (shortcuts included); the stem, every
larger kernel and the head stay dense. Each prunable weight has a trainable score; the
forward pass uses the weight where its score is >= 0 and zero elsewhere, and the backward
pass reaches the scores through a sigmoid's derivative (layers.PruneGate). At the start of
every epoch the scores are ranked globally and reset: the lowest k(e) to -1, the rest to
+1, so that exactly the target non-zero count remains (all parameters, BatchNorm counted),
k(e) ramping like magnitude pruning's. The scores are not parameters of the network: they
are not counted, not in its state_dict and never exported; the pruner saves them itself.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeasc.compress.pruning import Pruner
from edgeasc.errors import ConfigError


def prunable(name: str, conv: nn.Module) -> bool:
    return name.startswith("stage") and tuple(conv.kernel_size) == (1, 1)


class GatePruner(Pruner):
    method = "gate"

    def __init__(self, model: nn.Module, target: int, schedule: str = "exp", epochs: int = 100,
                 start: int = 0) -> None:
        if target is None:
            raise ConfigError("gate pruning needs --prune-target (non-zero parameters, BatchNorm counted)")
        super().__init__(model, target=target, schedule=schedule, epochs=epochs, start=start)
        self.convs = [(n, m) for n, m in self.convs if prunable(n, m)]
        self.n_conv = sum(m.weight.numel() for _, m in self.convs)
        fixed = self.total - self.n_conv
        if not self.convs or not fixed < target:
            raise ConfigError(f"gate pruning prunes only the 1x1 convs ({self.n_conv:,} weights): the target must be "
                              f"in ({fixed:,}, {self.total:,}] for this model, got {target:,}")
        device = next(model.parameters()).device
        self.scores = {n: torch.ones_like(m.weight, device=device, requires_grad=True) for n, m in self.convs}
        for name, m in self.convs:
            m.gate_scores = self.scores[name]

    def parameters(self) -> list[torch.Tensor]:
        """What the optimiser trains besides the network."""
        return list(self.scores.values())

    @torch.no_grad()
    def update(self, epoch: int) -> int:
        k = self.k_at(epoch)
        flat = torch.cat([s.detach().reshape(-1) for s in self.scores.values()]).float()
        keep = torch.ones_like(flat, dtype=torch.bool)
        if k:
            keep[torch.sort(flat, stable=True).indices[:k]] = False  # ties: flat-index order, exactly k
        offset = 0
        for s in self.scores.values():
            n = s.numel()
            s.copy_(torch.where(keep[offset:offset + n].view_as(s), 1.0, -1.0))
            offset += n
        self.k_current = k
        return k

    def state_dict(self) -> dict:
        masks = {n: (s.detach() >= 0).cpu() for n, s in self.scores.items()}  # what model_from_checkpoint applies
        return {"method": self.method, "k_current": self.k_current, "masks": masks,
                "scores": {n: s.detach().cpu() for n, s in self.scores.items()}}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        self.k_current = int(state["k_current"])
        for name, s in self.scores.items():
            s.copy_(state["scores"][name].to(s.device, s.dtype))

    def describe(self) -> dict:
        return {**super().describe(), "method": self.method, "prunable": "1x1 convs in the stages"}
