"""What changes with the epoch: the learning rate, and when and how far pruning has gone.

The learning-rate schedule is a function of the config and the epoch (so a resumed run takes
exactly the rate an uninterrupted one would). The pruning set-up turns the config into the
pruners the loop applies each epoch: channel pruning first (over --prune-epochs), then
magnitude pruning (over as many again), or magnitude pruning alone from epoch 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from edgeasc.compress.gate import GatePruner
from edgeasc.compress.pruning import Pruner
from edgeasc.compress.structured import ChannelPruner
from edgeasc.console import err
from edgeasc.errors import ConfigError
from edgeasc.train.config import TrainConfig


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """The paper's schedule: lr for epochs < hold, linear to 0 at decay_end, then lr_final."""
    if epoch < cfg.lr_hold:
        return cfg.lr
    if epoch < cfg.lr_decay_end:
        return cfg.lr * (1.0 - (epoch - cfg.lr_hold) / (cfg.lr_decay_end - cfg.lr_hold))
    return cfg.lr_final


def channel_pruner_for(cfg: TrainConfig, dense_config, n_frames: int, fit_plan=None) -> ChannelPruner | None:
    macs_target, params_target = ((fit_plan.macs_target, fit_plan.params_target) if fit_plan is not None
                                  else (cfg.macs_target, cfg.params_target))
    if macs_target is None and params_target is None:
        return None
    if cfg.epochs <= cfg.prune_epochs:  # the budget is reached at the start of epoch prune_epochs + 1
        raise ConfigError(f"channel pruning reaches its budget at the start of epoch {cfg.prune_epochs + 1} "
                          f"(--prune-epochs {cfg.prune_epochs}): give --epochs > {cfg.prune_epochs}, not {cfg.epochs}")
    return ChannelPruner(dense_config, n_frames, macs_target, params_target, cfg.prune_schedule,
                         cfg.prune_epochs, cfg.channel_importance, cfg.channel_multiple)


def magnitude_pruning(cfg: TrainConfig, preset_target: int | None, channel_pruner: ChannelPruner | None,
                      announce: bool) -> tuple[int | None, int, Callable[[torch.nn.Module], Pruner]]:
    """(the magnitude target, the epoch magnitude pruning starts, a factory of its pruner).
    `announce`: this process prints the note when a short run shortens the ramp."""
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
            if ramp_epochs != cfg.prune_epochs and announce:
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
