"""Real clips for export: int8 calibration, the accuracy before/after, and verification of
every precision on the run's own evaluate clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeasc.errors import EdgeascError
from edgeasc.train.checkpoint import run_cache_root

CALIBRATION_CLIPS = 64


class CalibrationError(EdgeascError):
    exit_code = 2


def run_dataset_dir(ckpt: dict) -> Path:
    """The dataset a run trained on (the built-in synthetic set when it was given none)."""
    from edgeasc.data.cache import cache_root
    from edgeasc.data.synth import DEFAULT_SYNTH

    cfg = ckpt.get("train_config") or {}
    if cfg.get("dataset"):
        return Path(cfg["dataset"])
    d = DEFAULT_SYNTH
    return (run_cache_root(ckpt) or cache_root()) / "synthetic" / \
        f"scenes-{d['classes']}c-{d['clips_per_class']}-s{d['seed']}"


def run_split(ckpt: dict) -> int | None:
    """The TAU 2022 train subset (--split N) the run trained on: its own dataset opens with it,
    so the feature cache is the run's and calibration draws from the clips it trained on."""
    return (ckpt.get("train_config") or {}).get("split")


def normalized(ckpt: dict, features: np.ndarray) -> np.ndarray:
    mean = np.asarray(ckpt["normalization"]["mean"], np.float32)[None, None, :, None]
    std = np.asarray(ckpt["normalization"]["std"], np.float32)[None, None, :, None]
    return ((np.asarray(features) - mean) / std).astype(np.float32)


def spread(n: int, k: int) -> np.ndarray:
    """k indices spread evenly over n items (every class of a sorted split gets some)."""
    return np.linspace(0, n - 1, min(k, n)).astype(int)


def cached_evaluate_clips(ckpt: dict, cache_dir: Path | None = None, clips: int = 16) -> np.ndarray | None:
    """Up to `clips` normalised evaluate clips of the run's own dataset, only if its feature cache
    already exists (verifying must not start a feature extraction) and its labels match."""
    from edgeasc.data.cache import find_cache
    from edgeasc.data.dcase import DatasetError, open_dataset
    from edgeasc.runtime.features import FeatureParams

    try:
        dataset = open_dataset(run_dataset_dir(ckpt), split=run_split(ckpt))
        cache = find_cache(dataset, FeatureParams(**ckpt["feature_params"]), ckpt["channels"],
                           Path(cache_dir) if cache_dir else run_cache_root(ckpt))
    except (DatasetError, OSError):
        return None
    if cache is None or dataset.labels != ckpt["labels"]:
        return None
    evaluate = cache.features("evaluate")
    return normalized(ckpt, evaluate[spread(len(evaluate), clips)])


def calibration_features(ckpt: dict, dataset_dir: Path | None, cache_dir: Path | None = None,
                         clips: int = CALIBRATION_CLIPS) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(calibration batch, evaluate features, evaluate labels), normalised with the model's
    statistics: from --calibration, else from the run's own training data."""
    from edgeasc.data.cache import extract_features
    from edgeasc.data.dcase import DatasetError, open_dataset
    from edgeasc.runtime.features import FeatureParams

    split = None if dataset_dir else run_split(ckpt)
    dataset_dir = dataset_dir or run_dataset_dir(ckpt)
    try:
        dataset = open_dataset(dataset_dir, split=split)
    except DatasetError as exc:
        raise CalibrationError(f"int8 needs calibration clips: {exc} (give --calibration DATASET_DIR)") from None
    cache, _ = extract_features(dataset, FeatureParams(**ckpt["feature_params"]), channels=ckpt["channels"],
                                root=cache_dir or run_cache_root(ckpt), progress=False)
    train = cache.features("train")
    calib = normalized(ckpt, train[spread(len(train), clips)])
    evaluate, labels = None, None
    if dataset.labels == ckpt["labels"]:
        evaluate = normalized(ckpt, cache.features("evaluate"))
        labels = cache.labels("evaluate")
    return calib, evaluate, labels
