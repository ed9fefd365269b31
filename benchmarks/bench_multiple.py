"""Channel multiples: what a kept width that is not a multiple of 16 costs onnxruntime per MAC.

`--fit` and `--macs-target` round every kept width to a multiple (`--channel-multiple`). Plans
of the same MAC budget at multiples 1, 2, 4, 8 and 16, channel-pruned (one shot, group-L2
ranking of synthetic weights: latency does not depend on the values, only the widths do),
exported fp32, 1 thread. One network's five plans are loaded in one fresh process and timed
interleaved (each round runs every plan once): the machine is shared, and a busy spell then
slows all five alike instead of whichever plan it fell on.
- fit-dcase2024-1s: `--fit dcase2024`'s own plan for 1-s mono clips of the perceptual
  frontend, 10 classes (its start network from fit's table, pruned to the rules' limits);
- the authors' DCASE'20 network (ρ4 w64 "0,2,4", the d20 submission's shape) at 25 % of its
  MACs, 10-s stereo clips (section `structured` has d20-damped, 1 and 16 only).
Reported per plan: MACs, latency, and latency per MAC relative to the multiple-16 plan of the
same network (1.00 = as cheap per MAC as 16-channel blocks).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_device import AUTHORS_D20, synthetic_network

from edgeasc.compress.fit import FIT_CHANNEL_MULTIPLE, plan_fit
from edgeasc.compress.structured import importance, rebuild, resolve_budget, select_channels
from edgeasc.export.pipeline import export_checkpoint
from edgeasc.models.channels import complexity
from edgeasc.runtime.features import FeatureParams
from edgeasc.train.checkpoint import save_checkpoint

MULTIPLES = (1, 2, 4, 8, 16)
RUNS, WARMUP = 40, 5
GOAL = 1.15


def _plans() -> dict:
    """network -> (dense config, feature params, MAC target, params target) per multiple."""
    short = FeatureParams(clip_seconds=1.0)
    frames = short.n_frames()
    plans = {}
    # one start network for every multiple (fit's choice at 16, the coarsest): the plans differ in widths only
    fit = plan_fit("dcase2024", frames, 1.0, n_classes=10, in_channels=1, multiple=16)
    plans["fit-dcase2024-1s"] = {m: (fit.start, short, fit.macs_target, fit.params_target) for m in MULTIPLES}
    for name, config in (("authors-rho4-w64", AUTHORS_D20),):
        for m in MULTIPLES:
            plans.setdefault(name, {})[m] = (config, FeatureParams(), "25%", None)
    return plans


def _checkpoint(path: Path, model, params: FeatureParams) -> Path:
    save_checkpoint(path, {"model_config": model.config.to_dict(), "labels": [f"c{i}" for i in range(model.config.n_classes)],
                           "feature_params": params.to_dict(), "channels": model.config.in_channels,
                           "normalization": {"mean": [-30.0] * params.n_mels, "std": [10.0] * params.n_mels},
                           "model": model.state_dict(), "epoch": 0, "kind": "final"})
    return path


_TIMER = """
import json, sys, time
from edgeasc.runtime.deployed import load_model
paths, runs, warmup = json.loads(sys.argv[1])
models = [load_model(p, 1) for p in paths]
inputs = [m.example_input(1) for m in models]
times = [[] for _ in models]
for i in range(warmup + runs):
    for m, x, t in zip(models, inputs, times):
        t0, c0 = time.perf_counter(), time.thread_time()
        m.run(x)
        if i >= warmup:
            t.append((time.perf_counter() - t0, time.thread_time() - c0))
print(json.dumps(times))
"""


def interleaved(paths: list[Path]) -> list[list[list[float]]]:
    """(wall, CPU) seconds per run of each model, timed round-robin in one fresh process, 1
    thread (onnxruntime runs it on the calling thread, whose CPU time is then the model's)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _TIMER, json.dumps([[str(p) for p in paths], RUNS, WARMUP])],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run() -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for net, by_multiple in _plans().items():
            files, macs, widths = {}, {}, {}
            for m, (config, params, macs_target, params_target) in by_multiple.items():
                frames = params.n_frames()
                model = synthetic_network(config, None)
                budget = resolve_budget(config, frames, macs_target=macs_target, params_target=params_target, multiple=m)
                keep = select_channels(config, importance(model), frames, macs=budget.macs, params=budget.params,
                                       multiple=m)
                pruned = rebuild(model, keep)[0].eval()
                ckpt = _checkpoint(tmp / f"{net}-x{m}.pt", pruned, params)
                files[m] = tmp / f"{net}-x{m}.onnx"
                export_checkpoint(ckpt, files[m], force=True)
                macs[m] = complexity(pruned.config, frames)
                widths[m] = sorted(int(i.numel()) for i in keep.values())
            times = dict(zip(MULTIPLES, interleaved([files[m] for m in MULTIPLES]), strict=True))
            stats = {m: {"p50": 1e3 * statistics.median(w for w, _ in t), "cpu": 1e3 * statistics.median(c for _, c in t)}
                     for m, t in times.items()}
            for m in MULTIPLES:
                row = {"network": net, "multiple": m, "params": macs[m][0], "macs": macs[m][1],
                       "odd_widths": sum(w % 16 != 0 for w in widths[m]), "groups": len(widths[m])}
                for stat in ("p50", "cpu"):
                    ms, ref = stats[m][stat], stats[16][stat]
                    row[f"{stat}_ms"] = ms
                    row[f"{stat}_per_mac_vs_16"] = (ms / macs[m][1]) / (ref / macs[16][1])
                rows.append(row)
    return {"rows": rows, "runs": RUNS, "goal": GOAL, "fit_default": FIT_CHANNEL_MULTIPLE}


def markdown(r: dict) -> str:
    lines = ["## Channel multiples: latency per MAC (`--channel-multiple`)", "",
             "`python benchmarks/run.py multiple`. The same MAC budget cut by channel pruning with kept widths in "
             "multiples of 1, 2, 4, 8 and 16 (synthetic weights, group-L2 ranking), exported fp32, onnxruntime, "
             f"1 thread, {r['runs']} runs per model; one network's five plans in one fresh process, timed "
             "interleaved (each round runs every plan once). *per MAC vs ×16* = (latency ÷ MACs) ÷ (the ×16 "
             "plan's latency ÷ MACs), for the median CPU time of a run (onnxruntime runs on the calling thread; the "
             "machine is shared, and CPU time is what the model costs) and for the median wall time. "
             f"Goal: ≤ {r['goal']}×. *odd groups*: channel groups whose kept width is not a multiple of 16. "
             "fit-dcase2024-1s is `--fit dcase2024`'s plan for 1-s mono clips (10 classes, start: damped ρ3 width 32); "
             "authors-rho4-w64 (the d20 submission's shape) is cut to 25 % of its MACs (10-s stereo clips).", "",
             "| network | multiple | params | MACs / clip | odd groups | CPU ms | per MAC vs ×16 (CPU) | "
             "wall ms | per MAC vs ×16 (wall) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for x in r["rows"]:
        lines.append(f"| {x['network']} | {x['multiple']} | {x['params']:,} | {x['macs']:,} | {x['odd_widths']}/"
                     f"{x['groups']} | {x['cpu_ms']:.2f} | {x['cpu_per_mac_vs_16']:.2f}× | {x['p50_ms']:.2f} | "
                     f"{x['p50_per_mac_vs_16']:.2f}× |")
    meets = {}
    for x in r["rows"]:
        meets.setdefault(x["multiple"], []).append(x["cpu_per_mac_vs_16"] <= r["goal"])
    ok = [m for m in MULTIPLES if all(meets.get(m, [False]))]
    lines += ["", f"Smallest multiple at ≤ {r['goal']}× (CPU time) on every plan here: "
              f"{ok[0] if ok else 'none'}; `--fit`'s default multiple: {r['fit_default']}."]
    return "\n".join(lines + [""])


if __name__ == "__main__":
    print(markdown(run()))
