"""Model families: which config class a stored config is, and the one builder for any config.

A stored config names its family in a `family` field; CP-ResNet's configs carry none (every
checkpoint written before CP-Mobile existed), so a missing field means CP-ResNet. Torch-free
until `build_model` is called.
"""

from __future__ import annotations

from typing import Any

from edgeasc.errors import ConfigError
from edgeasc.models.channels import complexity
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


def build_model(config: AnyConfig, device: Any = None):
    """The torch network of any family's config."""
    if isinstance(config, CPMobileConfig):
        from edgeasc.models.cp_mobile import build_cp_mobile

        return build_cp_mobile(config, device)
    from edgeasc.models.cp_resnet import build_model as build_cp_resnet

    return build_cp_resnet(config, device)
