"""Run inside a venv with torchaudio (see bench_resampler.py): a trained d24 ONNX model's
decisions on 44.1 kHz clips resampled by edgeasc (soxr HQ) vs by torchaudio's Resample.

argv: MODEL.onnx CLIP.wav ... ; prints JSON: top-1 agreement and probability differences."""

from __future__ import annotations

import json
import sys

import numpy as np
import soundfile as sf
import torch
import torchaudio

from edgeasc.runtime.audio import resample
from edgeasc.runtime.deployed import load_model
from edgeasc.runtime.features import log_mel
from edgeasc.runtime.inputs import softmax


def main(model_path: str, clips: list[str]) -> dict:
    model = load_model(model_path)
    params = model.feature_params
    to32k = torchaudio.transforms.Resample(44100, params.sample_rate)
    n = params.n_samples()
    ours, theirs = [], []
    for path in clips:
        x, sr = sf.read(path, dtype="float32", always_2d=True)
        assert sr == 44100, path
        x = x.T
        a = resample(x, sr, params.sample_rate)
        with torch.no_grad():
            b = to32k(torch.from_numpy(np.ascontiguousarray(x))).numpy()
        for y, out in ((a, ours), (b, theirs)):
            y = y[:, :n] if y.shape[1] >= n else np.pad(y, ((0, 0), (0, n - y.shape[1])))
            out.append(model.normalize(log_mel(y, params)))
    p = softmax(model.run(np.stack(ours).astype(np.float32)))
    q = softmax(model.run(np.stack(theirs).astype(np.float32)))
    return {"clips": len(clips), "top1_agreement": float((p.argmax(1) == q.argmax(1)).mean()),
            "max_abs_probability_difference": float(np.abs(p - q).max()),
            "mean_abs_probability_difference": float(np.abs(p - q).mean())}


if __name__ == "__main__":
    json.dump(main(sys.argv[1], sys.argv[2:]), sys.stdout)
    print()
