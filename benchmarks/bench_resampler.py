"""Section `resampler`: do edgeasc's resamplers change a trained d24 model's decisions, against
the organisers' torchaudio Resample(44100, 32000)? soxr HQ (runtime/audio.resample) and the
numpy port of torchaudio's sinc resampler (runtime/sinc.resample_sinc).

A cp-mobile-d24 network (its own 32 kHz log-mel) is trained on the synthetic TAU 2022 profile
(EDGEASC_BENCH_CLIPS clips per class, default 100; EDGEASC_RESAMPLER_EPOCHS epochs, default 30;
the profile's batch 32 and schedule), exported fp32, and every evaluate clip (44.1 kHz, 1 s) is
classified three times by onnxruntime: resampled by soxr, by the port, and by torchaudio. The
second half runs benchmarks/resampler_check.py in a venv with torchaudio
(EDGEASC_TORCHAUDIO_PYTHON, default /tmp/ta/bin/python, with onnxruntime installed too: see
bench_torchaudio.py); it also times the three on a 10-s stereo clip at 1 thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLIPS = int(os.environ.get("EDGEASC_BENCH_CLIPS", 100))
EPOCHS = int(os.environ.get("EDGEASC_RESAMPLER_EPOCHS", 30))


def run() -> dict:
    from edgeasc.data.dcase import open_dataset
    from edgeasc.data.synth2022 import write_dataset_2022
    from edgeasc.export.pipeline import export_checkpoint
    from edgeasc.train.config import resolve_train_config
    from edgeasc.train.run import train

    python = os.environ.get("EDGEASC_TORCHAUDIO_PYTHON", "/tmp/ta/bin/python")
    if not Path(python).is_file():
        raise SystemExit(f"section resampler needs a Python with torchaudio and onnxruntime: {python} does not exist")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        write_dataset_2022(tmp / "data", CLIPS, progress=False)
        t0 = time.perf_counter()
        s = train(resolve_train_config({"dataset": str(tmp / "data"), "preset": "cp-mobile-d24", "epochs": EPOCHS,
                                        "batch_size": 32, "lr": 3e-3, "lr_hold": EPOCHS // 3, "lr_decay_end": EPOCHS,
                                        "lr_final": 1e-5, "seed": 0, "cache_dir": str(tmp), "out": str(tmp / "run")}),
                  force=True, progress=False)
        train_s = time.perf_counter() - t0
        export_checkpoint(tmp / "run", tmp / "m.onnx")
        clips = [str(c.path) for c in open_dataset(tmp / "data").splits["evaluate"]]
        proc = subprocess.run([python, str(HERE / "resampler_check.py"), str(tmp / "m.onnx"), *clips],
                              capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(HERE.parent), "OMP_NUM_THREADS": "1"})
        if proc.returncode:
            raise SystemExit(f"resampler_check.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        check = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"clips_per_class": CLIPS, "epochs": EPOCHS, "accuracy": s["final"]["accuracy"],
            "macro_accuracy": s["final"].get("macro_accuracy"), "train_seconds": train_s, **check}


def markdown(r: dict) -> str:
    agree = 100 * r["top1_agreement"]
    sinc = r.get("sinc_top1_agreement")
    head = f"""## Resampling 44.1 → 32 kHz: soxr and the sinc port (edgeasc) vs torchaudio, on a trained d24 model

Command: `.venv/bin/python benchmarks/run.py resampler` (needs the torchaudio venv of section `torchaudio`, with onnxruntime; `EDGEASC_TORCHAUDIO_PYTHON` names its Python). The network is `cp-mobile-d24` on its own 32 kHz log-mel, trained {r['epochs']} epochs on the synthetic TAU 2022 profile ({r['clips_per_class']} clips per class; batch 32, seed 0, {r['train_seconds'] / 60:.0f} min). Its accuracy is {100 * r['accuracy']:.1f} % and its macro accuracy {100 * (r['macro_accuracy'] or 0):.1f} %. The network was exported fp32. Each of the {r['clips']:,} evaluate clips (1 s, 44.1 kHz) is classified by onnxruntime after each resampler: soxr HQ (`edgeasc.runtime.audio.resample`), edgeasc's numpy port of torchaudio's sinc resampler (`edgeasc.runtime.sinc.resample_sinc`), and `torchaudio.transforms.Resample(44100, 32000)` itself (the organisers' pipeline, the reference). The rest of the path is the same.
"""
    if sinc is None:  # a result from before the port
        return head + f"""
Top-1 agreement: **{agree:.2f} %**, which {"meets" if agree >= 99 else "misses"} the goal of ≥ 99 %. Probability difference: max {r['max_abs_probability_difference']:.3g}, mean {r['mean_abs_probability_difference']:.2g}.
"""
    sinc *= 100
    t = r["timing_10s_stereo"]
    row = lambda k: f"{t[k]['median_ms']:.2f} | {t[k]['p5_ms']:.2f}"  # noqa: E731
    return head + f"""
| against torchaudio's Resample | top-1 agreement | max abs probability difference | mean |
|---|---:|---:|---:|
| soxr HQ | {agree:.2f} % | {r['max_abs_probability_difference']:.3g} | {r['mean_abs_probability_difference']:.2g} |
| **sinc port** | **{sinc:.2f} %** | {r['sinc_max_abs_probability_difference']:.3g} | {r['sinc_mean_abs_probability_difference']:.2g} |

The goal is ≥ 99 %: soxr {"meets" if agree >= 99 else "misses"} it, the port {"meets" if sinc >= 99 else "misses"} it. The port's largest sample difference to torchaudio over these clips: {r['sinc_max_abs_sample_difference']:.3g} (its kernels are torchaudio's bit for bit: built in float64 from float32 phase offsets, rounded once; tests/test_sinc.py pins torchaudio's numbers).

Time to resample a 10-s stereo clip 44.1 → 32 kHz, 1 thread, the three alternating ({r['timing_cpu']}; torch {r['torch']}, torchaudio {r['torchaudio']}): the port takes {t['sinc']['median_ms'] / t['soxr']['median_ms']:.2f}× soxr's time and {t['sinc']['median_ms'] / t['torchaudio']['median_ms']:.2f}× torchaudio's (medians). It skips the kernels' taps that are exactly zero (96 % of them at 441 → 320).

| resampler | ms, median | 5th percentile |
|---|---:|---:|
| soxr HQ (one call per channel) | {row('soxr')} |
| sinc port (numpy, banded float32 matmuls) | {row('sinc')} |
| torchaudio Resample (conv1d) | {row('torchaudio')} |
"""
