"""CP-Mobile, the DCASE 2024/2025 task-1 organisers' baseline (CPJKU), as data: its config and
its exact torch-free arithmetic (shapes, parameters, MACs, receptive field).

The network: a stem of two 3x3 stride-2 conv+BN+ReLU units (in -> base/4 -> base channels),
stages of inverted-residual blocks (pointwise expand + BN + ReLU -> depthwise 3x3 + BN + ReLU,
the block's stride here -> pointwise project + BN; identity shortcut where a block keeps its
width, an average-pool shortcut where it also strides, none where the width changes; ReLU after
the sum), then a 1x1 conv to the classes + BN and global average pooling.

Counting follows the organisers (torchinfo, as their helpers/nessi.py calls it): BatchNorm's
weight and bias count as parameters AND as 2C multiply-accumulates per clip, ReLU and pooling
count nothing. (CP-ResNet's rows count BatchNorm at 0 MACs, as its paper does.) At 256 mel bins
and 65 frames (1 s at 32 kHz, hop 500) the 2024 baseline has 61,148 parameters and 29,419,156
MACs; tests/test_cp_mobile.py pins that and every row of the organisers' per-layer table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from edgeasc.errors import ConfigError

FAMILY = "cp-mobile"
# the 2024 baseline's strides: block name -> (frequency, time); other blocks keep stride 1
BASELINE_STRIDES = (("b2", (1, 1)), ("b3", (1, 2)), ("b4", (2, 1)))


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round a width to a multiple of `divisor`, never more than 10 % down (MobileNet's rule,
    which the baseline applies to every width)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


@dataclass(frozen=True)
class MobileBlock:
    name: str                 # "b1", "b2", ... numbered through all stages, as the baseline
    stage: str                # "s1", "s2", ...
    in_channels: int
    exp_channels: int
    out_channels: int
    stride: tuple[int, int]
    shortcut: str | None      # "identity" | "avgpool" | None (the width changes: no shortcut)
    in_stream: str = ""       # the channel groups of its input and output (see mobile_conv_groups)
    out_stream: str = ""


@dataclass(frozen=True)
class MobileLayer:
    """One row of the organisers' table: a conv with its BatchNorm (and ReLU), or a lone
    BatchNorm or pooling. `name` is the module path in the torch model."""
    name: str
    kind: str                 # "conv" | "pointwise" | "depthwise" | "batchnorm" | "pool"
    in_channels: int
    out_channels: int
    kernel: int
    groups: int
    bn: bool                  # a BatchNorm follows inside the unit (counted in this row)
    out_shape: tuple[int, int, int]

    @property
    def conv_params(self) -> int:
        if self.kind in ("batchnorm", "pool"):
            return 0
        return self.out_channels * (self.in_channels // self.groups) * self.kernel * self.kernel

    @property
    def bn_params(self) -> int:
        return 2 * self.out_channels if self.bn or self.kind == "batchnorm" else 0

    @property
    def params(self) -> int:
        return self.conv_params + self.bn_params

    @property
    def macs(self) -> int:
        """torchinfo's mult-adds: a conv's weights once per output position, BatchNorm's once."""
        return self.conv_params * self.out_shape[1] * self.out_shape[2] + self.bn_params


@dataclass(frozen=True)
class CPMobileConfig:
    n_classes: int = 10
    in_channels: int = 1
    base_channels: int = 32
    channels_multiplier: float = 1.8
    expansion_rate: float = 2.1
    n_blocks: tuple[int, ...] = (3, 2, 1)
    strides: tuple[tuple[str, tuple[int, int]], ...] = BASELINE_STRIDES
    n_mels: int = 256
    # channel plan: width of every channel group (mobile_conv_groups); None = dense
    channels: tuple[tuple[str, int], ...] | None = None

    family: ClassVar[str] = FAMILY

    def __post_init__(self) -> None:
        # bounded above too: a stored config comes from a file, and a network is built from it
        for name, low, high in (("n_classes", 1, 10_000), ("in_channels", 1, 64), ("base_channels", 1, 4096),
                                ("n_mels", 8, 2048)):
            value = getattr(self, name)
            if not _is_int(value) or not low <= value <= high:
                raise ConfigError(f"{name} must be an integer in {low}..{high}, got {value!r:.40}")
        for name in ("channels_multiplier", "expansion_rate"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) \
                    or not 0 < value <= 16:
                raise ConfigError(f"{name} must be a number in (0, 16], got {value!r}")
        blocks = self.n_blocks
        if isinstance(blocks, str):
            blocks = _parse_blocks(blocks)
        if not isinstance(blocks, list | tuple) or not 1 <= len(blocks) <= 8 \
                or not all(_is_int(b) and 1 <= b <= 16 for b in blocks):
            raise ConfigError(f"n_blocks must be 1 to 8 stages of 1..16 blocks like '3,2,1', got {self.n_blocks!r}")
        object.__setattr__(self, "n_blocks", tuple(blocks))
        object.__setattr__(self, "strides", self._check_strides(self.strides, sum(blocks)))
        if self.channels is not None:
            object.__setattr__(self, "channels", self._check_plan(self.channels))

    def _check_plan(self, plan: Any) -> tuple[tuple[str, int], ...]:
        if isinstance(plan, dict):
            plan = plan.items()
        try:
            given = {str(k): v for k, v in plan}
        except (TypeError, ValueError):
            raise ConfigError(f"channel plan must map group names to widths, got {plan!r:.80}") from None
        dense = self.dense_groups()
        unknown, missing = sorted(set(given) - set(dense)), [n for n in dense if n not in given]
        if unknown or missing:
            what = f"unknown groups {', '.join(unknown[:4])}" if unknown else f"missing groups {', '.join(missing[:4])}"
            raise ConfigError(f"channel plan does not fit this network ({what}; it has {len(dense)} groups)")
        for name, width in dense.items():
            v = given[name]
            if not _is_int(v) or not 1 <= v <= width:
                raise ConfigError(f"channel plan: group {name!r} must keep 1..{width} channels, got {v!r}")
        return tuple((n, int(given[n])) for n in dense)

    @staticmethod
    def _check_strides(strides: Any, n: int) -> tuple[tuple[str, tuple[int, int]], ...]:
        if isinstance(strides, dict):
            strides = strides.items()
        try:
            given = {str(k): v for k, v in strides}
        except (TypeError, ValueError):
            raise ConfigError(f"strides must map block names (b1..b{n}) to [frequency, time], "
                              f"got {strides!r}") from None
        out = []
        for i in range(1, n + 1):
            v = given.pop(f"b{i}", None)
            if v is None:
                continue
            if not isinstance(v, list | tuple) or len(v) != 2 or not all(_is_int(s) and 1 <= s <= 4 for s in v):
                raise ConfigError(f"stride of block b{i} must be two integers in 1..4 (frequency, time), got {v!r}")
            out.append((f"b{i}", (int(v[0]), int(v[1]))))
        if given:
            raise ConfigError(f"strides name blocks this network lacks ({', '.join(sorted(given)[:4])}; "
                              f"it has b1..b{n})")
        return tuple(out)

    # ----- naming and (de)serialisation ----------------------------------------------
    @property
    def variant(self) -> str:
        return FAMILY

    @property
    def dense(self) -> CPMobileConfig:
        """The same network before channel pruning."""
        return replace(self, channels=None)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, with the family: what checkpoints and ONNX metadata store."""
        return {"family": FAMILY, "n_classes": self.n_classes, "in_channels": self.in_channels,
                "base_channels": self.base_channels, "channels_multiplier": self.channels_multiplier,
                "expansion_rate": self.expansion_rate, "n_blocks": list(self.n_blocks),
                "strides": {k: list(v) for k, v in self.strides}, "n_mels": self.n_mels,
                "channels": dict(self.channels) if self.channels is not None else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CPMobileConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"model config must be a mapping, got {type(d).__name__}")
        d = dict(d)
        if d.pop("family", FAMILY) != FAMILY:
            raise ConfigError(f"not a {FAMILY} config (family {d.get('family')!r})")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown model config keys: {', '.join(sorted(unknown))}")
        return cls(**d)

    def replace(self, **changes: Any) -> CPMobileConfig:
        return replace(self, **changes)

    # ----- the architecture ---------------------------------------------------------------
    @property
    def stage_channels(self) -> list[int]:
        """The stem's output width, then each stage's (the baseline's channels_per_stage)."""
        base = make_divisible(self.base_channels)
        return [base] + [make_divisible(base * self.channels_multiplier ** s) for s in range(len(self.n_blocks))]

    def _dense_blocks(self) -> list[MobileBlock]:
        """The blocks at their dense widths. Shortcuts are decided here, on the dense network:
        channel pruning keeps a stream's channels together, so a block keeps its shortcut (or
        its lack of one) whatever widths the plan leaves."""
        strides = dict(self.strides)
        widths, out, number, stream = self.stage_channels, [], 0, "stem"
        for s, n in enumerate(self.n_blocks):
            cin = widths[s]
            for _ in range(n):
                number += 1
                cout, stride = widths[s + 1], strides.get(f"b{number}", (1, 1))
                shortcut = None if cin != cout else "identity" if stride == (1, 1) else "avgpool"
                out_stream = stream if shortcut else f"s{s + 1}"
                out.append(MobileBlock(f"b{number}", f"s{s + 1}", cin, make_divisible(cin * self.expansion_rate),
                                       cout, stride, shortcut, stream, out_stream))
                cin, stream = cout, out_stream
        return out

    def dense_groups(self) -> dict[str, int]:
        """Every channel group (mobile_conv_groups) with its dense width, in network order."""
        base = self.stage_channels[0]
        groups = {"in_c.0": base // 4, "stem": base}
        for blk in self._dense_blocks():
            groups[blk.name] = blk.exp_channels
            groups[blk.out_stream] = blk.out_channels
        return groups

    def widths(self) -> dict[str, int]:
        """The width of every group under the channel plan (dense where there is none)."""
        return dict(self.channels) if self.channels is not None else self.dense_groups()

    @property
    def stem_channels(self) -> tuple[int, int]:
        w = self.widths()
        return w["in_c.0"], w["stem"]

    @property
    def head_in_channels(self) -> int:
        blocks = self._dense_blocks()
        return self.widths()[blocks[-1].out_stream]

    def blocks(self) -> list[MobileBlock]:
        """The blocks at the plan's widths."""
        w = self.widths()
        return [replace(b, in_channels=w[b.in_stream], exp_channels=w[b.name], out_channels=w[b.out_stream])
                for b in self._dense_blocks()]


def _out(n: int, stride: int) -> int:
    return (n - 1) // stride + 1     # a 3x3 kernel with padding 1 (or 1x1, stride 1)


def mobile_layers(config: CPMobileConfig, n_frames: int) -> list[MobileLayer]:
    """Every row of the organisers' table in module order, for an input of n_mels x n_frames."""
    if not _is_int(n_frames) or n_frames < 1:
        raise ConfigError(f"the input must have at least one frame, got {n_frames!r}")
    f, t = config.n_mels, n_frames
    c_in, (c_mid, c_out) = config.in_channels, config.stem_channels
    rows = []
    for i, (a, b) in enumerate(((c_in, c_mid), (c_mid, c_out))):
        f, t = _out(f, 2), _out(t, 2)
        rows.append(MobileLayer(f"in_c.{i}", "conv", a, b, 3, 1, True, (b, f, t)))
    for blk in config.blocks():
        path = f"stages.{blk.stage}.{blk.name}.block"
        rows.append(MobileLayer(f"{path}.0", "pointwise", blk.in_channels, blk.exp_channels, 1, 1, True,
                                (blk.exp_channels, f, t)))
        f, t = _out(f, blk.stride[0]), _out(t, blk.stride[1])
        rows.append(MobileLayer(f"{path}.1", "depthwise", blk.exp_channels, blk.exp_channels, 3, blk.exp_channels,
                                True, (blk.exp_channels, f, t)))
        rows.append(MobileLayer(f"{path}.2", "pointwise", blk.exp_channels, blk.out_channels, 1, 1, True,
                                (blk.out_channels, f, t)))
    last = config.head_in_channels
    n = config.n_classes
    rows += [MobileLayer("feed_forward.0", "conv", last, n, 1, 1, False, (n, f, t)),
             MobileLayer("feed_forward.1", "batchnorm", n, n, 0, 1, False, (n, f, t)),
             MobileLayer("feed_forward.2", "pool", n, n, 0, 1, False, (n, 1, 1))]
    return rows


def mobile_conv_groups(config: CPMobileConfig) -> tuple[dict[str, int], list[tuple[str, str | None, str | None]]]:
    """The channels that belong together, and every conv as (module path, in group, out group);
    None: the network's input (in) or its classes (out).

    Groups: `in_c.0` (the stem's inner width); a residual stream, `stem` from the stem's output
    through every block that keeps its width, and one named after the stage (`s2`, ...) from
    each block that changes it; per block `bN` (expansion out = depthwise in and out = projection
    in). What a channel pruner must remove together, and what the ONNX conv_plan lists."""
    convs: list[tuple[str, str | None, str | None]] = [("in_c.0.0", None, "in_c.0"), ("in_c.1.0", "in_c.0", "stem")]
    stream = "stem"
    for blk in config.blocks():
        path = f"stages.{blk.stage}.{blk.name}.block"
        convs += [(f"{path}.0.0", blk.in_stream, blk.name), (f"{path}.1.0", blk.name, blk.name),
                  (f"{path}.2.0", blk.name, blk.out_stream)]
        stream = blk.out_stream
    convs.append(("feed_forward.0", stream, None))
    return config.widths(), convs


def mobile_module_groups(config: CPMobileConfig) -> dict[str, tuple[str | None, str | None]]:
    """Module path -> (group of weight dim 0, group of dim 1) for every conv and BatchNorm, as
    compress/structured.module_groups gives CP-ResNet's. A depthwise conv's dim 1 is one channel
    per group: its channels are those of dim 0, the expansion's (one group with it)."""
    _, convs = mobile_conv_groups(config)
    out: dict[str, tuple[str | None, str | None]] = {}
    for name, gin, gout in convs:
        out[name] = (gout, None if gin == gout else gin)
        if gout is not None:
            out[name[:-2] + ".1"] = (gout, None)   # its BatchNorm: the next module of the unit
    out["feed_forward.1"] = (None, None)          # the logits' BatchNorm: never pruned
    return out


def mobile_complexity(config: CPMobileConfig, n_frames: int) -> tuple[int, int]:
    """(parameters incl. BatchNorm, MACs per clip incl. BatchNorm's), the organisers' way."""
    rows = mobile_layers(config, n_frames)
    return sum(r.params for r in rows), sum(r.macs for r in rows)


def mobile_receptive_field(config: CPMobileConfig) -> tuple[int, int]:
    """(frequency, time) receptive field of the main path: rf += (k - 1) * jump; jump *= stride
    (1x1 convs and the shortcuts never widen it)."""
    rf, jump = [1, 1], [1, 1]
    for stride in [(2, 2), (2, 2)] + [b.stride for b in config.blocks()]:
        for axis in (0, 1):
            rf[axis] += 2 * jump[axis]
            jump[axis] *= stride[axis]
    return rf[0], rf[1]


def mobile_output_shapes(config: CPMobileConfig, n_frames: int) -> dict[str, list[int]]:
    """(channels, freq, time) after the stem and after each stage, then the logits."""
    rows = mobile_layers(config, n_frames)
    shapes = {"stem": list(rows[1].out_shape)}
    for row in rows:
        if row.name.startswith("stages."):
            shapes[row.name.split(".")[1]] = list(row.out_shape)
    shapes["logits"] = [config.n_classes]
    return shapes


def _parse_blocks(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(","))
    except ValueError:
        raise ConfigError(f"n_blocks must be integers like '3,2,1', got {text!r}") from None


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
