"""Section `resampler`: does edgeasc's resampler (soxr HQ) change a trained d24 model's
decisions, against the organisers' torchaudio Resample(44100, 32000)?

A cp-mobile-d24 network (its own 32 kHz log-mel) is trained on the synthetic TAU 2022 profile
(EDGEASC_BENCH_CLIPS clips per class, default 100; EDGEASC_RESAMPLER_EPOCHS epochs, default 10;
the profile's batch 32 and schedule), exported fp32, and every evaluate clip (44.1 kHz, 1 s) is
classified twice by onnxruntime: resampled by soxr, and by torchaudio. The second half runs
benchmarks/resampler_check.py in a venv with torchaudio (EDGEASC_TORCHAUDIO_PYTHON, default
/tmp/ta/bin/python, with onnxruntime installed too): see bench_torchaudio.py.
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
EPOCHS = int(os.environ.get("EDGEASC_RESAMPLER_EPOCHS", 10))


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
                              capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONPATH": str(HERE.parent), "OMP_NUM_THREADS": "1"})
        check = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"clips_per_class": CLIPS, "epochs": EPOCHS, "accuracy": s["final"]["accuracy"],
            "macro_accuracy": s["final"].get("macro_accuracy"), "train_seconds": train_s, **check}


def markdown(r: dict) -> str:
    agree = 100 * r["top1_agreement"]
    verdict = "meets" if agree >= 99 else "misses"
    return f"""## Resampling 44.1 → 32 kHz: soxr (edgeasc) vs torchaudio, on a trained d24 model

Command: `.venv/bin/python benchmarks/run.py resampler` (needs the torchaudio venv of section `torchaudio`, with onnxruntime). The network is `cp-mobile-d24` on its own 32 kHz log-mel, trained {r['epochs']} epochs on the synthetic TAU 2022 profile ({r['clips_per_class']} clips per class; batch 32, seed 0). Its accuracy is {100 * r['accuracy']:.1f} % and its macro accuracy {100 * (r['macro_accuracy'] or 0):.1f} %. The network was exported fp32. Each of the {r['clips']:,} evaluate clips (1 s, 44.1 kHz) is classified twice by onnxruntime, once resampled by soxr HQ (edgeasc), once by `torchaudio.transforms.Resample(44100, 32000)` (the organisers' pipeline). The rest of the path is the same.

Top-1 agreement: **{agree:.2f} %**, which {verdict} the goal of ≥ 99 %. Probability difference: max {r['max_abs_probability_difference']:.3g}, mean {r['mean_abs_probability_difference']:.2g}.
"""
