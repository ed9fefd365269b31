"""Evaluation: loss, accuracy, per-class and per-device accuracy, confusion matrix.

Counts are sums, so a sharded evaluation over several processes is reduced exactly with
one all-reduce (no padded duplicates, unlike DistributedSampler).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from edgeasc.data.cache import FeatureCache
from edgeasc.data.loader import CachedFeatures


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    confusion: list[list[int]]          # rows: true class, columns: predicted
    per_class: dict[str, float]
    per_device: dict[str, float]
    device_counts: dict[str, int]
    n: int
    # devices the model trained on, and the mean of the per-device accuracies over each group
    # (DCASE 2022+ reports seen and unseen devices apart: s4-s6 never appear in training)
    seen_devices: list[str] = field(default_factory=list)
    unseen_devices: list[str] = field(default_factory=list)
    seen_accuracy: float | None = None
    unseen_accuracy: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@torch.no_grad()
def evaluate(model: torch.nn.Module, cache: FeatureCache, split: str = "evaluate", device: str = "cpu",
             batch_size: int = 32, rank: int = 0, world: int = 1, channels_last: bool = False,
             seen_devices: list[str] | None = None) -> EvalResult:
    """`seen_devices`: the devices the model was trained on (default: this cache's training split)."""
    labels_names = cache.label_names
    data = CachedFeatures(cache, split, train=False)
    devices = cache.devices(split)
    device_names = sorted({d for d in devices if d})
    device_index = torch.tensor([device_names.index(d) if d else -1 for d in devices])
    shard = list(range(rank, len(data), world))
    loader = DataLoader(Subset(data, shard), batch_size=batch_size, shuffle=False)
    n_cls, n_dev = len(labels_names), len(device_names)
    confusion = torch.zeros(n_cls, n_cls, dtype=torch.float64, device=device)
    dev_correct = torch.zeros(max(n_dev, 1), dtype=torch.float64, device=device)
    dev_total = torch.zeros(max(n_dev, 1), dtype=torch.float64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    offset = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x).float()
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").double()
        pred = logits.argmax(dim=1)
        confusion.index_put_((y, pred), torch.ones_like(y, dtype=torch.float64), accumulate=True)
        idx = device_index[[shard[i] for i in range(offset, offset + len(y))]].to(device)
        known = idx >= 0
        if n_dev and known.any():
            dev_total.index_add_(0, idx[known], torch.ones_like(idx[known], dtype=torch.float64))
            dev_correct.index_add_(0, idx[known], (pred == y)[known].double())
        offset += len(y)
    if world > 1:
        import torch.distributed as dist

        for t in (confusion, dev_correct, dev_total, loss_sum):
            dist.all_reduce(t)
    model.train(was_training)
    conf = confusion.cpu().numpy().astype(np.int64)
    n = int(conf.sum())
    per_class_total = conf.sum(axis=1)
    per_class = {name: float(conf[i, i] / per_class_total[i]) if per_class_total[i] else float("nan")
                 for i, name in enumerate(labels_names)}
    dc, dt = dev_correct.cpu().numpy(), dev_total.cpu().numpy()
    per_device = {d: float(dc[i] / dt[i]) for i, d in enumerate(device_names) if dt[i]}
    trained = set(seen_devices if seen_devices is not None else (d for d in cache.devices("train") if d))
    seen = [d for d in per_device if d in trained]
    unseen = [d for d in per_device if d not in trained]
    return EvalResult(loss=float(loss_sum) / max(n, 1), accuracy=float(np.trace(conf)) / max(n, 1),
                      confusion=conf.tolist(), per_class=per_class, per_device=per_device,
                      device_counts={d: int(dt[i]) for i, d in enumerate(device_names) if dt[i]}, n=n,
                      seen_devices=seen, unseen_devices=unseen,
                      seen_accuracy=float(np.mean([per_device[d] for d in seen])) if seen else None,
                      unseen_accuracy=float(np.mean([per_device[d] for d in unseen])) if unseen else None)
