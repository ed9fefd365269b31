"""The CP-Mobile family (the DCASE 2024/2025 task-1 baseline), built from a CPMobileConfig.

Module paths follow the organisers' network (in_c, stages.sN.bM.block.K, feed_forward), so that
the per-layer table of `edgeasc info` names the rows of their README table. The convs are
edgeasc's Conv2d, so magnitude pruning masks them like CP-ResNet's.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from edgeasc.models.cp_mobile_config import CPMobileConfig, MobileBlock
from edgeasc.models.layers import Conv2d


def conv_norm_act(in_c: int, out_c: int, kernel: int, stride: tuple[int, int] | int = 1, groups: int = 1,
                  relu: bool = True) -> nn.Sequential:
    """conv (no bias: BatchNorm follows) + BatchNorm [+ ReLU], as torchvision's Conv2dNormActivation."""
    layers: list[nn.Module] = [Conv2d(in_c, out_c, kernel, stride, kernel // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(out_c)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """pointwise expand -> depthwise 3x3 (strided) -> pointwise project, ReLU after the sum."""

    def __init__(self, spec: MobileBlock) -> None:
        super().__init__()
        e = spec.exp_channels
        self.block = nn.Sequential(conv_norm_act(spec.in_channels, e, 1),
                                   conv_norm_act(e, e, 3, spec.stride, groups=e),
                                   conv_norm_act(e, spec.out_channels, 1, relu=False))
        self.use_shortcut = spec.shortcut is not None
        # a block that keeps its width but strides needs the input at the output's resolution
        self.shortcut: nn.Module = (nn.AvgPool2d(3, spec.stride, 1) if spec.shortcut == "avgpool"
                                    else nn.Identity())
        self.after_block_activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        if self.use_shortcut:
            y = y + self.shortcut(x)
        return self.after_block_activation(y)


class CPMobile(nn.Module):
    """Input (batch, channels, n_mels, frames) -> logits (batch, n_classes)."""

    def __init__(self, config: CPMobileConfig) -> None:
        super().__init__()
        self.config = config
        mid, base = config.stem_channels
        self.in_c = nn.Sequential(conv_norm_act(config.in_channels, mid, 3, 2),
                                  conv_norm_act(mid, base, 3, 2))
        self.stages = nn.Sequential()
        for spec in config.blocks():
            if not hasattr(self.stages, spec.stage):
                self.stages.add_module(spec.stage, nn.Sequential())
            getattr(self.stages, spec.stage).add_module(spec.name, InvertedResidual(spec))
        self.feed_forward = nn.Sequential(Conv2d(config.head_in_channels, config.n_classes, 1, bias=False),
                                          nn.BatchNorm2d(config.n_classes), nn.AdaptiveAvgPool2d((1, 1)))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feed_forward(self.stages(self.in_c(x))).flatten(1)

    def prunable_weights(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Every conv weight (what magnitude pruning ranks); BatchNorm is never pruned."""
        for name, module in self.named_modules():
            if isinstance(module, nn.Conv2d):
                yield f"{name}.weight", module.weight


def build_cp_mobile(config: CPMobileConfig, device: torch.device | str | None = None) -> CPMobile:
    if device is None:
        return CPMobile(config)
    with torch.device(device):
        return CPMobile(config)


@torch.no_grad()
def init_weights(model: CPMobile) -> None:
    """The baseline's: kaiming-normal fan-out convs, BatchNorm at identity."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
