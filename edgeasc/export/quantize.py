"""int8: onnxruntime static quantisation (QDQ, per-channel int8 weights, uint8 activations),
calibrated on real clips (export/clips.py). Dynamic int8 is never used for convs (about 4x
slower here)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx

from edgeasc.console import verbose


def quantize_int8(fp32: onnx.ModelProto, calibration: np.ndarray) -> onnx.ModelProto:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"features": calibration[i:i + 8]} for i in range(0, len(calibration), 8)])

        def get_next(self):
            return next(self.items, None)

    import onnxruntime as ort

    from edgeasc.runtime.deployed import quiet_options

    quiet_options(ort.SessionOptions())  # the calibration sessions the quantizer opens log at edgeasc's level too
    root_log = logging.getLogger()
    level = root_log.level
    if not verbose():  # the quantizer logs advice about pre-processing on the root logger
        root_log.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            onnx.save(fp32, src)
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            return compact_names(onnx.load(dst))
    finally:
        root_log.setLevel(level)


# The quantizer names every tensor after its layer plus long suffixes; in a small network the
# names cost more bytes than the int8 weights. Shorter suffixes keep the layer part readable.
_SUFFIXES = (("_quantized_zero_point", ".qz"), ("_quantized_scale", ".qs"), ("_zero_point", ".z"),
             ("_scale", ".s"), ("_quantized", ".q"), ("_DequantizeLinear_Output", ".dq"),
             ("_QuantizeLinear_Output", ".ql"), ("_DequantizeLinear", ".dq"), ("_QuantizeLinear", ".ql"))


def compact_names(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The quantizer's suffixes shortened in every tensor and node name (graph inputs and outputs keep
    theirs). The renaming is checked to be one-to-one; if it were not, the names are left alone."""
    graph = proto.graph
    fixed = {v.name for v in [*graph.input, *graph.output]}

    def short(name: str) -> str:
        if name in fixed or not name:
            return name
        for long, abbreviation in _SUFFIXES:
            name = name.replace(long, abbreviation)
        return name

    values = {n for node in graph.node for n in [*node.input, *node.output]} | {i.name for i in graph.initializer}
    renamed = {n: short(n) for n in values}
    nodes = [short(node.name) for node in graph.node]
    named = [n for n in nodes if n]  # node names are optional: only the given ones must stay unique
    if len(set(renamed.values())) != len(renamed) or len(set(named)) != len(named) or \
            set(renamed.values()) & (fixed - set(renamed)):
        return proto
    for node, name in zip(graph.node, nodes, strict=True):
        node.name = name
        node.input[:] = [renamed[n] for n in node.input]
        node.output[:] = [renamed[n] for n in node.output]
    for init in graph.initializer:
        init.name = renamed[init.name]
    for vi in graph.value_info:
        vi.name = renamed.get(vi.name, vi.name)
    return proto


def accuracy(onnx_bytes: bytes, features: np.ndarray, labels: np.ndarray) -> float:
    import onnxruntime as ort

    from edgeasc.runtime.deployed import quiet_options

    session = ort.InferenceSession(onnx_bytes, quiet_options(ort.SessionOptions()), providers=["CPUExecutionProvider"])
    preds = np.concatenate([session.run(["logits"], {"features": features[i:i + 16]})[0].argmax(1)
                            for i in range(0, len(features), 16)])
    return float((preds == labels).mean())
