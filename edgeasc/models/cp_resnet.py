"""The CP-ResNet family, built from one ModelConfig (docs/method.md §2)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from edgeasc.models.config import BlockSpec, ModelConfig
from edgeasc.models.layers import DecomposedConv2d, conv2d


class BasicBlock(nn.Module):
    def __init__(self, spec: BlockSpec, config: ModelConfig) -> None:
        super().__init__()
        make = _conv_factory(config, in_blocks=True)
        mid = spec.mid_channels or spec.out_channels
        projection = spec.in_channels != spec.out_channels if spec.projection is None else spec.projection
        mids = list(spec.decomposed) or [None, None, None]
        self.conv1 = make(spec.in_channels, mid, spec.k1, padding=spec.k1 // 3, mids=mids[0])
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = make(mid, spec.out_channels, spec.k2, padding=spec.k2 // 3, mids=mids[1])
        self.bn2 = nn.BatchNorm2d(spec.out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if projection:
            self.shortcut = nn.Sequential(make(spec.in_channels, spec.out_channels, 1, mids=mids[2]),
                                          nn.BatchNorm2d(spec.out_channels))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


class CPResNet(nn.Module):
    """Input (batch, channels, n_mels, frames) -> logits (batch, n_classes)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        make = _conv_factory(config, in_blocks=False)
        stem = config.stem_channels
        stem_conv = (make(config.in_channels, stem, 5, stride=2, padding=1) if config.damp_stem else
                     conv2d(config.in_channels, stem, 5, 2, 1, False, config.damping_floor))
        self.stem = nn.Sequential(stem_conv, nn.BatchNorm2d(stem), nn.ReLU(inplace=True))
        self.stage_names: list[str] = []
        for s, stage in enumerate(config.stage_plan(), start=1):
            if not stage:
                continue  # an emptied stage is skipped; the next takes the last channels
            layers = nn.Sequential()
            for b, spec in enumerate(stage, start=1):
                layers.add_module(f"block{b}", BasicBlock(spec, config))
                if spec.pool_after:
                    layers.add_module(f"pool{b}", nn.MaxPool2d(2, 2))
            self.add_module(f"stage{s}", layers)
            self.stage_names.append(f"stage{s}")
        self.head = nn.Sequential(make(config.head_in_channels, config.n_classes, 1),
                                  nn.BatchNorm2d(config.n_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.head(x).mean(dim=(2, 3))

    def prunable_weights(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Every conv weight (stem, blocks, shortcuts, decomposed factors, head): what
        magnitude pruning ranks. BatchNorm is never pruned."""
        for name, module in self.named_modules():
            if isinstance(module, nn.Conv2d):
                yield f"{name}.weight", module.weight


def build_model(config: ModelConfig, device: torch.device | str | None = None) -> CPResNet:
    """The one entry point: any network of the paper from its config."""
    if device is None:
        return CPResNet(config)
    with torch.device(device):
        return CPResNet(config)


def _conv_factory(config: ModelConfig, in_blocks: bool):
    """Convs of this network: decomposed inside the blocks when Z > 1; damped per variant.

    In the damped-decomposed network only the middle kxk conv of each decomposed conv is
    damped, and the stem and head are not damped at all. Z = 1 builds one plain, undamped
    conv where the three would be, in both decomposed variants (as the authors' code does).
    """
    z = config.decomposition

    def make(in_c: int, out_c: int, kernel: int, stride: int = 1, padding: int = 0,
             mids: tuple[int, int] | None = None) -> nn.Module:
        if config.decomposed and in_blocks:
            return DecomposedConv2d(in_c, out_c, kernel, stride, padding, factor=z,
                                    damped=config.damping, damping_floor=config.damping_floor, mids=mids)
        damped = config.damping and z is None
        return conv2d(in_c, out_c, kernel, stride, padding, damped, config.damping_floor)

    return make


@torch.no_grad()
def init_weights(model: CPResNet) -> None:
    """Fixup-style init for plain and damped networks, kaiming fan-out for decomposed ones."""
    config = model.config
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if config.decomposition is not None:
        # Zeroing all three factors of a decomposed conv would stop it from ever training.
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        return
    nn.init.kaiming_normal_(model.stem[0].weight, mode="fan_in", nonlinearity="relu")
    n_blocks = config.n_blocks
    for m in model.modules():
        if isinstance(m, BasicBlock):
            w = m.conv1.weight
            k, out_c = w.shape[-1], w.shape[0]
            nn.init.normal_(w, 0.0, math.sqrt(2.0 / (k * k * out_c)) / math.sqrt(n_blocks))
            nn.init.zeros_(m.conv2.weight)
            if isinstance(m.shortcut, nn.Sequential):
                sc = m.shortcut[0].weight
                nn.init.normal_(sc, 0.0, math.sqrt(2.0 / sc.shape[0]))
    nn.init.zeros_(model.head[0].weight)
