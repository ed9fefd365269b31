"""Budget fit (`train --fit dcase2024`): a student that meets a challenge's complexity rules
after export at the precision they assume (docs/distillation.md).

Since DCASE 2022 the rules count every parameter (zeros and BatchNorm included) and cap the
MACs per second of audio, so magnitude pruning buys nothing and the network must be
physically small. The plan: a start network from a small table of CP-ResNet shapes (or the
network the user named), then channel pruning (compress/structured.py) to the exact limits.
The start is the candidate whose binding cost (MACs or parameters over the limit, whichever
is further) is largest without exceeding START_HEADROOM: pruning a network about 1.5 times
the budget keeps most of its channels yet leaves the ranking something to choose from, and
starting far wider costs training time on a CPU for channels that will go.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from edgeasc.errors import ConfigError
from edgeasc.models.channels import channel_groups, complexity
from edgeasc.models.config import ModelConfig
from edgeasc.models.describe import BYTES_PER_VALUE

FIT_RULES = ("dcase2022", "dcase2024")
FIT_PRECISION = "int8"       # what the rules assume: 1 byte per parameter
# widths in multiples of 16, as --macs-target: the rules judge MACs, but a plan at finer steps
# runs 1.4-1.8x slower per MAC in onnxruntime (benchmarks/RESULTS.md, channel multiples), and a
# student that meets the MAC limit should also run in the time those MACs suggest
FIT_CHANNEL_MULTIPLE = 16
START_HEADROOM = 1.5
# the damped rho-3 CP-ResNet of the DCASE'20 submissions at these widths (stage widths w, 2w)
CANDIDATE_WIDTHS = (16, 24, 32, 40, 48, 64, 96, 128)
_BASE = ModelConfig(rho=3, width=128)


def rules_limits(rules: str, seconds: float) -> tuple[int, int]:
    """(parameters, MACs per clip) the rules allow at FIT_PRECISION for clips of `seconds`."""
    from edgeasc.compress.rules import RULES

    if rules not in FIT_RULES:
        raise ConfigError(f"--fit must be one of {', '.join(FIT_RULES)} (the rule sets that cap all parameters and "
                          f"MACs), got {rules!r}")
    r = RULES[rules]
    return r.budget_bytes // BYTES_PER_VALUE[FIT_PRECISION], math.floor(r.macs_per_second * seconds)


@dataclass(frozen=True)
class FitPlan:
    rules: str
    seconds: float
    start: ModelConfig
    start_name: str
    explicit: bool              # the user named the start network
    params_limit: int
    macs_limit: int             # per clip
    dense: tuple[int, int]      # (params, MACs per clip) of the start
    minimum: tuple[int, int]    # ... of the smallest plan channel pruning may leave
    multiple: int

    @property
    def params_target(self) -> int | None:
        """What channel pruning must reach (None: the start already fits)."""
        return self.params_limit if self.dense[0] > self.params_limit else None

    @property
    def macs_target(self) -> str | None:
        """The MAC target in compress/structured's notation, exact (None: the start fits)."""
        if self.dense[1] <= self.macs_limit:
            return None
        return f"{Decimal(self.macs_limit) / 1000}k"

    def describe(self) -> dict:
        return {"rules": self.rules, "precision": FIT_PRECISION, "clip_seconds": self.seconds,
                "start": self.start_name, "start_config": self.start.to_dict(), "explicit": self.explicit,
                "params_limit": self.params_limit, "macs_limit_per_clip": self.macs_limit,
                "macs_limit_per_second": self.macs_limit / self.seconds,
                "start_params": self.dense[0], "start_macs_per_clip": self.dense[1],
                "params_target": self.params_target, "macs_target": self.macs_target,
                "channel_multiple": self.multiple}

    def lines(self) -> list[str]:
        per_s = 1 / self.seconds
        fits = self.params_target is None and self.macs_target is None
        lines = [f"fit {self.rules}: at most {self.params_limit:,} parameters ({FIT_PRECISION}, 1 byte each, "
                 f"BatchNorm and zeros counted) and {self.macs_limit * per_s / 1e6:g} M MACs per second of audio",
                 f"  start: {self.start_name} ({'given' if self.explicit else 'from the candidate table'}), "
                 f"{self.dense[0]:,} parameters, {self.dense[1] * per_s / 1e6:.2f} M MACs per second"]
        if fits:
            lines.append("  the start already fits the rules: no channel pruning")
        else:
            cap = min(self.dense[0], self.params_limit)
            lines.append(f"  channel pruning (widths in multiples of {self.multiple}) to at most {cap:,} parameters "
                         f"= {cap:,} counted bytes and {min(self.dense[1], self.macs_limit) * per_s / 1e6:g} M MACs "
                         "per second (which channels stay, and so the exact counts, training decides)")
        lines.append(f"  export: --precision {FIT_PRECISION} --rules {self.rules} (the run's default)")
        return lines


def _minimum(config: ModelConfig, n_frames: int, multiple: int) -> tuple[int, int]:
    plan = {g.name: min(multiple, g.dense_width) for g in channel_groups(config)}
    return complexity(config, n_frames, plan)


def candidates(n_classes: int, in_channels: int) -> list[tuple[str, ModelConfig]]:
    return [(f"damped rho 3 width {w}", _BASE.replace(width=w, n_classes=n_classes, in_channels=in_channels))
            for w in CANDIDATE_WIDTHS]


def plan_fit(rules: str, n_frames: int, seconds: float, n_classes: int, in_channels: int,
             network: ModelConfig | None = None, multiple: int = FIT_CHANNEL_MULTIPLE) -> FitPlan:
    """The start network and targets. `network`: the user's own start (checked to be reachable)."""
    params_limit, macs_limit = rules_limits(rules, seconds)

    def plan(name: str, config: ModelConfig, explicit: bool) -> FitPlan:
        return FitPlan(rules, seconds, config, name, explicit, params_limit, macs_limit,
                       complexity(config, n_frames), _minimum(config, n_frames, multiple), multiple)

    if network is not None:
        if network.channels:
            raise ConfigError("--fit starts from a dense network, not a channel-pruned one")
        p = plan("the given network", network, True)
        over = ([f"{p.minimum[0]:,} parameters > {params_limit:,}"] if p.minimum[0] > params_limit else []) + \
            ([f"{p.minimum[1] / seconds / 1e6:.2f} M MACs per second > {macs_limit / seconds / 1e6:g} M"]
             if p.minimum[1] > macs_limit else [])
        if over:
            raise ConfigError(f"--fit {rules}: the given network cannot meet the rules: even at its smallest channel "
                              f"plan (widths of {multiple}) it has {' and '.join(over)} (a smaller --width or --rho, a "
                              "smaller --channel-multiple, or leave the network to --fit)")
        return p
    best = None
    for name, config in candidates(n_classes, in_channels):
        p = plan(name, config, False)
        ratio = max(p.dense[0] / params_limit, p.dense[1] / macs_limit)
        reachable = p.minimum[0] <= params_limit and p.minimum[1] <= macs_limit
        if reachable and ratio <= START_HEADROOM:
            best = p  # widths ascend: the last one within the headroom is the widest
    if best is None:
        raise ConfigError(f"--fit {rules}: no candidate network meets the rules for {seconds:g}-s clips of "
                          f"{n_frames} frames (limits {params_limit:,} parameters, {macs_limit:,} MACs per clip)")
    return best
