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
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from edgeasc.deployed import ModelError, load_model, session_options
from edgeasc.errors import ConfigError, EdgeascError


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


def _in_subprocess(kwargs: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "edgeasc.bench", json.dumps(kwargs)],
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


def _worker() -> None:
    try:
        print(json.dumps(measure(**json.loads(sys.argv[1]))))
    except EdgeascError as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    _worker()
