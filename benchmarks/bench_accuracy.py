"""Accuracy vs non-zero parameters on the synthetic scenes (the shape of the paper's Fig. 4):
small damped CP-ResNets made smaller two ways, by width (dense) and by magnitude pruning of
the width-16 network to a parameter target; each trained with the demo recipe. Then the
trained width-16 pruned network exported fp32 and int8 (static QDQ, calibrated on its own
training clips): top-1 agreement and accuracy on every evaluate clip, and the int8 speed-up.

The synthetic task is easy (3 classes, 180 clips); these numbers show the trade-off's shape on
this machine, not DCASE accuracies.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeasc.bench import bench_models
from edgeasc.checkpoint import find_checkpoint, load_checkpoint
from edgeasc.data.synth import default_dataset
from edgeasc.export.clips import calibration_features
from edgeasc.export.pipeline import export_checkpoint
from edgeasc.train import train
from edgeasc.train_config import DEMO_DEFAULTS, resolve_train_config

HERE = Path(__file__).resolve().parent
EPOCHS = int(os.environ.get("EDGEASC_BENCH_EPOCHS", 20))
# (family, width, prune target): the demo preset is ρ3, width 16, 18,022 parameters
POINTS = [("width", 6, None), ("width", 10, None), ("width", 16, None),
          ("pruned", 16, 12_000), ("pruned", 16, 8_500), ("pruned", 16, 5_000), ("pruned", 16, 3_000)]


def run() -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = default_dataset(tmp, progress=False)
        for family, width, target in POINTS:
            out = tmp / f"{family}-{width}-{target}"
            cfg = resolve_train_config({**DEMO_DEFAULTS, "dataset": str(data), "cache_dir": str(tmp), "out": str(out),
                                        "width": width, "prune_target": target, "prune_ratio": None if target else 0.0,
                                        "epochs": EPOCHS, "lr_hold": 7, "lr_decay_end": EPOCHS,
                                        "prune_epochs": EPOCHS // 2})
            t0 = time.perf_counter()
            summary = train(cfg, force=True, progress=False)
            rows.append({"family": family, "width": width, "target": target, "params": summary["params"],
                         "nonzero": summary["nonzero_params"], "accuracy": summary["reported_accuracy"],
                         "final_accuracy": summary["final"]["accuracy"], "seconds": time.perf_counter() - t0})
        run_dir = tmp / "pruned-16-8500"
        files = {p: tmp / f"demo-{p}.onnx" for p in ("fp32", "int8")}
        for precision, path in files.items():
            export_checkpoint(run_dir, path, precision=precision)
        _, eval_x, eval_y = calibration_features(load_checkpoint(find_checkpoint(run_dir)), data, tmp)
        preds = {p: _predict(path, eval_x) for p, path in files.items()}
        bench = bench_models(list(files.values()), threads=(1,), runs=50, warmup=5)["results"]
        int8 = {"clips": len(eval_y), "agreement": float((preds["fp32"] == preds["int8"]).mean()),
                "accuracy_fp32": float((preds["fp32"] == eval_y).mean()),
                "accuracy_int8": float((preds["int8"] == eval_y).mean()),
                "ms_fp32": bench[0]["latency_ms"]["p50"], "ms_int8": bench[1]["latency_ms"]["p50"]}
    plot(rows, HERE / "accuracy_vs_nonzero.png")
    return {"epochs": EPOCHS, "rows": rows, "int8": int8}


def _predict(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, {"features": x[i:i + 16]})[0].argmax(1) for i in range(0, len(x), 16)])


def plot(rows: list[dict], path: Path) -> None:
    from edgeasc.plots import pyplot, save_png

    fig, ax = pyplot().subplots(figsize=(6.5, 4.2))
    for family, marker, label in (("width", "o-", "width-restricted (dense)"), ("pruned", "s-", "width 16, pruned")):
        pts = sorted((r for r in rows if r["family"] == family), key=lambda r: r["nonzero"])
        ax.plot([r["nonzero"] for r in pts], [100 * r["accuracy"] for r in pts], marker, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("non-zero parameters")
    ax.set_ylabel("accuracy % (mean of the last 10 epochs)")
    ax.set_title("Synthetic scenes: accuracy vs non-zero parameters")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_png(fig, path)


def markdown(r: dict) -> str:
    lines = ["## Accuracy vs non-zero parameters (synthetic scenes, the shape of the paper's Fig. 4)", "",
             f"Each network trained {r['epochs']} epochs with the demo recipe (batch 8, Adam, mixup, roll) on the "
             "built-in 3-class synthetic set (126 train / 52 evaluate clips of 10 s); accuracy = mean evaluate "
             "accuracy over the last 10 epochs.", "",
             "| family | width | prune target | params | non-zero | accuracy | final epoch | train time |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in r["rows"]:
        lines.append(f"| {row['family']} | {row['width']} | {row['target'] or '-'} | {row['params']:,} | "
                     f"{row['nonzero']:,} | {100 * row['accuracy']:.1f} % | {100 * row['final_accuracy']:.1f} % | "
                     f"{row['seconds']:.0f} s |")
    q = r["int8"]
    lines += ["", "![accuracy vs non-zero parameters](accuracy_vs_nonzero.png)", "",
              f"int8 (static QDQ) on the trained width-16 network pruned to 8,500: top-1 agreement with fp32 "
              f"**{100 * q['agreement']:.1f} %** on {q['clips']} evaluate clips; accuracy fp32 "
              f"{100 * q['accuracy_fp32']:.1f} % → int8 {100 * q['accuracy_int8']:.1f} %; latency 1 thread "
              f"{q['ms_fp32']:.2f} → {q['ms_int8']:.2f} ms (**{q['ms_fp32'] / q['ms_int8']:.2f}×**)."]
    return "\n".join(lines + [""])


if __name__ == "__main__":
    print(markdown(run()))
