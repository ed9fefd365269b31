"""Classify recordings with an exported model, using nothing but what the ONNX file carries.
torch-free: decode + resample (audio.py), the numpy frontend (or the graph's own, for models
exported --with-frontend), normalisation from the metadata, onnxruntime.

Recordings longer than the window are classified in sliding windows (default: the model's
clip length, no overlap); the last window is aligned to the end of the recording so that no
window is padded. The file's result is the mean of its windows' class probabilities. A
recording shorter than the window is zero-padded, as the training clips were.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeasc import audio
from edgeasc.deployed import DeployedModel
from edgeasc.errors import ConfigError, EdgeascError
from edgeasc.features import perceptual_mel


@dataclass
class Prediction:
    path: str
    labels: list[str]
    seconds: float = 0.0
    starts: list[float] = field(default_factory=list)  # window starts, seconds
    window_seconds: float = 0.0
    window_probabilities: np.ndarray | None = None  # (windows, classes)
    error: str | None = None

    @property
    def probabilities(self) -> np.ndarray:
        return self.window_probabilities.mean(axis=0)

    def top(self, k: int = 1, probabilities: np.ndarray | None = None) -> list[tuple[str, float]]:
        p = self.probabilities if probabilities is None else probabilities
        order = np.argsort(-p, kind="stable")[:k]
        return [(self.labels[i], float(p[i])) for i in order]

    def to_dict(self, top_k: int = 1) -> dict:
        if self.error:
            return {"file": self.path, "error": self.error}
        return {
            "file": self.path, "seconds": round(self.seconds, 3),
            "top": [{"label": label, "probability": p} for label, p in self.top(top_k)],
            "probabilities": {label: float(p) for label, p in zip(self.labels, self.probabilities, strict=True)},
            "windows": [{"start": round(s, 3), "end": round(s + self.window_seconds, 3),
                         "label": self.top(1, p)[0][0], "probability": self.top(1, p)[0][1],
                         "probabilities": [float(v) for v in p]}
                        for s, p in zip(self.starts, self.window_probabilities, strict=True)],
        }


def window_starts(n: int, window: int, hop: int) -> list[int]:
    """Sample offsets of the windows over `n` samples; the last one ends at `n`."""
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, hop))
    if starts[-1] + window < n:
        starts.append(n - window)
    return starts


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def model_inputs(model: DeployedModel, path: str | Path, window: float | None = None, hop: float | None = None
                 ) -> tuple[np.ndarray, list[float], float]:
    """The model inputs of every window of one recording: (inputs, window starts in s, duration in s)."""
    params = model.feature_params
    window = model.clip_seconds if window is None else window
    hop = window if hop is None else hop
    x, sr = audio.load(path, sample_rate=params.sample_rate, channels=model.channels)
    n_window, n_hop = params.n_samples(window), max(1, params.n_samples(hop))
    starts = window_starts(x.shape[-1], n_window, n_hop)
    inputs = []
    for s in starts:
        piece = audio.fit_length(x[:, s:s + n_window], n_window)
        inputs.append(piece if model.takes_waveform else model.normalize(perceptual_mel(piece, params)))
    return np.stack(inputs).astype(np.float32, copy=False), [s / sr for s in starts], x.shape[-1] / sr


def check_windows(model: DeployedModel, window: float | None, hop: float | None) -> None:
    params = model.feature_params
    shortest = (params.n_fft // 2 + 1) / params.sample_rate
    if window is not None and not (math.isfinite(window) and shortest < window <= 3600):
        raise ConfigError(f"--window must be between {shortest:.3f} s and 3600 s, got {window}")
    if hop is not None and not (math.isfinite(hop) and 0 < hop <= (window or model.clip_seconds)):
        raise ConfigError(f"--hop must be > 0 and at most the window, got {hop}")


def predict_files(model: DeployedModel, paths: Sequence[str | Path], window: float | None = None,
                  hop: float | None = None, batch_size: int = 8, progress=None) -> Iterator[Prediction]:
    """Predictions in input order. Windows of consecutive files share onnxruntime batches of up
    to `batch_size`; a file that cannot be read yields a Prediction with `error` set."""
    model.require_metadata("predict")
    check_windows(model, window, hop)
    if batch_size < 1:
        raise ConfigError(f"--batch must be at least 1, got {batch_size}")
    window_s = model.clip_seconds if window is None else window
    pending: list[tuple[Prediction, np.ndarray]] = []  # files whose windows are not all classified yet

    def flush() -> Iterator[Prediction]:
        inputs = np.concatenate([x for _, x in pending])
        logits = np.concatenate([model.run(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)])
        probs = softmax(logits.astype(np.float64))
        offset = 0
        for prediction, x in pending:
            prediction.window_probabilities = probs[offset:offset + len(x)]
            offset += len(x)
            yield prediction
        pending.clear()

    for path in paths:
        prediction = Prediction(str(path), model.labels, window_seconds=window_s)
        try:
            x, prediction.starts, prediction.seconds = model_inputs(model, path, window, hop)
        except EdgeascError as exc:
            prediction.error = str(exc)
            yield from flush() if pending else ()
            yield prediction
        else:
            pending.append((prediction, x))
            if sum(len(v) for _, v in pending) >= batch_size:
                yield from flush()
        if progress is not None:
            progress(1)
    if pending:
        yield from flush()
