"""arm64 as a checked platform: scripts/arm64-check.sh (a Debian bookworm arm64 userland under
qemu-user; needs root) on emulated Cortex-A72 and A76, probabilities compared with x86; and
Raspberry Pi 4 / Pi 5 latency estimates for the same models.

`EDGEASC_ARM64_OUT=DIR` reuses the output folder of a check that just ran instead of running
it again. The estimates are arithmetic, not measurements (see `estimate`).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from bench_device import RUNS, WARMUP, conv_limit

from edgeasc.runtime.bench import bench_models

HERE = Path(__file__).resolve().parent
# Per-core multiply-accumulates per cycle at the core's peak (Arm's software optimisation guides:
# two 128-bit ASIMD pipes, each an FMA of 4 fp32 lanes; int8 on A76 by SDOT, 16 per pipe; the A72
# has no SDOT: int8 through 16-bit widening multiply-accumulates, taken as 2x fp32) and clocks.
PI = {"Raspberry Pi 4 (Cortex-A72, 1.8 GHz)": {"ghz": 1.8, "fp32": 8, "int8": 16},
      "Raspberry Pi 5 (Cortex-A76, 2.4 GHz)": {"ghz": 2.4, "fp32": 8, "int8": 32}}


def run() -> dict:
    given = os.environ.get("EDGEASC_ARM64_OUT")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        out = Path(given) if given else tmp / "arm64"
        if not given:
            proc = subprocess.run(["bash", str(HERE.parent / "scripts" / "arm64-check.sh"), str(out)],
                                  capture_output=True, text=True)
            if proc.returncode not in (0, 1):
                raise SystemExit(f"arm64-check failed:\n{proc.stderr[-3000:]}")
        result = json.loads((out / "result.json").read_text())
        limit = conv_limit(tmp)
        x86 = {}
        for name in ("fp32", "fp16", "int8"):
            r = bench_models([out / f"model-{name}.onnx"], threads=(1,), runs=RUNS, warmup=WARMUP)["results"][0]
            x86[name] = {"ms": r["latency_ms"]["p50"], "macs": r["macs_per_clip"], "seconds": r["clip_seconds"]}
    return {"check": result, "x86": x86, "conv_limit": limit}


def estimate(macs: int, x86_ms: float, limit_gmacs: float, pi: dict, precision: str) -> tuple[float, float]:
    """(share of the x86 conv limit the model reaches, estimated Pi latency in ms): the model is
    assumed to reach the same share of the Pi core's peak as it reaches of the x86 limit."""
    share = (macs / x86_ms / 1e6) / limit_gmacs
    peak = pi["ghz"] * (pi["int8"] if precision == "int8" else pi["fp32"])  # GMAC/s
    return share, macs / (peak * 1e9 * share) * 1e3


def markdown(r: dict) -> str:
    rows = r["check"]["rows"]
    lines = ["## arm64: the device install on emulated Cortex-A72 and A76", "",
             "`sudo bash scripts/arm64-check.sh` (also `pytest -m slow tests/test_arm64.py`): Debian bookworm arm64 "
             "(debootstrap) under qemu-user-static, the core install from its manylinux_2_28 aarch64 wheels "
             "(no torch), a small network trained and exported on x86 as fp32, fp16, int8 and waveform-in "
             "(`--with-frontend`); in the guest `info`, `predict --hop 1` on four recordings (2-s synthetic "
             "scenes at 48 kHz stereo 24-bit, 5.5-s chirps at 44.1 kHz stereo 16-bit and 48 kHz mono 24-bit) and "
             "`bench`; the guest sees an arm64 /proc/cpuinfo of the emulated core (onnxruntime reads it at import). "
             f"Pass: the same top-1 for every file and window as on x86, max |Δp| ≤ {r['check']['tolerance']:g}.", "",
             "| emulated CPU | model | windows + file means | same top-1 | max abs Δp | latency under emulation | result |",
             "|---|---|---:|---|---:|---:|---|"]
    for x in rows:
        lines.append(f"| {x['cpu']} | {x['model']} | {x['windows']} | {'yes' if x['top1_equal'] else 'NO'} | "
                     f"{x['max_abs_dp']:.1e} | {x['emulated_ms']:.1f} ms | {'PASS' if x['pass'] else 'FAIL'} |")
    lim = r["conv_limit"]["gmacs_per_s"]
    lines += ["", "Emulated latencies are qemu's, not a Pi's. **Estimates** for the boards (not measured): the model's "
              f"MACs over the core's peak MAC rate times the share of this x86 core's measured conv limit "
              f"({lim:.1f} GMAC/s, 1 thread) the model reaches here, i.e. assuming onnxruntime's ARM kernels reach "
              "the same share of an ARM core's peak; peaks: 2 NEON FMA pipes × 4 fp32 lanes = 8 MACs per cycle on "
              "both cores; int8 32 per cycle on the A76 (SDOT), taken as 16 on the A72 (no SDOT). fp16 models "
              "compute in fp32. Treat them as ±2× at best: small networks are dominated by overheads the MAC "
              "count does not see.", "",
              "| model | MACs / clip | x86 1 thread | share of x86 conv limit | " + " | ".join(PI) + " |",
              "|---|---:|---:|---:|" + "---:|" * len(PI)]
    for name, x in r["x86"].items():
        cells = []
        for pi in PI.values():
            share, ms = estimate(x["macs"], x["ms"], lim, pi, name)
            cells.append(f"~{ms:.2f} ms")
        lines.append(f"| {name} | {x['macs'] / 1e6:.1f} M per {x['seconds']:g} s | {x['ms']:.2f} ms | "
                     f"{100 * share:.0f} % | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
