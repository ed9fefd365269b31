"""The DCASE 2024/25 baselines' log-mel (`--frontend d24`) per 1-s clip: the torch-free runtime's
numpy implementation vs the torch path (torch.stft + the dense mel matmul + log, as
train/frontend.LogMel and torchaudio's MelSpectrogram compute it), one thread each, timed
alternately on the same clips; and how much the resampler moves the features: 44.1 kHz -> 32 kHz
with edgeasc's soxr (HQ) vs a windowed-sinc polyphase filter (scipy.signal.resample_poly, Kaiser
window) standing in for torchaudio's sinc resampler, the log-mel of both compared.

Run alone: `python benchmarks/bench_logmel.py`; in RESULTS.md: `python benchmarks/run.py logmel`.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from edgeasc.data.synth import RECIPES, mix_scene  # noqa: E402
from edgeasc.runtime import audio  # noqa: E402
from edgeasc.runtime.features import D24_PARAMS, hz_to_mel, log_mel, mel_to_hz  # noqa: E402

N_CLIPS = 8
ROUNDS = 25
COMMAND = "python benchmarks/run.py logmel"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def clips(rate: int, seed: int) -> list[np.ndarray]:
    """1-s mono scenes at `rate`, one per scene kind in turn, peak 0.5."""
    rng = np.random.default_rng(seed)
    scenes = sorted(RECIPES)
    out = []
    for i in range(N_CLIPS):
        x = mix_scene(rng, scenes[i % len(scenes)], rate, rate, channels=1)
        out.append((0.5 * x / np.abs(x).max()).astype(np.float32))
    return out


def timing() -> dict:
    import torch

    from edgeasc.train.frontend import LogMel

    torch.set_num_threads(1)
    module = LogMel(D24_PARAMS).eval()  # its constants built once, as a deployed frontend holds them
    waves = clips(32000, seed=24)
    tensors = [torch.from_numpy(x)[None] for x in waves]
    numpy_ms, torch_ms, worst = [], [], 0.0
    with torch.no_grad():
        for x, t in zip(waves, tensors, strict=True):  # warm-up, and the two agree
            worst = max(worst, float(np.abs(log_mel(x) - module(t).numpy()[0]).max()))
        for _ in range(ROUNDS):
            for x, t in zip(waves, tensors, strict=True):  # alternated: both see the same machine load
                t0 = time.perf_counter()
                log_mel(x)
                t1 = time.perf_counter()
                module(t)
                t2 = time.perf_counter()
                numpy_ms.append(1e3 * (t1 - t0))
                torch_ms.append(1e3 * (t2 - t1))
    n, t = statistics.median(numpy_ms), statistics.median(torch_ms)
    return {"numpy_ms": n, "torch_ms": t, "speedup": t / n, "max_abs_numpy_vs_torch": worst,
            "runs": len(numpy_ms), "torch": torch.__version__}


def resampler_difference() -> dict:
    """Log-mel of soxr-resampled vs resample_poly-resampled 44.1 kHz clips."""
    from scipy.signal import resample_poly

    diffs = []
    for x in clips(44100, seed=44):
        soxr_32k = audio.resample(x, 44100, 32000)
        sinc_32k = audio.fit_length(resample_poly(x, 320, 441, axis=-1).astype(np.float32), 32000)
        diffs.append(np.abs(log_mel(soxr_32k) - log_mel(sinc_32k))[0])  # (256, 65)
    d = np.stack(diffs)  # clips, bands, frames
    p = D24_PARAMS
    centres = mel_to_hz(np.linspace(hz_to_mel(p.fmin, True), hz_to_mel(p.fmax, True), p.n_mels + 2), True)[1:-1]
    low = centres < 14000.0
    per_band = d.mean(axis=(0, 2))
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
            "max_abs_below_14k": float(d[:, low].max()), "mean_abs_below_14k": float(d[:, low].mean()),
            "bands_below_14k": int(low.sum()), "worst_band": int(per_band.argmax()),
            "worst_band_hz": float(centres[per_band.argmax()]), "worst_band_mean_abs": float(per_band.max()),
            "clips": len(diffs)}


def run() -> dict:
    return {"cpu": cpu_name(), "command": COMMAND, "timing": timing(), "resampler": resampler_difference()}


def markdown(r: dict) -> str:
    t, s = r["timing"], r["resampler"]
    return "\n".join([
        "## The DCASE 2024/25 baselines' log-mel (`--frontend d24`): numpy runtime vs torch",
        "",
        f"Command: `{r['command']}` on {r['cpu']} (from /proc/cpuinfo). 1-s mono clips at 32 kHz "
        f"({N_CLIPS} synthetic scenes), 4096-point FFT of a 3072-sample Hann window, hop 500, 256 HTK mel "
        "bands, log(x + 1e-5) → 256×65; one thread each (torch.set_num_threads(1), single-threaded "
        f"BLAS); the two timed alternately on the same clips, {t['runs']} runs each; medians.",
        "",
        "| implementation | ms per 1-s clip (1 thread) |",
        "|---|---:|",
        f"| torch {t['torch']}: torch.stft + dense mel matmul + log (train/frontend.LogMel) | {t['torch_ms']:.3f} |",
        f"| edgeasc runtime, numpy: scipy rfft of the 3072 window's samples + banded mel + log | {t['numpy_ms']:.3f} |",
        "",
        f"**numpy is {t['speedup']:.2f}× faster** (goal ≥ 1.5×). Max abs difference between the two: "
        f"{t['max_abs_numpy_vs_torch']:.1e} (log domain).",
        "",
        f"Resampling 44.1 kHz → 32 kHz, {s['clips']} 1-s scenes: the log-mel after edgeasc's soxr (HQ) vs after a "
        "windowed-sinc polyphase filter (scipy.signal.resample_poly(x, 320, 441), Kaiser window; a stand-in for "
        f"torchaudio's sinc resampler): max abs difference **{s['max_abs']:.3f}**, mean **{s['mean_abs']:.4f}** "
        f"(log domain, all 256 bands); below 14 kHz ({s['bands_below_14k']} bands) max {s['max_abs_below_14k']:.3f}, "
        f"mean {s['mean_abs_below_14k']:.4f}. The largest mean difference is in band {s['worst_band']} "
        f"({s['worst_band_hz']:.0f} Hz, {s['worst_band_mean_abs']:.3f}): the two filters' transition bands below "
        "Nyquist differ, the passband agrees.",
        "",
    ])


if __name__ == "__main__":
    import json

    result = run()
    print(json.dumps(result, indent=2))
    print(markdown(result))
