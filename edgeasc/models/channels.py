"""Channel groups, channel plans and exact parameter/MAC arithmetic of a CP-ResNet (torch-free).

Channels that must be removed together form a group (the coupling of the architecture):

- a residual *stream*: the stem's output and every block that keeps it through an identity
  shortcut add into the same channels. A block with a 1x1 projection shortcut (first block of
  stages 2 and 3) starts a new stream, named after its stage; the next stage's first block and
  the head read the last stream. Streams are named `stem`, `stage2`, `stage3`.
- a block's inner width, `stageS.blockB`: conv1's output, bn1, conv2's input. Free per block.
- in decomposed networks each decomposed conv has two inner widths: `<conv>.reduce` (1x1
  reduce out = kxk in) and `<conv>.spatial` (kxk out = 1x1 expand in); no BatchNorm inside.

The network input and the class logits are never pruned. Damping is per kernel row, so
removing channels never touches it.

A channel plan maps every group to a width; `ModelConfig(channels=plan)` builds the smaller
network. `conv_layers` lists every conv with its groups and output size, and `complexity`
counts parameters and MACs from it: the same numbers `models.complexity.analyse` measures on
the torch modules (tested equal), but cheap enough to evaluate thousands of times while
choosing which channels go.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgeasc.models.blocks import STAGE1_POOL_AFTER, kernel_sizes

if TYPE_CHECKING:  # pragma: no cover
    from edgeasc.models.config import ModelConfig

STEM = (5, 2, 1)  # kernel, stride, padding (also receptive_field.STEM)


@dataclass(frozen=True)
class Group:
    name: str
    kind: str                 # "stream" | "block" | "decomposed"
    dense_width: int


@dataclass(frozen=True)
class ConvLayer:
    name: str                 # module path in the torch model
    in_group: str | None      # None: the network input
    out_group: str | None     # None: the class logits
    kernel: int
    stride: int
    bn: str | None            # the BatchNorm that normalises this conv's output (same group)
    out_hw: tuple[int, int]   # output frequency x time (for MACs)


def dense_blocks(config: ModelConfig) -> list[list[dict]]:
    """Per stage, the blocks with their dense widths and the groups their channels belong to."""
    k1s, k2s = kernel_sizes(config.rho)
    stages, channels, stream = [], config.width, "stem"
    for s, (n_blocks, out_c) in enumerate(zip(config.blocks_per_stage, config.stage_widths, strict=True)):
        stage = []
        for b in range(n_blocks):
            projection = channels != out_c
            in_stream = stream
            if projection:
                stream = f"stage{s + 1}"
            stage.append(dict(name=f"stage{s + 1}.block{b + 1}", in_stream=in_stream, out_stream=stream,
                              in_channels=channels, out_channels=out_c, k1=k1s[s][b], k2=k2s[s][b],
                              pool_after=s == 0 and (b + 1) in STAGE1_POOL_AFTER, projection=projection))
            channels = out_c
        stages.append(stage)
    return stages


def last_stream(config: ModelConfig) -> str:
    stream = "stem"
    for stage in dense_blocks(config):
        for block in stage:
            stream = block["out_stream"]
    return stream


def channel_groups(config: ModelConfig) -> list[Group]:
    """Every prunable group of this network, in network order, with its dense width."""
    groups = [Group("stem", "stream", config.width)]
    z = config.decomposition
    for stage in dense_blocks(config):
        for block in stage:
            if block["projection"]:
                groups.append(Group(block["out_stream"], "stream", block["out_channels"]))
            groups.append(Group(block["name"], "block", block["out_channels"]))
            if config.decomposed:
                for conv in _decomposed_convs(block):
                    mid = block["out_channels"] // z
                    groups += [Group(f"{conv}.reduce", "decomposed", mid), Group(f"{conv}.spatial", "decomposed", mid)]
    return groups


def _decomposed_convs(block: dict) -> list[str]:
    convs = [f"{block['name']}.conv1", f"{block['name']}.conv2"]
    return convs + ([f"{block['name']}.shortcut.0"] if block["projection"] else [])


def conv_layers(config: ModelConfig, n_frames: int) -> list[ConvLayer]:
    """Every conv of the network (decomposed factors one by one) with its groups and output size."""
    k, st, pad = STEM
    f = (config.n_mels + 2 * pad - k) // st + 1
    t = (n_frames + 2 * pad - k) // st + 1
    layers = [ConvLayer("stem.0", None, "stem", k, st, "stem.1", (f, t))]
    for stage in dense_blocks(config):
        for block in stage:
            name, hw = block["name"], (f, t)
            parts = [("conv1", block["in_stream"], name, block["k1"], f"{name}.bn1"),
                     ("conv2", name, block["out_stream"], block["k2"], f"{name}.bn2")]
            if block["projection"]:
                parts.append(("shortcut.0", block["in_stream"], block["out_stream"], 1, f"{name}.shortcut.1"))
            for part, gin, gout, kernel, bn in parts:
                conv = f"{name}.{part}"
                if not config.decomposed:
                    layers.append(ConvLayer(conv, gin, gout, kernel, 1, bn, hw))
                else:  # 1x1 reduce -> kxk -> 1x1 expand; the BatchNorm follows the expand
                    layers += [ConvLayer(f"{conv}.reduce", gin, f"{conv}.reduce", 1, 1, None, hw),
                               ConvLayer(f"{conv}.spatial", f"{conv}.reduce", f"{conv}.spatial", kernel, 1, None, hw),
                               ConvLayer(f"{conv}.expand", f"{conv}.spatial", gout, 1, 1, bn, hw)]
            if block["pool_after"]:
                f, t = f // 2, t // 2
    layers.append(ConvLayer("head.0", last_stream(config), None, 1, 1, "head.1", (f, t)))
    return layers


def widths(config: ModelConfig) -> dict[str, int]:
    """The width of every group under the config's channel plan (dense where there is none)."""
    plan = dict(config.channels or ())
    return {g.name: plan.get(g.name, g.dense_width) for g in channel_groups(config)}


def complexity(config: ModelConfig, n_frames: int, plan: dict[str, int] | None = None) -> tuple[int, int]:
    """(parameters incl. BatchNorm, MACs per clip) of the network, optionally under another plan."""
    w = widths(config) if plan is None else plan
    return _complexity(conv_layers(config, n_frames), w, config.in_channels, config.n_classes)


def _width(group: str | None, w: dict[str, int], in_channels: int, n_classes: int, is_input: bool) -> int:
    if group is None:
        return in_channels if is_input else n_classes
    return w[group]


def _complexity(layers: list[ConvLayer], w: dict[str, int], in_channels: int, n_classes: int) -> tuple[int, int]:
    params = macs = 0
    for layer in layers:
        cin = _width(layer.in_group, w, in_channels, n_classes, True)
        cout = _width(layer.out_group, w, in_channels, n_classes, False)
        p = cin * cout * layer.kernel * layer.kernel
        params += p + (2 * cout if layer.bn else 0)
        macs += p * layer.out_hw[0] * layer.out_hw[1]
    return params, macs


class CostModel:
    """Parameters and MACs as a function of the group widths, with the saving of removing one
    channel of a group: what channel selection evaluates at every step."""

    def __init__(self, config: ModelConfig, n_frames: int) -> None:
        self.layers = conv_layers(config, n_frames)
        self.in_channels, self.n_classes = config.in_channels, config.n_classes
        self.touching: dict[str, list[ConvLayer]] = {}
        for layer in self.layers:
            for g in {layer.in_group, layer.out_group} - {None}:
                self.touching.setdefault(g, []).append(layer)

    def cost(self, w: dict[str, int]) -> tuple[int, int]:
        return _complexity(self.layers, w, self.in_channels, self.n_classes)

    def saving(self, w: dict[str, int], group: str) -> tuple[int, int]:
        """(parameters, MACs) saved by removing one channel of `group` at widths `w`."""
        params = macs = 0
        for layer in self.touching.get(group, ()):
            cin = _width(layer.in_group, w, self.in_channels, self.n_classes, True)
            cout = _width(layer.out_group, w, self.in_channels, self.n_classes, False)
            k2 = layer.kernel * layer.kernel
            other = (cout if layer.in_group == group else 0) + (cin if layer.out_group == group else 0)
            p = other * k2
            params += p + (2 if layer.bn and layer.out_group == group else 0)
            macs += p * layer.out_hw[0] * layer.out_hw[1]
        return params, macs
