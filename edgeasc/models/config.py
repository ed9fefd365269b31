"""ModelConfig: one dataclass that describes every network of the paper (torch-free).

The block plan (kernel sizes from rho, depth restriction, max-pool positions) lives
here so that the torch builder, the receptive-field calculator and config validation
all read the same definition (METHOD.md section 2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from edgeasc.errors import ConfigError

VARIANTS = ("cp-resnet", "damped", "decomposed", "damped-decomposed")
BLOCKS_PER_STAGE = 4
# 1-based indices of the stage-1 blocks followed by a 2x2 max-pool.
STAGE1_POOL_AFTER = (1, 2, 4)


@dataclass(frozen=True)
class ModelConfig:
    rho: int = 4
    width: int = 128
    depth_restriction: tuple[int, int, int] = (0, 1, 4)
    n_classes: int = 10
    in_channels: int = 2
    damping: bool = True
    damping_floor: float = 0.1
    decomposition: int | None = None  # compression factor Z, None = plain convs
    n_mels: int = 256

    def __post_init__(self) -> None:
        dr = self.depth_restriction
        if isinstance(dr, str):
            dr = parse_depth_restriction(dr)
        dr = tuple(dr)
        if len(dr) != 3 or not all(_is_int(d) and 0 <= d <= BLOCKS_PER_STAGE for d in dr):
            raise ConfigError(f"depth restriction must be three integers in 0..4, got {dr!r}")
        object.__setattr__(self, "depth_restriction", tuple(int(d) for d in dr))
        for name, low in (("rho", 0), ("width", 1), ("n_classes", 1), ("in_channels", 1),
                          ("n_mels", 8)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if not 0.0 <= float(self.damping_floor) <= 1.0:
            raise ConfigError(f"damping floor must be in [0, 1], got {self.damping_floor!r}")
        z = self.decomposition
        if z is not None:
            if not _is_int(z) or z < 1:
                raise ConfigError(f"decomposition factor Z must be an integer >= 1, got {z!r}")
            if self.width % z:
                raise ConfigError(f"width {self.width} is not divisible by the decomposition factor Z={z}")

    # ----- naming ---------------------------------------------------------------
    @property
    def variant(self) -> str:
        if self.decomposition is None:
            return "damped" if self.damping else "cp-resnet"
        return "damped-decomposed" if self.damping else "decomposed"

    @classmethod
    def from_variant(cls, variant: str, decomp_factor: int | None = None, **kwargs: Any) -> ModelConfig:
        if variant not in VARIANTS:
            raise ConfigError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        decomposed = variant.endswith("decomposed")
        if decomposed and decomp_factor is None:
            decomp_factor = 4
        if not decomposed and decomp_factor is not None:
            raise ConfigError(f"--decomp-factor only applies to decomposed variants, not {variant!r}")
        return cls(damping=variant.startswith("damped"), decomposition=decomp_factor, **kwargs)

    # ----- (de)serialisation: plain JSON types only -------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["depth_restriction"] = list(self.depth_restriction)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model config keys: {', '.join(sorted(unknown))}")
        return cls(**d)

    def replace(self, **changes: Any) -> ModelConfig:
        return replace(self, **changes)

    # ----- architecture plan --------------------------------------------------------
    @property
    def blocks_per_stage(self) -> tuple[int, int, int]:
        return tuple(BLOCKS_PER_STAGE - d for d in self.depth_restriction)  # type: ignore[return-value]

    @property
    def stage_widths(self) -> tuple[int, int, int]:
        return (self.width, 2 * self.width, 4 * self.width)

    def stage_plan(self) -> list[list[BlockSpec]]:
        """The blocks of each stage (empty stages included as empty lists)."""
        k1s, k2s = kernel_sizes(self.rho)
        plan: list[list[BlockSpec]] = []
        channels = self.width  # stem output
        for s, (n_blocks, out_c) in enumerate(zip(self.blocks_per_stage, self.stage_widths, strict=True)):
            stage = []
            for b in range(n_blocks):
                pool = s == 0 and (b + 1) in STAGE1_POOL_AFTER
                stage.append(BlockSpec(channels, out_c, k1s[s][b], k2s[s][b], pool))
                channels = out_c
            plan.append(stage)
        return plan

    @property
    def head_in_channels(self) -> int:
        for stage, out_c in zip(reversed(self.stage_plan()), reversed(self.stage_widths), strict=True):
            if stage:
                return out_c
        return self.width

    @property
    def n_blocks(self) -> int:
        return sum(self.blocks_per_stage)


@dataclass(frozen=True)
class BlockSpec:
    in_channels: int
    out_channels: int
    k1: int
    k2: int
    pool_after: bool


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


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
    """(k1, k2) per stage and block, from rho (METHOD.md section 2, e = rho - 7)."""
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
