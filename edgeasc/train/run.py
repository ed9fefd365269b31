"""A training run: its directory (lock, refusals, --force and --resume), the data and the
network it starts from, the loop over epochs (loop.py) and what it leaves behind (final and
SWA checkpoints, summary, plots). DDP under torchrun: rank 0 holds the run directory.

Everything random derives from (seed, epoch, step, rank), so a run killed at any moment and
resumed from its last completed epoch ends exactly where an uninterrupted run would (CPU).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from edgeasc.compress.gate import GatePruner
from edgeasc.console import err, out
from edgeasc.data.cache import FeatureCache, extract_features
from edgeasc.data.dcase import meta_csv_order, open_dataset
from edgeasc.errors import ConfigError, EdgeascError
from edgeasc.io import (
    FolderLock,
    atomic_write_json,
    make_folder,
    missing_folders,
    remove_empty_folders,
)
from edgeasc.models import CPMobileConfig, build_model, config_from_dict
from edgeasc.models.complexity import count_nonzero
from edgeasc.models.family import complexity_of, dense_widths
from edgeasc.models.presets import resolve_model
from edgeasc.models.receptive_field import output_shapes
from edgeasc.runtime.features import FeatureParams, frontend_name, frontend_params
from edgeasc.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from edgeasc.train.config import TrainConfig, explicit_network
from edgeasc.train.distill import Teacher, ensemble_logits, load_teacher_logits, load_teachers
from edgeasc.train.distributed import Dist, resolve_device, state_digest
from edgeasc.train.evaluate import evaluate
from edgeasc.train.loop import Loop, epoch_line, roll_frames, run_epoch
from edgeasc.train.rundir import RUN_FILES, check_run_dir, refuse_outputs_over_inputs
from edgeasc.train.schedule import (
    LRSchedule,
    channel_pruner_for,
    magnitude_pruning,
    steps_per_epoch,
)
from edgeasc.train.swa import WeightAverage, reestimate_batchnorm

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
            cache, _ = extract_features(dataset, frontend_params(cfg.frontend, seconds), workers=cfg.feature_workers,
                                        root=root, progress=progress and dist.main)
        dist.barrier()
    return cache


class TrainingInterrupted(EdgeascError):
    exit_code = 130


def train(cfg: TrainConfig, resume: bool = False, force: bool = False, progress: bool = True,
          inputs: Sequence[str | Path] = (), plots: bool = True) -> dict:
    """`inputs`: files the command read besides the config's own paths (the --config file);
    `plots`: write the PNG figures (curves, non-zeros, confusion, devices) at the end."""
    if resume and force:
        raise ConfigError("--resume continues the run in --out, --force starts it over: give one of them")
    refuse_outputs_over_inputs(cfg, force, inputs)
    dist = Dist.from_env()
    if dist.world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if cfg.device != "cpu" and torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    try:
        return _train(cfg, dist, resume, force, progress, plots)
    finally:
        if dist.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _train(cfg: TrainConfig, dist: Dist, resume: bool, force: bool, progress: bool, plots: bool) -> dict:
    run_dir = Path(cfg.out)
    device = resolve_device(cfg.device, dist)
    if cfg.amp and device.type != "cuda":
        raise ConfigError("--amp needs a CUDA device")
    cuda = device.type == "cuda"  # the fast combination by default on CUDA, the exact one on the CPU
    cfg = replace(cfg, amp=cuda if cfg.amp is None else cfg.amp,
                  channels_last=cuda if cfg.channels_last is None else cfg.channels_last)
    if cfg.batch_size % dist.world:
        raise ConfigError(f"--batch-size {cfg.batch_size} is not divisible by the {dist.world} processes")
    if cfg.accumulate > cfg.batch_size // dist.world:
        each = "each process takes per step" if dist.world > 1 else "a step takes"
        raise ConfigError(f"--accumulate {cfg.accumulate} is more than the {cfg.batch_size // dist.world} clips "
                          f"{each} (--batch-size {cfg.batch_size})")
    if not dist.main:  # rank 0 holds the run directory for all ranks
        return _train_in(cfg, dist, device, resume and (run_dir / "checkpoint-last.pt").is_file(), force, progress,
                         plots)
    created = missing_folders(run_dir)
    make_folder(run_dir)
    try:
        with FolderLock(run_dir, "training"):
            from_checkpoint = check_run_dir(run_dir, resume, force, existed=not created)
            return _train_in(cfg, dist, device, from_checkpoint, force, progress, plots)
    except BaseException:
        remove_empty_folders(created)  # refused, or failed before its first checkpoint: no trace
        raise


def _train_in(cfg: TrainConfig, dist: Dist, device: torch.device, resume: bool, force: bool, progress: bool,
              plots: bool) -> dict:
    run_dir = Path(cfg.out)
    ckpt = None
    if resume:
        ckpt = load_checkpoint(run_dir / "checkpoint-last.pt")
        if cfg.epochs < int(ckpt["epoch"]):
            raise ConfigError(f"{run_dir} has trained {ckpt['epoch']} epochs already: --epochs {cfg.epochs} would end "
                              "before its checkpoint (give --epochs >= that, or --force to start over)")
        trained_with = frontend_name(FeatureParams(**ckpt["feature_params"]))
        if trained_with != cfg.frontend:  # the features are the network's input: a resume keeps them
            raise ConfigError(f"{run_dir} was trained with the {trained_with} frontend: resume it with --frontend "
                              f"{trained_with}" if trained_with else f"{run_dir} was trained with a frontend that "
                              "--frontend cannot name: start over with --force")

        planned = (ckpt.get("train_config") or {}).get("epochs")
        if cfg.schedule == "cosine" and planned is not None and planned != cfg.epochs:
            raise ConfigError(f"{run_dir} was planned for --epochs {planned}: its cosine schedule ends at 0 there, "
                              f"and --epochs {cfg.epochs} would change the rate of every step (resume with --epochs "
                              f"{planned})")

    cache = prepare_data(cfg, dist, progress, ckpt["labels"] if ckpt is not None else None,
                         ckpt["feature_params"]["clip_seconds"] if ckpt is not None else None)
    labels = cache.label_names
    channels = cache.manifest["channels"]
    if cfg.freq_mask > cache.manifest["params"]["n_mels"]:
        raise ConfigError(f"--freq-mask {cfg.freq_mask} is more than the {cache.manifest['params']['n_mels']} mel "
                          "bins of the features")
    schedule = LRSchedule.from_config(cfg, steps_per_epoch(len(cache.clips("train")), cfg.batch_size, dist.world))
    logits_file = (load_teacher_logits(cfg.teacher_logits, cache.clips("train"), labels,
                                       meta_csv_order(cache.manifest["root"]))
                   if cfg.teacher_logits else None)
    if ckpt is not None and (ckpt.get("teacher_logits") or {}).get("sha256") != (
            logits_file.record()["sha256"] if logits_file else None):
        raise ConfigError(f"{run_dir} must resume with the --teacher-logits file it was trained with "
                          f"({(ckpt.get('teacher_logits') or {}).get('path', 'none')})")
    model_config, preset_target = resolve_model(
        cfg.preset, variant=cfg.variant, decomp_factor=cfg.decomp_factor, rho=cfg.rho, width=cfg.width,
        depth_restriction=cfg.depth_restriction, damping_floor=cfg.damping_floor, damp_stem=cfg.damp_stem,
        n_classes=len(labels), in_channels=channels)
    n_frames = int(cache.manifest["frames"])
    if isinstance(model_config, CPMobileConfig):  # its input is whatever the run's frontend makes
        check_cp_mobile_run(cfg)
        model_config = model_config.replace(n_mels=int(cache.manifest["params"]["n_mels"]))
    fit_plan = None
    if cfg.fit is not None:  # the rules count every parameter: a preset's magnitude target buys nothing
        from edgeasc.compress.fit import plan_fit

        fit_plan = plan_fit(cfg.fit, n_frames, float(cache.manifest["params"]["clip_seconds"]), len(labels),
                            channels, model_config if explicit_network(cfg) else None, cfg.channel_multiple)
        model_config, preset_target = fit_plan.start, None
        if dist.main and progress:
            for line in fit_plan.lines():
                out.print(line, markup=False, soft_wrap=True)
    try:  # a clip too short for the network: one line now, not a pooling layer's traceback in epoch 1
        if not isinstance(model_config, CPMobileConfig):  # CP-Mobile pads every conv: any length runs
            output_shapes(model_config, n_frames)
    except ConfigError as exc:
        raise ConfigError(f"clips of {cache.manifest['params']['clip_seconds']:g} s are too short for this "
                          f"network: {exc}") from None
    teachers = _teachers(cfg, cache, ckpt, run_dir)
    if ckpt is not None:
        try:  # the checkpoint's own config: after channel pruning it carries the channel plan
            stored = config_from_dict(ckpt["model_config"])
        except (ConfigError, TypeError) as exc:
            raise CheckpointError(f"{run_dir}: the checkpoint's model config is invalid ({exc})") from None
        if stored.dense.to_dict() != model_config.to_dict():
            raise CheckpointError(f"{run_dir}: the model configuration differs from the run being resumed")
        model_config = stored

    torch.manual_seed(cfg.seed)
    model = build_model(model_config).to(device)
    channel_pruner = channel_pruner_for(cfg, model_config.dense, n_frames, fit_plan, announce=dist.main)
    target, magnitude_start, make_pruner = magnitude_pruning(cfg, preset_target, channel_pruner, dist.main)
    wants_magnitude = target is not None or cfg.prune_ratio is not None
    pruner = make_pruner(model) if wants_magnitude and not channel_pruner else None
    optimizer = make_optimizer(cfg, model)
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

    augment = {"roll_frames": roll_frames(cfg, cache.manifest["params"]), "time_roll": cfg.time_roll,
               "freq_mask": cfg.freq_mask, "freq_mixstyle": cfg.freq_mixstyle, "mixup_alpha": cfg.mixup_alpha}
    if dist.main and progress:
        out.print(f"recipe {cfg.recipe}: {cfg.optimizer} (weight decay {cfg.weight_decay:g}), batch {cfg.batch_size}; "
                  + schedule.line(), markup=False, soft_wrap=True)
    config_record = {"train": cfg.to_dict(), "schedule": schedule.describe(), "augmentation": augment,
                     "teacher_logits": logits_file.record() if logits_file else None, "model": model_config.dense.to_dict(), "variant": model_config.variant,
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
                      "teachers": [t.record() for t in teachers] or None,
                      "teacher_logits": logits_file.record() if logits_file else None}
    swa = None
    if cfg.swa_start is not None:
        if channel_pruner is not None and cfg.swa_start <= cfg.prune_epochs + 1:
            raise ConfigError(f"--swa-start {cfg.swa_start} averages weights while channel pruning still changes their "
                              f"shapes (until epoch {cfg.prune_epochs + 1}): start after it")
        swa = WeightAverage(cfg.swa_start, cfg.swa_every)
        if ckpt is not None and ckpt.get("swa"):
            swa.load_state_dict(ckpt["swa"], device)
    loop = Loop(cfg, dist, device, run_dir, cache, model, optimizer, pruner, channel_pruner, make_pruner,
                wants_magnitude, magnitude_start, history, payload_common, schedule, swa, teachers,
                logits_file.logits if logits_file else _teacher_targets(cfg, dist, cache, teachers, device, progress))
    if loop.dir_record is not None:  # --dir-folder: the folder, p, the reference device, the responses
        augment["dir"] = loop.dir_record

    t_run, first_epoch = time.perf_counter(), start_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs):
            run_epoch(loop, epoch, progress)
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
                out.print(epoch_line(history[-1], cfg.epochs) + (f"  ETA {_clock(left)}" if left else ""))
        payload_common["model_config"] = loop.model.config.to_dict()
        return _finish(cfg, dist, run_dir, loop, config_record, plots)
    except KeyboardInterrupt:
        kept = (f"the checkpoint of epoch {len(history)} is kept: add --resume to the same command to continue"
                if history else "no epoch had finished, so no checkpoint was written: run the command again")
        where = (f"in epoch {len(history) + 1} of {cfg.epochs}" if len(history) < cfg.epochs else
                 "while writing the final model")
        raise TrainingInterrupted(f"interrupted {where}; {kept}") from None


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """adam: the 2020 paper's (weight decay, if any, as an L2 term in the gradient); adamw: the
    2024/25 baselines' (decoupled weight decay). Every parameter decays, as in the baselines."""
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)


def check_cp_mobile_run(cfg: TrainConfig) -> None:
    """What a CP-Mobile run cannot do yet: the budget fit chooses among CP-ResNet networks only.
    Channel pruning (--macs-target, --params-target) and magnitude pruning work on both families."""
    if cfg.fit is not None:
        raise ConfigError("--fit chooses among CP-ResNet networks; for a CP-Mobile run give --macs-target or "
                          "--params-target (channel pruning) and check the result with `edgeasc export --rules`")


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


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


def _finish(cfg: TrainConfig, dist: Dist, run_dir: Path, loop: Loop, config_record: dict, plots: bool) -> dict:
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
    dense_params, dense_macs = complexity_of(config.dense, n_frames)
    summary = {"epochs": len(history), "reported_accuracy": float(np.mean(last)) if last else None,
               "reported_over_epochs": len(last), "final": final_eval.to_dict(),
               "nonzero_params": count_nonzero(model), "params": sum(p.numel() for p in model.parameters()),
               "prune_target": pruner.target if pruner else None, "labels": cache.label_names,
               "world_size": dist.world, "ranks_in_sync": in_sync, "run_dir": str(run_dir),
               "variant": config_record["variant"], "model": config_record["model"],
               "macs": complexity_of(config, n_frames)[1], "dense_params": dense_params, "dense_macs": dense_macs,
               "seconds": cache.manifest["params"]["clip_seconds"], "channel_plan": dict(config.channels) if config.channels else None,
               "dense_channels": dense_widths(config) if config.channels else None,
               "channel_pruning": config_record["channel_pruning"], "swa": None,
               "fit": config_record["fit"], "teachers": config_record["teachers"],
               "teacher_logits": config_record["teacher_logits"],
               "kd": ({"weight": loop.kd_weight, "temperature": loop.kd_temperature,
                       "targets": cfg.kd_targets or "cached",
                       "reduction": cfg.kd_reduction} if loop.distils else None),
               "recipe": cfg.recipe, "schedule": config_record["schedule"],
               "augmentation": config_record["augmentation"]}
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
    if dist.main and plots:
        from edgeasc.train.plots import plot_confusion, plot_curves, plot_devices, plot_nonzero

        plot_curves(history, run_dir / "curves.png")
        plot_nonzero(history, summary["prune_target"], run_dir / "nonzero.png")
        plot_confusion(final_eval.confusion, cache.label_names, run_dir / "confusion.png",
                       f"evaluate accuracy {100 * final_eval.accuracy:.1f} %")
        plot_devices(final_eval.to_dict(), run_dir / "devices.png", "evaluate accuracy per device")
    dist.barrier()  # ranks leave together: tearing down gloo while rank 0 still writes aborts the others
    return summary
