"""Exact receptive field and feature-map shapes of a CP-ResNet, from its config (torch-free).

The receptive field is the standard recursion over the main path (the 1x1 shortcuts
never widen it): rf += (k - 1) * jump; jump *= stride, with max-pools counted as
k = 2, s = 2. The network treats both axes alike, so one number serves both.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeasc.errors import ConfigError
from edgeasc.models.config import ModelConfig

STEM = (5, 2, 1)  # kernel, stride, padding
POOL = (2, 2, 0)


@dataclass(frozen=True)
class Op:
    name: str
    kernel: int
    stride: int
    padding: int


def main_path(config: ModelConfig) -> list[Op]:
    ops = [Op("stem", *STEM)]
    for s, stage in enumerate(config.stage_plan(), start=1):
        for b, block in enumerate(stage, start=1):
            ops.append(Op(f"stage{s}.block{b}.conv1", block.k1, 1, block.k1 // 3))
            ops.append(Op(f"stage{s}.block{b}.conv2", block.k2, 1, block.k2 // 3))
            if block.pool_after:
                ops.append(Op(f"stage{s}.pool{b}", *POOL))
    ops.append(Op("head", 1, 1, 0))
    return ops


def receptive_field(config: ModelConfig) -> int:
    rf, jump = 1, 1
    for op in main_path(config):
        rf += (op.kernel - 1) * jump
        jump *= op.stride
    return rf


def receptive_field_authors(config: ModelConfig) -> int:
    """The receptive field as the authors' scripts print it (kkoutini/cpjku_dcase20), to compare
    with their logs and papers; `receptive_field` is the exact value. Their recursion starts
    after the stem (RF 5, stride 2), counts only conv kernels (never a max-pool's window), and
    applies the stride of a block's max-pool after the block's first conv instead of after
    its second. Full depth, rho 0..11: 9, 17, 33, 49, 65, 81, 113, 145, 177, 209, 241, 273
    (exact: 23, 31, 39, 55, 71, 87, 103, 135, 167, 199, 231, 263)."""
    rf, jump = STEM[0], STEM[1]
    for stage in config.stage_plan():
        for block in stage:
            rf += (block.k1 - 1) * jump
            if block.pool_after:
                jump *= POOL[1]
            rf += (block.k2 - 1) * jump
    return rf


def _out(n: int, op: Op) -> int:
    return (n + 2 * op.padding - op.kernel) // op.stride + 1


def output_shapes(config: ModelConfig, n_frames: int) -> dict[str, list[int]]:
    """(channels, freq, time) after the stem and after each non-empty stage; raises if the
    input is so short that an axis shrinks to nothing."""
    f, t = config.n_mels, n_frames
    shapes: dict[str, list[int]] = {}
    channels = config.stem_channels
    op_iter = iter(main_path(config))
    stem = next(op_iter)
    f, t = _out(f, stem), _out(t, stem)
    _check(f, t, "stem", n_frames)
    shapes["stem"] = [channels, f, t]
    for s, stage in enumerate(config.stage_plan(), start=1):
        if not stage:
            continue
        for block in stage:
            channels = block.out_channels
            if block.pool_after:
                f, t = f // 2, t // 2
                _check(f, t, f"stage{s} max-pool", n_frames)
        shapes[f"stage{s}"] = [channels, f, t]
    shapes["logits"] = [config.n_classes]
    return shapes


def _check(f: int, t: int, where: str, n_frames: int) -> None:
    if f < 1 or t < 1:
        raise ConfigError(
            f"input of {n_frames} frames is too short: the feature map is empty after the {where}"
        )
