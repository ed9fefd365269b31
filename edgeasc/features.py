"""The perceptual log-mel frontend (METHOD.md section 1).

This module is part of the torch-free device runtime.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class FeatureParams:
    """Every number of the frontend; travels inside checkpoints and ONNX metadata."""

    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 256
    fmin: float = 0.0
    fmax: float = 11025.0
    top_db: float = 80.0
    amin: float = 1e-10
    clip_seconds: float = 10.0

    def n_samples(self, seconds: float | None = None) -> int:
        seconds = self.clip_seconds if seconds is None else seconds
        return int(math.ceil(round(seconds * self.sample_rate, 6)))

    def n_frames(self, seconds: float | None = None) -> int:
        """Frames of a centred STFT: 431 for 10 s at 22 050 Hz, hop 512."""
        return 1 + self.n_samples(seconds) // self.hop_length

    def to_dict(self) -> dict:
        return asdict(self)
