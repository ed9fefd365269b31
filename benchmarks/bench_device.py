"""The paper's networks as exported files on this CPU: size, MACs, onnxruntime latency at 1 and
2 threads against PyTorch eager on the same (folded) network in the same run, the share of the
machine's convolution limit each reaches, int8 vs fp32, and predict's overhead per clip.

Weights are synthetic (no trained DCASE network can be made here): every conv at the
1/sqrt(fan-in) scale of its initialisation, pruned networks pruned by the paper's global
magnitude rule. Latency does not depend on the values (dense kernels); int8 agreement is
measured on the synthetic set's evaluate clips, which with random weights says only that
quantisation keeps the argmax; `bench_int8` measures it on a trained network.

The compute limit: onnxruntime, 1 thread, a large 3x3 conv (128 -> 128 channels on 128 x 215),
measured in the same run: limit latency = network MACs / that conv's MACs per second.

Set EDGEASC_BENCH_NETWORKS=name,name to measure a subset while iterating.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgeasc.compress.pruning import Pruner
from edgeasc.data.cache import extract_features
from edgeasc.data.dcase import open_dataset
from edgeasc.data.synth import default_dataset, write_dataset
from edgeasc.export.clips import calibration_features
from edgeasc.export.fold import fold_model
from edgeasc.export.pipeline import export_checkpoint
from edgeasc.models import ModelConfig, build_model, get_preset
from edgeasc.models.complexity import analyse
from edgeasc.runtime.bench import bench_models
from edgeasc.runtime.features import FeatureParams
from edgeasc.train.checkpoint import load_checkpoint, save_checkpoint

HERE = Path(__file__).resolve().parent
AUTHORS_D20 = ModelConfig(rho=4, width=64, depth_restriction=(0, 2, 4), n_classes=3, in_channels=2)
NETWORKS = {  # name -> (config, prune target)
    "d20-cp-resnet": (get_preset("d20-cp-resnet").config, None),
    "d20-damped": (get_preset("d20-damped").config, None),
    "d20-damped-restricted": (get_preset("d20-damped-restricted").config, None),
    "d20-damped-decomp": (get_preset("d20-damped-decomp").config, None),
    "d20-damped-pruned-250k": (get_preset("d20-damped").config, 250_000),
    "d20-authors-rho4-w64": (AUTHORS_D20, None),
    "d18-cp-resnet": (get_preset("d18-cp-resnet").config, None),
    "d18-damped": (get_preset("d18-damped").config, None),
    "d18-damped-restricted": (get_preset("d18-damped-restricted").config, None),
    "d18-damped-decomp": (get_preset("d18-damped-decomp").config, None),
    "d18-damped-pruned-400k": (get_preset("d18-damped").config, 400_000),
}
PRECISIONS = ("fp32", "fp16", "int8")
RUNS, WARMUP = 10, 2


def synthetic_network(config: ModelConfig, target: int | None) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.normal_(0, math.sqrt(2 / m.weight[0].numel()))
    if target:
        pruner = Pruner(model, target=target, epochs=0)
        pruner.update(0)
        pruner.finalize()
    return model.eval()


def authors_checkpoint(tmp: Path) -> Path:
    """The authors' DCASE'20 network (synthetic weights) as a checkpoint with a plausible
    normalisation, for benchmarks that need an exported file without a dataset."""
    model = synthetic_network(AUTHORS_D20, None)
    params = FeatureParams()
    ckpt = tmp / "authors.pt"
    save_checkpoint(ckpt, {"model_config": model.config.to_dict(), "labels": ["indoor", "outdoor", "transportation"],
                           "feature_params": params.to_dict(), "channels": 2,
                           "normalization": {"mean": [-30.0] * params.n_mels, "std": [10.0] * params.n_mels},
                           "model": model.state_dict(), "epoch": 0, "kind": "final"})
    return ckpt


def eager_ms(model: torch.nn.Module, shape: tuple[int, ...], threads: int = 1) -> float:
    """PyTorch eager, the folded network (no damping multiply, no BatchNorm): its best case."""
    torch.set_num_threads(threads)
    folded = fold_model(model)
    x = torch.randn(*shape)
    with torch.inference_mode():
        for _ in range(WARMUP):
            folded(x)
        times = []
        for _ in range(RUNS):
            t0 = time.perf_counter()
            folded(x)
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def conv_limit(tmp: Path) -> dict:
    """MACs per second onnxruntime reaches on one large 3x3 conv with 1 thread."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c, h, w = 128, 128, 215
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((c, c, 3, 3)).astype(np.float32) * 0.03,
                                     "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, h, w])], [weight])
    path = tmp / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    macs = c * c * 9 * h * w
    r = bench_models([path], threads=(1,), runs=RUNS, warmup=WARMUP, seconds=10.0)["results"][0]
    return {"macs": macs, "ms": r["latency_ms"]["p50"], "gmacs_per_s": macs / r["latency_ms"]["p50"] / 1e6}


def datasets(tmp: Path) -> dict[int, Path]:
    """Synthetic sets to calibrate int8 with: 3 classes (DCASE'20 shapes), 10 classes (DCASE'18)."""
    d3 = default_dataset(tmp, progress=False)
    d10 = tmp / "synthetic10"
    write_dataset(d10, classes=10, clips_per_class=8, seconds=10.0, force=True, progress=False)
    return {3: d3, 10: d10}


def write_network_checkpoint(path: Path, model: torch.nn.Module, dataset_dir: Path, cache: Path) -> Path:
    dataset = open_dataset(dataset_dir)
    params = FeatureParams()
    fc, _ = extract_features(dataset, params, channels=model.config.in_channels, root=cache, progress=False)
    save_checkpoint(path, {"model_config": model.config.to_dict(), "labels": dataset.labels,
                           "feature_params": params.to_dict(), "channels": model.config.in_channels,
                           "normalization": fc.manifest["normalization"], "model": model.state_dict(),
                           "epoch": 0, "kind": "final"})
    return path


def agreement(a: Path, b: Path, features: np.ndarray) -> float:
    import onnxruntime as ort

    def predict(p):
        s = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        return np.concatenate([s.run(None, {"features": features[i:i + 16]})[0].argmax(1)
                               for i in range(0, len(features), 16)])

    return float((predict(a) == predict(b)).mean())


def predict_overhead(model_path: Path, tmp: Path) -> dict:
    """Decode + resample + frontend + normalise per 10 s clip vs the model's own latency, one
    thread, in a fresh process; a 48 kHz stereo 24-bit WAV and a 22.05 kHz stereo one."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    wavs = {}
    for sr, subtype in ((48000, "PCM_24"), (22050, "PCM_16")):
        x = 0.1 * rng.standard_normal((10 * sr, 2)).astype(np.float32)
        wavs[sr] = tmp / f"clip{sr}.wav"
        sf.write(str(wavs[sr]), x, sr, subtype=subtype)
    code = f"""
import json, statistics, time
from edgeasc.runtime.deployed import load_model
from edgeasc.runtime.predict import model_inputs
m = load_model({str(model_path)!r}, threads=1)
out = {{}}
for sr, wav in {json.dumps({k: str(v) for k, v in wavs.items()})}.items():
    x, _, _ = model_inputs(m, wav)
    times = []
    for _ in range({RUNS}):
        t0 = time.perf_counter(); model_inputs(m, wav); times.append(time.perf_counter() - t0)
    out[sr] = 1e3 * statistics.median(times)
for _ in range({WARMUP}):
    m.run(x)
times = []
for _ in range({RUNS}):
    t0 = time.perf_counter(); m.run(x); times.append(time.perf_counter() - t0)
out["model"] = 1e3 * statistics.median(times)
print(json.dumps(out))
"""
    env = {**os.environ, **{k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"model_ms": r["model"], "frontend_ms_48k": r["48000"], "frontend_ms_22k": r["22050"],
            "overhead_48k": r["48000"] / r["model"], "overhead_22k": r["22050"] / r["model"]}


def run() -> dict:
    wanted = os.environ.get("EDGEASC_BENCH_NETWORKS")
    names = [n for n in NETWORKS if not wanted or n in wanted.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        limit = conv_limit(tmp)
        data = datasets(tmp)
        overhead = None
        for name in names:
            config, target = NETWORKS[name]
            model = synthetic_network(config, target)
            stats = analyse(model)
            dataset_dir = data[config.n_classes]
            ckpt = write_network_checkpoint(tmp / f"{name}.pt", model, dataset_dir, tmp)
            files = {}
            for precision in PRECISIONS:
                files[precision] = tmp / f"{name}-{precision}.onnx"
                t0 = time.perf_counter()
                r = export_checkpoint(ckpt, files[precision], precision=precision,
                                      calibration=dataset_dir if precision == "int8" else None,
                                      cache_dir=tmp, force=True)
                rows.append({"network": name, "precision": precision, "params": stats.params,
                             "nonzero": stats.nonzero_params, "macs": stats.macs,
                             "counted_bytes": r["report"]["counted_bytes"], "file_bytes": r["bytes"],
                             "export_seconds": time.perf_counter() - t0})
            bench = bench_models([files[p] for p in PRECISIONS], threads=(1, 2), runs=RUNS, warmup=WARMUP)["results"]
            shape = (1, config.in_channels, 256, FeatureParams().n_frames())
            eager = eager_ms(model, shape)
            _, eval_x, _ = calibration_features(load_checkpoint(ckpt), dataset_dir, tmp)
            for row in rows[-len(PRECISIONS):]:
                lat = {r["threads"]: r["latency_ms"]["p50"] for r in bench if r["model"] == str(files[row["precision"]])}
                row.update({"ort_ms_1": lat[1], "ort_ms_2": lat[2], "eager_ms_1": eager,
                            "eager_over_ort": eager / lat[1],
                            "of_limit": (row["macs"] / limit["gmacs_per_s"] / 1e6) / lat[1]})
            fp32 = rows[-len(PRECISIONS)]
            for row in rows[-len(PRECISIONS):]:
                row["speedup_vs_fp32"] = fp32["ort_ms_1"] / row["ort_ms_1"]
                row["top1_agreement_vs_fp32"] = agreement(files["fp32"], files[row["precision"]], eval_x)
                row["agreement_clips"] = len(eval_x)
            if name == "d20-authors-rho4-w64":
                overhead = predict_overhead(files["fp32"], tmp)
            torch.set_num_threads(len(os.sched_getaffinity(0)))
    plot_latency(rows, HERE / "latency_vs_nonzero.png")
    return {"conv_limit": limit, "rows": rows, "predict_overhead": overhead, "runs": RUNS, "warmup": WARMUP}


def plot_latency(rows: list[dict], path: Path) -> None:
    from edgeasc.train.plots import pyplot, save_png

    fig, ax = pyplot().subplots(figsize=(7.5, 4.8))
    for precision, marker in (("fp32", "o"), ("fp16", "s"), ("int8", "^")):
        pts = [r for r in rows if r["precision"] == precision]
        ax.scatter([r["nonzero"] for r in pts], [r["ort_ms_1"] for r in pts], marker=marker, label=f"onnxruntime {precision}")
    eager = [r for r in rows if r["precision"] == "fp32"]
    ax.scatter([r["nonzero"] for r in eager], [r["eager_ms_1"] for r in eager], marker="x", color="k",
               label="PyTorch eager fp32")
    for r in eager:
        ax.annotate(r["network"], (r["nonzero"], r["ort_ms_1"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("non-zero parameters")
    ax.set_ylabel("ms per 10 s clip, 1 thread")
    ax.set_title("Latency vs non-zero parameters: pruning shrinks the file, not the compute")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    save_png(fig, path)


def markdown(r: dict) -> str:
    lim = r["conv_limit"]
    lines = ["## On the device side: exported networks under onnxruntime vs PyTorch eager", "",
             f"Compute limit (same run): onnxruntime, 1 thread, a 128→128 3×3 conv on 128×215 runs "
             f"{lim['gmacs_per_s']:.1f} GMAC/s ({2 * lim['gmacs_per_s']:.1f} GFLOP/s). *of limit* = "
             "(MACs / that rate) / measured latency. Latency = median of "
             f"{r['runs']} runs after {r['warmup']} warm-up, per 10 s clip, batch 1, each model in a fresh "
             "process (`edgeasc bench`); eager = PyTorch on the folded network, 1 thread, same run. Synthetic "
             "weights (see `bench_device.py`); counted bytes under dcase2020 (BN out).", "",
             "| network | precision | params | non-zero | counted B | file B | MACs | ORT 1 thr ms | ORT 2 thr ms | "
             "eager 1 thr ms | eager / ORT | of limit | vs fp32 | top-1 = fp32 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in r["rows"]:
        lines.append(
            f"| {row['network']} | {row['precision']} | {row['params']:,} | {row['nonzero']:,} | "
            f"{row['counted_bytes']:,} | {row['file_bytes']:,} | {row['macs'] / 1e9:.3f} G | {row['ort_ms_1']:.1f} | "
            f"{row['ort_ms_2']:.1f} | {row['eager_ms_1']:.1f} | {row['eager_over_ort']:.2f}× | "
            f"{100 * row['of_limit']:.0f} % | {row['speedup_vs_fp32']:.2f}× | "
            f"{100 * row['top1_agreement_vs_fp32']:.1f} % |")
    lines += ["", "![latency vs non-zero parameters](latency_vs_nonzero.png)", ""]
    by = {(row["network"], row["precision"]): row for row in r["rows"]}
    checks = []
    a = by.get(("d20-authors-rho4-w64", "fp32"))
    if a:
        checks.append(f"onnxruntime vs eager, 1 thread, the authors' DCASE'20 network (ρ4 w64 \"0,2,4\"), fp32: "
                      f"**{a['eager_over_ort']:.2f}×** (target ≥ 1.5×)")
    w128 = [row for row in r["rows"] if row["precision"] == "fp32" and row["macs"] > 5e9]
    if w128:
        checks.append("w128 networks, fp32, 1 thread, share of the compute limit: " + ", ".join(
            f"{row['network']} **{100 * row['of_limit']:.0f} %**" for row in w128) + " (target ≥ 75 %)")
    int8 = [row for row in r["rows"] if row["precision"] == "int8"]
    if int8:
        checks.append("int8 vs fp32, 1 thread: " + ", ".join(
            f"{row['network']} **{row['speedup_vs_fp32']:.2f}×** ({100 * row['top1_agreement_vs_fp32']:.1f} % "
            f"top-1 agreement on {row['agreement_clips']} clips)" for row in int8) + " (target ≥ 1.4×, ≥ 99 %)")
    packed = [row for row in int8 if row["nonzero"] < row["params"]]
    if packed:  # magnitude-pruned: the sparse pack's int8 values and positions against the counted bytes
        checks.append("packed int8 file / counted bytes (magnitude-pruned, `--sparse auto`, dcase2020 counting): "
                      + ", ".join(f"{row['network']} **{row['file_bytes'] / row['counted_bytes']:.3f}×** "
                                  f"({row['file_bytes']:,} / {row['counted_bytes']:,})" for row in packed)
                      + " (target ≤ 1.6×; the file also holds the graph, the metadata and each tensor's "
                        "positions, which the rules do not count)")
    o = r.get("predict_overhead")
    if o:
        checks.append(f"predict overhead per 10 s clip (decode + resample + frontend, 1 thread) vs the authors' "
                      f"network fp32 ({o['model_ms']:.1f} ms): 48 kHz stereo 24-bit {o['frontend_ms_48k']:.1f} ms = "
                      f"**{100 * o['overhead_48k']:.0f} %** (target ≤ 50 %), 22.05 kHz {o['frontend_ms_22k']:.1f} ms = "
                      f"**{100 * o['overhead_22k']:.0f} %** (target ≤ 25 %)")
    lines += ["Against the targets:", ""] + [f"- {c}" for c in checks]
    return "\n".join(lines + [""])


if __name__ == "__main__":
    print(markdown(run()))
