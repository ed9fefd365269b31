"""Structured (channel) pruning: does cutting MACs cut latency, and what does it cost in accuracy?

1. Latency: the authors' DCASE'20 network (ρ4 w64 "0,2,4") and d20-damped (ρ3 w128) cut to 50 %,
   25 % and 12.5 % of their MACs by channel pruning (one shot, group-L2 ranking of synthetic
   weights: latency does not depend on the values), widths multiples of 16 (the default) and
   any width, exported fp32, measured by onnxruntime at 1 and 2 threads side by side with the
   dense network and with a magnitude-pruned one (75 % of the conv weights zeroed, packed
   sparse). Reported: latency ratio / MAC ratio (1.0 = compute falls exactly with MACs).
2. Accuracy on the synthetic scenes, 3 seeds each: the demo network (ρ3 w16) channel-pruned
   during training to the MACs of a width-8 network (widths multiples of 8, or any), against that
   width-8 network trained from scratch; and the two channel rankings (group L2, BatchNorm |γ|).
3. int8 files, sparse-packed, against their counted bytes (1 byte per counted value).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_device import AUTHORS_D20, synthetic_network, write_network_checkpoint

from edgeasc.compress.pruning import Pruner
from edgeasc.compress.structured import importance, rebuild, resolve_budget, select_channels
from edgeasc.data.synth import default_dataset
from edgeasc.export.pipeline import export_checkpoint
from edgeasc.models import get_preset
from edgeasc.models.channels import complexity
from edgeasc.runtime.bench import bench_models
from edgeasc.runtime.features import FeatureParams
from edgeasc.train.config import DEMO_DEFAULTS, resolve_train_config
from edgeasc.train.run import train

RESULTS = Path(__file__).resolve().parent / "results.json"
NETWORKS = {"authors-rho4-w64": AUTHORS_D20, "d20-damped": get_preset("d20-damped").config}
SHARES = ("50%", "25%", "12.5%")
EPOCHS = int(os.environ.get("EDGEASC_BENCH_EPOCHS", 20))
SEEDS = (0, 1, 2)
N_FRAMES = FeatureParams().n_frames(10.0)


def channel_pruned(config, share: str, multiple: int) -> torch.nn.Module:
    model = synthetic_network(config, None)
    budget = resolve_budget(config, N_FRAMES, macs_target=share, multiple=multiple)
    keep = select_channels(config, importance(model), N_FRAMES, macs=budget.macs, multiple=multiple)
    return rebuild(model, keep)[0].eval()


def magnitude_pruned(config) -> torch.nn.Module:
    model = synthetic_network(config, None)
    pruner = Pruner(model, ratio=0.75, epochs=0)
    pruner.update(0)
    pruner.finalize()
    return model.eval()


def latency(tmp: Path, data: Path) -> tuple[list[dict], list[dict]]:
    rows, int8_rows = [], []
    for net, config in NETWORKS.items():
        models = {"dense": synthetic_network(config, None),
                  **{f"{s} ×16": channel_pruned(config, s, 16) for s in SHARES},
                  **{f"{s} any width": channel_pruned(config, s, 1) for s in SHARES},
                  "magnitude 75 %": magnitude_pruned(config)}
        files = {}
        for name, model in models.items():
            ckpt = write_network_checkpoint(tmp / f"{net}-{name}.pt".replace(" ", "_").replace("%", "pc")
                                            .replace("×", "x"),
                                            model, data, tmp)
            files[name] = tmp / ckpt.with_suffix(".onnx").name
            export_checkpoint(ckpt, files[name], force=True)
        bench = bench_models(list(files.values()), threads=(1, 2), runs=20, warmup=3)["results"]
        dense_macs = complexity(config, N_FRAMES)[1]
        for (name, model), path in zip(models.items(), files.values(), strict=True):
            params, macs = complexity(model.config, N_FRAMES)
            for r in [r for r in bench if r["model"].endswith(path.name)]:
                ref = next(x for x in bench if x["model"].endswith(files["dense"].name) and x["threads"] == r["threads"])
                lat_ratio = r["latency_ms"]["p50"] / ref["latency_ms"]["p50"]
                rows.append({"network": net, "model": name, "threads": r["threads"], "params": params, "macs": macs,
                             "mac_ratio": macs / dense_macs, "ms": r["latency_ms"]["p50"], "latency_ratio": lat_ratio,
                             "file_bytes": path.stat().st_size,
                             "nonzero": sum(int(torch.count_nonzero(p)) for p in model.parameters())})
        for name in ("25% ×16", "magnitude 75 %"):
            ckpt = tmp / files[name].with_suffix(".pt").name
            out = tmp / f"{net}-{name}-int8.onnx".replace(" ", "_").replace("%", "pc").replace("×", "x")
            rules = "dcase2021" if name.startswith("magnitude") else "dcase2024"
            result = export_checkpoint(ckpt, out, precision="int8", rules=rules, calibration=data, cache_dir=tmp,
                                       force=True)
            rep = result["report"]
            int8_rows.append({"network": net, "model": name, "rules": rules, "counted_bytes": rep["counted_bytes"],
                              "file_bytes": result["bytes"], "packed": len(result["sparse"]["packed"]),
                              "ratio": result["bytes"] / rep["counted_bytes"]})
    return rows, int8_rows


def accuracy(tmp: Path, data: Path) -> list[dict]:
    narrow_macs = complexity(get_preset("demo").config.replace(width=8), N_FRAMES)[1]
    target = f"{narrow_macs / 1e3:.3f}k"  # exact: MACs per clip
    arms = {"channel-pruned w16, l2, ×8": dict(width=16, macs_target=target, channel_multiple=8),
            "channel-pruned w16, bn, ×8": dict(width=16, macs_target=target, channel_multiple=8,
                                               channel_importance="bn"),
            "channel-pruned w16, l2, any width": dict(width=16, macs_target=target, channel_multiple=1),
            "narrow w8 from scratch": dict(width=8, prune_ratio=0.0)}  # the demo preset's 8,500 target off
    rows = []
    for arm, extra in arms.items():
        for seed in SEEDS:
            out = tmp / f"acc-{len(rows)}"
            cfg = resolve_train_config({**DEMO_DEFAULTS, "dataset": str(data), "cache_dir": str(tmp), "out": str(out),
                                        "prune_target": None, "prune_ratio": None, "epochs": EPOCHS, "lr_hold": 7,
                                        "lr_decay_end": EPOCHS, "prune_epochs": EPOCHS // 3, "seed": seed, **extra})
            t0 = time.perf_counter()
            s = train(cfg, force=True, progress=False)
            rows.append({"arm": arm, "seed": seed, "params": s["params"], "macs": s["macs"],
                         "accuracy": s["reported_accuracy"], "final": s["final"]["accuracy"],
                         "seconds": time.perf_counter() - t0})
    return rows


def run() -> dict:
    """EDGEASC_BENCH_PARTS=latency (or accuracy) re-measures one part and keeps the other's
    committed numbers: latency wants a quiet machine, accuracy takes ten minutes."""
    parts = os.environ.get("EDGEASC_BENCH_PARTS", "latency,accuracy").split(",")
    previous = json.loads(RESULTS.read_text()).get("structured", {}) if RESULTS.exists() else {}
    result = {k: previous[k] for k in ("latency", "int8", "accuracy", "epochs", "latency_measured",
                                       "accuracy_measured") if k in previous}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = default_dataset(tmp, progress=False)
        if "latency" in parts:
            result["latency"], result["int8"] = latency(tmp, data)
            result["latency_measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            print(json.dumps({k: result[k] for k in ("latency", "int8")}), flush=True)  # kept if a later part fails
        if "accuracy" in parts:
            result["accuracy"], result["epochs"] = accuracy(tmp, data), EPOCHS
            result["accuracy_measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return result


def markdown(r: dict) -> str:
    lines = ["## Structured (channel) pruning", "",
             "`python benchmarks/run.py structured` (`EDGEASC_BENCH_PARTS=latency` or `accuracy` re-measures one "
             "part and keeps the other). Networks cut to a share of their MACs by channel pruning "
             "(rebuilt physically smaller), exported fp32, onnxruntime median latency per 10 s clip, measured "
             "side by side with the dense network in one run. *latency / MAC ratio* = (latency ÷ dense latency) ÷ "
             "(MACs ÷ dense MACs): 1.0 means compute fell exactly with the MACs. The magnitude-pruned network "
             "(75 % of conv weights zeroed, stored sparse) is the contrast: smaller file, same MACs, same speed. "
             f"Latency and int8 measured {r.get('latency_measured', '?')}.", "",
             "| network | model | threads | params | MACs / clip | MAC ratio | ms | latency ratio | "
             "latency / MAC ratio | file bytes |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for x in r["latency"]:
        lines.append(f"| {x['network']} | {x['model']} | {x['threads']} | {x['params']:,} | {x['macs']:,} | "
                     f"{x['mac_ratio']:.3f} | {x['ms']:.1f} | {x['latency_ratio']:.3f} | "
                     f"{x['latency_ratio'] / x['mac_ratio']:.2f} | {x['file_bytes']:,} |")
    lines += ["", "int8 (static QDQ, int8 weights sparse-packed where that saves bytes) against the bytes the rules "
              "count at 1 byte per value (dcase2021: non-zero incl. BatchNorm; dcase2024: all parameters):", "",
              "| network | model | rules | counted bytes | file bytes | packed tensors | file / counted |",
              "|---|---|---|---:|---:|---:|---:|"]
    for x in r["int8"]:
        lines.append(f"| {x['network']} | {x['model']} | {x['rules']} | {x['counted_bytes']:,} | {x['file_bytes']:,} | "
                     f"{x['packed']} | {x['ratio']:.2f}× |")
    if not r.get("accuracy"):
        return "\n".join(lines) + "\n"
    lines += ["", f"Accuracy on the synthetic scenes (3 classes, 180 clips of 10 s; {r['epochs']} epochs of the demo "
              "recipe, channel ramp over the first third; mean of the last 10 epochs' evaluate accuracy), "
              f"{len(SEEDS)} seeds each, mean ± std (measured {r.get('accuracy_measured', '?')}):", "",
              "| arm | params | MACs / clip | accuracy | final accuracy |", "|---|---:|---:|---:|---:|"]
    arms: dict[str, list] = {}
    for x in r["accuracy"]:
        arms.setdefault(x["arm"], []).append(x)
    for arm, xs in arms.items():
        acc = [100 * x["accuracy"] for x in xs]
        fin = [100 * x["final"] for x in xs]
        lines.append(f"| {arm} | {xs[0]['params']:,} | {xs[0]['macs']:,} | {statistics.mean(acc):.1f} ± "
                     f"{statistics.stdev(acc):.1f} % | {statistics.mean(fin):.1f} ± {statistics.stdev(fin):.1f} % |")
    return "\n".join(lines) + "\n"
