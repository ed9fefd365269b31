"""End-to-end device latency (`edgeasc bench MODEL --clip FILE`): what a device spends per clip
on decoding, resampling, the frontend and the network, each model in a fresh torch-free-style
process, 1 thread. The authors' DCASE'20 network (ρ4 w64 "0,2,4", synthetic weights: latency
does not depend on the values), exported fp32 with the numpy frontend (scipy's FFT and numpy's)
and with the frontend in the graph (`--with-frontend`); and a 1-s DCASE 2024-style student (the
demo network at width 26, the widest that meets `--rules dcase2024` dense on 1-s mono clips,
10 classes), which decodes only its own second of the file. A 10-s 44.1 kHz stereo 16-bit WAV.
The goal: end to end at most 1.5× the network alone.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from bench_device import authors_checkpoint, synthetic_network

from edgeasc.export.pipeline import export_checkpoint
from edgeasc.models.presets import resolve_model
from edgeasc.runtime.bench import end_to_end
from edgeasc.runtime.features import FeatureParams
from edgeasc.train.checkpoint import save_checkpoint

RUNS, WARMUP = 30, 3
GOAL = 1.5
STUDENT_WIDTH = 26  # bench_budget.widest_within for 1-s mono clips, 10 classes


def student_checkpoint(tmp: Path) -> Path:
    config, _ = resolve_model("demo", width=STUDENT_WIDTH, n_classes=10, in_channels=1)
    model = synthetic_network(config, None)
    params = FeatureParams(clip_seconds=1.0)
    ckpt = tmp / "student.pt"
    save_checkpoint(ckpt, {"model_config": model.config.to_dict(), "labels": [f"scene{i}" for i in range(10)],
                           "feature_params": params.to_dict(), "channels": 1,
                           "normalization": {"mean": [-30.0] * params.n_mels, "std": [10.0] * params.n_mels},
                           "model": model.state_dict(), "epoch": 0, "kind": "final"})
    return ckpt


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ckpt = authors_checkpoint(tmp)
        plain, graph = tmp / "authors-fp32.onnx", tmp / "authors-fp32-with-frontend.onnx"
        export_checkpoint(ckpt, plain)
        export_checkpoint(ckpt, graph, with_frontend=True)
        student = tmp / "student-w26-1s.onnx"
        export_checkpoint(student_checkpoint(tmp), student)
        clip = tmp / "clip-44k1-stereo.wav"
        rng = np.random.default_rng(0)
        sf.write(str(clip), (0.1 * rng.standard_normal((441_000, 2))).astype(np.float32), 44100, subtype="PCM_16")
        rows = end_to_end([plain], clip, runs=RUNS, warmup=WARMUP, fft=("scipy", "numpy"))["results"]
        rows += end_to_end([graph, student], clip, runs=RUNS, warmup=WARMUP)["results"]
    for r, name in zip(rows, ("numpy frontend, scipy FFT", "numpy frontend, numpy FFT", "frontend in the graph",
                              "1-s student w26 (mono), numpy frontend, scipy FFT"), strict=True):
        r["name"] = name
    return {"rows": rows, "runs": RUNS, "goal": GOAL}


def markdown(r: dict) -> str:
    lines = ["## End-to-end device latency (decode → resample → frontend → network)", "",
             "`python benchmarks/run.py e2e` (each row: `edgeasc bench MODEL --clip FILE`). The authors' DCASE'20 "
             "network (ρ4 w64 \"0,2,4\", fp32, synthetic weights) and a 1-s DCASE 2024-style student (demo network "
             "width 26, mono, 10 classes: it decodes only its own first second of the file), a 10-s 44.1 kHz stereo "
             f"16-bit WAV, 1 thread, {r['runs']} runs per stage, each model in a fresh process. Goal: total ≤ "
             f"{r['goal']}× the network alone. *network alone*: the same model's network stage (for the in-graph "
             "frontend: the first row's). Medians per stage of wall time and of the process's CPU time (one thread: "
             "every stage, onnxruntime's included, runs on it): the machine is shared with other jobs, and CPU time "
             "is what a stage costs where wall time is also what the others left of the core.", ""]
    for stat, title in (("cpu_ms", "CPU time (median per stage)"), ("median_ms", "wall time (median per stage)")):
        lines += [f"{title}:", "",
                  "| deployment | decode | resample | frontend | network | total | total / network alone | goal |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for row in r["rows"]:
            ms = row[stat]
            alone = (r["rows"][0] if row["with_frontend"] else row)[stat]["network"]
            frontend = "(in graph)" if row["with_frontend"] else f"{ms['frontend']:.1f} ms"
            ratio = ms["total"] / alone
            lines.append(f"| {row['name']} | {ms['decode']:.1f} ms | {ms['resample']:.1f} ms | {frontend} | "
                         f"{ms['network']:.1f} ms | {ms['total']:.1f} ms | {ratio:.2f}× | "
                         f"{'met' if ratio <= r['goal'] else 'missed'} |")
        lines.append("")
    scipy, numpy_fft, graph = r["rows"][:3]
    lines += [f"scipy's FFT makes the frontend {numpy_fft['cpu_ms']['frontend'] / scipy['cpu_ms']['frontend']:.2f}× "
              f"faster than numpy's and the whole path {numpy_fft['cpu_ms']['total'] / scipy['cpu_ms']['total']:.2f}× "
              "(CPU time; x86, not measured on arm64). The in-graph frontend costs "
              f"{graph['cpu_ms']['total'] / scipy['cpu_ms']['total']:.2f}× the numpy path's total: deploy the "
              "numpy frontend. On a busy machine a long stage's CPU time grows too (caches and the core's other "
              "hardware thread are shared): the network's then more than the short stages', which flatters the "
              "ratio; a quiet machine's ratio is the honest one."]
    students = [row for row in r["rows"][3:] if "student" in row["name"]]
    for st in students:
        ms = st["cpu_ms"]
        front = ms["decode"] + ms["resample"] + ms["frontend"]
        ratio = ms["total"] / ms["network"]
        if ratio > r["goal"]:  # say by how much and why, as the goal asks where it is missed
            big = r["rows"][0]["cpu_ms"]
            per_big = (big["decode"] + big["resample"] + big["frontend"]) / 20  # 10 s, 2 channels
            lines += ["", f"The 1-s student misses the goal by {ratio / r['goal']:.2f}× ({ratio:.2f}× against "
                      f"{r['goal']}×). Its network is small (about 29 M MACs: {ms['network']:.1f} ms), while decoding, "
                      f"resampling and the frontend cost {front:.1f} ms for its one second of one channel whatever "
                      f"the network; the goal needs them at {0.5 * ms['network']:.2f} ms or less. The same stages "
                      f"cost the 10-s stereo clip {per_big:.2f} ms per second per channel (first row): "
                      f"{front / per_big:.1f}× less per second than the 1-s clip pays, so about "
                      f"{front - per_big:.1f} ms of the {front:.1f} ms is per-call cost that does not shrink with "
                      "the clip (opening and parsing the file, the resampler's set-up, the frontend's calls), not "
                      "work on samples. A recording already at the model's rate skips the resampler; a larger "
                      "network lowers the ratio; the ρ4 w64 network's 10-s clips meet the goal."]
    return "\n".join(lines + [""])


if __name__ == "__main__":
    print(markdown(run()))
