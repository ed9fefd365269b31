"""int8 on a trained network: the width-16 demo network trained on the synthetic TAU 2022
profile with the recipe of bench_dcase2022 (seed 0), exported fp32 and int8 (static QDQ,
calibrated on 64 of its own training clips); top-1 agreement and accuracy, seen and unseen
devices, on every evaluate clip (2,400), and the int8 speed-up (onnxruntime, 1 thread).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from bench_dcase2022 import CLIPS_PER_CLASS, RECIPE

from edgeasc.data.synth2022 import UNSEEN, write_dataset_2022
from edgeasc.export.clips import calibration_features
from edgeasc.export.pipeline import export_checkpoint
from edgeasc.runtime.bench import bench_models
from edgeasc.train.checkpoint import find_checkpoint, load_checkpoint
from edgeasc.train.config import resolve_train_config
from edgeasc.train.run import train


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "data"
        write_dataset_2022(data, CLIPS_PER_CLASS, progress=False)
        run_dir = tmp / "run"
        t0 = time.perf_counter()
        train(resolve_train_config({**RECIPE, "prune_ratio": 0.0, "width": 16, "seed": 0, "dataset": str(data),
                                    "cache_dir": str(tmp), "out": str(run_dir)}), force=True, progress=False)
        train_s = time.perf_counter() - t0
        files = {p: tmp / f"w16-{p}.onnx" for p in ("fp32", "int8")}
        for precision, path in files.items():
            export_checkpoint(run_dir, path, precision=precision)
        ckpt = load_checkpoint(find_checkpoint(run_dir))
        _, eval_x, eval_y = calibration_features(ckpt, None, tmp)
        from edgeasc.data.cache import find_cache
        from edgeasc.data.dcase import open_dataset
        from edgeasc.runtime.features import FeatureParams

        cache = find_cache(open_dataset(data), FeatureParams(**ckpt["feature_params"]), ckpt["channels"], tmp)
        unseen = np.array([d in UNSEEN for d in cache.devices("evaluate")])
        preds = {p: _predict(path, eval_x) for p, path in files.items()}
        bench = bench_models(list(files.values()), threads=(1,), runs=50, warmup=5)["results"]

    def acc(p, mask):
        return float((preds[p][mask] == eval_y[mask]).mean())

    return {"clips": len(eval_y), "train_seconds": train_s,
            "agreement": float((preds["fp32"] == preds["int8"]).mean()),
            **{f"accuracy_{p}_{g}": acc(p, m) for p in files for g, m in
               (("all", np.ones_like(unseen)), ("seen", ~unseen), ("unseen", unseen))},
            "ms_fp32": bench[0]["latency_ms"]["p50"], "ms_int8": bench[1]["latency_ms"]["p50"]}


def _predict(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, {"features": x[i:i + 64]})[0].argmax(1) for i in range(0, len(x), 64)])


def markdown(q: dict) -> str:
    rows = ["| precision | all clips | seen-device clips | unseen-device clips | latency, 1 thread |",
            "|---|---:|---:|---:|---:|"]
    for p in ("fp32", "int8"):
        rows.append(f"| {p} | {100 * q[f'accuracy_{p}_all']:.1f} % | {100 * q[f'accuracy_{p}_seen']:.1f} % | "
                    f"{100 * q[f'accuracy_{p}_unseen']:.1f} % | {q[f'ms_{p}']:.3f} ms |")
    return "\n".join([
        "## int8 on a trained network (synthetic TAU 2022 profile)", "",
        "The width-16 demo network trained with the DCASE 2022-style recipe (seed 0, "
        f"{q['train_seconds']:.0f} s), exported fp32 and int8 (static QDQ, calibrated on 64 of its training clips), "
        f"both run by onnxruntime on all {q['clips']:,} evaluate clips (accuracy pooled over clips). Top-1 agreement "
        f"int8 vs fp32: **{100 * q['agreement']:.1f} %**; int8 speed-up at 1 thread "
        f"**{q['ms_fp32'] / q['ms_int8']:.2f}×** (per 1-s clip).", "", *rows, ""])


if __name__ == "__main__":
    print(markdown(run()))
