"""The block plan of a CP-ResNet (docs/method.md §2), torch-free: blocks per stage, the
kernel sizes that rho sets, where stage 1 max-pools, and a block's widths (BlockSpec).

Below config.py and channels.py, which both read it: ModelConfig validates a channel plan
with the channel groups, and the groups are derived from this plan, not from ModelConfig.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeasc.errors import ConfigError

BLOCKS_PER_STAGE = 4
# 1-based indices of the stage-1 blocks followed by a 2x2 max-pool.
STAGE1_POOL_AFTER = (1, 2, 4)


@dataclass(frozen=True)
class BlockSpec:
    in_channels: int
    out_channels: int
    k1: int
    k2: int
    pool_after: bool
    name: str = ""
    mid_channels: int | None = None       # conv1 out = conv2 in (default: out_channels)
    projection: bool | None = None        # 1x1 shortcut (default: when in != out)
    decomposed: tuple[tuple[int, int], ...] = ()  # (reduce, spatial) widths of conv1, conv2[, shortcut]


def parse_depth_restriction(text: str) -> tuple[int, int, int]:
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"depth restriction must be three integers in 0..4 like '0,1,4', got {text!r}") from None
    if len(values) != 3 or not all(0 <= v <= BLOCKS_PER_STAGE for v in values):
        raise ConfigError(f"depth restriction must be three integers in 0..4 like '0,1,4', got {text!r}")
    return values  # type: ignore[return-value]


def kernel_sizes(rho: int) -> tuple[list[list[int]], list[list[int]]]:
    """(k1, k2) per stage and block, from rho (docs/method.md §2, e = rho - 7)."""
    e = rho - 7

    def grow(cond: bool) -> int:  # a 1x1 kernel that becomes 3x3 once rho is large enough
        return 3 if cond else 1

    k1 = [
        [3, grow(not -e > 6), grow(not -e > 4), grow(not -e > 2)],
        [grow(not -e > 0), grow(e > 1), grow(e > 3), grow(e > 5)],
        [grow(e > 7), grow(e > 9), grow(e > 11), grow(e > 13)],
    ]
    k2 = [
        [1, grow(not -e > 5), grow(not -e > 3), grow(not -e > 1)],
        [grow(e > 0), grow(e > 2), grow(e > 4), grow(e > 6)],
        [grow(e > 8), grow(e > 10), grow(e > 12), grow(e > 14)],
    ]
    return k1, k2
