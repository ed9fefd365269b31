"""Channel pruning to a MAC or parameter budget: the network is rebuilt physically smaller.

The coupled channel groups come from the config (models/channels.py). Each channel is scored by
an importance relative to its group's mean, and the least important channels of the whole
network go first until the budget holds; groups keep widths that are multiples of
`multiple` (16 by default: onnxruntime's fast convolution block), never fewer. (Dividing the score
by the MACs a channel saves was tried: it empties the most expensive group, the stem's stream,
down to a dozen channels, a bottleneck no accuracy survives.) On a ramp over the pruning epochs (as magnitude pruning), at the start of each epoch
the network is cut to the budget of that epoch and rebuilt from a config with the new channel
plan; the weights (and the optimiser's moments) of the surviving channels are copied over.
A rebuild is accepted only if it gives the same logits as the network it came from with the
removed channels zeroed (to 1e-5 relative to the logit scale).

Removal is progressive and final (a removed channel does not come back): the network, and each
epoch's training, gets smaller as the ramp goes, as in Torch-Pruning's iterative pruning.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from decimal import Decimal

import torch
from torch import nn

from edgeasc.compress.pruning import ramp
from edgeasc.errors import ConfigError
from edgeasc.models.channels import conv_layers
from edgeasc.models.config import ModelConfig
from edgeasc.models.cp_mobile_config import CPMobileConfig, mobile_module_groups
from edgeasc.models.family import build_model, cost_model, dense_widths
from edgeasc.models.family import group_widths as widths

IMPORTANCES = ("l2", "bn")
REBUILD_TOLERANCE = 1e-5
_SUFFIX = {"k": 10**3, "M": 10**6, "G": 10**9}


def parse_macs_target(text: str) -> tuple[str, float]:
    """'25%' -> ('share', 0.25); '460M' -> ('macs', 460e6). k/M/G suffixes; a bare number is refused
    (a MAC count without a unit is almost always a mistake: 25 MACs, or 25 %?)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(%|k|M|G)\s*", str(text))
    if not m:
        raise ConfigError(f"malformed --macs-target {text!r}: give a share of the dense network's MACs like 25% "
                          "or MACs per clip with a k/M/G suffix like 460M")
    value, unit = Decimal(m.group(1)), m.group(2)
    if unit == "%":
        if not 0 < value <= 100:
            raise ConfigError(f"--macs-target {text!r}: a share must be in (0, 100] %")
        return "share", float(value) / 100
    return "macs", int(value * _SUFFIX[unit])  # exact: 4656.7k is 4,656,700


@dataclass(frozen=True)
class Budget:
    macs: int | None
    params: int | None
    dense: tuple[int, int]      # (params, MACs per clip) of the dense network
    minimum: tuple[int, int]    # ... of the smallest network channel pruning may leave


def allowed_widths(dense_width: int, multiple: int = 1) -> list[int]:
    """Widths a group may keep: multiples of `multiple` below the dense width, and the dense width."""
    return sorted({dense_width, *range(multiple, dense_width, multiple)})


def resolve_budget(config: ModelConfig, n_frames: int, macs_target: str | None = None,
                   params_target: int | None = None, multiple: int = 1) -> Budget:
    """Targets as counts for this network, checked against what channel pruning can reach."""
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ConfigError(f"--channel-multiple must be an integer >= 1, got {multiple!r}")
    dense_config = config.dense
    cost = cost_model(dense_config, n_frames)
    dense = cost.cost(widths(dense_config))
    minimum = cost.cost({g: allowed_widths(d, multiple)[0] for g, d in dense_widths(dense_config).items()})
    smallest = "one channel per group" if multiple == 1 else f"widths of {multiple} channels"
    macs = None
    if macs_target is not None:
        kind, value = parse_macs_target(macs_target)
        macs = math.floor(value * dense[1]) if kind == "share" else math.floor(value)
        if not minimum[1] <= macs <= dense[1]:
            raise ConfigError(f"--macs-target {macs_target} = {macs:,} MACs per clip is outside what channel pruning "
                              f"can reach for this network: {minimum[1]:,} ({smallest}) to {dense[1]:,} (dense)")
    if params_target is not None:
        if isinstance(params_target, bool) or not isinstance(params_target, int) \
                or not minimum[0] <= params_target <= dense[0]:
            raise ConfigError(f"--params-target {params_target!r} is outside what channel pruning can reach for this "
                              f"network: {minimum[0]:,} ({smallest}) to {dense[0]:,} parameters (dense)")
    if macs is None and params_target is None:
        raise ConfigError("channel pruning needs --macs-target or --params-target")
    return Budget(macs, params_target, dense, minimum)


# ----------------------------------------------------------------------------- coupling
def module_groups(config: ModelConfig | CPMobileConfig) -> dict[str, tuple[str | None, str | None]]:
    """Module path -> (group of dim 0, group of dim 1): convs (out, in), BatchNorms (group, None)."""
    if isinstance(config, CPMobileConfig):
        return mobile_module_groups(config)
    out: dict[str, tuple[str | None, str | None]] = {}
    for layer in conv_layers(config, 64):
        out[layer.name] = (layer.out_group, layer.in_group)
        if layer.bn:
            out[layer.bn] = (layer.out_group, None)
    return out


def _slice(t: torch.Tensor, groups: tuple[str | None, str | None], keep: dict[str, torch.Tensor]) -> torch.Tensor:
    if t.dim() == 0:  # num_batches_tracked, Adam's step
        return t
    g_out, g_in = groups
    if g_out is not None:
        t = t.index_select(0, keep[g_out].to(t.device))
    if g_in is not None and t.dim() > 1:
        t = t.index_select(1, keep[g_in].to(t.device))
    return t.contiguous()


def _groups_of(key: str, mg: dict) -> tuple[str | None, str | None]:
    module = key.rsplit(".", 1)[0]
    if module not in mg:
        raise ConfigError(f"channel pruning: {key!r} belongs to no known layer")
    return mg[module]


# ----------------------------------------------------------------------------- importance
@torch.no_grad()
def importance(model: nn.Module, method: str = "l2") -> dict[str, torch.Tensor]:
    """Per group, one score per channel.

    l2: the L2 norm of everything coupled to the channel (producer conv rows, BatchNorm γ and β,
    consumer conv columns), as Torch-Pruning's group magnitude importance. bn: the summed |γ| of
    the group's BatchNorms (groups without one, inside decomposed convs, fall back to l2).
    """
    if method not in IMPORTANCES:
        raise ConfigError(f"unknown channel importance {method!r}; choose one of {', '.join(IMPORTANCES)}")
    mg = module_groups(model.config)
    sq: dict[str, torch.Tensor] = {}
    gamma: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if name not in mg:
            continue
        g_out, g_in = mg[name]
        if isinstance(module, nn.BatchNorm2d):
            _add(sq, g_out, module.weight.float() ** 2 + module.bias.float() ** 2)
            _add(gamma, g_out, module.weight.float().abs())
            continue
        w = module.weight.float() ** 2
        if g_out is not None:
            _add(sq, g_out, w.sum(dim=(1, 2, 3)))
        if g_in is not None:
            _add(sq, g_in, w.sum(dim=(0, 2, 3)))
    scores = {g: v.sqrt().cpu() for g, v in sq.items()}
    if method == "bn":
        scores.update({g: v.cpu() for g, v in gamma.items()})
    return scores


def _add(acc: dict, key: str, value: torch.Tensor) -> None:
    acc[key] = acc[key] + value if key in acc else value.clone()


def select_channels(config: ModelConfig, scores: dict[str, torch.Tensor], n_frames: int,
                    macs: int | None = None, params: int | None = None, multiple: int = 1) -> dict[str, torch.Tensor]:
    """Which channels of each group to keep (sorted indices) so that the network fits the budget.

    One global ranking: each channel's importance relative to its group's mean (groups of
    different layers and sizes become comparable, as Torch-Pruning's group normalisation);
    the least important go first until both budgets hold. With `multiple` > 1 a group only
    takes widths that are multiples of it (or its dense width): its channels go in chunks, each
    chunk once its last (most important) channel comes up in the ranking. onnxruntime's fast
    convolutions work in blocks of 16 channels (8 on AVX2): other widths fall back to a slower
    path, and the MACs saved do not become time saved (benchmarks/RESULTS.md).
    """
    cost = cost_model(config, n_frames)
    dense = dense_widths(config)
    w = widths(config)
    ranked = []
    for gi, g in enumerate(w):
        rel = (scores[g].double() / scores[g].double().mean().clamp_min(1e-30)).tolist()
        ranked += [(r, gi, c, g) for c, r in enumerate(rel)]
    ranked.sort()
    rank_of = {(g, c): i for i, (_, _, c, g) in enumerate(ranked)}
    allowed = {g: allowed_widths(dense[g], multiple) for g in w}
    pending: dict[str, list[int]] = {g: [] for g in w}
    dropped: dict[str, set[int]] = {g: set() for g in w}

    def fits() -> bool:
        p, m = cost.cost(w)
        return (params is None or p <= params) and (macs is None or m <= macs)

    done = fits()
    for _, _, c, g in ranked:
        if done:
            break
        lower = [a for a in allowed[g] if a < w[g]]
        if not lower:
            continue
        pending[g].append(c)
        if w[g] - len(pending[g]) > lower[-1]:
            continue
        dropped[g].update(pending[g])
        w[g], pending[g] = lower[-1], []
        done = fits()
    if not done:
        raise ConfigError("the channel budget cannot be met by the widths channel pruning may leave")
    _refill(w, dropped, allowed, rank_of, fits)
    return {g: torch.tensor([c for c in range(len(scores[g])) if c not in dropped[g]], dtype=torch.long) for g in w}


def _refill(w: dict, dropped: dict, allowed: dict, rank_of: dict, fits) -> None:
    """The last removal usually overshoots the budget (by a whole block of an expensive group):
    give back the most important removed blocks that still fit, best first."""
    while True:
        options = []
        for g, gone in dropped.items():
            higher = [a for a in allowed[g] if a > w[g]]
            if not gone or not higher:
                continue
            chunk = sorted(gone, key=lambda c: rank_of[g, c], reverse=True)[:higher[0] - w[g]]
            options.append((max(rank_of[g, c] for c in chunk), g, chunk, higher[0]))
        for _, g, chunk, width in sorted(options, reverse=True):
            old = w[g]
            w[g] = width
            if fits():
                dropped[g].difference_update(chunk)
                break
            w[g] = old
        else:
            return


# ----------------------------------------------------------------------------- rebuild
@torch.no_grad()
def zero_channels(model: nn.Module, keep: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of `model` whose removed channels output exactly zero (BatchNorm γ and β zeroed;
    convs without a BatchNorm get zero rows): the function the rebuilt network must compute."""
    masked = copy.deepcopy(model)
    mg = module_groups(model.config)
    if isinstance(model.config, CPMobileConfig):  # every conv with an output group has its BatchNorm
        followed = {name for name, (g_out, _) in mg.items() if g_out is not None}
    else:
        followed = {layer.name for layer in conv_layers(model.config, 64) if layer.bn}
    for name, module in masked.named_modules():
        if name not in mg or mg[name][0] is None:
            continue
        g = mg[name][0]
        drop = torch.ones(module.weight.shape[0], dtype=torch.bool)
        drop[keep[g]] = False
        if isinstance(module, nn.BatchNorm2d):
            module.weight[drop] = 0.0
            module.bias[drop] = 0.0
        elif name not in followed:
            module.weight[drop] = 0.0
    return masked


@torch.no_grad()
def rebuild(model: nn.Module, keep: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer | None = None,
            check: torch.Tensor | None = None) -> tuple[nn.Module, torch.optim.Optimizer | None, float]:
    """The physically smaller network (and optimiser with its moments sliced alike), verified:
    its logits equal those of `zero_channels(model, keep)` on `check` (or a random batch).
    Returns (model, optimizer, max |Δ logit|)."""
    config = model.config
    plan = {g: int(idx.numel()) for g, idx in keep.items()}
    new_config = config.replace(channels=plan)
    device = next(model.parameters()).device
    small = build_model(new_config, device=device)
    mg = module_groups(config)
    small.load_state_dict({k: _slice(t, _groups_of(k, mg), keep) for k, t in model.state_dict().items()})
    if check is None:
        gen = torch.Generator().manual_seed(0)
        check = torch.randn(2, config.in_channels, config.n_mels, 48, generator=gen)
    check = check.to(device)
    was_training = model.training
    reference = zero_channels(model, keep).eval()(check)
    diff = float((small.eval()(check) - reference).abs().max())
    scale = max(1.0, float(reference.abs().max()))
    if not diff <= REBUILD_TOLERANCE * scale:
        raise ConfigError(f"channel pruning: the rebuilt network differs from the masked one by {diff:.2e} "
                          f"(> {REBUILD_TOLERANCE:g}); the rebuild was refused")
    small.train(was_training)
    new_opt = None
    if optimizer is not None:
        new_opt = type(optimizer)(small.parameters(), **optimizer.defaults)
        new_opt.param_groups[0].update({k: v for k, v in optimizer.param_groups[0].items() if k != "params"})
        old_params = dict(model.named_parameters())
        new_params = dict(small.named_parameters())
        for name, p in old_params.items():
            state = optimizer.state.get(p)
            if state:
                new_opt.state[new_params[name]] = {k: _slice(v, _groups_of(name, mg), keep) if torch.is_tensor(v)
                                                   else v for k, v in state.items()}
    return small, new_opt, diff


# ----------------------------------------------------------------------------- the ramp
class ChannelPruner:
    """Cuts the network to budget(e) at the start of each epoch e of the ramp; budget(e) goes from
    the dense network at e = 0 to the final budget at e >= epochs."""

    def __init__(self, config: ModelConfig, n_frames: int, macs_target: str | None = None,
                 params_target: int | None = None, schedule: str = "exp", epochs: int = 100,
                 importance: str = "l2", multiple: int = 16) -> None:
        ramp(schedule, 0, 1)  # validates the name
        if importance not in IMPORTANCES:
            raise ConfigError(f"unknown channel importance {importance!r}; choose one of {', '.join(IMPORTANCES)}")
        self.budget = resolve_budget(config, n_frames, macs_target, params_target, multiple)
        self.n_frames, self.schedule, self.epochs, self.method = n_frames, schedule, epochs, importance
        self.multiple = multiple
        self.macs_target, self.params_target = macs_target, params_target

    def budget_at(self, epoch: int) -> tuple[int | None, int | None]:
        r = ramp(self.schedule, epoch, self.epochs)
        dense_p, dense_m = self.budget.dense
        params = None if self.budget.params is None else math.floor(dense_p - r * (dense_p - self.budget.params))
        macs = None if self.budget.macs is None else math.floor(dense_m - r * (dense_m - self.budget.macs))
        return params, macs

    def done(self, config: ModelConfig) -> bool:
        p, m = cost_model(config, self.n_frames).cost(widths(config))
        return (self.budget.params is None or p <= self.budget.params) and (self.budget.macs is None or m <= self.budget.macs)

    def step(self, model: nn.Module, epoch: int, optimizer: torch.optim.Optimizer | None = None,
             check: torch.Tensor | None = None):
        """(model, optimizer, removed channels, max |Δ|): unchanged when already within budget(epoch)."""
        params, macs = self.budget_at(epoch)
        p, m = cost_model(model.config, self.n_frames).cost(widths(model.config))
        if (params is None or p <= params) and (macs is None or m <= macs):
            return model, optimizer, 0, 0.0
        keep = select_channels(model.config, importance(model, self.method), self.n_frames, macs=macs, params=params,
                               multiple=self.multiple)
        removed = sum(widths(model.config).values()) - sum(int(k.numel()) for k in keep.values())
        small, opt, diff = rebuild(model, keep, optimizer, check)
        return small, opt, removed, diff

    def describe(self) -> dict:
        return {"macs_target": self.macs_target, "params_target": self.params_target,
                "macs_budget": self.budget.macs, "params_budget": self.budget.params,
                "dense_params": self.budget.dense[0], "dense_macs": self.budget.dense[1],
                "min_params": self.budget.minimum[0], "min_macs": self.budget.minimum[1],
                "schedule": self.schedule, "epochs": self.epochs, "importance": self.method,
                "channel_multiple": self.multiple}
