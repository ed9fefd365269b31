"""Accuracy, DCASE 2022-style: the synthetic TAU 2022 Mobile profile (`edgeasc synth --profile
dcase2022`, default size), seen and unseen devices, 3 training seeds per row, mean ± std.

Rows: the width sweep of the demo network (ρ3, dense: the shape of the paper's Fig. 4), the
width-16 network magnitude-pruned to two parameter targets, and width 16 with Freq-MixStyle
(0.4, 0.3; its partner row is the dense width-16 one, same seeds). Every row is the profile's
recipe (RECIPE below). Also: the time to generate the profile and to extract its features.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from edgeasc.data.cache import extract_features, probe_clip_seconds
from edgeasc.data.dcase import open_dataset
from edgeasc.data.synth2022 import DEFAULT_CLIPS_PER_CLASS, write_dataset_2022
from edgeasc.runtime.features import FeatureParams
from edgeasc.train.config import resolve_train_config
from edgeasc.train.run import train

HERE = Path(__file__).resolve().parent
EPOCHS = int(os.environ.get("EDGEASC_BENCH_EPOCHS", 20))
SEEDS = tuple(range(int(os.environ.get("EDGEASC_BENCH_SEEDS", 3))))
CLIPS_PER_CLASS = int(os.environ.get("EDGEASC_BENCH_CLIPS", DEFAULT_CLIPS_PER_CLASS))  # smaller for a smoke run
# the profile's recipe: the demo network and schedule at batch 32 (3,200 training clips)
RECIPE = dict(preset="demo", batch_size=32, lr=3e-3, lr_hold=7, lr_decay_end=EPOCHS, lr_final=1e-5,
              mixup_alpha=0.3, epochs=EPOCHS, prune_epochs=EPOCHS // 2)
ROWS = [  # (name, family, overrides)
    ("w8", "width", {"width": 8}),
    ("w12", "width", {"width": 12}),
    ("w16", "width", {"width": 16}),
    ("w24", "width", {"width": 24}),
    ("w16 pruned to 9,000", "pruned", {"width": 16, "prune_target": 9_000}),
    ("w16 pruned to 4,500", "pruned", {"width": 16, "prune_target": 4_500}),
    ("w16 + Freq-MixStyle 0.4,0.3", "freq-mixstyle", {"width": 16, "freq_mixstyle": "0.4,0.3"}),
]


def run() -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        generated = write_dataset_2022(tmp / "data", CLIPS_PER_CLASS, progress=False)
        generate_s = time.perf_counter() - t0
        dataset = open_dataset(tmp / "data")
        t0 = time.perf_counter()
        extract_features(dataset, FeatureParams(clip_seconds=probe_clip_seconds(dataset)), root=tmp, progress=False)
        features_s = time.perf_counter() - t0
        for name, family, overrides in ROWS:
            runs = []
            for seed in SEEDS:
                values = {**RECIPE, "prune_ratio": 0.0, **overrides, "seed": seed, "dataset": str(tmp / "data"),
                          "cache_dir": str(tmp), "out": str(tmp / f"run-{len(rows)}-{seed}")}
                if "prune_target" in overrides:
                    values.pop("prune_ratio")
                t0 = time.perf_counter()
                s = train(resolve_train_config(values), force=True, progress=False)
                f = s["final"]
                runs.append({"seed": seed, "reported": s["reported_accuracy"], "final": f["accuracy"],
                             "seen": f["seen_accuracy"], "unseen": f["unseen_accuracy"],
                             "per_device": f["per_device"], "params": s["params"],
                             "nonzero": s["nonzero_params"], "macs": s["macs"], "seconds": time.perf_counter() - t0})
                print(f"{name} seed {seed}: {100 * s['reported_accuracy']:.1f} % (seen {100 * f['seen_accuracy']:.1f}, "
                      f"unseen {100 * f['unseen_accuracy']:.1f}) in {runs[-1]['seconds']:.0f} s", flush=True)
            rows.append({"name": name, "family": family, "overrides": overrides, "runs": runs})
    result = {"epochs": EPOCHS, "seeds": list(SEEDS), "recipe": RECIPE, "dataset": generated, "clips_per_class": CLIPS_PER_CLASS,
              "generate_seconds": generate_s, "features_seconds": features_s, "rows": rows}
    plot(result, HERE / "dcase2022_accuracy.png")
    return result


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _pm(values: list[float]) -> str:
    m, s = _stats([100 * v for v in values])
    return f"{m:.1f} ± {s:.1f}"


def plot(r: dict, path: Path) -> None:
    from edgeasc.train.plots import pyplot, save_png

    fig, ax = pyplot().subplots(figsize=(7, 4.4))
    styles = {"width": ("o", "-", "C0", "width-restricted (dense)"), "pruned": ("s", "--", "C1", "w16, magnitude-pruned"),
              "freq-mixstyle": ("D", "", "C2", "w16 + Freq-MixStyle")}
    for family, (marker, line, colour, label) in styles.items():
        rows = [row for row in r["rows"] if row["family"] == family]
        if family == "pruned":  # the pruned curve starts at the dense w16 it was cut from
            rows += [row for row in r["rows"] if row["name"] == "w16"]
        rows.sort(key=lambda row: row["runs"][0]["nonzero"])
        for key in ("seen", "unseen"):  # seen: filled markers; unseen: open ones, same colour
            xs = [row["runs"][0]["nonzero"] for row in rows]
            ms = [_stats([100 * x[key] for x in row["runs"]]) for row in rows]
            ax.errorbar(xs, [m for m, _ in ms], yerr=[s for _, s in ms], marker=marker, linestyle=line, color=colour,
                        capsize=3, markerfacecolor=colour if key == "seen" else "white",
                        label=f"{label}, {key} devices")
    ax.set_xscale("log")
    ax.set_xlabel("non-zero parameters")
    ax.set_ylabel(f"final accuracy %, mean ± std of {len(r['seeds'])} seeds")
    ax.set_title("Synthetic TAU 2022 Mobile profile: seen vs unseen devices")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    save_png(fig, path)


def markdown(r: dict) -> str:
    d = r["dataset"]
    recipe = r["recipe"]
    lines = ["## Accuracy, DCASE 2022-style (synthetic TAU 2022 Mobile profile, seen and unseen devices)", "",
             f"`edgeasc synth DIR --profile dcase2022 --clips-per-class {r['clips_per_class']}`"
             f"{' (the default)' if r['clips_per_class'] == DEFAULT_CLIPS_PER_CLASS else ''}: {d['clips']:,} clips of 1 s "
             f"({d['train']:,} train / {d['evaluate']:,} evaluate), 10 scenes, devices "
             f"{', '.join(d['seen_devices'])} in training and {', '.join(d['unseen_devices'])} only in evaluate. "
             f"Generated in {r['generate_seconds']:.0f} s ({d['clips'] / r['generate_seconds']:.0f} clips/s, all "
             f"workers); features extracted in {r['features_seconds']:.0f} s.", "",
             f"Recipe: preset `demo` (ρ3, width as listed), {recipe['epochs']} epochs, batch {recipe['batch_size']}, "
             f"Adam lr {recipe['lr']:g} held {recipe['lr_hold']} epochs then linear to 0, mixup "
             f"{recipe['mixup_alpha']:g}, roll; magnitude pruning ramps over the first {recipe['prune_epochs']} "
             f"epochs. Each row is {len(r['seeds'])} training seeds (0..{len(r['seeds']) - 1}) on the same data; "
             "mean ± sample std. *reported* = mean evaluate accuracy of the last 10 epochs (the paper's "
             "measure); *seen*/*unseen* = the final network's mean per-device accuracy over each group, as DCASE "
             "reports it.", "",
             "| network | params | non-zero | MACs / 1-s clip | reported | final | seen devices | unseen devices | "
             "unseen − seen | train time / run |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in r["rows"]:
        runs = row["runs"]
        gap = [x["unseen"] - x["seen"] for x in runs]
        lines.append(f"| {row['name']} | {runs[0]['params']:,} | {runs[0]['nonzero']:,} | {runs[0]['macs'] / 1e6:.1f} M | "
                     f"{_pm([x['reported'] for x in runs])} | {_pm([x['final'] for x in runs])} | "
                     f"{_pm([x['seen'] for x in runs])} | {_pm([x['unseen'] for x in runs])} | {_pm(gap)} | "
                     f"{statistics.median(x['seconds'] for x in runs):.0f} s |")
    devices = sorted(r["rows"][0]["runs"][0]["per_device"])
    lines += ["", "Per device (final accuracy %, mean of the seeds):", "",
              "| network | " + " | ".join(devices) + " |", "|---|" + "---:|" * len(devices)]
    for row in r["rows"]:
        cells = [statistics.mean(100 * x["per_device"][dv] for x in row["runs"]) for dv in devices]
        lines.append(f"| {row['name']} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    w16 = next(row for row in r["rows"] if row["name"] == "w16")
    fms = next(row for row in r["rows"] if row["family"] == "freq-mixstyle")
    _, std16 = _stats([100 * x["reported"] for x in w16["runs"]])
    diff = [a["unseen"] - b["unseen"] for a, b in zip(fms["runs"], w16["runs"], strict=True)]
    lines += ["", f"Seed-to-seed std of the recipe (w16, reported accuracy): **{std16:.2f} points**. "
              f"Freq-MixStyle − plain on unseen devices, paired by seed: {_pm(diff)} points.", "",
              "![seen and unseen accuracy vs non-zero parameters](dcase2022_accuracy.png)"]
    return "\n".join(lines + [""])


if __name__ == "__main__":
    print(markdown(run()))
