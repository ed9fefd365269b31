"""Run inside a venv with torchaudio (see bench_resampler.py): a trained d24 ONNX model's
decisions on 44.1 kHz clips resampled three ways: by edgeasc's soxr HQ (runtime/audio.resample),
by edgeasc's numpy port of torchaudio's sinc resampler (runtime/sinc.resample_sinc), and by
torchaudio's Resample itself (the organisers' pipeline, the reference). Also the port's largest
sample difference to torchaudio, and the three resamplers' time on a 10-s stereo clip, 1 thread.

argv: MODEL.onnx CLIP.wav ... ; prints JSON: top-1 agreements and probability differences."""

from __future__ import annotations

import json
import platform
import sys
import time

import numpy as np
import soundfile as sf
import torch
import torchaudio

from edgeasc.runtime.audio import resample
from edgeasc.runtime.bench import machine
from edgeasc.runtime.deployed import load_model
from edgeasc.runtime.features import log_mel
from edgeasc.runtime.inputs import softmax
from edgeasc.runtime.sinc import resample_sinc

REPEATS = 30


def timing(to32k) -> dict:
    """Median and 5th percentile ms per 10-s stereo clip at 44.1 kHz, the three alternating."""
    torch.set_num_threads(1)
    x = (0.3 * np.random.default_rng(0).standard_normal((2, 441000))).astype(np.float32)
    xt = torch.from_numpy(x)
    runs = {"soxr": lambda: resample(x, 44100, 32000), "sinc": lambda: resample_sinc(x, 44100, 32000),
            "torchaudio": lambda: to32k(xt)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        for f in runs.values():
            f()
        for _ in range(REPEATS):
            for k, f in runs.items():
                t0 = time.perf_counter()
                f()
                times[k].append(1000 * (time.perf_counter() - t0))
    return {k: {"median_ms": float(np.median(v)), "p5_ms": float(np.percentile(v, 5))} for k, v in times.items()}


def main(model_path: str, clips: list[str]) -> dict:
    model = load_model(model_path)
    params = model.feature_params
    to32k = torchaudio.transforms.Resample(44100, params.sample_rate)
    n = params.n_samples()
    feats: dict[str, list[np.ndarray]] = {"soxr": [], "sinc": [], "torchaudio": []}
    max_sample_diff = 0.0
    for path in clips:
        x, sr = sf.read(path, dtype="float32", always_2d=True)
        assert sr == 44100, path
        x = np.ascontiguousarray(x.T)
        with torch.no_grad():
            ref = to32k(torch.from_numpy(x)).numpy()
        ys = {"soxr": resample(x, sr, params.sample_rate), "sinc": resample_sinc(x, sr, params.sample_rate),
              "torchaudio": ref}
        assert ys["sinc"].shape == ref.shape
        max_sample_diff = max(max_sample_diff, float(np.abs(ys["sinc"] - ref).max()))
        for k, y in ys.items():
            y = y[:, :n] if y.shape[1] >= n else np.pad(y, ((0, 0), (0, n - y.shape[1])))
            feats[k].append(model.normalize(log_mel(y, params)))
    p = {k: softmax(model.run(np.stack(v).astype(np.float32))) for k, v in feats.items()}
    q = p["torchaudio"]

    def agree(k: str) -> dict:
        return {"top1_agreement": float((p[k].argmax(1) == q.argmax(1)).mean()),
                "max_abs_probability_difference": float(np.abs(p[k] - q).max()),
                "mean_abs_probability_difference": float(np.abs(p[k] - q).mean())}

    sinc = agree("sinc")
    return {"clips": len(clips), **agree("soxr"),  # soxr vs torchaudio, the keys as before
            "sinc_top1_agreement": sinc["top1_agreement"],
            "sinc_max_abs_probability_difference": sinc["max_abs_probability_difference"],
            "sinc_mean_abs_probability_difference": sinc["mean_abs_probability_difference"],
            "sinc_max_abs_sample_difference": max_sample_diff,
            "timing_10s_stereo": timing(to32k), "timing_cpu": machine()["cpu"],
            "torch": torch.__version__, "torchaudio": torchaudio.__version__, "python": platform.python_version()}


if __name__ == "__main__":
    json.dump(main(sys.argv[1], sys.argv[2:]), sys.stdout)
    print()
