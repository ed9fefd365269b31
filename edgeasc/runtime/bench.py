"""Latency, throughput and memory of exported models under onnxruntime, as a device runs them.
torch-free.

Every (model, thread count) is measured in its own fresh Python process, so that one
model's arena, caches and page faults do not leak into the next one's numbers, and so that
the peak resident memory is that of a process that loads and runs only that model. An
empty process that imports onnxruntime and numpy is measured the same way; the model's
memory cost is the increase over it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from edgeasc.errors import ConfigError, EdgeascError
from edgeasc.runtime.deployed import ModelError, load_model, session_options


def cpu_model() -> str:
    """The CPU's name: x86 'model name', or the board / core names ARM kernels report."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    fields = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or fields.get("Model") or fields.get("Hardware") or platform.processor()
    return name or platform.machine()


def machine() -> dict:
    import onnxruntime

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_model(), "cores": cores, "arch": platform.machine(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__}


def _peak_rss_bytes() -> int:
    """Peak resident memory of this process. On Linux VmHWM: getrusage's ru_maxrss survives
    exec, so a process started from a big parent (a training session holding torch) would
    report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = (len(sorted_values) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def measure(path: str | Path | None, threads: int = 1, runs: int = 50, warmup: int = 5, batch: int = 1,
            seconds: float | None = None, arena: bool = True) -> dict:
    """Measure one model in this process (`path=None`: the empty baseline). Call it in a fresh
    process for honest memory numbers: `bench_models` does."""
    import numpy as np  # noqa: F401  (the baseline process holds what a model process holds)
    import onnxruntime  # noqa: F401

    if path is None:
        return {"peak_rss_bytes": _peak_rss_bytes()}
    t0 = time.perf_counter()
    model = load_model(path, threads, arena)
    load_seconds = time.perf_counter() - t0
    own_clip = model.metadata.get("clip_seconds")
    clip = seconds if seconds is not None else own_clip
    if clip is None:
        raise ModelError(f"{path}: not an edgeasc export (no clip length in its metadata): pass --seconds")
    x = model.example_input(batch, clip)
    for _ in range(warmup):
        model.run(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        model.run(x)
        times.append(time.perf_counter() - t)
    per_clip = sorted(t / batch for t in times)
    return {
        "model": str(path), "threads": threads, "batch": batch, "runs": runs, "warmup": warmup, "arena": arena,
        "clip_seconds": float(clip), "input_shape": list(x.shape), "file_bytes": Path(path).stat().st_size,
        # the metadata's MACs hold for the model's own clip length only
        "macs_per_clip": model.metadata.get("macs_per_clip") if own_clip is not None and clip == own_clip else None,
        "precision": model.metadata.get("precision"),
        "nonzero_params": (model.metadata.get("size_report") or {}).get("nonzero_params"),
        "load_ms": 1e3 * load_seconds,
        "latency_ms": {"mean": 1e3 * statistics.fmean(per_clip), "p50": 1e3 * percentile(per_clip, 0.5),
                       "p90": 1e3 * percentile(per_clip, 0.9), "p99": 1e3 * percentile(per_clip, 0.99),
                       "min": 1e3 * per_clip[0], "max": 1e3 * per_clip[-1]},
        "clips_per_second": batch * runs / sum(times),
        "real_time_factor": float(clip) / percentile(per_clip, 0.5),
        "peak_rss_bytes": _peak_rss_bytes(),
    }


STAGES = ("decode", "resample", "frontend", "network")


def measure_end_to_end(path: str | Path, clip: str | Path, threads: int = 1, runs: int = 20, warmup: int = 2,
                       hide_scipy: bool = False) -> dict:
    """Time what a device does per clip, stage by stage, in this process: decode the file
    (soundfile, through audio.decode as predict), resample it and make the model's channels
    and length (soxr), the frontend and normalisation (numpy; none for a --with-frontend model,
    whose graph holds it), and the network (onnxruntime). Medians per stage (wall time, and
    this thread's CPU time), the median total, and total / network (wall).
    `hide_scipy`: the frontend's numpy FFT, as in an install without scipy."""
    if hide_scipy:
        sys.modules["scipy"] = None  # type: ignore[assignment]  (before edgeasc.runtime.features is imported)
    import numpy as np
    import soundfile as sf

    from edgeasc.runtime import audio, features

    model = load_model(path, threads)
    model.require_metadata("bench --clip")
    params = model.feature_params
    n = params.n_samples(model.clip_seconds)
    try:
        info = sf.info(str(clip))
    except Exception:
        raise audio.AudioError(f"{clip}: cannot read audio") from None
    # what the model sees of a recording per clip: its own clip length, not the whole file (a 1-s
    # model timed on a 10-s file would otherwise pay for decoding and resampling 10 s per clip)
    frames = min(info.frames, math.ceil(model.clip_seconds * info.samplerate))
    times: dict[str, list[float]] = {k: [] for k in (*STAGES, "total")}
    # this thread's CPU time too: with one thread every stage runs on it (onnxruntime included),
    # and on a shared machine CPU time is what the stage costs, wall time what the others left
    cpu: dict[str, list[float]] = {k: [] for k in (*STAGES, "total")}

    def now() -> tuple[float, float]:
        return time.perf_counter(), time.thread_time()

    for i in range(warmup + runs):
        t = [now()]
        data, sr = audio.decode(str(clip), frames=frames)
        t.append(now())
        x = audio.fit_length(audio.select_channels(audio.resample(data, sr, params.sample_rate, params.resampler), model.channels), n)
        t.append(now())
        inputs = x if model.takes_waveform else model.normalize(features.compute_features(x, params))
        t.append(now())
        model.run(np.ascontiguousarray(inputs[None], dtype=np.float32))
        t.append(now())
        if i >= warmup:
            for clock, out in ((0, times), (1, cpu)):
                for k, name in enumerate(STAGES):
                    out[name].append(t[k + 1][clock] - t[k][clock])
                out["total"].append(t[-1][clock] - t[0][clock])
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    cpu_ms = {k: 1e3 * statistics.median(v) for k, v in cpu.items()}
    return {"model": str(path), "clip": str(clip), "threads": threads, "runs": runs,
            "clip_rate": info.samplerate, "clip_channels": info.channels, "clip_seconds": model.clip_seconds,
            "decoded_seconds": frames / info.samplerate,
            "frontend_fft": "numpy" if hide_scipy or features._rfft is None else "scipy",
            "with_frontend": model.takes_waveform, "median_ms": ms, "cpu_ms": cpu_ms,
            "total_over_network": ms["total"] / ms["network"]}


def _in_subprocess(kwargs: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "edgeasc.runtime.bench", json.dumps(kwargs)],
                          capture_output=True, text=True, env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        message = (proc.stderr.strip().splitlines() or ["the measuring process failed"])[-1]
        raise ModelError(message)
    return json.loads(lines[-1])


def check_options(threads: Sequence[int], runs: int, warmup: int, batch: int, seconds: float | None) -> None:
    for t in threads:
        session_options(t)  # one message for a bad thread count, shared with predict
    if not 1 <= runs <= 100_000:
        raise ConfigError(f"--runs must be between 1 and 100,000, got {runs}")
    if not 0 <= warmup <= 10_000:
        raise ConfigError(f"--warmup must be between 0 and 10,000, got {warmup}")
    if not 1 <= batch <= 1024:
        raise ConfigError(f"--batch must be between 1 and 1024, got {batch}")
    if seconds is not None and not 0.1 <= seconds <= 3600:
        raise ConfigError(f"--seconds must be between 0.1 and 3600, got {seconds}")


def bench_models(paths: Sequence[str | Path], threads: Sequence[int] = (1,), runs: int = 50, warmup: int = 5,
                 batch: int = 1, seconds: float | None = None, arena: bool = True,
                 progress: Callable[[int], None] | None = None) -> dict:
    """Each model x thread count in a fresh process; returns the machine, the empty-process
    baseline and one result per (model, threads), in the order given."""
    check_options(threads, runs, warmup, batch, seconds)
    for path in paths:  # fail on a bad file before spending minutes on the good ones
        load_model(path)
    baseline = _in_subprocess({"path": None})["peak_rss_bytes"]
    results = []
    for path in paths:
        for t in threads:
            r = _in_subprocess({"path": str(path), "threads": t, "runs": runs, "warmup": warmup, "batch": batch,
                                "seconds": seconds, "arena": arena})
            r["rss_increase_bytes"] = r["peak_rss_bytes"] - baseline
            results.append(r)
            if progress is not None:
                progress(1)
    first = results[0]
    for r in results:  # side by side: how each compares with the first model at the same thread count
        ref = next((x for x in results if x["model"] == first["model"] and x["threads"] == r["threads"]), first)
        r["speedup_vs_first"] = ref["latency_ms"]["p50"] / r["latency_ms"]["p50"]
        r["size_vs_first"] = r["file_bytes"] / ref["file_bytes"]
    return {"machine": machine(), "empty_process_peak_rss_bytes": baseline, "results": results}


def end_to_end(paths: Sequence[str | Path], clip: str | Path, threads: int = 1, runs: int = 20, warmup: int = 2,
               fft: Sequence[str] = ("scipy",), progress: Callable[[int], None] | None = None) -> dict:
    """measure_end_to_end for each model (and FFT: "scipy", "numpy"), each in a fresh process."""
    check_options([threads], runs, warmup, 1, None)
    if not Path(clip).is_file():
        raise ConfigError(f"--clip {clip}: no such file")
    for path in paths:
        load_model(path).require_metadata("bench --clip")
    results = []
    for path in paths:
        for which in fft:
            results.append(_in_subprocess({"end_to_end": True, "path": str(path), "clip": str(clip),
                                           "threads": threads, "runs": runs, "warmup": warmup,
                                           "hide_scipy": which == "numpy"}))
            if progress is not None:
                progress(1)
    return {"machine": machine(), "results": results}


CONV_OPS = ("Conv", "FusedConv", "NhwcFusedConv", "QLinearConv", "ConvInteger")


def profile_model(path: str | Path, threads: int = 1, runs: int = 50, warmup: int = 5, batch: int = 1,
                  seconds: float | None = None, trace_out: str | Path | None = None) -> dict:
    """onnxruntime's profiler on one model, in this process: every node's median kernel time
    over the timed runs (warm-up runs are run and left out), per node and per operator type,
    as ms per run and as shares of their sum. The raw trace (Chrome trace JSON, every run
    and the session's start) is written to `trace_out` when given."""
    import bisect
    import shutil
    import tempfile

    import onnxruntime as ort

    from edgeasc.io import atomic_write

    check_options([threads], runs, warmup, batch, seconds)
    model = load_model(path, threads)
    clip = seconds if seconds is not None else model.metadata.get("clip_seconds")
    if clip is None:
        raise ModelError(f"{path}: not an edgeasc export (no clip length in its metadata): pass --seconds")
    x = model.example_input(batch, clip)
    with tempfile.TemporaryDirectory(prefix="edgeasc-profile-") as tmp:
        options = session_options(threads)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(warmup + runs):
            session.run(None, {name: x})
        trace = Path(session.end_profiling())
        events = json.loads(trace.read_text())
        if trace_out is not None:
            atomic_write(trace_out, lambda tmp_path: shutil.copyfile(trace, tmp_path))
    timed = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                   key=lambda e: e["ts"])[-runs:]
    starts = [e["ts"] for e in timed]
    nodes: dict[str, tuple[str, list[float]]] = {}  # node name -> (op type, its microseconds in each timed run)
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        k = bisect.bisect_right(starts, e["ts"]) - 1  # the run it belongs to; none: a warm-up run
        if k < 0 or e["ts"] > timed[k]["ts"] + timed[k]["dur"]:
            continue
        op, times = nodes.setdefault(e["name"][:-len("_kernel_time")], (e.get("args", {}).get("op_name", "?"), []))
        times.append(e["dur"])
    # per node the median over the runs: a run preempted by another process does not make its
    # node look slow; the shares are of the sum of the medians, so they add up to 100 %
    medians = {n: (op, statistics.median(times)) for n, (op, times) in nodes.items()}
    total = sum(us for _, us in medians.values())
    if total == 0:
        raise ModelError(f"{path}: onnxruntime's profile holds no node times")
    rows = sorted(({"node": n, "op_type": op, "share": us / total, "ms_per_run": us / 1e3, "runs": len(nodes[n][1])}
                   for n, (op, us) in medians.items()), key=lambda r: (-r["share"], r["node"]))
    by_type: dict[str, list] = {}
    for r in rows:
        entry = by_type.setdefault(r["op_type"], [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += r["share"]
        entry[2] += r["ms_per_run"]
    op_types = sorted(({"op_type": op, "nodes": n, "share": share, "ms_per_run": ms}
                       for op, (n, share, ms) in by_type.items()), key=lambda r: (-r["share"], r["op_type"]))
    return {"model": str(path), "threads": threads, "runs": runs, "warmup": warmup, "batch": batch,
            "clip_seconds": float(clip), "input_shape": list(x.shape),
            "run_ms": statistics.median(e["dur"] for e in timed) / 1e3, "kernel_ms": total / 1e3,
            "conv_share": sum(r["share"] for r in rows if r["op_type"] in CONV_OPS),
            "nodes": rows, "op_types": op_types, "trace": None if trace_out is None else str(trace_out),
            "machine": machine()}


def _worker() -> None:
    try:
        kwargs = json.loads(sys.argv[1])
        if kwargs.pop("end_to_end", False):
            print(json.dumps(measure_end_to_end(**kwargs)))
            return
        print(json.dumps(measure(**kwargs)))
    except EdgeascError as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    _worker()
