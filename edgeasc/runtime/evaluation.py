"""Evaluation on the device, without torch: an exported model's scores on labelled recordings.

The same counts as the workstation's `edgeasc eval` (a confusion matrix, clips and correct
decisions per device), scored by runtime/scores.py the same way; the decisions come from the
deployed ONNX model through `predict`'s own path (decode, resample, the numpy frontend,
onnxruntime), so a deployed model is checked exactly as it will run. A recording longer than
the model's clip is classified as `predict` does (the mean over its windows); a DCASE clip is
one window, as in training. A recording that cannot be read is counted apart and named, never
scored as a mistake.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from edgeasc.errors import ConfigError
from edgeasc.runtime.deployed import DeployedModel
from edgeasc.runtime.predict import predict_files
from edgeasc.runtime.scores import scores


def check_labels(model: DeployedModel, labels: Sequence[str]) -> None:
    if list(labels) != list(model.labels):
        raise ConfigError(f"the data's classes {list(labels)} are not the model's {list(model.labels)} (same names, "
                          "same order)")


def evaluate_recordings(model: DeployedModel, clips: Sequence[tuple[str | Path, int, str | None]],
                        labels: Sequence[str], batch_size: int | None = None,
                        progress: Callable[[int], None] | None = None) -> dict:
    """clips: (path, true class index into `labels`, device or None). `labels` must be the
    model's classes in its own order. Returns the scores (plain JSON values), the confusion
    matrix (rows: true class, columns: predicted), clips per device and the unreadable ones."""
    check_labels(model, labels)
    if not clips:
        raise ConfigError("no recordings to evaluate")
    n = len(labels)
    confusion = np.zeros((n, n), dtype=np.int64)
    correct: dict[str, int] = {}
    total: dict[str, int] = {}
    errors: list[str] = []
    paths = [str(path) for path, _, _ in clips]
    for (_, truth, device), result in zip(clips, predict_files(model, paths, batch_size=batch_size,
                                                                  progress=progress), strict=True):
        if result.error is not None:
            errors.append(result.error)
            continue
        predicted = int(np.argmax(result.probabilities))
        confusion[truth, predicted] += 1
        if device:
            total[device] = total.get(device, 0) + 1
            correct[device] = correct.get(device, 0) + int(predicted == truth)
    if not confusion.sum():
        raise ConfigError(f"none of the {len(clips)} recordings could be read (first: {errors[0]})")
    devices = sorted(total)
    result = scores(confusion.tolist(), list(labels), {d: correct[d] for d in devices}, {d: total[d] for d in devices})
    return {**result, "confusion": confusion.tolist(), "device_counts": {d: total[d] for d in devices},
            "labels": list(labels), "errors": errors}
