"""int8: onnxruntime static quantisation (QDQ, per-channel int8 weights, uint8 activations),
calibrated on real clips. Dynamic int8 is never used for convs (about 4x slower here)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx

from edgeasc.errors import EdgeascError

CALIBRATION_CLIPS = 64


class CalibrationError(EdgeascError):
    exit_code = 2


def calibration_features(ckpt: dict, dataset_dir: Path | None, cache_dir: Path | None = None,
                         clips: int = CALIBRATION_CLIPS) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(calibration batch, evaluate features, evaluate labels), normalised with the model's
    statistics: from --calibration, else from the run's own training data."""
    from edgeasc.data.cache import cache_root, extract_features
    from edgeasc.data.dcase import DatasetError, open_dataset
    from edgeasc.features import FeatureParams

    cfg = ckpt.get("train_config") or {}
    if dataset_dir is None:
        if cfg.get("dataset"):
            dataset_dir = Path(cfg["dataset"])
        else:
            from edgeasc.data.synth import DEFAULT_SYNTH

            root = Path(cfg["cache_dir"]) if cfg.get("cache_dir") else cache_root()
            d = DEFAULT_SYNTH
            dataset_dir = root / "synthetic" / f"scenes-{d['classes']}c-{d['clips_per_class']}-s{d['seed']}"
    try:
        dataset = open_dataset(dataset_dir)
    except DatasetError as exc:
        raise CalibrationError(f"int8 needs calibration clips: {exc} (give --calibration DATASET_DIR)") from None
    cache, _ = extract_features(dataset, FeatureParams(**ckpt["feature_params"]), channels=ckpt["channels"],
                                root=cache_dir, progress=False)
    mean = np.asarray(ckpt["normalization"]["mean"], np.float32)[None, None, :, None]
    std = np.asarray(ckpt["normalization"]["std"], np.float32)[None, None, :, None]
    train = cache.features("train")
    pick = np.linspace(0, len(train) - 1, min(clips, len(train))).astype(int)
    calib = (np.asarray(train[pick]) - mean) / std
    evaluate, labels = None, None
    if dataset.labels == ckpt["labels"]:
        evaluate = (np.asarray(cache.features("evaluate")) - mean) / std
        labels = cache.labels("evaluate")
    return calib.astype(np.float32), evaluate, labels


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
