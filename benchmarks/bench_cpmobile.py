"""CP-Mobile d24 (the DCASE 2024/25 organisers' baseline, on its own 32 kHz log-mel) against the
`--fit dcase2024` CP-ResNet student, on the same synthetic TAU 2022 Mobile profile and the
same recipe (bench_dcase2022's CLIPS_PER_CLASS and RECIPE: epochs, batch 32, lr 3e-3, mixup).

Section `cpmobile`: `--preset cp-mobile-d24`, one run per seed; each exported int8 and fp16 with
`--rules dcase2024`; accuracy, macro accuracy, seen/unseen device means, the int8 file's
accuracy, the verdict and counted bytes; side by side, in the same run, the `--fit dcase2024`
CP-ResNet student at the same rules and recipe (no teachers: the network is the one variable), one
run per seed, exported the same way; then onnxruntime latency per 1-s clip (network only,
1 thread, median, each file in a fresh process) of every exported file. Then the same
cp-mobile-d24 runs again with device impulse-response augmentation (`--dir-folder`, p 0.6) on
IR_COUNT synthetic microphone responses (write_impulse_responses: band limits, a resonance and a
tilt drawn at random, as the profile builds its devices, but none of them is a profile device),
paired by seed with the runs without it: the effect on unseen devices is the point.

Section `cpmthroughput`: CPU training throughput of cp-mobile-d24 under the d24 recipe (AdamW,
batch 256, frequency masking 48, Freq-MixStyle 0.4/0.3) on random 1-s inputs (256 mels x 65
frames), in clips/s, and the time per epoch of the 100 % TAU 2022 training split.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench_budget import RULES
from bench_dcase2022 import CLIPS_PER_CLASS, RECIPE, SEEDS

from edgeasc.data.synth2022 import DEFAULT_CLIPS_PER_CLASS, write_dataset_2022
from edgeasc.export.pipeline import export_checkpoint
from edgeasc.runtime.bench import bench_models
from edgeasc.train.config import resolve_train_config
from edgeasc.train.run import train

PRESET = "cp-mobile-d24"
LATENCY_RUNS = int(os.environ.get("EDGEASC_BENCH_LATENCY_RUNS", 200))
# TAU Urban Acoustic Scenes 2022 Mobile development set, fold 1 train: the DCASE 2024 "100 %"
# split (split100.csv) of 1-s segments
TAU2022_TRAIN_100 = 139_620
THROUGHPUT_BATCH = int(os.environ.get("EDGEASC_BENCH_TP_BATCH", 256))
THROUGHPUT_STEPS = int(os.environ.get("EDGEASC_BENCH_TP_STEPS", 6))
# A folder to keep the runs in (default: a temporary one): a run whose folder already holds its
# summary.json is read back and exported again instead of trained again, so an interrupted
# measurement goes on where it stopped. EDGEASC_BENCH_DIR_RUNS=0 skips the DIR runs; the section
# then shows the DIR runs of the previous measurement in results.json, with its date.
WORKDIR = os.environ.get("EDGEASC_BENCH_WORKDIR")
DIR_RUNS = os.environ.get("EDGEASC_BENCH_DIR_RUNS", "1") != "0"
IR_COUNT = 24
DIR_P = 0.6
IR_RATE = 32_000
IR_SAMPLES = 1024  # 32 ms: a microphone's response, not a room's


def write_impulse_responses(folder: Path, count: int = IR_COUNT, seed: int = 0) -> list[dict]:
    """`count` synthetic microphone impulse responses as 32 kHz float WAVs: a linear-phase FIR
    whose magnitude is a band (high-pass 80-600 Hz, low-pass 5-15 kHz, 2nd-order slopes), one
    resonance (1-8 kHz, -6 to +8 dB, Q 1-4) and a tilt (-3 to +3 dB per octave from 1 kHz), made
    minimum-delay by centring it and windowing; unit energy gain at 1 kHz. What was drawn is
    returned, so the section can say which responses were used."""
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 2024])
    f = np.fft.rfftfreq(IR_SAMPLES, 1 / IR_RATE)
    f[0] = 1.0
    drawn = []
    for i in range(count):
        hp, lp = rng.uniform(80, 600), rng.uniform(5000, 15000)
        fr, gain_db, q, tilt = rng.uniform(1000, 8000), rng.uniform(-6, 8), rng.uniform(1, 4), rng.uniform(-3, 3)
        mag = (1 / np.sqrt(1 + (hp / f) ** 4)) * (1 / np.sqrt(1 + (f / lp) ** 4))
        mag *= 1 + (10 ** (gain_db / 20) - 1) / (1 + (q * (f / fr - fr / f)) ** 2)
        mag *= 10 ** (tilt * np.log2(f / 1000) / 20)
        mag /= np.interp(1000, f, mag)
        h = np.fft.fftshift(np.fft.irfft(mag, IR_SAMPLES)) * np.hanning(IR_SAMPLES)
        sf.write(folder / f"mic{i:02d}.wav", h.astype(np.float32), IR_RATE, subtype="FLOAT")
        drawn.append({"highpass": hp, "lowpass": lp, "resonance_hz": fr, "resonance_db": gain_db, "q": q,
                      "tilt_db_per_octave": tilt})
    return drawn


def _train_export(tmp: Path, name: str, seed: int, overrides: dict, precisions: tuple[str, ...]) -> dict:
    out = tmp / f"{name}-{seed}"
    values = {**RECIPE, "prune_ratio": 0.0, **overrides, "seed": seed, "dataset": str(tmp / "data"),
              "cache_dir": str(tmp), "out": str(out)}
    values["lr_hold"] = min(values["lr_hold"], values["epochs"])  # a shortened run (EDGEASC_BENCH_EPOCHS < 7)
    if "fit" in overrides:  # --fit chooses the start network: no preset, no magnitude target
        values.pop("prune_ratio")
        values.pop("preset")
    if (out / "summary.json").is_file() and (out / "model-final.pt").is_file():  # kept from an interrupted run
        s = json.loads((out / "summary.json").read_text())
    else:
        s = train(resolve_train_config(values), force=True, progress=False)
    # training time: the epochs' own times (metrics.jsonl: training and evaluation), without the first
    # feature extraction
    seconds = sum(json.loads(line)["seconds"] for line in (out / "metrics.jsonl").read_text().splitlines())
    f = s["final"]
    row = {"seed": seed, "run": str(out), "final": f["accuracy"], "macro": f["macro_accuracy"],
           "seen": f["seen_accuracy"], "unseen": f["unseen_accuracy"], "per_device": f["per_device"],
           "params": s["params"], "macs": s["macs"], "seconds": seconds, "frontend": s.get("frontend"),
           "exports": {}, "dir": (s.get("augmentation") or {}).get("dir")}
    if ("dir_folder" in overrides) != bool(row["dir"]):
        raise RuntimeError(f"{name} seed {seed}: the run's record of --dir-folder does not match what was asked")
    for precision in precisions:
        path = out / f"model-{precision}.onnx"
        e = export_checkpoint(out, path, precision=precision, rules=RULES, cache_dir=tmp, force=True)
        r = e["report"]
        row["exports"][precision] = {"path": str(path), "verdict": r["verdict"], "counted_bytes": r["counted_bytes"],
                                     "macs_per_second": r["macs_per_second"], "file_bytes": path.stat().st_size}
        if precision == "int8":
            row.update(acc_fp32=e["int8"]["accuracy_fp32"], acc_int8=e["int8"]["accuracy_int8"])
    print(f"{name} seed {seed}: final {100 * f['accuracy']:.1f} % (macro {100 * (f['macro_accuracy'] or 0):.1f}, seen "
          f"{100 * f['seen_accuracy']:.1f}, unseen {100 * f['unseen_accuracy']:.1f}), {s['params']:,} params, "
          f"{s['macs'] / 1e6:.2f} M MACs, {seconds:.0f} s; "
          + ", ".join(f"{p} {x['verdict']} {x['counted_bytes']:,} B" for p, x in row["exports"].items()), flush=True)
    return row


def _previous_dir_runs() -> dict | None:
    """The DIR runs of the previous measurement of this section (results.json), with its date."""
    try:
        old = json.loads((Path(__file__).resolve().parent / "results.json").read_text())["cpmobile"]
    except (OSError, KeyError, ValueError):
        return None
    if old.get("dir_runs"):
        return {"measured": old["measured"], "runs": old["runs"], "dir_runs": old["dir_runs"], "dir_p": old["dir_p"],
                "impulse_responses": old["impulse_responses"]}
    return old.get("dir_previous")


def run() -> dict:
    with contextlib.ExitStack() as stack:
        if WORKDIR:
            tmp = Path(WORKDIR)
            tmp.mkdir(parents=True, exist_ok=True)
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        t0 = time.perf_counter()
        if (tmp / "data" / "meta.csv").is_file() and (tmp / "dataset.json").is_file():  # an interrupted run's
            generated = json.loads((tmp / "dataset.json").read_text())
        else:
            generated = write_dataset_2022(tmp / "data", CLIPS_PER_CLASS, progress=False)
            (tmp / "dataset.json").write_text(json.dumps(generated))
        data_s = time.perf_counter() - t0
        runs = [_train_export(tmp, "cpm", s, {"preset": PRESET}, ("int8", "fp16")) for s in SEEDS]
        students = [_train_export(tmp, "fit", s, {"fit": RULES}, ("int8", "fp16")) for s in SEEDS]
        irs = write_impulse_responses(tmp / "irs")
        dir_runs = [_train_export(tmp, "cpm-dir", s, {"preset": PRESET, "dir_folder": str(tmp / "irs"),
                                                      "dir_p": DIR_P}, ("int8",)) for s in SEEDS] if DIR_RUNS else []
        files = [(f"cp-mobile-d24 seed {x['seed']} int8", x["exports"]["int8"]["path"]) for x in runs]
        files += [(f"cp-mobile-d24 seed {x['seed']} fp16", x["exports"]["fp16"]["path"]) for x in runs]
        files += [(f"--fit {RULES} student seed {x['seed']} int8", x["exports"]["int8"]["path"]) for x in students]
        files += [(f"--fit {RULES} student seed {x['seed']} fp16", x["exports"]["fp16"]["path"]) for x in students]
        t0 = time.perf_counter()
        bench = bench_models([p for _, p in files], threads=(1,), runs=LATENCY_RUNS, warmup=10)
        latency = [{"name": n, "p50_ms": r["latency_ms"]["p50"], "p90_ms": r["latency_ms"]["p90"],
                    "file_bytes": r["file_bytes"], "input_shape": r["input_shape"]}
                   for (n, _), r in zip(files, bench["results"], strict=True)]
        for row in latency:
            print(f"{row['name']}: {row['p50_ms']:.2f} ms median", flush=True)
        for x in [*runs, *dir_runs, *students]:  # the temporary directory goes: keep only the numbers
            x.pop("run")
            for e in x["exports"].values():
                e.pop("path")
    return {"rules": RULES, "preset": PRESET, "recipe": RECIPE, "seeds": list(SEEDS), "dataset": generated,
            "clips_per_class": CLIPS_PER_CLASS,
            "data_seconds": data_s, "runs": runs, "dir_runs": dir_runs, "dir_p": DIR_P, "impulse_responses": irs, "students": students, "latency": latency,
            "dir_previous": None if dir_runs else _previous_dir_runs(),
            "latency_runs": LATENCY_RUNS, "latency_seconds": time.perf_counter() - t0, "cpu_flags": cpu_flags()}


def cpu_flags() -> list[str]:
    """The vector extensions /proc/cpuinfo lists (what onnxruntime's kernels can use)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.partition(":")[2].split()
                return sorted(f for f in flags if f in ("avx", "avx2", "fma") or f.startswith(("avx512", "amx")))
    except OSError:
        pass
    return []


def _pm(values) -> str:
    values = [100 * v for v in values]
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.1f}"


def _verdicts(exports: list[dict]) -> str:
    return ", ".join(f"{v} ×{sum(x['verdict'] == v for x in exports)}" for v in sorted({x["verdict"] for x in exports}))


def _span(values, fmt: str = "{:,}") -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) + ("" if lo == hi else "–" + fmt.format(hi))


def _reduced(r: dict) -> bool:
    """Fewer clips or epochs than the profile's recipe: the accuracies are not a measurement."""
    return r["recipe"]["epochs"] != 20 or r.get("clips_per_class") != DEFAULT_CLIPS_PER_CLASS


def _paired(a: list[dict], b: list[dict], key: str) -> tuple[float, float]:
    """Mean and sample std, in points, of b − a paired by seed."""
    d = [100 * (y[key] - x[key]) for x, y in zip(a, b, strict=True)]
    return statistics.mean(d), statistics.stdev(d) if len(d) > 1 else 0.0


def _row(name: str, rs: list[dict], reduced: bool) -> str:
    i8 = [x["exports"]["int8"] for x in rs]
    f16 = [x["exports"]["fp16"] for x in rs]
    cells = [name, _span([x["params"] for x in rs]), _span([x["macs_per_second"] / 1e6 for x in i8], "{:.2f}") + " M"]
    if not reduced:
        cells += [_pm([x[k] for x in rs]) for k in ("final", "macro", "seen", "unseen", "acc_int8")]
    cells += [f"{_verdicts(i8)}, {_span([x['counted_bytes'] for x in i8])}",
              f"{_verdicts(f16)}, {_span([x['counted_bytes'] for x in f16])}"]
    if not reduced:
        cells.append(f"{statistics.mean(x['seconds'] for x in rs):.0f} s")
    return "| " + " | ".join(cells) + " |"


def markdown(r: dict) -> str:
    d, runs, students, recipe = r["dataset"], r["runs"], r["students"], r["recipe"]
    reduced = _reduced(r)
    rows = [_row(r["preset"], runs, reduced), _row(f"`--fit {r['rules']}` CP-ResNet student", students, reduced)]
    lines = ["## CP-Mobile d24 vs the --fit dcase2024 student", "",
             "Command: `python benchmarks/run.py cpmobile` (the full table: the synthetic TAU 2022 Mobile profile "
             "of the two sections above, its recipe of 20 epochs at batch 32, 3 seeds; `EDGEASC_BENCH_CLIPS`, "
             "`EDGEASC_BENCH_EPOCHS`, `EDGEASC_BENCH_SEEDS` shorten it). `--preset cp-mobile-d24` brings its own "
             "frontend (32 kHz, 256 mel bins × 65 frames per second, resampled with the sinc port); the student "
             f"is `--fit {r['rules']}` without teachers (a damped CP-ResNet channel-pruned to the rules during "
             f"training, on the perceptual mel). Both are trained in this run, one run per seed each, and each run "
             f"is exported int8 (static, calibrated on 64 training clips) and fp16 with `--rules {r['rules']}`.", ""]
    if reduced:
        lines += [f"**Accuracy not measured.** This run is a reduced one ({r.get('clips_per_class', '?')} clips per "
                  f"class: {d['train']:,} train / {d['evaluate']:,} evaluate clips, {recipe['epochs']} epoch(s), "
                  f"{len(runs)} seed(s)) that exists for the shapes, the rule checks and the latency, which do not "
                  "depend on training; its accuracies are not reported. The full comparison did not fit the time of "
                  "this measurement.", "",
                  "| network | params | MACs / s (export) | int8 verdict, counted bytes | fp16 verdict, counted bytes |",
                  "|---|---:|---:|---|---|", *rows]
    else:
        lines += [f"Same data as the two sections above ({d['train']:,} train / {d['evaluate']:,} evaluate 1-s clips) "
                  f"and the same recipe for both ({recipe['epochs']} epochs, batch {recipe['batch_size']}, Adam lr "
                  f"{recipe['lr']:g} held {recipe['lr_hold']} epochs then linear, mixup {recipe['mixup_alpha']:g}, "
                  f"roll): the network and its frontend are the one variable. {len(r['seeds'])} seeds, mean ± sample "
                  "std. *macro* = the mean of the class-wise accuracies (runtime/scores.py, DCASE 2024/25's "
                  "ranking; the profile evaluates the same number of clips per class, so here it equals *final*); *seen*/*unseen* = mean per-device accuracy over each group; *int8* = the exported "
                  "file's accuracy under onnxruntime; *train time* = the sum of the epochs' own times (metrics.jsonl: "
                  "training and evaluation, without the first feature extraction), mean over seeds, on a machine "
                  "shared with other work.", "",
                  "| network | params | MACs / s (export) | final | macro | seen | unseen | int8 | int8 verdict, bytes | "
                  "fp16 verdict, bytes | train time |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|", *rows, "",
                  "cp-mobile-d24 − student, paired by seed (points): " + ", ".join(
                      "{} {:+.1f} ± {:.1f}".format(k.removeprefix("acc_"), *_paired(students, runs, k))
                      for k in ("final", "macro", "seen", "unseen", "acc_int8")) + "."]
    dir_source, dir_note = r, ""
    if not r.get("dir_runs") and r.get("dir_previous"):
        dir_source = r["dir_previous"]
        dir_note = (f" Not measured again with the runs above: these runs, with and without DIR, are the "
                    f"measurement of {dir_source['measured']}, with that day's code (for cp-mobile-d24 on 2026-12-05: a "
                    "float32 FFT and soxr resampling); same data, recipe and seeds. Their train time is wall "
                    "time per run, feature extraction included.")
    if not reduced and dir_source.get("dir_runs"):
        dr, base = dir_source["dir_runs"], dir_source["runs"]
        lines += ["", "### Device impulse responses (DIR) on cp-mobile-d24", "",
                  f"The same runs again with `--dir-folder` (p {dir_source['dir_p']:g}: each training clip of the reference "
                  f"device a is convolved with one of {len(dir_source['impulse_responses'])} synthetic microphone responses with "
                  "that probability, before the frontend). The responses are written by the benchmark "
                  "(`write_impulse_responses`: band limits, one resonance and a tilt drawn at random, 1,024 taps at "
                  "32 kHz); they are not the profile's devices, as MicIRP's microphones are not TAU's." + dir_note, "",
                  "| training | final | macro | seen | unseen | int8 | train time |", "|---|---:|---:|---:|---:|---:|---:|"]
        for name, rs in (("without DIR", base), (f"with DIR (p {dir_source['dir_p']:g})", dr)):
            lines.append(f"| {name} | {_pm([x['final'] for x in rs])} | {_pm([x['macro'] for x in rs])} | "
                         f"{_pm([x['seen'] for x in rs])} | {_pm([x['unseen'] for x in rs])} | "
                         f"{_pm([x['acc_int8'] for x in rs])} | {statistics.mean(x['seconds'] for x in rs):.0f} s |")
        lines += ["", "With DIR − without, paired by seed (points): " + ", ".join(
            "{} {:+.1f} ± {:.1f}".format(k, *_paired(base, dr, k)) for k in ("final", "macro", "seen", "unseen")) + "."]
    lat = {x["name"]: x for x in r["latency"]}

    def med(prefix: str, precision: str) -> float:
        return statistics.median(x["p50_ms"] for n, x in lat.items() if n.startswith(prefix) and n.endswith(precision))
    cpm_ms, fit_ms = med("cp-mobile-d24", "int8"), med("--fit", "int8")
    if not reduced:
        diff, sd = _paired(students, runs, "macro")
        inside = abs(diff) <= 2 * sd
        lines += ["", f"**Which start `--fit {r['rules']}` takes.** Macro accuracy, cp-mobile-d24 − student: "
                  f"{diff:+.1f} ± {sd:.1f} points paired by seed ("
                  + ("inside the seed noise" if inside else ("CP-Mobile ahead" if diff > 0 else "the student ahead"))
                  + f"); int8 latency per 1-s clip {cpm_ms:.2f} ms against {fit_ms:.2f} ms (medians of the seeds' "
                  "files, below). `--fit` starts from a damped CP-ResNet, "
                  + ("as CP-Mobile is not more accurate here and its int8 network is slower; " if diff <= 2 * sd and
                     cpm_ms > fit_ms else "although CP-Mobile is not behind here: the fit's channel plans are "
                     "CP-ResNet's; ")
                  + "a CP-Mobile run is trained with `--preset cp-mobile-d24` and compressed with "
                  "`--macs-target`/`--params-target` or exported as it is (it fits at fp16 and int8)."]
    lines += ["", "Latency: onnxruntime, 1 thread, the network only (features given), each file in a fresh process, "
              f"{r['latency_runs']} runs after 10 warm-up; median and p90 per 1-s clip. The frontends differ too "
              "(cp-mobile-d24: the d24 log-mel, 256 × 65; the student: the perceptual mel); their own cost per clip "
              "is in the log-mel section.", "",
              "| file | input (C × mels × frames) | median ms | p90 ms | file bytes |", "|---|---|---:|---:|---:|"]
    for x in r["latency"]:
        lines.append(f"| {x['name']} | {' × '.join(str(v) for v in x['input_shape'][1:])} | {x['p50_ms']:.2f} | "
                     f"{x['p90_ms']:.2f} | {x['file_bytes']:,} |")
    lines += ["", f"CPU flags: {', '.join(r['cpu_flags']) or 'none of AVX/AVX2/AVX-512'}.", ""]
    return "\n".join(lines)


def run_throughput() -> dict:
    """Forward + backward + AdamW steps of cp-mobile-d24 at the d24 recipe's batch, with its
    batch augmentations, on random normalised features of 1-s clips, in the default memory
    format (what `edgeasc train` uses) and in channels_last (`--channels-last`). Threads:
    torch's default (all cores)."""
    import numpy as np
    import torch

    from edgeasc.data.loader import freq_mask, freq_mixstyle
    from edgeasc.models import build_model
    from edgeasc.models.presets import resolve_model

    cfg = resolve_train_config({"dataset": "x", "recipe": "d24", "preset": PRESET})
    config, _ = resolve_model(PRESET)
    mixstyle = tuple(float(v) for v in cfg.freq_mixstyle.split(","))
    rng = np.random.default_rng(0)
    x_all = torch.randn(THROUGHPUT_BATCH, 1, config.n_mels, 65)
    y_all = torch.from_numpy(rng.integers(0, 10, THROUGHPUT_BATCH))
    formats = {}
    for fmt, memory in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
        torch.manual_seed(0)
        model = build_model(config).to(memory_format=memory).train()
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        times = []
        for step in range(THROUGHPUT_STEPS + 1):  # the first step allocates: not timed
            t0 = time.perf_counter()
            x = freq_mixstyle(freq_mask(x_all, rng, cfg.freq_mask), rng, *mixstyle).contiguous(memory_format=memory)
            loss = torch.nn.functional.cross_entropy(model(x), y_all)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step:
                times.append(time.perf_counter() - t0)
        step_s = statistics.median(times)
        formats[fmt] = {"step_seconds": times, "median_step_s": step_s, "clips_per_second": THROUGHPUT_BATCH / step_s,
                        "epoch_seconds_100": TAU2022_TRAIN_100 * step_s / THROUGHPUT_BATCH}
        print(f"{fmt}: {THROUGHPUT_BATCH / step_s:.1f} clips/s ({[round(t, 1) for t in times]} s per step)", flush=True)
    return {"batch": THROUGHPUT_BATCH, "steps": THROUGHPUT_STEPS, "formats": formats,
            "threads": torch.get_num_threads(), "train_clips_100": TAU2022_TRAIN_100, "recipe_epochs": cfg.epochs,
            "cpu_flags": cpu_flags()}


def markdown_throughput(r: dict) -> str:
    lines = [
        "## CP-Mobile d24 training throughput on CPU (`--recipe d24`)", "",
        "Command: `python benchmarks/run.py cpmthroughput`. cp-mobile-d24 on 1-s inputs (1 × 256 × 65, random "
        f"normalised features: the feature cache makes loading cheap), batch {r['batch']}, forward + backward + "
        "AdamW with the recipe's batch augmentations (frequency masking 48, Freq-MixStyle 0.4/0.3); median of "
        f"{r['steps']} steps after one untimed, {r['threads']} torch threads. *epoch* = the 100 % TAU 2022 "
        f"training split ({r['train_clips_100']:,} clips) at that rate, training steps only (evaluation and the "
        "first run's feature extraction come on top).", "",
        f"| memory format | clips/s | s per step of {r['batch']} | epoch (100 % split) | "
        f"{r['recipe_epochs']} epochs |", "|---|---:|---:|---:|---:|"]
    for fmt, x in r["formats"].items():
        lines.append(f"| {fmt}{' (`--channels-last`)' if fmt == 'channels_last' else ' (default)'} | "
                     f"{x['clips_per_second']:.1f} | {x['median_step_s']:.1f} | {x['epoch_seconds_100'] / 3600:.1f} h | "
                     f"{r['recipe_epochs'] * x['epoch_seconds_100'] / 86400:.0f} days |")
    best = max(x["clips_per_second"] for x in r["formats"].values())
    lines += ["", f"At {best:.0f} clips/s a training step reaches about {3 * 29_419_156 * best / 1e9:.0f} GMAC/s "
              "(forward + backward ≈ 3 × the forward's 29.4 M MACs per clip): the network is small in MACs, but its "
              "first layers run on 256 mel bins with few channels and depthwise convolutions, far below what a "
              "CPU's dense convolutions reach. The recipe's 150 epochs on the full split are a GPU job "
              "(`--device cuda`, where bf16 autocast and channels_last are on by default; `scripts/gpu-check.sh` "
              "measures steps/s and the input pipeline). The machine was shared with other work while this ran: "
              "read the numbers as an order of magnitude.", "",
              f"CPU flags: {', '.join(r['cpu_flags']) or 'none of AVX/AVX2/AVX-512'}.", ""]
    return "\n".join(lines)
