"""The model zoo: network families as data (ModelConfig, the block plan, presets), their
torch-free arithmetic (parameters, MACs, receptive field, channel groups and plans) and the
torch builders and layers.

`ModelConfig`, presets and the receptive-field maths are torch-free; the torch modules
(`build_model`, layers, complexity) are imported lazily on first use.

May import: runtime (the frontend's parameters, for input shapes) and the base (errors, io,
console). Not data: a network does not know which dataset feeds it.
"""

from edgeasc.models.config import VARIANTS, ModelConfig
from edgeasc.models.presets import PRESETS, Preset, get_preset

_LAZY = {
    "build_model": "edgeasc.models.cp_resnet",
    "CPResNet": "edgeasc.models.cp_resnet",
    "DampedConv2d": "edgeasc.models.layers",
    "DecomposedConv2d": "edgeasc.models.layers",
    "analyse": "edgeasc.models.complexity",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


__all__ = ["PRESETS", "VARIANTS", "ModelConfig", "Preset", "get_preset", *_LAZY]
