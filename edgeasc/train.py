"""The training loop: Adam + the paper's LR schedule, mixup, time roll, magnitude pruning to a
target, evaluation every epoch, atomic checkpoints and exact resume, DDP under torchrun.

Everything random derives from (seed, epoch, step, rank), so a run killed at any moment and
resumed from its last completed epoch ends exactly where an uninterrupted run would (CPU).
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

from edgeasc.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from edgeasc.compress.gate import GatePruner
from edgeasc.compress.pruning import Pruner
from edgeasc.compress.structured import ChannelPruner
from edgeasc.console import err, out
from edgeasc.data.cache import FeatureCache, extract_features
from edgeasc.data.dcase import open_dataset
from edgeasc.data.loader import (
    CachedFeatures,
    freq_mixstyle,
    mix,
    mixup_cross_entropy,
    mixup_plan,
    parse_freq_mixstyle,
)
from edgeasc.distill import (
    DEFAULT_TEMPERATURE,
    DEFAULT_WEIGHT,
    Teacher,
    distillation_loss,
    ensemble_logits,
    load_teachers,
    online_logits,
    soft_targets,
)
from edgeasc.distributed import Dist, average_buffers, is_oom, resolve_device, state_digest
from edgeasc.errors import ConfigError, EdgeascError
from edgeasc.evaluate import evaluate
from edgeasc.io import (
    FolderLock,
    atomic_write_json,
    atomic_write_text,
    make_folder,
    missing_folders,
    remove_empty_folders,
)
from edgeasc.models import ModelConfig, build_model
from edgeasc.models.channels import channel_groups, complexity
from edgeasc.models.complexity import count_nonzero, count_params
from edgeasc.models.presets import resolve_model
from edgeasc.runtime.features import FeatureParams
from edgeasc.swa import WeightAverage, reestimate_batchnorm
from edgeasc.train_config import TrainConfig, explicit_network, lr_at

RUN_FILES = ("config.json", "metrics.jsonl", "checkpoint-last.pt", "model-final.pt", "summary.json",
             "curves.png", "nonzero.png", "confusion.png", "confusion-eval.png", "devices.png", "devices-eval.png",
             "model-best.pt", "model-swa.pt")
REPORT_LAST = 10  # the paper reports the mean evaluate accuracy of the last 10 epochs


def prepare_data(cfg: TrainConfig, dist: Dist, progress: bool, expected_labels: list[str] | None = None,
                 seconds: float | None = None) -> FeatureCache:
    """The feature cache of the run's dataset (the built-in synthetic set when none is given), at
    `seconds` per clip, else --seconds, else the data's own clip length. Rank 0 extracts; the
    others wait, then find it complete."""
    from edgeasc.data.cache import cache_root, probe_clip_seconds
    from edgeasc.data.synth import default_dataset

    root = Path(cfg.cache_dir) if cfg.cache_dir else cache_root()
    for turn in ((True,) if dist.world == 1 else (True, False)):
        if (dist.main if turn else not dist.main):
            data_dir = Path(cfg.dataset) if cfg.dataset else default_dataset(root, progress=progress and dist.main)
            dataset = open_dataset(data_dir, split=cfg.split)
            if expected_labels is not None and dataset.labels != expected_labels:
                raise CheckpointError(f"{cfg.out}: the dataset's classes {dataset.labels} differ from the "
                                      f"run's {expected_labels}")
            seconds = seconds or cfg.seconds or probe_clip_seconds(dataset)
            cache, _ = extract_features(dataset, FeatureParams(clip_seconds=seconds), workers=cfg.feature_workers,
                                        root=root, progress=progress and dist.main)
        dist.barrier()
    return cache


def check_run_dir(run_dir: Path, resume: bool, force: bool, existed: bool = True) -> bool:
    """Whether to resume from the run's checkpoint. A folder whose run was stopped before its
    first checkpoint holds nothing to lose: a plain start reuses it, and --resume starts it
    from epoch 1, saying so. --resume on a folder that did not exist is a typo, not a run."""
    if (run_dir / "checkpoint-last.pt").is_file():
        if resume:
            return True
        if not force:
            raise ConfigError(f"{run_dir} already holds a run: use --resume to continue it or --force to start over")
        return False
    if resume and existed and not (run_dir / "model-final.pt").is_file():
        err.print(f"edgeasc: note: {run_dir} has no checkpoint yet (stopped during its first epoch): "
                  "starting it from epoch 1", markup=False, soft_wrap=True)
        return False
    if resume:
        raise CheckpointError(f"{run_dir}: nothing to resume (no checkpoint-last.pt); start without --resume")
    if (run_dir / "model-final.pt").is_file() and not force:
        raise ConfigError(f"{run_dir} already holds a run: use --force to start over")
    return False


class TrainingInterrupted(EdgeascError):
    exit_code = 130


class TrainingDiverged(EdgeascError):
    exit_code = 1


def train(cfg: TrainConfig, resume: bool = False, force: bool = False, progress: bool = True) -> dict:
    dist = Dist.from_env()
    if dist.world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if cfg.device != "cpu" and torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    try:
        return _train(cfg, dist, resume, force, progress)
    finally:
        if dist.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _train(cfg: TrainConfig, dist: Dist, resume: bool, force: bool, progress: bool) -> dict:
    run_dir = Path(cfg.out)
    device = resolve_device(cfg.device, dist)
    if cfg.amp and device.type != "cuda":
        raise ConfigError("--amp needs a CUDA device")
    if cfg.batch_size % dist.world:
        raise ConfigError(f"--batch-size {cfg.batch_size} is not divisible by the {dist.world} processes")
    if cfg.accumulate > cfg.batch_size // dist.world:
        each = "each process takes per step" if dist.world > 1 else "a step takes"
        raise ConfigError(f"--accumulate {cfg.accumulate} is more than the {cfg.batch_size // dist.world} clips "
                          f"{each} (--batch-size {cfg.batch_size})")
    if not dist.main:  # rank 0 holds the run directory for all ranks
        return _train_in(cfg, dist, device, resume and (run_dir / "checkpoint-last.pt").is_file(), force, progress)
    created = missing_folders(run_dir)
    make_folder(run_dir)
    try:
        with FolderLock(run_dir, "training"):
            from_checkpoint = check_run_dir(run_dir, resume, force, existed=not created)
            return _train_in(cfg, dist, device, from_checkpoint, force, progress)
    except BaseException:
        remove_empty_folders(created)  # refused, or failed before its first checkpoint: no trace
        raise


def _train_in(cfg: TrainConfig, dist: Dist, device: torch.device, resume: bool, force: bool, progress: bool) -> dict:
    run_dir = Path(cfg.out)
    ckpt = None
    if resume:
        ckpt = load_checkpoint(run_dir / "checkpoint-last.pt")
        if cfg.epochs < int(ckpt["epoch"]):
            raise ConfigError(f"{run_dir} has trained {ckpt['epoch']} epochs already: --epochs {cfg.epochs} would end "
                              "before its checkpoint (give --epochs >= that, or --force to start over)")

    cache = prepare_data(cfg, dist, progress, ckpt["labels"] if ckpt is not None else None,
                         ckpt["feature_params"]["clip_seconds"] if ckpt is not None else None)
    labels = cache.label_names
    channels = cache.manifest["channels"]
    model_config, preset_target = resolve_model(
        cfg.preset, variant=cfg.variant, decomp_factor=cfg.decomp_factor, rho=cfg.rho, width=cfg.width,
        depth_restriction=cfg.depth_restriction, damping_floor=cfg.damping_floor, damp_stem=cfg.damp_stem,
        n_classes=len(labels), in_channels=channels)
    n_frames = int(cache.manifest["frames"])
    fit_plan = None
    if cfg.fit is not None:  # the rules count every parameter: a preset's magnitude target buys nothing
        from edgeasc.compress.fit import plan_fit

        fit_plan = plan_fit(cfg.fit, n_frames, float(cache.manifest["params"]["clip_seconds"]), len(labels),
                            channels, model_config if explicit_network(cfg) else None, cfg.channel_multiple)
        model_config, preset_target = fit_plan.start, None
        if dist.main and progress:
            for line in fit_plan.lines():
                out.print(line, markup=False, soft_wrap=True)
    teachers = _teachers(cfg, cache, ckpt, run_dir)
    if ckpt is not None:
        try:  # the checkpoint's own config: after channel pruning it carries the channel plan
            stored = ModelConfig.from_dict(ckpt["model_config"])
        except (ConfigError, TypeError) as exc:
            raise CheckpointError(f"{run_dir}: the checkpoint's model config is invalid ({exc})") from None
        if stored.dense.to_dict() != model_config.to_dict():
            raise CheckpointError(f"{run_dir}: the model configuration differs from the run being resumed")
        model_config = stored

    torch.manual_seed(cfg.seed)
    model = build_model(model_config).to(device)
    channel_pruner = _channel_pruner(cfg, model_config.dense, n_frames, fit_plan)
    explicit = cfg.prune_target is not None or cfg.prune_ratio is not None
    # a preset's magnitude target describes its dense network: it does not apply after channel pruning
    target = cfg.prune_target if explicit or channel_pruner else preset_target
    magnitude_start = cfg.prune_epochs if channel_pruner else 0
    if channel_pruner and target is not None and cfg.epochs <= 2 * cfg.prune_epochs:
        raise ConfigError(f"channel pruning ramps over --prune-epochs {cfg.prune_epochs}, then magnitude pruning over "
                          f"as many again, reaching its target at the start of epoch {2 * cfg.prune_epochs + 1}: "
                          f"that needs --epochs > {2 * cfg.prune_epochs}, not {cfg.epochs}")
    if channel_pruner and target is not None and cfg.params_target is not None and target > cfg.params_target:
        raise ConfigError(f"--prune-target {target:,} is above --params-target {cfg.params_target:,}: nothing left "
                          "for magnitude pruning to do")

    ramp_epochs = cfg.prune_epochs
    if not channel_pruner and (target is not None or cfg.prune_ratio is not None) and cfg.epochs <= cfg.prune_epochs:
        # the ramp reaches its target at the start of epoch prune_epochs + 1: finish it by the last epoch instead
        ramp_epochs = cfg.epochs - 1

    def make_pruner(model):
        try:
            if cfg.prune_method == "gate":
                pruner = GatePruner(model, target, schedule=cfg.prune_schedule, epochs=ramp_epochs,
                                    start=magnitude_start)
            else:
                pruner = Pruner(model, target=target, ratio=cfg.prune_ratio, schedule=cfg.prune_schedule,
                                epochs=ramp_epochs, monotone=cfg.prune_monotone, start=magnitude_start)
            if ramp_epochs != cfg.prune_epochs and dist.main:
                err.print(f"edgeasc: note: --epochs {cfg.epochs} ends before the pruning ramp of --prune-epochs "
                          f"{cfg.prune_epochs}: pruning ramps over {ramp_epochs} epoch(s) instead, so that the "
                          "target is reached in the last epoch", markup=False, soft_wrap=True)
            return pruner
        except ConfigError as exc:
            if explicit:
                raise
            raise ConfigError(f"preset {cfg.preset!r} prunes to {target:,} parameters, which does not fit the "
                              f"modified network: {exc}; give --prune-target or --prune-ratio") from None

    wants_magnitude = target is not None or cfg.prune_ratio is not None
    pruner = make_pruner(model) if wants_magnitude and not channel_pruner else None
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=0.0)
    if isinstance(pruner, GatePruner):  # the gate scores train with the network (and resume with it)
        optimizer.add_param_group({"params": pruner.parameters()})
    start_epoch, history = 0, []
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, history = int(ckpt["epoch"]), list(ckpt["history"])
        if wants_magnitude and pruner is None and start_epoch > magnitude_start:
            pruner = make_pruner(model)
        if pruner is not None and ckpt.get("pruner"):
            pruner.load_state_dict(ckpt["pruner"])
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)

    config_record = {"train": cfg.to_dict(), "model": model_config.dense.to_dict(), "variant": model_config.variant,
                     "pruning": pruner.describe() if pruner else None,
                     "channel_pruning": channel_pruner.describe() if channel_pruner else None, "labels": labels,
                     "fit": fit_plan.describe() if fit_plan else None,
                     "teachers": [t.record() for t in teachers] or None,
                     "dataset": {"root": cache.manifest["root"], "layout": cache.manifest["layout"],
                                 "cache": str(cache.directory)},
                     "world_size": dist.world, "device": str(device)}

    payload_common = {"model_config": model_config.to_dict(), "labels": labels, "channels": channels,
                      "feature_params": cache.manifest["params"], "normalization": cache.manifest["normalization"],
                      "train_config": cfg.to_dict(), "devices": sorted({d for d in cache.devices("train") if d}),
                      "fit": fit_plan.describe() if fit_plan else None,
                      "teachers": [t.record() for t in teachers] or None}
    swa = None
    if cfg.swa_start is not None:
        if channel_pruner is not None and cfg.swa_start <= cfg.prune_epochs + 1:
            raise ConfigError(f"--swa-start {cfg.swa_start} averages weights while channel pruning still changes their "
                              f"shapes (until epoch {cfg.prune_epochs + 1}): start after it")
        swa = WeightAverage(cfg.swa_start, cfg.swa_every)
        if ckpt is not None and ckpt.get("swa"):
            swa.load_state_dict(ckpt["swa"], device)
    loop = Loop(cfg, dist, device, run_dir, cache, model, optimizer, pruner, channel_pruner, make_pruner,
                wants_magnitude, magnitude_start, history, payload_common, swa, teachers,
                _teacher_targets(cfg, dist, cache, teachers, device, progress))

    t_run, first_epoch = time.perf_counter(), start_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs):
            _epoch(loop, epoch, progress)
            if dist.main and epoch == first_epoch:
                # with the first checkpoint of this invocation, not before: a run that fails or is killed
                # earlier leaves the folder as it was (with --force: the previous run, intact), and a
                # refused --resume never rewrites config.json
                if force and not resume:
                    for name in set(RUN_FILES) - {"checkpoint-last.pt", "metrics.jsonl", "model-best.pt"}:
                        (run_dir / name).unlink(missing_ok=True)
                atomic_write_json(run_dir / "config.json", config_record)
            if dist.main and progress:
                done = epoch + 1 - first_epoch
                left = (time.perf_counter() - t_run) / done * (cfg.epochs - epoch - 1)
                out.print(_epoch_line(history[-1], cfg.epochs) + (f"  ETA {_clock(left)}" if left else ""))
        payload_common["model_config"] = loop.model.config.to_dict()
        return _finish(cfg, dist, run_dir, loop, config_record)
    except KeyboardInterrupt:
        kept = (f"the checkpoint of epoch {len(history)} is kept: add --resume to the same command to continue"
                if history else "no epoch had finished, so no checkpoint was written: run the command again")
        where = (f"in epoch {len(history) + 1} of {cfg.epochs}" if len(history) < cfg.epochs else
                 "while writing the final model")
        raise TrainingInterrupted(f"interrupted {where}; {kept}") from None


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _diverged(what: str, epoch: int, run_dir: Path, done: int) -> TrainingDiverged:
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
    swa: WeightAverage | None = None
    teachers: list[Teacher] = field(default_factory=list)
    teacher_logits: np.ndarray | None = None   # cached targets: the ensemble's logits per training clip

    def __post_init__(self) -> None:
        self.net = self.wrap(self.model)
        self.train_data = CachedFeatures(self.cache, "train", train=True, roll=self.cfg.roll, seed=self.cfg.seed,
                                         targets=self.teacher_logits)
        self.kd_weight = DEFAULT_WEIGHT if self.cfg.kd_weight is None else float(self.cfg.kd_weight)
        self.kd_temperature = DEFAULT_TEMPERATURE if self.cfg.kd_temperature is None else float(self.cfg.kd_temperature)
        self.student_norm = (torch.from_numpy(self.cache.mean[0]).unsqueeze(0), torch.from_numpy(self.cache.std[0]).unsqueeze(0))
        self.per_rank = self.cfg.batch_size // self.dist.world
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.cfg.amp)
        self.n_frames = int(self.cache.manifest["frames"])

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model


def _epoch(loop: Loop, epoch: int, progress: bool) -> None:
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
    lr = lr_at(cfg, epoch)
    for group in loop.optimizer.param_groups:
        group["lr"] = lr
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
        raise _diverged("the weights became non-finite", epoch, loop.run_dir, len(loop.history))
    best = min((h["eval_loss"] for h in loop.history), default=math.inf)
    loop.history.append({
        "epoch": epoch + 1, "lr": lr, "train_loss": float(loss_sum[0] / loss_sum[1]),
        "eval_loss": result.loss, "eval_accuracy": result.accuracy, "per_class": result.per_class,
        "per_device": result.per_device, "nonzero_params": count_nonzero(model), "pruned": pruned,
        "params": count_params(model), "macs": complexity(model.config, loop.n_frames)[1],
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
    loader = DataLoader(data, batch_size=loop.per_rank, sampler=sampler, num_workers=cfg.workers,
                        drop_last=len(data) >= 2 * cfg.batch_size)
    loop.net.train()
    style = parse_freq_mixstyle(cfg.freq_mixstyle)
    loss_sum = torch.zeros(2, dtype=torch.float64, device=device)
    with _epoch_bar(f"epoch {epoch + 1}/{cfg.epochs}", len(loader) * loop.per_rank * dist.world,
                    progress and dist.main) as advance:
        for step, batch in enumerate(loader):
            batch = [t.to(device, non_blocking=True) for t in batch]
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
                raise _diverged(f"the loss is {float(step_loss / n):g} at step {step + 1}", epoch, loop.run_dir,
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
    if style is not None:  # its own stream: runs without it draw exactly what they drew before
        x = freq_mixstyle(x, np.random.default_rng([*key, 1]), *style)
    lam, perm = mixup_plan(len(y), np.random.default_rng(key), cfg.mixup_alpha)
    x, y_a, y_b, lam = mix(x, lam, perm), y, y[perm.to(device)], lam.to(device)
    targets = None
    if loop.teachers:  # cached: mixed like the inputs; online: the teachers see this very batch
        logits_t = (batch[2] if loop.teacher_logits is not None else
                    online_logits(loop.teachers, x.float(), *loop.student_norm))
        targets = soft_targets(logits_t, loop.kd_temperature)
        if loop.teacher_logits is not None:
            targets = mix(targets, lam, perm)
    with torch.autocast(device.type, dtype=torch.float16, enabled=cfg.amp):
        logits = loop.net(x).float()
    loss = mixup_cross_entropy(logits, y_a, y_b, lam)
    if targets is not None:
        loss = distillation_loss(logits, loss, targets, loop.kd_weight, loop.kd_temperature)
    return loss


def _channel_pruner(cfg: TrainConfig, dense_config, n_frames: int, fit_plan=None) -> ChannelPruner | None:
    macs_target, params_target = ((fit_plan.macs_target, fit_plan.params_target) if fit_plan is not None
                                  else (cfg.macs_target, cfg.params_target))
    if macs_target is None and params_target is None:
        return None
    if cfg.epochs <= cfg.prune_epochs:  # the budget is reached at the start of epoch prune_epochs + 1
        raise ConfigError(f"channel pruning reaches its budget at the start of epoch {cfg.prune_epochs + 1} "
                          f"(--prune-epochs {cfg.prune_epochs}): give --epochs > {cfg.prune_epochs}, not {cfg.epochs}")
    return ChannelPruner(dense_config, n_frames, macs_target, params_target, cfg.prune_schedule,
                         cfg.prune_epochs, cfg.channel_importance, cfg.channel_multiple)


def _teachers(cfg: TrainConfig, cache: FeatureCache, ckpt: dict | None, run_dir: Path) -> list[Teacher]:
    teachers = load_teachers(cfg.teachers, cache.label_names, cache.manifest["params"], cache.manifest["channels"],
                             run_dir)
    if ckpt is not None:  # the objective is part of the run: a resume must distil from the same teachers
        before = [t["sha256"] for t in (ckpt.get("teachers") or [])]
        if sorted(before) != sorted(t.sha256 for t in teachers):
            raise ConfigError(f"{run_dir} was trained with {len(before) or 'no'} teacher(s) "
                              f"{'(' + ', '.join(t['path'] for t in ckpt['teachers']) + ') ' if before else ''}"
                              "and must resume with the same --teacher checkpoints")
    return teachers


def _teacher_targets(cfg: TrainConfig, dist: Dist, cache: FeatureCache, teachers: list[Teacher],
                     device: torch.device, progress: bool) -> np.ndarray | None:
    """The ensemble's logits per training clip (cached targets), computed by rank 0 once per
    teacher and clip list and read back by the other ranks."""
    if not teachers or (cfg.kd_targets or "cached") != "cached":
        return None
    logits = None
    for turn in ((True,) if dist.world == 1 else (True, False)):
        if dist.main if turn else not dist.main:
            t0 = time.perf_counter()
            logits, ran = ensemble_logits(teachers, cache, "train", device)
            if ran and dist.main and progress:
                out.print(f"teacher logits: {ran} of {len(teachers)} teacher(s) ran on {len(logits):,} training clips "
                          f"in {time.perf_counter() - t0:.1f} s (cached for later runs)", markup=False, soft_wrap=True)
        dist.barrier()
    return logits


def _finish(cfg: TrainConfig, dist: Dist, run_dir: Path, loop: Loop, config_record: dict) -> dict:
    model, pruner, cache, history, payload_common = loop.model, loop.pruner, loop.cache, loop.history, loop.payload_common
    averaged = loop.swa.averaged_model(model) if loop.swa is not None and loop.swa.count else None
    if loop.swa is not None and averaged is None and dist.main:
        err.print(f"edgeasc: note: no epoch was averaged yet (--swa-start {cfg.swa_start}, --epochs {cfg.epochs}): "
                  "no model-swa.pt", markup=False, soft_wrap=True)
    if pruner is not None:
        pruner.finalize()
        if averaged is not None:  # the final masks: exactly the target's non-zeros
            for module in averaged.modules():
                if hasattr(module, "fold_mask"):
                    module.fold_mask()
    digest = state_digest(model)
    in_sync = True
    if dist.world > 1:
        digests = [torch.zeros(1, dtype=torch.int64) for _ in range(dist.world)]
        torch.distributed.all_gather(digests, torch.tensor([digest], dtype=torch.int64))
        in_sync = len({int(d) for d in digests}) == 1
    final_eval = evaluate(model, cache, device=str(next(model.parameters()).device), rank=dist.rank,
                          world=dist.world)
    last = [h["eval_accuracy"] for h in history[-REPORT_LAST:]]
    n_frames = int(cache.manifest["frames"])
    config = model.config
    dense_params, dense_macs = complexity(config.dense, n_frames)
    summary = {"epochs": len(history), "reported_accuracy": float(np.mean(last)) if last else None,
               "reported_over_epochs": len(last), "final": final_eval.to_dict(),
               "nonzero_params": count_nonzero(model), "params": sum(p.numel() for p in model.parameters()),
               "prune_target": pruner.target if pruner else None, "labels": cache.label_names,
               "world_size": dist.world, "ranks_in_sync": in_sync, "run_dir": str(run_dir),
               "variant": config_record["variant"], "model": config_record["model"],
               "macs": complexity(config, n_frames)[1], "dense_params": dense_params, "dense_macs": dense_macs,
               "seconds": cache.manifest["params"]["clip_seconds"], "channel_plan": dict(config.channels) if config.channels else None,
               "dense_channels": {g.name: g.dense_width for g in channel_groups(config)} if config.channels else None,
               "channel_pruning": config_record["channel_pruning"], "swa": None,
               "fit": config_record["fit"], "teachers": config_record["teachers"],
               "kd": ({"weight": loop.kd_weight, "temperature": loop.kd_temperature,
                       "targets": cfg.kd_targets or "cached"} if loop.teachers else None)}
    if averaged is not None:
        device = next(model.parameters()).device
        loader = DataLoader(loop.train_data, batch_size=loop.per_rank, num_workers=cfg.workers,
                            sampler=RandomSampler(loop.train_data, generator=torch.Generator().manual_seed(cfg.seed)))
        reestimate_batchnorm(averaged, loader, device)
        swa_eval = evaluate(averaged, cache, device=str(device), rank=dist.rank, world=dist.world)
        summary["swa"] = {"epochs_averaged": list(loop.swa.epochs), "start": loop.swa.start, "every": loop.swa.every,
                          "accuracy": swa_eval.accuracy, "loss": swa_eval.loss,
                          "nonzero_params": count_nonzero(averaged), "final": swa_eval.to_dict()}
    if dist.main:
        if averaged is not None:
            save_checkpoint(run_dir / "model-swa.pt", {**payload_common, "kind": "swa", "model": averaged.state_dict(),
                                                       "epoch": len(history), "history": history, "summary": summary})
        atomic_write_json(run_dir / "config.json", config_record)
        save_checkpoint(run_dir / "model-final.pt", {**payload_common, "kind": "final",
                                                      "model": model.state_dict(), "epoch": len(history),
                                                      "history": history, "summary": summary})
        atomic_write_json(run_dir / "summary.json", summary)
        from edgeasc.plots import plot_confusion, plot_curves, plot_devices, plot_nonzero

        plot_curves(history, run_dir / "curves.png")
        plot_nonzero(history, summary["prune_target"], run_dir / "nonzero.png")
        plot_confusion(final_eval.confusion, cache.label_names, run_dir / "confusion.png",
                       f"evaluate accuracy {100 * final_eval.accuracy:.1f} %")
        plot_devices(final_eval.to_dict(), run_dir / "devices.png", "evaluate accuracy per device")
    dist.barrier()  # ranks leave together: tearing down gloo while rank 0 still writes aborts the others
    return summary


def _epoch_line(r: dict, epochs: int) -> str:
    return (f"epoch {r['epoch']:>3}/{epochs}  lr {r['lr']:.2e}  train loss {r['train_loss']:.4f}  "
            f"eval loss {r['eval_loss']:.4f}  acc {100 * r['eval_accuracy']:5.1f} %  "
            f"non-zero {r['nonzero_params']:,}  MACs {r['macs'] / 1e6:.1f} M  {r['train_clips_per_s']:.1f} clips/s  {r['seconds']:.1f} s")


def _epoch_bar(description: str, total: int, enabled: bool):
    from edgeasc.console import err
    from edgeasc.parallel import progress_bar

    # a per-epoch bar only makes sense live; logs get the per-epoch line instead
    return progress_bar(description, total, unit="clips", enabled=enabled and err.is_terminal, transient=True)

