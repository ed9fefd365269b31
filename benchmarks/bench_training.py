"""Training throughput on CPU for the paper's networks at 10 s input, against the machine's
measured convolution throughput; and the cost of pruning bookkeeping per epoch.

One training step = forward + backward + Adam on a batch of 10 (the paper's batch), with
mixup; FLOPs per clip = 3 x forward MACs x 2 (backward ~ 2x forward).
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import torch

from edgeasc.compress.pruning import Pruner
from edgeasc.data.loader import mixup, mixup_cross_entropy
from edgeasc.models import build_model, get_preset
from edgeasc.models.complexity import analyse

NETWORKS = ("d20-damped", "d20-damped-restricted", "d20-damped-decomp", "demo")
BATCH = 10
DCASE20_TRAIN_CLIPS = 9_185  # TAU 2020 3Class fold1_train


def conv_peak_gflops(threads: int) -> float:
    """Forward GFLOP/s of a large 3x3 conv (128 -> 128 channels on 128 x 215): the machine's limit."""
    torch.set_num_threads(threads)
    conv = torch.nn.Conv2d(128, 128, 3, padding=1, bias=False)
    x = torch.randn(4, 128, 128, 215)
    flops = 2 * 4 * 128 * 215 * 128 * 128 * 9
    with torch.no_grad():
        conv(x)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            conv(x)
            times.append(time.perf_counter() - t0)
    return flops / statistics.median(times) / 1e9


def step_clips_per_s(name: str, threads: int, steps: int) -> tuple[float, float]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = get_preset(name).config
    model = build_model(config)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    x = torch.randn(BATCH, config.in_channels, 256, 431)
    y = torch.randint(0, config.n_classes, (BATCH,))
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        xm, ya, yb, lam = mixup(x, y, np.random.default_rng(i))
        loss = mixup_cross_entropy(model(xm), ya, yb, lam)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    rate = BATCH / statistics.median(times)
    return rate, rate * 3 * analyse(config).macs * 2 / 1e9


def pruning_cost(name: str) -> float:
    preset = get_preset(name)
    model = build_model(preset.config)
    with torch.no_grad():
        for _, w in model.prunable_weights():
            w.normal_()
    pruner = Pruner(model, target=preset.prune_target or int(0.5 * sum(p.numel() for p in model.parameters())))
    times = []
    for e in range(5):
        t0 = time.perf_counter()
        pruner.update(e * 20)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run() -> dict:
    threads = len(os.sched_getaffinity(0))  # all cores (bench_features pins its own processes to 1)
    peak = {"1": conv_peak_gflops(1), str(threads): conv_peak_gflops(threads)}  # str keys: JSON round trip
    rows = []
    for name in NETWORKS:
        steps = 2 if name in ("d20-damped",) else 3
        rate, gflops = step_clips_per_s(name, threads, steps)
        rows.append({"network": name, "macs": analyse(get_preset(name).config).macs, "clips_per_s": rate,
                     "gflops": gflops, "of_peak": gflops / peak[str(threads)]})
    prune = {name: pruning_cost(name) for name in ("d20-damped-pruned-250k", "demo")}
    d20 = next(r for r in rows if r["network"] == "d20-damped")
    demo = next(r for r in rows if r["network"] == "demo")
    epoch_d20 = DCASE20_TRAIN_CLIPS / d20["clips_per_s"]
    epoch_demo = 126 / demo["clips_per_s"]  # the built-in synthetic training split
    torch.set_num_threads(threads)
    return {"threads": threads, "conv_peak_gflops": peak, "rows": rows, "prune_seconds": prune,
            "epoch_seconds": {"d20-damped-pruned-250k": epoch_d20, "demo": epoch_demo},
            "prune_fraction": {"d20-damped-pruned-250k": prune["d20-damped-pruned-250k"] / epoch_d20,
                               "demo": prune["demo"] / epoch_demo}}


def markdown(r: dict) -> str:
    t = r["threads"]
    lines = ["## Training throughput (CPU, 10 s clips, batch 10, mixup, Adam)", "",
             f"{t} threads. Machine limit: a large 3×3 conv runs at {r['conv_peak_gflops'][str(t)]:.1f} GFLOP/s "
             f"with {t} threads ({r['conv_peak_gflops']['1']:.1f} with 1). Achieved = 3 × forward MACs × 2 × clips/s.",
             "", "| network | MACs / clip | clips/s | GFLOP/s | of conv limit |", "|---|---:|---:|---:|---:|"]
    for row in r["rows"]:
        lines.append(f"| {row['network']} | {row['macs'] / 1e9:.3f} G | {row['clips_per_s']:.2f} | "
                     f"{row['gflops']:.1f} | {100 * row['of_peak']:.0f} % |")
    lines += ["", "Pruning bookkeeping (one mask recomputation at the start of an epoch):", "",
              "| network | mask update | epoch (estimated) | share of the epoch |", "|---|---:|---:|---:|"]
    for name, frac in r["prune_fraction"].items():
        where = f"{DCASE20_TRAIN_CLIPS:,} DCASE'20 clips" if name.startswith("d20") else "126 synthetic clips"
        lines.append(f"| {name} | {1000 * r['prune_seconds'][name]:.1f} ms | {r['epoch_seconds'][name]:.0f} s "
                     f"({where}) | {100 * frac:.3f} % |")
    return "\n".join(lines + [""])


if __name__ == "__main__":
    result = run()
    print(markdown(result))
