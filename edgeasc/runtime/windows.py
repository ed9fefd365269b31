"""Where the windows of a recording fall: the sliding-window plan that `predict` and `listen`
share (window and hop in samples at the model's rate, the end-aligned last window, the bound
on windows per recording) and the check of --window/--hop against the model. torch-free.
"""

from __future__ import annotations

import math
from pathlib import Path

from edgeasc.errors import ConfigError
from edgeasc.runtime.deployed import DeployedModel


def window_starts(n: int, window: int, hop: int, min_overhang: int = 1) -> list[int]:
    """Sample offsets of the windows over `n` samples. What the hop grid leaves uncovered at the
    end gets one more window, aligned to end at `n`, when it is at least `min_overhang`
    samples (one STFT hop: less moves no feature frame, and recorders often overshoot a clip
    by a few samples); so no two windows ever share a span."""
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, hop))
    if n - (starts[-1] + window) >= max(1, min_overhang):
        starts.append(n - window)
    return starts


MAX_WINDOWS = 100_000  # per recording: a 10-s hop over a day, or one frame's hop over 40 minutes


def plan_windows(model: DeployedModel, path: str | Path, n: int, window: float | None = None,
                 hop: float | None = None) -> tuple[list[int], int]:
    """(window starts, window length) in samples at the model's rate over `n` samples."""
    params = model.feature_params
    n_window, n_hop = window_lengths(model, window, hop)
    if too_many_windows(n, n_window, n_hop):
        hop = (model.clip_seconds if window is None else window) if hop is None else hop
        raise ConfigError(f"{path}: --hop {hop:g} s cuts this {n / params.sample_rate:.0f}-s recording into more "
                          f"than {MAX_WINDOWS:,} windows; use a longer hop")
    return window_starts(n, n_window, n_hop, params.hop_length), n_window


def window_lengths(model: DeployedModel, window: float | None = None, hop: float | None = None) -> tuple[int, int]:
    """(window, hop) in samples at the model's rate."""
    params = model.feature_params
    window = model.clip_seconds if window is None else window
    hop = window if hop is None else hop
    return params.n_samples(window), max(1, params.n_samples(hop))


def too_many_windows(n: int, n_window: int, n_hop: int) -> bool:
    return (n - n_window) / n_hop > MAX_WINDOWS


def check_windows(model: DeployedModel, window: float | None, hop: float | None) -> None:
    params = model.feature_params
    shortest = (params.n_fft // 2 + 1) / params.sample_rate
    frame = params.hop_length / params.sample_rate  # a finer hop moves no feature frame
    if window is not None and not (math.isfinite(window) and shortest < window <= 3600):
        raise ConfigError(f"--window must be between {shortest:.3f} s and 3600 s, got {window}")
    if hop is not None and not (math.isfinite(hop) and frame <= hop <= (window or model.clip_seconds)):
        raise ConfigError(f"--hop must be between one feature frame ({frame:.4f} s) and the window, got {hop}")
