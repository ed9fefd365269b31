"""Model families: which config class a stored config is, and the one builder for any config.

A stored config names its family in a `family` field; CP-ResNet's configs carry none (every
checkpoint written before CP-Mobile existed), so a missing field means CP-ResNet. Torch-free
until `build_model` is called.
"""

from __future__ import annotations

from typing import Any

from edgeasc.errors import ConfigError
from edgeasc.models.channels import CostModel, channel_groups, complexity, widths
from edgeasc.models.config import ModelConfig
from edgeasc.models.cp_mobile_config import FAMILY as CP_MOBILE
from edgeasc.models.cp_mobile_config import CPMobileConfig, mobile_complexity

AnyConfig = ModelConfig | CPMobileConfig
FAMILIES = ("cp-resnet", CP_MOBILE)


def config_from_dict(d: Any) -> AnyConfig:
    """A config of any family from its stored form (checkpoint, metadata, JSON)."""
    if not isinstance(d, dict):
        raise ConfigError(f"model config must be a mapping, got {type(d).__name__}")
    family = d.get("family", "cp-resnet")
    if family == CP_MOBILE:
        return CPMobileConfig.from_dict(d)
    if family == "cp-resnet":
        return ModelConfig.from_dict({k: v for k, v in d.items() if k != "family"})
    raise ConfigError(f"unknown model family {str(family)[:40]!r}; this edgeasc knows {', '.join(FAMILIES)}")


def family_of(config: AnyConfig) -> str:
    return CP_MOBILE if isinstance(config, CPMobileConfig) else "cp-resnet"


def complexity_of(config: AnyConfig, n_frames: int) -> tuple[int, int]:
    """(parameters, MACs per clip) of any family, each counted its own way (CP-Mobile's MACs
    include BatchNorm's, as the DCASE'24 organisers count them)."""
    if isinstance(config, CPMobileConfig):
        return mobile_complexity(config, n_frames)
    return complexity(config, n_frames)


def group_widths(config: AnyConfig) -> dict[str, int]:
    """Every channel group with its width under the config's plan (dense without one)."""
    return config.widths() if isinstance(config, CPMobileConfig) else widths(config)


def dense_widths(config: AnyConfig) -> dict[str, int]:
    """Every channel group with its dense width, in network order."""
    if isinstance(config, CPMobileConfig):
        return config.dense_groups()
    return {g.name: g.dense_width for g in channel_groups(config)}


class MobileCost:
    """CP-Mobile's (parameters, MACs) at any group widths: channel pruning's cost model."""

    def __init__(self, config: CPMobileConfig, n_frames: int) -> None:
        self.config, self.n_frames = config.dense, n_frames

    def cost(self, w: dict[str, int]) -> tuple[int, int]:
        return mobile_complexity(self.config.replace(channels=w), self.n_frames)


def cost_model(config: AnyConfig, n_frames: int) -> CostModel | MobileCost:
    return MobileCost(config, n_frames) if isinstance(config, CPMobileConfig) else CostModel(config, n_frames)


def build_model(config: AnyConfig, device: Any = None):
    """The torch network of any family's config."""
    if isinstance(config, CPMobileConfig):
        from edgeasc.models.cp_mobile import build_cp_mobile

        return build_cp_mobile(config, device)
    from edgeasc.models.cp_resnet import build_model as build_cp_resnet

    return build_cp_resnet(config, device)
