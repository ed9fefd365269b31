"""One-off check of edgeasc's d24 log-mel against torchaudio itself (not part of the suite).

torchaudio pins one exact torch release, so edgeasc does not depend on it; the suite pins both
frontends to librosa instead. Run this in a separate environment that has torchaudio and its
matching torch, with this checkout on the path:

    python3 -m venv /tmp/ta && /tmp/ta/bin/pip install torch==2.9.1 'torchaudio==2.9.*' soundfile soxr onnxruntime rich typer
    PYTHONPATH=. /tmp/ta/bin/python benchmarks/torchaudio_check.py

It compares, on seeded noise-plus-tones clips at 32 kHz (and 44.1 kHz resampled), the
organisers' frontend (torchaudio.transforms.MelSpectrogram(sample_rate=32000, n_fft=4096,
win_length=3072, hop_length=500, n_mels=256, f_min=0, f_max=None), power 2, then log(x + 1e-5);
their Resample(44100, 32000) in front for 44.1 kHz audio) with edgeasc's numpy runtime
(runtime.features.log_mel) and torch training path (train.frontend.LogMel).
"""

from __future__ import annotations

import json
import platform
import sys

import numpy as np
import torch
import torchaudio

from edgeasc.runtime.audio import resample
from edgeasc.runtime.features import D24_PARAMS, log_mel
from edgeasc.train.frontend import LogMel


def clips(sr: int, n: int = 8, seconds: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(sr * seconds)) / sr
    out = []
    for i in range(n):
        tones = sum(rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * rng.uniform(50, sr / 2.2) * t) for _ in range(5))
        noise = rng.standard_normal(t.size) * 10 ** rng.uniform(-3, -1)
        out.append((tones + noise) * (0.5 if i % 2 else 1.0))
    return np.stack(out).astype(np.float32)


def organisers(sr_in: int) -> torch.nn.Module:
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=32000, n_fft=4096, win_length=3072, hop_length=500,
                                               n_mels=256, f_min=0.0, f_max=None)
    return torch.nn.Sequential(torchaudio.transforms.Resample(sr_in, 32000), mel) if sr_in != 32000 else mel


def main() -> dict:
    result = {"torch": torch.__version__, "torchaudio": torchaudio.__version__, "cpu": platform.processor()}
    x32 = clips(32000)
    with torch.no_grad():
        ref = torch.log(organisers(32000)(torch.from_numpy(x32)) + 1e-5).numpy()  # (clips, 256, 65)
        ours_torch = LogMel(D24_PARAMS)(torch.from_numpy(x32)[:, None])[:, 0].numpy()
    ours_numpy = np.stack([log_mel(c[None], D24_PARAMS)[0] for c in x32])
    loud = ref > np.log(1e-3 + 1e-5)  # bands that hold signal (the librosa test's criterion)
    for name, ours in (("numpy", ours_numpy), ("torch", ours_torch)):
        d = np.abs(ours - ref)
        result[f"32k_{name}_max_abs"] = float(d.max())
        result[f"32k_{name}_max_abs_loud_bands"] = float(d[loud].max())
        result[f"32k_{name}_mean_abs"] = float(d.mean())
    # 44.1 kHz: edgeasc resamples with soxr HQ, the organisers with torchaudio's windowed sinc
    x44 = clips(44100)
    with torch.no_grad():
        ref44 = torch.log(organisers(44100)(torch.from_numpy(x44)) + 1e-5).numpy()
    ours44 = np.stack([log_mel(resample(c[None], 44100, 32000), D24_PARAMS)[0] for c in x44])
    d = np.abs(ours44 - ref44)
    # the two resamplers differ most near Nyquist (their transition bands): report the bands whose
    # upper edge is at most 14 kHz apart (HTK mel scale, 256 bands from 0 to 16 kHz)
    mel_points = np.linspace(0.0, 2595.0 * np.log10(1.0 + 16000.0 / 700.0), 258)
    upper_hz = 700.0 * (10.0 ** (mel_points[2:] / 2595.0) - 1.0)
    below = upper_hz <= 14000.0
    result["44k_resampled_max_abs"] = float(d.max())
    result["44k_resampled_mean_abs"] = float(d.mean())
    result["44k_bands_up_to_14kHz"] = int(below.sum())
    result["44k_resampled_max_abs_up_to_14kHz"] = float(d[:, below].max())
    result["44k_resampled_mean_abs_up_to_14kHz"] = float(d[:, below].mean())
    return result


if __name__ == "__main__":
    json.dump(main(), sys.stdout, indent=2)
    print()
