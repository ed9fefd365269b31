"""Per-device models: a finished run's final network fine-tuned once per recording device of its
training split, on that device's training clips only (the DCASE 2024/25 winners' device-specific
fine-tuning). The general model stays the run's model-final.pt and classifies every other device.

    RUN/devices/<id>/model-final.pt          the device's network (same architecture as the run's)
    RUN/devices/<id>/metrics.jsonl, ...      what loop.run_epoch leaves behind for each epoch
    RUN/devices.json                         device -> checkpoint, clips, evaluate accuracy before/after

The epochs are loop.run_epoch's, unchanged: the Loop gets the device's clips as its training
data, a cosine schedule from --lr to 0 without warm-up, no pruning, no distillation, no SWA.
Everything random derives from the seed, so the same seed gives the same weights.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import fields, replace
from pathlib import Path

import torch
from torch.utils.data import Dataset

from edgeasc.console import out
from edgeasc.data.loader import CachedFeatures
from edgeasc.errors import ConfigError
from edgeasc.io import FolderLock, atomic_write_json, make_folder
from edgeasc.models import config_from_dict
from edgeasc.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from edgeasc.train.config import TrainConfig
from edgeasc.train.distributed import Dist, resolve_device
from edgeasc.train.evaluate import evaluate
from edgeasc.train.loop import Loop, epoch_line, run_epoch
from edgeasc.train.schedule import LRSchedule, steps_per_epoch

MANIFEST = "devices.json"
FOLDER = "devices"
DEFAULT_EPOCHS = 10
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
LR_FACTOR = 0.1  # default fine-tuning rate: a tenth of the run's own (peak) rate


class DeviceClips(Dataset):
    """The training clips of one device: CachedFeatures items at their own indices in the split
    (so the time roll of a clip draws what it draws in the run itself)."""

    def __init__(self, data: CachedFeatures, indices: list[int]) -> None:
        self.data, self.indices = data, list(indices)

    def set_epoch(self, epoch: int) -> None:
        self.data.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.data[self.indices[i]]


def train_config_of(ckpt: dict) -> TrainConfig:
    stored = ckpt.get("train_config") or {}
    names = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in stored.items() if k in names}
    if "teachers" in values:
        values["teachers"] = tuple(values["teachers"] or ())
    return TrainConfig(**values)


def finished_run(run: Path) -> dict:
    if not run.is_dir():
        raise ConfigError(f"{run}: no such run directory")
    if not (run / "model-final.pt").is_file():
        raise ConfigError(f"{run}: the run has not finished (no model-final.pt); fine-tune finished runs only")
    return load_checkpoint(run / "model-final.pt")


def _kept_zeros(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The general network's pruned weights (exact zeros in conv and linear weights): a device's
    copy keeps them zero, so it is as sparse as the model it replaces."""
    return {n: p.detach() == 0 for n, p in model.named_parameters() if p.dim() > 1 and bool((p == 0).any())}


def finetune_devices(run: str | Path, epochs: int | None = None, lr: float | None = None, seed: int | None = None,
                     devices: list[str] | None = None, force: bool = False, progress: bool = True) -> dict:
    """Fine-tune one copy of the run's final model per device; returns the manifest."""
    from edgeasc.train.run import prepare_data

    run = Path(run)
    general_ckpt = finished_run(run)
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {epochs}")
    if lr is not None and not lr > 0:
        raise ConfigError(f"--lr must be positive, got {lr}")
    if (run / MANIFEST).exists() and not force:
        raise ConfigError(f"{run} has per-device models already ({MANIFEST}): use --force to train them again")
    base = train_config_of(general_ckpt)
    cfg = replace(base, epochs=epochs or DEFAULT_EPOCHS, lr=lr if lr is not None else base.lr * LR_FACTOR,
                  schedule="cosine", warmup_steps=0, warmup_epochs=None, seed=base.seed if seed is None else seed,
                  teachers=(), teacher_logits=None, swa_start=None, prune_target=None, prune_ratio=None,
                  macs_target=None, params_target=None, fit=None, out=str(run))
    dist = Dist()
    with FolderLock(run, "per-device fine-tuning"):
        cache = prepare_data(cfg, dist, progress, general_ckpt["labels"], general_ckpt["feature_params"]["clip_seconds"])
        train_devices = cache.devices("train")
        present = sorted({d for d in train_devices if d})
        if not present:
            raise ConfigError(f"{run}: per-device models on data without devices (its training clips name no "
                              "recording device)")
        wanted = present if not devices else list(dict.fromkeys(devices))
        for d in wanted:
            if d not in present:
                raise ConfigError(f"device {d!r} has no training clips in {run}'s data (its devices: "
                                  f"{', '.join(present)})")
        for d in wanted:  # a device id names a folder and a file: nothing that could leave them
            if not SAFE_ID.fullmatch(d):
                raise ConfigError(f"device id {d!r} cannot name a folder (letters, digits, '_' and '-' only)")
        device = resolve_device(cfg.device, dist)
        general = model_from_checkpoint(general_ckpt).to(device)
        before = evaluate(general, cache, device=str(device))
        zeros = _kept_zeros(general)
        if (run / MANIFEST).exists():  # --force: the old manifest goes first, so no half-new set is ever listed
            (run / MANIFEST).unlink()
        make_folder(run / FOLDER)
        entries = {}
        for d in wanted:
            indices = [i for i, x in enumerate(train_devices) if x == d]
            entries[d] = _finetune_one(run, d, indices, cfg, dist, device, cache, general_ckpt, zeros,
                                       before.per_device.get(d), progress)
        manifest = {"general": "model-final.pt", "epochs": cfg.epochs, "lr": cfg.lr, "seed": cfg.seed,
                    "schedule": "cosine, no warm-up", "devices": entries,
                    "general_evaluate_accuracy": before.accuracy}
        atomic_write_json(run / MANIFEST, manifest)
    return manifest


def _finetune_one(run: Path, device_id: str, indices: list[int], cfg: TrainConfig, dist: Dist,
                  device: torch.device, cache, general_ckpt: dict, zeros: dict, acc_before: float | None,
                  progress: bool) -> dict:
    folder = run / FOLDER / device_id
    if folder.exists():
        shutil.rmtree(folder)
    make_folder(folder)
    torch.manual_seed(cfg.seed)
    model = model_from_checkpoint(general_ckpt).to(device).train()
    from edgeasc.train.run import make_optimizer

    optimizer = make_optimizer(cfg, model)
    schedule = LRSchedule.from_config(cfg, steps_per_epoch(len(indices), cfg.batch_size, dist.world))
    payload = {k: general_ckpt[k] for k in ("labels", "channels", "feature_params", "normalization")}
    payload.update(model_config=general_ckpt["model_config"], train_config=cfg.to_dict(), devices=[device_id],
                   device=device_id, fit=general_ckpt.get("fit"), teachers=None, teacher_logits=None)
    loop = Loop(cfg, dist, device, folder, cache, model, optimizer, None, None, lambda m: None, False, 0, [],
                payload, schedule)
    loop.train_data = DeviceClips(loop.train_data, indices)  # the device's clips only; the loop is train's own
    for epoch in range(cfg.epochs):
        run_epoch(loop, epoch, progress)
        with torch.no_grad():
            for name, p in loop.model.named_parameters():
                if name in zeros:
                    p.masked_fill_(zeros[name], 0.0)
        if progress:
            out.print(f"{device_id}: " + epoch_line(loop.history[-1], cfg.epochs), markup=False)
    after = evaluate(loop.model, cache, device=str(device))
    save_checkpoint(folder / "model-final.pt", {**payload, "kind": "final", "model": loop.model.state_dict(),
                                                "epoch": cfg.epochs, "history": loop.history})
    return {"checkpoint": f"{FOLDER}/{device_id}/model-final.pt", "train_clips": len(indices),
            "evaluate_clips": after.device_counts.get(device_id, 0),
            "accuracy_before": acc_before, "accuracy_after": after.per_device.get(device_id)}


def device_checkpoints(run: str | Path) -> dict[str, Path]:
    """A run's per-device checkpoints from its manifest ({} when it has none)."""
    run = Path(run)
    path = run / MANIFEST
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["devices"]
        found = {str(d): run / str(e["checkpoint"]) for d, e in entries.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise CheckpointError(f"{path}: not a valid per-device manifest") from None
    for d, p in found.items():
        if not SAFE_ID.fullmatch(d) or not p.resolve().is_relative_to(run.resolve()) or not p.is_file():
            raise CheckpointError(f"{path}: device {d!r}: no checkpoint {p}")
    return found


def model_for_device(run: str | Path, device_id: str) -> Path:
    """The checkpoint that classifies `device_id`: its own fine-tuned model when the run has one,
    else (an unknown device, or a run without per-device models) the general model-final.pt."""
    run = Path(run)
    if not (run / "model-final.pt").is_file():
        raise ConfigError(f"{run}: the run has not finished (no model-final.pt)")
    return device_checkpoints(run).get(str(device_id), run / "model-final.pt")


def same_network(general: dict, device_ckpt: dict) -> bool:
    return config_from_dict(general["model_config"]).to_dict() == config_from_dict(device_ckpt["model_config"]).to_dict()
