"""One epoch of training: channel and magnitude pruning steps, the optimisation steps (mixup,
Freq-MixStyle, distillation, gradient accumulation, AMP), evaluation and the checkpoints.

`Loop` holds what every epoch reads and what channel pruning replaces (model, optimizer, the
DDP wrapper); run.py builds it once per run. Everything random derives from (seed, epoch,
step, rank), which is what makes a resumed run exact.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from edgeasc.compress.pruning import Pruner
from edgeasc.compress.structured import ChannelPruner
from edgeasc.console import err, progress_bar
from edgeasc.data.cache import FeatureCache
from edgeasc.data.impulse import ImpulseResponseFeatures, check_devices, load_impulse_responses
from edgeasc.data.loader import (
    CachedFeatures,
    freq_mask,
    freq_mixstyle,
    mix,
    mixup_cross_entropy,
    mixup_plan,
    parse_freq_mixstyle,
)
from edgeasc.errors import EdgeascError
from edgeasc.io import atomic_write_text
from edgeasc.models.complexity import count_nonzero, count_params
from edgeasc.models.family import complexity_of
from edgeasc.runtime.features import FeatureParams
from edgeasc.train.checkpoint import save_checkpoint
from edgeasc.train.config import TrainConfig
from edgeasc.train.distill import (
    DEFAULT_TEMPERATURE,
    DEFAULT_WEIGHT,
    Teacher,
    distillation_loss,
    online_logits,
    soft_targets,
)
from edgeasc.train.distributed import Dist, average_buffers, is_oom
from edgeasc.train.evaluate import evaluate
from edgeasc.train.frontend import frontend_module
from edgeasc.train.schedule import LRSchedule
from edgeasc.train.swa import WeightAverage


class TrainingDiverged(EdgeascError):
    exit_code = 1


def diverged(what: str, epoch: int, run_dir: Path, done: int) -> TrainingDiverged:
    kept = f"the checkpoint of epoch {done} is kept in {run_dir}" if done else "no checkpoint was written"
    return TrainingDiverged(f"training diverged: {what} in epoch {epoch + 1}; {kept} (lower --lr, then --resume, "
                            "or --force to start over)")


@dataclass
class Loop:
    """What every epoch reads, and what channel pruning replaces (model, optimizer, net)."""

    cfg: TrainConfig
    dist: Dist
    device: torch.device
    run_dir: Path
    cache: FeatureCache
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    pruner: Pruner | None
    channel_pruner: ChannelPruner | None
    make_pruner: Callable[[torch.nn.Module], Pruner]
    wants_magnitude: bool
    magnitude_start: int
    history: list[dict]
    payload_common: dict
    schedule: LRSchedule
    swa: WeightAverage | None = None
    teachers: list[Teacher] = field(default_factory=list)
    # cached targets: the ensemble's (or a --teacher-logits file's) logits per training clip
    teacher_logits: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.net = self.wrap(self.model)
        self.roll = roll_frames(self.cfg, self.cache.manifest["params"])
        self.train_data = CachedFeatures(self.cache, "train", train=True, roll=self.roll, seed=self.cfg.seed,
                                         targets=self.teacher_logits)
        self.dir_record = None
        if self.cfg.dir_folder is not None:  # DIR: training items from the audio (data/impulse.py says why)
            self.train_data = impulse_response_data(self.cfg, self.cache, self.roll, self.teacher_logits)
            self.dir_record = {"folder": self.cfg.dir_folder, **self.train_data.describe()}
        self.distils = bool(self.teachers) or self.teacher_logits is not None
        self.kd_weight = DEFAULT_WEIGHT if self.cfg.kd_weight is None else float(self.cfg.kd_weight)
        self.kd_temperature = DEFAULT_TEMPERATURE if self.cfg.kd_temperature is None else float(self.cfg.kd_temperature)
        self.student_norm = (torch.from_numpy(self.cache.mean[0]).unsqueeze(0), torch.from_numpy(self.cache.std[0]).unsqueeze(0))
        self.per_rank = self.cfg.batch_size // self.dist.world
        self.amp_dtype = amp_dtype(self.device) if self.cfg.amp else None
        # bf16 keeps float32's exponent range: only fp16 needs its gradients scaled
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.n_frames = int(self.cache.manifest["frames"])

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model


def amp_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the GPU computes it natively (Ampere and later), else fp16 with a grad scaler."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def impulse_response_data(cfg: TrainConfig, cache: FeatureCache, roll: int,
                          targets: np.ndarray | None) -> ImpulseResponseFeatures:
    """The training set under --dir-folder: the responses checked and resampled to the run's rate,
    the run's own torch frontend."""
    params = FeatureParams(**cache.manifest["params"])
    responses = load_impulse_responses(cfg.dir_folder, params.sample_rate)
    check_devices(cache.devices("train"), cfg.dir_folder)
    return ImpulseResponseFeatures(cache, frontend_module(params).eval(), responses, cfg.dir_p, roll, cfg.seed,
                                   targets)


def roll_frames(cfg: TrainConfig, params: dict) -> int:
    """The time roll in frames: --roll as given, or --time-roll seconds at the features' hop,
    rounded down (the roll never exceeds the seconds asked for)."""
    if cfg.time_roll is None:
        return int(cfg.roll if cfg.roll is not None else 0)
    return math.floor(cfg.time_roll * params["sample_rate"] / params["hop_length"] + 1e-9)


def run_epoch(loop: Loop, epoch: int, progress: bool) -> None:
    """One epoch: prune, train, evaluate, checkpoint."""
    cfg, dist = loop.cfg, loop.dist
    t_epoch = time.perf_counter()
    removed = 0
    if loop.channel_pruner is not None and epoch <= cfg.prune_epochs:
        loop.model, loop.optimizer, removed, _ = loop.channel_pruner.step(loop.model, epoch, loop.optimizer)
        if removed:
            if cfg.channels_last:
                loop.model = loop.model.to(memory_format=torch.channels_last)
            loop.net = loop.wrap(loop.model)
    if loop.wants_magnitude and loop.pruner is None and epoch >= loop.magnitude_start:
        loop.pruner = loop.make_pruner(loop.model)
    lr = loop.schedule.at(epoch, 0)
    _set_lr(loop.optimizer, lr)
    prune_seconds, pruned = 0.0, 0
    if loop.pruner is not None:
        t0 = time.perf_counter()
        pruned = loop.pruner.update(epoch)
        prune_seconds = time.perf_counter() - t0
    t_train = time.perf_counter()
    loss_sum = _train_steps(loop, epoch, progress)
    train_seconds = time.perf_counter() - t_train
    model = loop.model
    if dist.world > 1:
        torch.distributed.all_reduce(loss_sum)
        average_buffers(model, dist.world)
    result = evaluate(model, loop.cache, device=str(loop.device), rank=dist.rank, world=dist.world,
                      channels_last=cfg.channels_last)
    if not (math.isfinite(result.loss) and all(bool(torch.isfinite(p).all()) for p in model.parameters())):
        raise diverged("the weights became non-finite", epoch, loop.run_dir, len(loop.history))
    best = min((h["eval_loss"] for h in loop.history), default=math.inf)
    loop.history.append({
        "epoch": epoch + 1, "lr": lr, "train_loss": float(loss_sum[0] / loss_sum[1]),
        "eval_loss": result.loss, "eval_accuracy": result.accuracy, "per_class": result.per_class,
        "per_device": result.per_device, "nonzero_params": count_nonzero(model), "pruned": pruned,
        "params": count_params(model), "macs": complexity_of(model.config, loop.n_frames)[1],
        "channels_removed": removed, "prune_seconds": round(prune_seconds, 4),
        "train_clips_per_s": float(loss_sum[1]) / train_seconds, "seconds": round(time.perf_counter() - t_epoch, 3)})
    if loop.swa is not None and loop.swa.due(epoch + 1):
        loop.swa.update(model, epoch + 1)
    if dist.main:
        save_checkpoint(loop.run_dir / "checkpoint-last.pt", {  # the resume point first
            **loop.payload_common, "model_config": model.config.to_dict(), "kind": "last",
            "model": model.state_dict(), "epoch": epoch + 1, "optimizer": loop.optimizer.state_dict(),
            "pruner": loop.pruner.state_dict() if loop.pruner else None, "history": loop.history,
            "swa": loop.swa.state_dict() if loop.swa is not None else None})
        if result.loss < best:  # the authors' trainer kept the best-by-evaluate-loss model too
            save_checkpoint(loop.run_dir / "model-best.pt", {
                **loop.payload_common, "model_config": model.config.to_dict(), "kind": "best",
                "model": model.state_dict(), "epoch": epoch + 1, "history": loop.history,
                "pruner": loop.pruner.state_dict() if loop.pruner else None})
        atomic_write_text(loop.run_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in loop.history))


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _train_steps(loop: Loop, epoch: int, progress: bool) -> torch.Tensor:
    """The optimisation steps of one epoch; returns (sum of loss × clips, clips) on this rank.
    Stops at the first non-finite loss, on every rank at once."""
    cfg, dist, device = loop.cfg, loop.dist, loop.device
    data = loop.train_data
    data.set_epoch(epoch)
    # One permutation per epoch for any number of processes: DistributedSampler draws
    # randperm(seed + epoch) and deals it out rank by rank, so at every step the ranks' batches
    # together are exactly the batch a single process takes at that step.
    seed = cfg.seed * 100_003
    if dist.world > 1:
        sampler = DistributedSampler(data, dist.world, dist.rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(data, generator=torch.Generator().manual_seed(seed + epoch))
    # pinned host memory on CUDA: the copies below then overlap the step (non_blocking)
    loader = DataLoader(data, batch_size=loop.per_rank, sampler=sampler, num_workers=cfg.workers,
                        drop_last=len(data) >= 2 * cfg.batch_size, pin_memory=torch.device(device).type == "cuda")
    if len(loader) != loop.schedule.steps_per_epoch:  # the schedule was planned for another loader
        raise EdgeascError(f"internal: {len(loader)} steps per epoch, the schedule planned "
                           f"{loop.schedule.steps_per_epoch}")
    loop.net.train()
    style = parse_freq_mixstyle(cfg.freq_mixstyle)
    loss_sum = torch.zeros(2, dtype=torch.float64, device=device)
    with _epoch_bar(f"epoch {epoch + 1}/{cfg.epochs}", len(loader) * loop.per_rank * dist.world,
                    progress and dist.main) as advance:
        for step, batch in enumerate(loader):
            batch = [t.to(device, non_blocking=True) for t in batch]
            if loop.schedule.per_step:
                _set_lr(loop.optimizer, loop.schedule.at(epoch, step))
            n = len(batch[1])
            parts = min(cfg.accumulate, n)
            loop.optimizer.zero_grad(set_to_none=True)
            step_loss = torch.zeros((), dtype=torch.float64, device=device)
            try:
                for part in range(parts):
                    # Part p of rank r holds the batch positions a process of its own would hold as
                    # rank r + world·p (the sampler deals clips out round-robin), and draws that
                    # rank's augmentation: N processes and N parts take the same steps.
                    micro = [t[part::parts] for t in batch]
                    last = part == parts - 1
                    sync = last or dist.world == 1
                    with (contextlib.nullcontext() if sync else loop.net.no_sync()):
                        loss = _part_loss(loop, micro, [cfg.seed, epoch, step, dist.rank + dist.world * part], style)
                        loop.scaler.scale(loss * (len(micro[1]) / n)).backward()
                    step_loss += loss.detach().double() * len(micro[1])
                loop.scaler.step(loop.optimizer)
                loop.scaler.update()
            except RuntimeError as exc:  # torch.OutOfMemoryError is one too
                if is_oom(exc):
                    raise EdgeascError(f"out of memory at batch size {cfg.batch_size} on {device}: try --accumulate "
                                       f"{2 * cfg.accumulate} (the same steps in smaller parts) or --batch-size "
                                       f"{max(1, cfg.batch_size // 2)}") from None
                raise
            bad = (~torch.isfinite(step_loss)).double()
            if dist.world > 1:  # every rank stops together, or the others wait forever in the next all-reduce
                torch.distributed.all_reduce(bad)
            if bad.item():
                raise diverged(f"the loss is {float(step_loss / n):g} at step {step + 1}", epoch, loop.run_dir,
                                len(loop.history))
            loss_sum += torch.stack([step_loss, torch.tensor(n, device=device).double()])
            advance(n * dist.world)
    return loss_sum


def _part_loss(loop: Loop, batch: list[torch.Tensor], key: list[int], style) -> torch.Tensor:
    """The mean loss of one part of a batch, augmented from its own random streams (`key`)."""
    cfg, device = loop.cfg, loop.device
    x, y = batch[0], batch[1]
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if cfg.freq_mask:  # before Freq-MixStyle, as the baselines mask the spectrogram first; own stream
        x = freq_mask(x, np.random.default_rng([*key, 2]), cfg.freq_mask)
    if style is not None:  # its own stream: runs without it draw exactly what they drew before
        x = freq_mixstyle(x, np.random.default_rng([*key, 1]), *style)
    lam, perm = mixup_plan(len(y), np.random.default_rng(key), cfg.mixup_alpha)
    x, y_a, y_b, lam = mix(x, lam, perm), y, y[perm.to(device)], lam.to(device)
    targets = None
    if loop.distils:  # cached: mixed like the inputs; online: the teachers see this very batch
        logits_t = (batch[2] if loop.teacher_logits is not None else
                    online_logits(loop.teachers, x.float(), *loop.student_norm))
        targets = soft_targets(logits_t, loop.kd_temperature)
        if loop.teacher_logits is not None:
            targets = mix(targets, lam, perm)
    with torch.autocast(device.type, dtype=loop.amp_dtype or torch.float16, enabled=loop.amp_dtype is not None):
        logits = loop.net(x).float()
    loss = mixup_cross_entropy(logits, y_a, y_b, lam)
    if targets is not None:
        loss = distillation_loss(logits, loss, targets, loop.kd_weight, loop.kd_temperature, loop.cfg.kd_reduction)
    return loss


def epoch_line(r: dict, epochs: int) -> str:
    return (f"epoch {r['epoch']:>3}/{epochs}  lr {r['lr']:.2e}  train loss {r['train_loss']:.4f}  "
            f"eval loss {r['eval_loss']:.4f}  acc {100 * r['eval_accuracy']:5.1f} %  "
            f"non-zero {r['nonzero_params']:,}  MACs {r['macs'] / 1e6:.1f} M  {r['train_clips_per_s']:.1f} clips/s  {r['seconds']:.1f} s")


def _epoch_bar(description: str, total: int, enabled: bool):

    # a per-epoch bar only makes sense live; logs get the per-epoch line instead
    return progress_bar(description, total, unit="clips", enabled=enabled and err.is_terminal, transient=True)
