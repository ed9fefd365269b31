"""The quickstart pipeline on built-in data: each stage prints what it produced.

Synthesise a DCASE'20-layout dataset -> extract and cache its features -> train and prune
the demo network -> export it (fold damping, fp16, verified, 500KB budget checked) -> bench
it with onnxruntime -> predict on evaluate recordings, torch-free as on a device -> show the
paper's networks and their budgets.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import typer
from rich.text import Text

from edgeasc.cli.extras import require_torch
from edgeasc.console import out, safe


def run_demo(workdir: Path, workers: int | None = None) -> dict:
    from edgeasc.data.cache import extract_features
    from edgeasc.data.dcase import open_dataset
    from edgeasc.data.synth import DEFAULT_SYNTH, default_dataset
    from edgeasc.models import PRESETS
    from edgeasc.models.complexity import analyse
    from edgeasc.runtime.features import FeatureParams
    from edgeasc.train.config import DEMO_DEFAULTS, resolve_train_config
    from edgeasc.train.run import train

    workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {}

    out.rule(Text.assemble(("1. synthesise", "bold"), " a DCASE'20 task 1b style dataset"))
    t0 = time.perf_counter()
    data_dir = default_dataset(workdir)
    dataset = open_dataset(data_dir)
    s = dataset.summary()
    out.print(f"{data_dir}: {s['splits']['train']} train / {s['splits']['evaluate']} evaluate clips of "
              f"{DEFAULT_SYNTH['seconds']:g} s, 48 kHz stereo, classes {', '.join(s['labels'])}, split by location "
              f"({time.perf_counter() - t0:.1f} s)")
    results["dataset"] = s

    out.rule(Text.assemble(("2. features", "bold"), ": perceptual log-mel, cached once"))
    cache, extracted = extract_features(dataset, FeatureParams(), workers=workers, root=workdir)
    e = cache.manifest["extraction"]
    out.print(f"{'extracted' if extracted else 'reused'} {e['clips']} clips → "
              f"train {cache.features('train').shape}, evaluate {cache.features('evaluate').shape} "
              f"({e['clips'] / e['seconds']:.1f} clips/s when extracted)")

    out.rule(Text.assemble(("3. train", "bold"), " the demo network, pruned to its target"))
    cfg = resolve_train_config({**DEMO_DEFAULTS, "dataset": str(data_dir), "cache_dir": str(workdir),
                                "out": str(workdir / "run"), "feature_workers": workers})
    t0 = time.perf_counter()
    summary = train(cfg, force=True)
    out.print(f"accuracy {100 * summary['reported_accuracy']:.1f} % (mean of the last "
              f"{summary['reported_over_epochs']} epochs; chance {100 / len(summary['labels']):.0f} %), "
              f"{summary['nonzero_params']:,} non-zero of {summary['params']:,} parameters, "
              f"{time.perf_counter() - t0:.0f} s → {workdir / 'run'}")
    results["train"] = summary

    out.rule(Text.assemble(("4. export", "bold"), ": folded, float16, verified ONNX checked against the 500KB budget"))
    from edgeasc.export.pipeline import export_checkpoint

    exported = export_checkpoint(workdir / "run", workdir / "run" / "model.onnx", precision="fp16",
                                 budget="500KB", force=True)
    r, v = exported["report"], exported["verification"]
    out.print(f"{exported['onnx']}: {exported['bytes']:,} bytes; counted {r['counted_bytes']:,} of "
              f"{r['budget_bytes']:,} bytes under {r['rules']} → {r['verdict']}; onnxruntime vs PyTorch: "
              f"max |Δ logit| {v['max_abs_logit_difference']:.1e}, top-1 agreement {100 * v['top1_agreement']:.0f} %")
    results["export"] = {k: exported[k] for k in ("onnx", "bytes")}

    out.rule(Text.assemble(("5. bench", "bold"), ": the exported model under onnxruntime, each thread count in a fresh process"))
    from edgeasc.cli.device import render_bench
    from edgeasc.cli.predict import render_predictions
    from edgeasc.runtime.bench import bench_models

    threads = tuple(t for t in (1, 2) if t <= (os.cpu_count() or 1))  # a thread per core, at most
    bench = bench_models([exported["onnx"]], threads=threads, runs=30, warmup=5)
    render_bench(bench)
    results["bench"] = bench

    out.rule(Text.assemble(("6. predict", "bold"), ": evaluate recordings, with only what the ONNX file carries (no torch)"))
    from edgeasc.runtime.deployed import load_model
    from edgeasc.runtime.predict import predict_files

    clips = _one_per_class(dataset.splits["evaluate"], len(dataset.labels), per_class=2)
    predictions = list(predict_files(load_model(exported["onnx"]), [c.path for c in clips]))
    render_predictions(predictions, top_k=1)
    right = sum(p.top(1)[0][0] == dataset.labels[c.label] for p, c in zip(predictions, clips, strict=True))
    out.print(f"{right} of {len(clips)} right (true classes: "
              f"{', '.join(dataset.labels[c.label] for c in clips)})")
    results["predict"] = [p.to_dict() for p in predictions]

    out.rule(Text.assemble(("7. models", "bold"), ": the paper's networks and the DCASE 2020 500 KB budget"))
    for name, preset in PRESETS.items():
        if not name.startswith("d20"):
            continue
        stats = analyse(preset.config, prune_target=preset.prune_target)
        fits = "fits" if stats.bytes["float16"] <= 512_000 else "too big"
        out.print(f"{name:<24} params {stats.params:>10,}  non-zero {stats.nonzero_params:>10,}  "
                  f"MACs/clip {stats.macs / 1e9:6.3f} G  float16 {stats.bytes['float16']:>10,} bytes ({fits})")
    results["next"] = next_command(exported["onnx"])
    out.rule(Text.assemble(("next", "bold"), ": your own recording"))
    out.print(Text.assemble(safe(results["next"]), ("    (WAV/FLAC/OGG, any rate, mono or stereo; --json for scripts)", "dim")),
              soft_wrap=True)
    return results


def next_command(onnx_path: str | Path) -> str:
    """The predict command for the demo's model, as this user can type it: `edgeasc` when it is
    on PATH, else the full path of the installed script (e.g. inside ./.venv)."""
    exe = "edgeasc"
    found = shutil.which(exe)
    installed = Path(sys.prefix) / "bin" / exe
    if (found is None or Path(found).resolve() != installed.resolve()) and installed.is_file():
        exe = str(installed) if os.path.relpath(installed).startswith("..") else os.path.relpath(installed)
    model = os.path.relpath(onnx_path)
    return f"{exe} predict {shlex.quote(str(onnx_path) if model.startswith('..') else model)} my-recording.wav"


def _one_per_class(clips, n_classes: int, per_class: int = 1):
    picked = []
    for label in range(n_classes):
        picked += [c for c in clips if c.label == label][:per_class]
    return picked


def demo(
    workdir: Path = typer.Option(Path(".edgeasc-cache/demo"), help="Where the demo writes its files."),
    workers: int | None = typer.Option(None, help="Worker processes for data (default: all cores)."),
) -> None:
    """Run the quickstart pipeline on built-in synthetic data."""
    require_torch("`edgeasc demo`")
    run_demo(workdir, workers)
