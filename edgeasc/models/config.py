"""ModelConfig: one dataclass that describes every network of the paper (torch-free).

The block plan it reads (kernel sizes from rho, depth restriction, max-pool positions) is in
models/blocks.py, so that the torch builder, the receptive-field calculator, the channel
groups and config validation all read the same definition (docs/method.md §2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from edgeasc.errors import ConfigError
from edgeasc.models.blocks import (  # noqa: F401  (re-exported: the block plan)
    BLOCKS_PER_STAGE,
    STAGE1_POOL_AFTER,
    BlockSpec,
    kernel_sizes,
    parse_depth_restriction,
)
from edgeasc.models.channels import channel_groups, dense_blocks, last_stream, widths

VARIANTS = ("cp-resnet", "damped", "decomposed", "damped-decomposed")


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
    damp_stem: bool = True  # False: a plain 5x5 stem in a damped network (the released DCASE'20 winner)
    # channel plan: width of every channel group (models/channels.py); None = dense
    channels: tuple[tuple[str, int], ...] | None = None

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
        if not isinstance(self.damp_stem, bool):
            raise ConfigError(f"damp_stem must be true or false, got {self.damp_stem!r}")
        if not 0.0 <= float(self.damping_floor) <= 1.0:
            raise ConfigError(f"damping floor must be in [0, 1], got {self.damping_floor!r}")
        z = self.decomposition
        if z is not None:
            if not _is_int(z) or z < 1:
                raise ConfigError(f"decomposition factor Z must be an integer >= 1, got {z!r}")
            if self.width % z:
                raise ConfigError(f"width {self.width} is not divisible by the decomposition factor Z={z}")
        if self.channels is not None:
            object.__setattr__(self, "channels", self._check_plan(self.channels))

    def _check_plan(self, plan: Any) -> tuple[tuple[str, int], ...]:
        if isinstance(plan, dict):
            plan = plan.items()
        try:
            given = {str(k): v for k, v in plan}
        except (TypeError, ValueError):
            raise ConfigError(f"channel plan must map group names to widths, got {plan!r}") from None
        groups = channel_groups(replace(self, channels=None))
        names = [g.name for g in groups]
        unknown, missing = sorted(set(given) - set(names)), [n for n in names if n not in given]
        if unknown or missing:
            what = (f"unknown groups {', '.join(unknown[:4])}" if unknown else
                    f"missing groups {', '.join(missing[:4])}")
            raise ConfigError(f"channel plan does not fit this network ({what}; it has {len(names)} groups)")
        for g in groups:
            v = given[g.name]
            if not _is_int(v) or not 1 <= v <= g.dense_width:
                raise ConfigError(f"channel plan: group {g.name!r} must keep 1..{g.dense_width} channels, got {v!r}")
        return tuple((n, int(given[n])) for n in names)

    @property
    def decomposed(self) -> bool:
        """Whether block convs are factorised (1x1 reduce, kxk, 1x1 expand). Z = 1 factorises
        nothing: like the authors' code, it builds one plain conv in place of the three."""
        return self.decomposition is not None and self.decomposition > 1

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
        d["channels"] = dict(self.channels) if self.channels is not None else None
        return d

    @property
    def dense(self) -> ModelConfig:
        """The same network before channel pruning."""
        return replace(self, channels=None)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"model config must be a mapping, got {type(d).__name__}")
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
        """The blocks of each stage (empty stages included as empty lists), at the widths of
        the channel plan."""
        w = widths(self)
        plan: list[list[BlockSpec]] = []
        for stage in dense_blocks(self):
            specs = []
            for b in stage:
                mids = ()
                if self.decomposed:
                    convs = ["conv1", "conv2"] + (["shortcut.0"] if b["projection"] else [])
                    mids = tuple((w[f"{b['name']}.{c}.reduce"], w[f"{b['name']}.{c}.spatial"]) for c in convs)
                specs.append(BlockSpec(w[b["in_stream"]], w[b["out_stream"]], b["k1"], b["k2"], b["pool_after"],
                                       name=b["name"], mid_channels=w[b["name"]], projection=b["projection"],
                                       decomposed=mids))
            plan.append(specs)
        return plan

    @property
    def head_in_channels(self) -> int:
        return widths(self)[last_stream(self)]

    @property
    def stem_channels(self) -> int:
        return widths(self)["stem"]

    @property
    def n_blocks(self) -> int:
        return sum(self.blocks_per_stage)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
