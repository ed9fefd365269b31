"""What the graph takes for a window of samples, and what its logits become: shared by `predict`
(windows of recordings) and `listen` (windows of a stream), and kept apart from both so that
predict can read stdin with listen's stream parser without an import cycle. torch-free."""

from __future__ import annotations

import numpy as np

from edgeasc.runtime.deployed import DeployedModel
from edgeasc.runtime.features import compute_features


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def model_input(model: DeployedModel, piece: np.ndarray) -> np.ndarray:
    """What the graph takes for one window of samples: the samples themselves (a --with-frontend
    model), else the normalised numpy frontend's features."""
    return piece if model.takes_waveform else model.normalize(compute_features(piece, model.feature_params))
