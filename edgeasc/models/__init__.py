"""The model zoo: network families (CP-ResNet, CP-Mobile) as data (ModelConfig, the block plan, presets), their
torch-free arithmetic (parameters, MACs, receptive field, channel groups and plans) and the
torch builders and layers.

`ModelConfig`, presets and the receptive-field maths are torch-free; the torch modules
(`build_model`, layers, complexity) are imported lazily on first use.

May import: runtime (the frontend's parameters, for input shapes) and the base (errors, io,
console). Not data: a network does not know which dataset feeds it.
"""

from edgeasc.models.config import VARIANTS, ModelConfig
from edgeasc.models.cp_mobile_config import CPMobileConfig
from edgeasc.models.family import config_from_dict
from edgeasc.models.presets import PRESETS, Preset, get_preset

_LAZY = {
    "build_model": "edgeasc.models.family",
    "CPResNet": "edgeasc.models.cp_resnet",
    "CPMobile": "edgeasc.models.cp_mobile",
    "DampedConv2d": "edgeasc.models.layers",
    "DecomposedConv2d": "edgeasc.models.layers",
    "analyse": "edgeasc.models.complexity",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


__all__ = ["PRESETS", "VARIANTS", "CPMobileConfig", "ModelConfig", "Preset", "config_from_dict", "get_preset", *_LAZY]
