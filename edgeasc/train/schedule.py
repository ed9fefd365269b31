"""What changes with the epoch: the learning rate, and when and how far pruning has gone.

The learning-rate schedule is a function of the config and the epoch, or of the optimiser
step for `cosine` (so a resumed run takes exactly the rate an uninterrupted one would):
`hold-linear` (the 2020 paper) holds --lr for --lr-hold epochs, decays linearly to 0 at
--lr-decay-end, then stays at --lr-final; `cosine` (the DCASE 2024/25 baselines, the form of
transformers.get_cosine_schedule_with_warmup) rises linearly from 0 over the warm-up steps to
the peak --lr and falls along a half cosine to 0 at the end of the last epoch. The pruning set-up turns the config into the
pruners the loop applies each epoch: channel pruning first (over --prune-epochs), then
magnitude pruning (over as many again), or magnitude pruning alone from epoch 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from edgeasc.compress.gate import GatePruner
from edgeasc.compress.pruning import Pruner
from edgeasc.compress.structured import ChannelPruner
from edgeasc.console import err
from edgeasc.errors import ConfigError
from edgeasc.train.config import TrainConfig


def cosine_lr(peak: float, step: int, warmup: int, total: int) -> float:
    """Step `step` (0-based) of `total`: peak·step/warmup during the warm-up (the first step
    takes 0, as in the reference), then peak·½(1 + cos(π·(step − warmup)/(total − warmup))),
    which reaches 0 at step `total`, the end of the run."""
    if step < warmup:
        return peak * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def steps_per_epoch(clips: int, batch_size: int, world: int = 1) -> int:
    """Optimiser steps in one epoch, as loop.py's DataLoader takes them: each of `world`
    processes holds ceil(clips / world) clips in batches of batch_size / world, and the last
    short batch is dropped when there are at least two full ones."""
    per_rank, batch = -(-clips // world), batch_size // world
    return per_rank // batch if clips >= 2 * batch_size else -(-per_rank // batch)


@dataclass(frozen=True)
class LRSchedule:
    """The run's learning rate at (epoch, step); printed at the start, kept in config.json."""

    kind: str
    lr: float
    epochs: int
    steps_per_epoch: int
    warmup_steps: int = 0
    hold: int = 0
    decay_end: int = 0
    final: float = 0.0

    @classmethod
    def from_config(cls, cfg: TrainConfig, steps: int) -> LRSchedule:
        if cfg.schedule != "cosine":
            return cls("hold-linear", cfg.lr, cfg.epochs, steps, hold=cfg.lr_hold, decay_end=cfg.lr_decay_end,
                       final=cfg.lr_final)
        warmup = (cfg.warmup_steps if cfg.warmup_steps is not None else
                  math.floor((cfg.warmup_epochs or 0.0) * steps + 0.5))
        total = cfg.epochs * steps
        if warmup >= total:
            given = (f"--warmup-steps {cfg.warmup_steps}" if cfg.warmup_steps is not None else
                     f"--warmup-epochs {cfg.warmup_epochs:g} ({warmup} steps)")
            raise ConfigError(f"{given} is not shorter than the run's {total:,} optimiser steps (--epochs {cfg.epochs} "
                              f"× {steps} steps of --batch-size {cfg.batch_size}): give a shorter warm-up")
        return cls("cosine", cfg.lr, cfg.epochs, steps, warmup_steps=warmup)

    @property
    def per_step(self) -> bool:
        return self.kind == "cosine"

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def at(self, epoch: int, step: int = 0) -> float:
        if self.kind == "cosine":
            return cosine_lr(self.lr, epoch * self.steps_per_epoch + step, self.warmup_steps, self.total_steps)
        if epoch < self.hold:
            return self.lr
        if epoch < self.decay_end:
            return self.lr * (1.0 - (epoch - self.hold) / (self.decay_end - self.hold))
        return self.final

    def describe(self) -> dict:
        d = {"kind": self.kind, "lr": self.lr, "epochs": self.epochs, "steps_per_epoch": self.steps_per_epoch,
             "per": "step" if self.per_step else "epoch"}
        if self.per_step:
            return {**d, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}
        return {**d, "hold": self.hold, "decay_end": self.decay_end, "final": self.final}

    def line(self) -> str:
        if self.per_step:
            return (f"lr schedule: linear warm-up 0 → {self.lr:g} over {self.warmup_steps:,} steps "
                    f"({self.warmup_steps / self.steps_per_epoch:.2f} epochs), then cosine to 0 at step "
                    f"{self.total_steps:,} ({self.epochs} epochs × {self.steps_per_epoch} steps), set every step")
        ends = ("" if self.epochs >= self.decay_end else
                f"; the run ends before the decay does, at {self.at(self.epochs - 1):g} (--lr-hold, --lr-decay-end)")
        return (f"lr schedule: {self.lr:g} held for {self.hold} epochs, linear to 0 at epoch {self.decay_end}, "
                f"then {self.final:g} (of {self.epochs} epochs), set every epoch{ends}")


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """The paper's schedule: lr for epochs < hold, linear to 0 at decay_end, then lr_final."""
    return LRSchedule("hold-linear", cfg.lr, cfg.epochs, 1, hold=cfg.lr_hold, decay_end=cfg.lr_decay_end,
                      final=cfg.lr_final).at(epoch)


def channel_ramp_epochs(cfg: TrainConfig) -> int:
    """Epochs of the channel-pruning ramp: --prune-epochs, or less in a run too short for it (the
    budget is reached at the start of epoch ramp + 1, and a magnitude ramp after it needs as many
    again): then the ramps share the run's epochs so that both targets are met by the last one."""
    both = cfg.prune_target is not None
    if cfg.epochs > (2 if both else 1) * cfg.prune_epochs:
        return cfg.prune_epochs
    return (cfg.epochs - 1) // 2 if both else cfg.epochs - 1


def channel_pruner_for(cfg: TrainConfig, dense_config, n_frames: int, fit_plan=None,
                       announce: bool = False) -> ChannelPruner | None:
    macs_target, params_target = ((fit_plan.macs_target, fit_plan.params_target) if fit_plan is not None
                                  else (cfg.macs_target, cfg.params_target))
    if macs_target is None and params_target is None:
        return None
    epochs = channel_ramp_epochs(cfg)
    if epochs != cfg.prune_epochs and announce:  # as the magnitude ramp does: shorten, say so, go on
        then = " and magnitude pruning after it" if cfg.prune_target is not None else ""
        err.print(f"edgeasc: warning: --epochs {cfg.epochs} is too short for the channel-pruning ramp of "
                  f"--prune-epochs {cfg.prune_epochs}{then}: channel pruning ramps over {epochs} epoch(s) instead, "
                  "so that the budget is met by the last epoch", markup=False, soft_wrap=True)
    return ChannelPruner(dense_config, n_frames, macs_target, params_target, cfg.prune_schedule,
                         epochs, cfg.channel_importance, cfg.channel_multiple)


def magnitude_pruning(cfg: TrainConfig, preset_target: int | None, channel_pruner: ChannelPruner | None,
                      announce: bool) -> tuple[int | None, int, Callable[[torch.nn.Module], Pruner]]:
    """(the magnitude target, the epoch magnitude pruning starts, a factory of its pruner).
    `announce`: this process prints the note when a short run shortens the ramp."""
    explicit = cfg.prune_target is not None or cfg.prune_ratio is not None
    # a preset's magnitude target describes its dense network: it does not apply after channel pruning
    target = cfg.prune_target if explicit or channel_pruner else preset_target
    magnitude_start = channel_pruner.epochs if channel_pruner else 0
    if channel_pruner and target is not None and cfg.params_target is not None and target > cfg.params_target:
        raise ConfigError(f"--prune-target {target:,} is above --params-target {cfg.params_target:,}: nothing left "
                          "for magnitude pruning to do")

    ramp_epochs = cfg.prune_epochs
    if (target is not None or cfg.prune_ratio is not None) and cfg.epochs <= magnitude_start + cfg.prune_epochs:
        # the ramp reaches its target at the start of epoch start + ramp + 1: finish it by the last epoch instead
        ramp_epochs = cfg.epochs - 1 - magnitude_start

    def make_pruner(model):
        try:
            if cfg.prune_method == "gate":
                pruner = GatePruner(model, target, schedule=cfg.prune_schedule, epochs=ramp_epochs,
                                    start=magnitude_start)
            else:
                pruner = Pruner(model, target=target, ratio=cfg.prune_ratio, schedule=cfg.prune_schedule,
                                epochs=ramp_epochs, monotone=cfg.prune_monotone, start=magnitude_start)
            if ramp_epochs != cfg.prune_epochs and announce and not channel_pruner:  # that one said it already
                err.print(f"edgeasc: note: --epochs {cfg.epochs} ends before the pruning ramp of --prune-epochs "
                          f"{cfg.prune_epochs}: pruning ramps over {ramp_epochs} epoch(s) instead, so that the "
                          "target is reached in the last epoch", markup=False, soft_wrap=True)
            return pruner
        except ConfigError as exc:
            if explicit:
                raise
            raise ConfigError(f"preset {cfg.preset!r} prunes to {target:,} parameters, which does not fit the "
                              f"modified network: {exc}; give --prune-target or --prune-ratio") from None

    return target, magnitude_start, make_pruner
