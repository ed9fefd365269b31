"""Stochastic weight averaging as the authors ran it for their DCASE'20 submissions: the
weights of every `every`-th epoch from `start` on are averaged (an equal-weight running
mean), and the BatchNorm statistics of the averaged network are then estimated afresh on
the training data, since an average of weights has no running statistics of its own.

What is averaged is the weight the network computes with: W ⊙ mask for a magnitude-pruned
conv. The averaged network then gets the final model's masks, so that it has exactly the
pruning target's non-zeros."""

from __future__ import annotations

import copy

import torch
from torch import nn


def effective_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter as the forward pass uses it (masked conv weights multiplied out)."""
    out = {name: p.detach() for name, p in model.named_parameters()}
    for name, module in model.named_modules():
        if hasattr(module, "masked_weight"):  # magnitude masks and gates alike
            out[f"{name}.weight" if name else "weight"] = module.masked_weight().detach()
    return out


class WeightAverage:
    """A running mean of effective parameters, checkpointable for an exact resume."""

    def __init__(self, start: int, every: int) -> None:
        self.start, self.every = start, every
        self.mean: dict[str, torch.Tensor] = {}
        self.count = 0
        self.epochs: list[int] = []

    def due(self, epoch: int) -> bool:
        """Whether the weights after `epoch` (1-based) join the average."""
        return epoch >= self.start and (epoch - self.start) % self.every == 0

    @torch.no_grad()
    def update(self, model: nn.Module, epoch: int) -> None:
        params = effective_parameters(model)
        self.count += 1
        if not self.mean:
            self.mean = {k: v.detach().clone().double() for k, v in params.items()}
        else:
            for k, v in params.items():
                self.mean[k] += (v.double() - self.mean[k]) / self.count
        self.epochs.append(epoch)

    def state_dict(self) -> dict:
        return {"start": self.start, "every": self.every, "count": self.count, "epochs": list(self.epochs),
                "mean": {k: v.cpu() for k, v in self.mean.items()}}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.count, self.epochs = int(state["count"]), list(state["epochs"])
        self.mean = {k: v.to(device) for k, v in state["mean"].items()}

    @torch.no_grad()
    def averaged_model(self, model: nn.Module) -> nn.Module:
        """A copy of `model` carrying the averaged weights; masks (the final model's) kept."""
        averaged = copy.deepcopy(model)
        for name, p in averaged.named_parameters():
            p.copy_(self.mean[name].to(p.dtype))
        return averaged


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, loader, device: torch.device) -> None:
    """Fresh BatchNorm statistics: a cumulative average over one pass of `loader`
    (torch.optim.swa_utils.update_bn, which this is, on (x, y) batches)."""
    from torch.optim.swa_utils import update_bn

    update_bn(((x.to(device), y) for x, y in loader), model, device=device)
