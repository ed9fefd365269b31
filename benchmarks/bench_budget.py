"""A DCASE 2024-style budget: students that pass `--rules dcase2024` (128,000 bytes of int8
parameters, 30 M MACs per second) on the synthetic TAU 2022 Mobile profile, seen and unseen
devices, 3 seeds per row, mean ± std.

Rows (the issue's a, b, c), all with bench_dcase2022's recipe (20 epochs, batch 32):
- teacher: an ensemble of dense width-32 networks (43.7 M MACs per second: over the limit),
  one per seed; its accuracy is that of the mean of their logits;
- (a) the widest width-scaled demo network (ρ3) that meets the rules dense, from scratch;
- (b) (a) distilled from the ensemble (cached targets, w 0.5, τ 2);
- (c) `--fit dcase2024 --teacher ...`: width 32 channel-pruned to the rules, distilled.
Every run is exported int8 with --rules dcase2024; the row reports the verdict and the
accuracy before and after int8 (onnxruntime, all evaluate clips).

Section `kdtargets` (separate): cached vs online teacher targets on the same data, a width-16
student and one width-32 teacher, 3 seeds.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_dcase2022 import CLIPS_PER_CLASS, RECIPE, SEEDS

from edgeasc.compress.fit import rules_limits
from edgeasc.data.cache import FeatureCache, extract_features, probe_clip_seconds
from edgeasc.data.dcase import open_dataset
from edgeasc.data.synth2022 import write_dataset_2022
from edgeasc.export.pipeline import export_checkpoint
from edgeasc.models.channels import complexity
from edgeasc.models.presets import resolve_model
from edgeasc.runtime.features import FeatureParams
from edgeasc.train.config import resolve_train_config
from edgeasc.train.distill import compute_logits, load_teacher
from edgeasc.train.run import train

RULES = "dcase2024"
TEACHER_WIDTH = int(os.environ.get("EDGEASC_BENCH_TEACHER_WIDTH", 32))


def _data(tmp: Path) -> tuple[FeatureCache, dict, float]:
    t0 = time.perf_counter()
    generated = write_dataset_2022(tmp / "data", CLIPS_PER_CLASS, progress=False)
    dataset = open_dataset(tmp / "data")
    cache, _ = extract_features(dataset, FeatureParams(clip_seconds=probe_clip_seconds(dataset)), root=tmp,
                                progress=False)
    return cache, generated, time.perf_counter() - t0


def widest_within(cache: FeatureCache) -> int:
    params_limit, macs_limit = rules_limits(RULES, cache.manifest["params"]["clip_seconds"])
    best = None
    for w in range(8, 65):
        config, _ = resolve_model("demo", width=w, n_classes=len(cache.label_names), in_channels=cache.manifest["channels"])
        p, m = complexity(config, int(cache.manifest["frames"]))
        if p <= params_limit and m <= macs_limit:
            best = w
    return best


def _train(tmp: Path, name: str, seed: int, overrides: dict, export: bool = True) -> dict:
    out = tmp / f"{name}-{seed}"
    values = {**RECIPE, "prune_ratio": 0.0, **overrides, "seed": seed, "dataset": str(tmp / "data"),
              "cache_dir": str(tmp), "out": str(out)}
    if "fit" in overrides:  # --fit chooses the start network: no preset
        values.pop("prune_ratio")
        values.pop("preset")
    t0 = time.perf_counter()
    s = train(resolve_train_config(values), force=True, progress=False)
    seconds = time.perf_counter() - t0
    f = s["final"]
    row = {"seed": seed, "run": str(out), "reported": s["reported_accuracy"], "final": f["accuracy"],
           "seen": f["seen_accuracy"], "unseen": f["unseen_accuracy"], "per_device": f["per_device"],
           "params": s["params"], "macs": s["macs"], "seconds": seconds, "channel_plan": s["channel_plan"]}
    if export:
        e = export_checkpoint(out, out / "model-int8.onnx", precision="int8", rules=RULES, cache_dir=tmp, force=True)
        r = e["report"]
        row.update(verdict=r["verdict"], counted_bytes=r["counted_bytes"], macs_per_second=r["macs_per_second"],
                   acc_fp32=e["int8"]["accuracy_fp32"], acc_int8=e["int8"]["accuracy_int8"])
    print(f"{name} seed {seed}: final {100 * f['accuracy']:.1f} % (seen {100 * f['seen_accuracy']:.1f}, unseen "
          f"{100 * f['unseen_accuracy']:.1f}), {s['params']:,} params, {s['macs'] / 1e6:.2f} M MACs, {seconds:.0f} s"
          + (f", int8 {row['verdict']} {100 * row['acc_int8']:.1f} %" if export else ""), flush=True)
    return row


def ensemble_accuracy(cache: FeatureCache, runs: list[str]) -> dict:
    """The teachers' mean logits on the evaluate split: accuracy, and seen/unseen device means."""
    teachers = [load_teacher(r, cache.label_names, cache.manifest["params"], cache.manifest["channels"]) for r in runs]
    logits = np.mean([compute_logits(t, cache, "evaluate") for t in teachers], axis=0)
    pred, y = logits.argmax(1), cache.labels("evaluate")
    devices = np.asarray(cache.devices("evaluate"))
    seen = set(cache.devices("train"))
    per = {d: float((pred[devices == d] == y[devices == d]).mean()) for d in sorted(set(devices))}
    return {"accuracy": float((pred == y).mean()), "per_device": per,
            "seen": statistics.mean(v for d, v in per.items() if d in seen),
            "unseen": statistics.mean(v for d, v in per.items() if d not in seen)}


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cache, generated, data_s = _data(tmp)
        width = widest_within(cache)
        teacher_runs = [_train(tmp, "teacher", s, {"width": TEACHER_WIDTH}, export=False) for s in SEEDS]
        teacher_dirs = [r["run"] for r in teacher_runs]
        ensemble = ensemble_accuracy(cache, teacher_dirs)
        print(f"teacher ensemble: {100 * ensemble['accuracy']:.1f} %", flush=True)
        rows = [
            (f"(a) width {width} from scratch", {"width": width}),
            (f"(b) width {width} distilled", {"width": width, "teachers": teacher_dirs}),
            (f"(c) --fit {RULES}: width 32 channel-pruned, distilled", {"fit": RULES, "teachers": teacher_dirs}),
        ]
        result_rows = []
        for name, overrides in rows:
            result_rows.append({"name": name, "overrides": {k: v for k, v in overrides.items() if k != "teachers"},
                                "distilled": "teachers" in overrides,
                                "runs": [_train(tmp, name[:3].strip("()"), s, overrides) for s in SEEDS]})
    return {"rules": RULES, "width": width, "dataset": generated, "data_seconds": data_s, "recipe": RECIPE,
            "seeds": list(SEEDS), "teacher_width": TEACHER_WIDTH, "teacher_runs": teacher_runs,
            "ensemble": ensemble, "rows": result_rows}


def run_kd_targets() -> dict:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cache, generated, _ = _data(tmp)
        teacher = _train(tmp, "teacher", 0, {"width": TEACHER_WIDTH}, export=False)
        rows = []
        for mode in ("cached", "online"):
            rows.append({"mode": mode, "runs": [
                _train(tmp, mode, s, {"width": 16, "teachers": [teacher["run"]], "kd_targets": mode}, export=False)
                for s in SEEDS]})
    return {"teacher": teacher, "rows": rows, "recipe": RECIPE, "seeds": list(SEEDS), "dataset": generated}


def _pm(values) -> str:
    values = [100 * v for v in values]
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.1f}"


def _verdicts(runs: list[dict]) -> str:
    return ", ".join(f"{v} ×{sum(x['verdict'] == v for x in runs)}" for v in sorted({x["verdict"] for x in runs}))


def _paired(a: list[dict], b: list[dict], key: str) -> str:
    return _pm([x[key] - y[key] for x, y in zip(a, b, strict=True)])


def markdown(r: dict) -> str:
    d, e = r["dataset"], r["ensemble"]
    teacher_params = r["teacher_runs"][0]["params"]
    teacher_macs = r["teacher_runs"][0]["macs"]
    lines = ["## DCASE 2024-style budget: distillation and budget fit (synthetic TAU 2022 Mobile profile)", "",
             f"Rules {r['rules']}: at most 128,000 bytes of parameters (all of them, int8: 1 byte each) and 30 M MACs "
             f"per second. Same data as the DCASE 2022-style section ({d['train']:,} train / {d['evaluate']:,} "
             f"evaluate 1-s clips) and the same recipe (20 epochs, batch 32, lr 3e-3); {len(r['seeds'])} seeds per row, "
             "mean ± sample std. *final* = accuracy of the final network on all evaluate clips; *seen*/*unseen* = "
             "mean per-device accuracy over each group. Every student is exported int8 (static, calibrated on 64 "
             f"training clips) with `--rules {r['rules']}`; *int8* is the exported file's accuracy under onnxruntime.",
             "",
             f"Teacher: an ensemble of {len(r['teacher_runs'])} dense width-{r['teacher_width']} networks "
             f"({teacher_params:,} parameters, {teacher_macs / 1e6:.1f} M MACs per second each: over the MAC limit), "
             f"one per seed; the ensemble (mean logits) scores **{100 * e['accuracy']:.1f} %** (seen "
             f"{100 * e['seen']:.1f}, unseen {100 * e['unseen']:.1f}); its members "
             f"{_pm([x['final'] for x in r['teacher_runs']])} "
             f"(train time {statistics.mean(x['seconds'] for x in r['teacher_runs']):.0f} s each).", "",
             "| student | params | MACs / s | final | seen | unseen | int8 | int8 − fp32 | verdict | train time |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for row in r["rows"]:
        runs = row["runs"]
        params = sorted({x["params"] for x in runs})
        macs = [x["macs_per_second"] for x in runs]
        lines.append(
            f"| {row['name']} | {params[0]:,}" + (f"–{params[-1]:,}" if len(params) > 1 else "")
            + f" | {min(macs) / 1e6:.2f}" + (f"–{max(macs) / 1e6:.2f}" if max(macs) != min(macs) else "")
            + f" M | {_pm([x['final'] for x in runs])} | {_pm([x['seen'] for x in runs])} | "
            f"{_pm([x['unseen'] for x in runs])} | {_pm([x['acc_int8'] for x in runs])} | "
            f"{_pm([x['acc_int8'] - x['acc_fp32'] for x in runs])} | {_verdicts(runs)} | "
            f"{statistics.mean(x['seconds'] for x in runs):.0f} s |")
    a, b, c = (row["runs"] for row in r["rows"])
    gap_c = statistics.mean(100 * x["final"] for x in c) - 100 * e["accuracy"]
    lines += ["", "Paired by seed (points, final accuracy): "
              f"(b) − (a) {_paired(b, a, 'final')}; (c) − (a) {_paired(c, a, 'final')}; "
              f"(c) − (b) {_paired(c, b, 'final')}; on unseen devices (c) − (a) {_paired(c, a, 'unseen')}. "
              f"(c) is {gap_c:+.1f} points from the teacher ensemble. Goals: (c) ≥ (a) + 2 points, and within 3 "
              f"points of the teacher. The ensemble itself is only "
              f"{100 * e['accuracy'] - statistics.mean(100 * x['final'] for x in a):.1f} points above (a) on this "
              "profile: a student cannot gain more than its teacher knows, so the first goal needs a stronger "
              "teacher than three width-32 networks trained with the same 20-epoch recipe. Training times: the "
              "rows ran one after another on a shared 2-core machine, and other work ran beside the later rows; "
              "compare them as rough costs only.", "",
              "Channel plans of (c) (width 32 start, groups stem / stage1 blocks / stage2 blocks):", ""]
    for x in c:
        plan = x["channel_plan"] or {}
        lines.append(f"- seed {x['seed']}: " + ", ".join(f"{k} {v}" for k, v in plan.items()))
    return "\n".join(lines) + "\n"


def markdown_kd_targets(r: dict) -> str:
    cached, online = (row["runs"] for row in r["rows"])
    t = r["teacher"]
    lines = ["## Distillation targets: cached vs online", "",
             f"Same data and recipe as above; student width 16, one width-32 teacher (seed 0, final "
             f"{100 * t['final']:.1f} %), w 0.5, τ 2, {len(r['seeds'])} seeds. *cached*: the teacher's logits on each "
             "un-augmented training clip, computed once, mixed with the inputs' mixup λ and partner. *online*: the "
             "teacher runs on every augmented batch (rolled, mixed) the student sees.", "",
             "| targets | final | seen | unseen | train time |", "|---|---:|---:|---:|---:|"]
    for row in r["rows"]:
        runs = row["runs"]
        lines.append(f"| {row['mode']} | {_pm([x['final'] for x in runs])} | {_pm([x['seen'] for x in runs])} | "
                     f"{_pm([x['unseen'] for x in runs])} | {statistics.mean(x['seconds'] for x in runs):.0f} s |")
    lines += ["", f"online − cached, paired by seed: final {_paired(online, cached, 'final')} points, unseen "
              f"{_paired(online, cached, 'unseen')} points; time "
              f"{statistics.mean(x['seconds'] for x in online) / statistics.mean(x['seconds'] for x in cached):.2f}×."]
    return "\n".join(lines) + "\n"
