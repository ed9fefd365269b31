"""Evaluation: loss, accuracy, macro-average (class-wise) accuracy, per-class and per-device
accuracy with the DCASE device-group means (runtime/scores.py), confusion matrix; and a
finished run's model evaluated on a dataset (`edgeasc eval`) or described (`edgeasc info RUN`).

Counts are sums, so a sharded evaluation over several processes is reduced exactly with
one all-reduce (no padded duplicates, unlike DistributedSampler).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from edgeasc.data.cache import FeatureCache, extract_features
from edgeasc.data.dcase import open_dataset
from edgeasc.data.loader import CachedFeatures
from edgeasc.io import refuse_input_as_output
from edgeasc.runtime.features import FeatureParams
from edgeasc.runtime.scores import scores
from edgeasc.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    run_cache_root,
)


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
    # the mean of the per-class accuracies over the classes with clips (DCASE 2024/25's ranking)
    macro_accuracy: float | None = None
    classes_without_clips: list[str] = field(default_factory=list)
    # DCASE 2022+ groups by device name: real a-c, seen s1-s3, unseen s4-s6 (None: absent)
    device_groups: dict[str, float | None] = field(default_factory=dict)
    other_devices: list[str] = field(default_factory=list)  # in no DCASE group

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
    score = scores(conf.tolist(), labels_names, {d: int(dc[i]) for i, d in enumerate(device_names)},
                   {d: int(dt[i]) for i, d in enumerate(device_names)})
    trained = set(seen_devices if seen_devices is not None else (d for d in cache.devices("train") if d))
    seen = [d for d in per_device if d in trained]
    unseen = [d for d in per_device if d not in trained]
    return EvalResult(loss=float(loss_sum) / max(n, 1), accuracy=float(np.trace(conf)) / max(n, 1),
                      confusion=conf.tolist(), per_class=per_class, per_device=per_device,
                      device_counts={d: int(dt[i]) for i, d in enumerate(device_names) if dt[i]}, n=n,
                      seen_devices=seen, unseen_devices=unseen,
                      seen_accuracy=float(np.mean([per_device[d] for d in seen])) if seen else None,
                      unseen_accuracy=float(np.mean([per_device[d] for d in unseen])) if unseen else None,
                      macro_accuracy=score["macro_accuracy"], classes_without_clips=score["classes_without_clips"],
                      device_groups=score["device_groups"], other_devices=score["other_devices"])


def evaluate_run(run: Path, dataset_dir: Path | None = None, cache_dir: Path | None = None,
                 device: str = "auto", progress: bool = True) -> dict:
    ckpt = load_checkpoint(run)
    run_dir = Path(ckpt["path"]).parent
    for plot in ("confusion-eval.png", "devices-eval.png"):  # written next to the checkpoint
        refuse_input_as_output(run_dir / plot, [ckpt["path"], *([dataset_dir] if dataset_dir else [])],
                               "eval's plot")
    model = model_from_checkpoint(ckpt)
    data = Path(dataset_dir) if dataset_dir else None
    if data is None:
        cfg = ckpt.get("train_config") or {}
        if cfg.get("dataset"):
            data = Path(cfg["dataset"])
        else:
            from edgeasc.data.cache import cache_root
            from edgeasc.data.synth import default_dataset

            data = default_dataset(Path(cfg["cache_dir"]) if cfg.get("cache_dir") else cache_root(), progress)
    # the run's own train subset (TAU 2022 --split) when evaluating on its own dataset
    split = (ckpt.get("train_config") or {}).get("split") if dataset_dir is None else None
    dataset = open_dataset(data, split=split)
    if dataset.labels != ckpt["labels"]:
        raise CheckpointError(f"{data}: classes {dataset.labels} differ from the model's {ckpt['labels']}")
    params = FeatureParams(**ckpt["feature_params"])
    # the run's own cache root by default: evaluating what it trained on reuses its features
    root = Path(cache_dir) if cache_dir else run_cache_root(ckpt)
    cache, _ = extract_features(dataset, params, channels=ckpt["channels"], root=root, progress=progress)
    # normalise with the statistics the model was trained with, not this dataset's
    cache.manifest = {**cache.manifest, "normalization": ckpt["normalization"]}
    dev = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    # seen = the devices of the model's own training data, whatever dataset it is evaluated on
    result = evaluate(model.to(dev), cache, device=dev, seen_devices=ckpt.get("devices")).to_dict()
    png = run_dir / "confusion-eval.png"
    from edgeasc.train.plots import plot_confusion, plot_devices

    plot_confusion(result["confusion"], ckpt["labels"], png, f"accuracy {100 * result['accuracy']:.1f} %")
    devices_png = run_dir / "devices-eval.png"
    if not plot_devices(result, devices_png, f"accuracy per device on {dataset.root.name}"):
        devices_png.unlink(missing_ok=True)  # a plot of another dataset would mislead
    return {**result, "labels": ckpt["labels"], "checkpoint": ckpt["path"], "dataset": str(dataset.root),
            "confusion_png": str(png), "devices_png": str(devices_png) if devices_png.exists() else None}


def describe_checkpoint(path: Path, seconds: float | None = None) -> tuple[dict, object]:
    """Complexity of a trained model (non-zeros counted from its weights), its labels and metrics."""
    from edgeasc.models.complexity import analyse

    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt)
    if seconds is None:  # the clip length the run was trained on
        seconds = float(ckpt["feature_params"].get("clip_seconds", 10.0))
    stats = analyse(model, seconds=seconds, features=FeatureParams(**ckpt["feature_params"]))
    extra = {"checkpoint": ckpt["path"], "kind": ckpt.get("kind"), "labels": ckpt["labels"],
             "epoch": ckpt["epoch"], "summary": ckpt.get("summary"),
             "last_metrics": (ckpt.get("history") or [None])[-1], "feature_params": ckpt["feature_params"],
             "teachers": ckpt.get("teachers"), "fit": ckpt.get("fit"), "teacher_logits": ckpt.get("teacher_logits"),
             "kd": {k: (ckpt.get("train_config") or {}).get(k) for k in ("kd_weight", "kd_temperature", "kd_targets")}
             if ckpt.get("teachers") or ckpt.get("teacher_logits") else None}
    return extra, stats
