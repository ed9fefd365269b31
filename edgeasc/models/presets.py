"""Named configurations: every network of the paper's Table 1 (docs/method.md §4), and the
DCASE 2024 task-1 organisers' CP-Mobile baseline.

A preset is data: a config plus, for the pruned rows, the parameter target that
training prunes to. DCASE'18 rows use a 1-channel input and DCASE'20 rows rho = 3:
only those configurations reproduce the paper's parameter counts (docs/method.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeasc.errors import ConfigError
from edgeasc.models.config import ModelConfig
from edgeasc.models.cp_mobile_config import CPMobileConfig
from edgeasc.runtime.features import D24_PARAMS, FeatureParams


@dataclass(frozen=True)
class Preset:
    name: str
    config: ModelConfig | CPMobileConfig
    description: str
    prune_target: int | None = None
    # its own frontend, where not edgeasc's default (the perceptual one, 10 s): training takes it
    # unless --frontend says otherwise, and the published counts are taken on its input shape
    input_features: FeatureParams | None = None


_D18 = ModelConfig(rho=7, width=128, n_classes=10, in_channels=1)
_D20 = ModelConfig(rho=3, width=128, n_classes=3, in_channels=2)


def _presets() -> dict[str, Preset]:
    rows = [
        Preset("d18-cp-resnet", _D18.replace(damping=False), "DCASE'18 CP-ResNet (Table 1: 1715.6K)"),
        Preset("d18-damped", _D18, "DCASE'18 damped CP-ResNet (Table 1: 1715.6K)"),
        Preset("d18-damped-stereo", _D18.replace(in_channels=2), "DCASE'18 damped, stereo input"),
        Preset("d18-damped-restricted", _D18.replace(width=64), "DCASE'18 damped, width 64 (Table 1: 431.8K)"),
        Preset("d18-damped-w32", _D18.replace(width=32), "DCASE'18 damped, width 32 (section 3.1: 109K)"),
        Preset("d18-baseline-full", _D18.replace(damping=False, depth_restriction=(0, 0, 0)),
               "DCASE'18 full CP-ResNet before depth restriction (section 3.1: 3956K)"),
        Preset("d18-damped-decomp", _D18.replace(decomposition=4), "DCASE'18 damped-decomposed, Z=4 (Table 1: 417K)"),
        Preset("d18-damped-pruned-400k", _D18, "DCASE'18 damped, pruned to 400 000 parameters (Table 1)",
               prune_target=400_000),
        Preset("d20-cp-resnet", _D20.replace(damping=False), "DCASE'20 CP-ResNet (Table 1: 1061.6K)"),
        Preset("d20-damped", _D20, "DCASE'20 damped CP-ResNet (Table 1: 1061.6K)"),
        Preset("d20-damped-restricted", _D20.replace(width=64), "DCASE'20 damped, width 64 (Table 1: 268.6K)"),
        Preset("d20-damped-decomp", _D20.replace(decomposition=4), "DCASE'20 damped-decomposed, Z=4 (Table 1: 361K)"),
        Preset("d20-damped-pruned-250k", _D20, "DCASE'20 damped rho 3 w128, pruned to 250 000 parameters (Table 1 "
               "Damp.-Pruned row; not the submitted system, see d20-submission-2)", prune_target=250_000),
        # the three DCASE'20 task 1b submissions (technical report), counts at 3 classes, stereo
        Preset("d20-submission-1", _D20.replace(damping=False, rho=3, width=48, depth_restriction=(0, 4, 4),
                                                decomposition=4),
               "DCASE'20 1b submission 1: undamped decomposed rho 3 w48 '0,4,4' Z 4 (18,390)"),
        Preset("d20-submission-2", _D20.replace(rho=4, width=64, depth_restriction=(0, 2, 4), damp_stem=False),
               "DCASE'20 1b submission 2 (the winner's shape): damped rho 4 w64 '0,2,4', plain stem (268,166), "
               "pruned to 250,000 non-zero with BatchNorm counted; the released model used gate pruning",
               prune_target=250_000),
        Preset("d20-submission-3", _D20.replace(rho=4, width=48, depth_restriction=(0, 1, 3)),
               "DCASE'20 1b submission 3: damped rho 4 w48 '0,1,3' (245,958)"),
        Preset("d20-damped-rho4", _D20.replace(rho=4), "DCASE'20 damped at the paper's stated rho = 4"),
        Preset("demo", _D20.replace(width=16), "small damped network for the synthetic demo, pruned by half",
               prune_target=8_500),
        Preset("cp-mobile-d24", CPMobileConfig(), "DCASE'24 task 1 baseline CP-Mobile: base 32, x1.8 per stage, "
               "expansion 2.1, blocks 3,2,1 (61,148 parameters, 29,419,156 MACs on 1 s)",
               input_features=D24_PARAMS),  # 1 s at 32 kHz, hop 500: 256 x 65
    ]
    return {p.name: p for p in rows}


PRESETS: dict[str, Preset] = _presets()


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; `edgeasc info --list-presets` lists them") from None


def resolve_model(preset: str | None = None, variant: str | None = None,
                  decomp_factor: int | None = None, **overrides) -> tuple[ModelConfig | CPMobileConfig, int | None]:
    """A config from an optional preset plus explicit overrides (None = keep).

    Returns the config and the preset's prune target (None for unpruned presets).
    `variant` sets damping and decomposition together; `decomp_factor` alone changes Z.
    """
    base = get_preset(preset) if preset else None
    config = base.config if base else ModelConfig()
    changes = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(config, CPMobileConfig):
        return _resolve_mobile(config, variant, decomp_factor, changes), base.prune_target if base else None
    if variant is not None:
        decomposed = variant.endswith("decomposed")
        z = decomp_factor if decomp_factor is not None else (config.decomposition or 4)
        config = ModelConfig.from_variant(variant, decomp_factor=z if decomposed else decomp_factor,
                                          **{**_fields(config), **changes})
    else:
        if decomp_factor is not None:
            if config.decomposition is None:
                raise ConfigError("--decomp-factor only applies to decomposed variants; "
                                  "add --variant decomposed or --variant damped-decomposed")
            changes["decomposition"] = decomp_factor
        config = config.replace(**changes) if changes else config
    return config, (base.prune_target if base else None)


# CP-Mobile takes the shared overrides; `width` is its base width (the stem's output channels)
_MOBILE_FIELDS = {"n_classes": "n_classes", "in_channels": "in_channels", "width": "base_channels",
                  "n_mels": "n_mels"}


def _resolve_mobile(config: CPMobileConfig, variant: str | None, decomp_factor: int | None,
                    changes: dict) -> CPMobileConfig:
    foreign = sorted(k for k in changes if k not in _MOBILE_FIELDS)
    foreign += ["variant"] * (variant is not None) + ["decomp_factor"] * (decomp_factor is not None)
    if foreign:
        names = ", ".join("--" + k.replace("_", "-") for k in foreign)
        raise ConfigError(f"{names}: only for CP-ResNet networks; a CP-Mobile network takes --width "
                          "(its base channels), the classes and the input channels")
    return config.replace(**{_MOBILE_FIELDS[k]: v for k, v in changes.items()})


def _fields(config: ModelConfig) -> dict:
    d = config.to_dict()
    d.pop("damping")
    d.pop("decomposition")
    return d
