"""int8: onnxruntime static quantisation (QDQ, per-channel int8 weights, uint8 activations),
calibrated on real clips (export/clips.py). Dynamic int8 is never used for convs (about 4x
slower here)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx


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

    root_log = logging.getLogger()
    level = root_log.level
    root_log.setLevel(logging.ERROR)  # the quantizer logs advice about pre-processing on the root logger
    try:
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            onnx.save(fp32, src)
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            return onnx.load(dst)
    finally:
        root_log.setLevel(level)


def accuracy(onnx_bytes: bytes, features: np.ndarray, labels: np.ndarray) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    preds = np.concatenate([session.run(["logits"], {"features": features[i:i + 16]})[0].argmax(1)
                            for i in range(0, len(features), 16)])
    return float((preds == labels).mean())
