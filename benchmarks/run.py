"""Regenerate benchmarks/RESULTS.md on this machine: `python benchmarks/run.py [SECTION ...]`.

Each benchmark module measures its candidates side by side in one run and returns its raw
numbers; RESULTS.md is rendered from results.json. Naming sections re-measures only those
and keeps the others' numbers (with the date and machine they were measured on).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_arm64  # noqa: E402
import bench_budget  # noqa: E402
import bench_cpmobile  # noqa: E402
import bench_dcase2022  # noqa: E402
import bench_device  # noqa: E402
import bench_e2e  # noqa: E402
import bench_export  # noqa: E402
import bench_features  # noqa: E402
import bench_int8  # noqa: E402
import bench_listen  # noqa: E402
import bench_listenhop  # noqa: E402
import bench_logmel  # noqa: E402
import bench_memory  # noqa: E402
import bench_multiple  # noqa: E402
import bench_resampler  # noqa: E402
import bench_structured  # noqa: E402
import bench_torchaudio  # noqa: E402
import bench_training  # noqa: E402

from edgeasc.io import atomic_write_json, atomic_write_text  # noqa: E402
from edgeasc.runtime.bench import machine as bench_machine  # noqa: E402

MODULES = {"features": bench_features, "training": bench_training, "export": bench_export, "device": bench_device,
           "structured": bench_structured, "dcase2022": bench_dcase2022,
           "int8": bench_int8, "e2e": bench_e2e, "multiple": bench_multiple,
           "memory": bench_memory,
           "stdin": SimpleNamespace(run=bench_memory.run_piped, markdown=bench_memory.markdown_piped),
           "manyfiles": SimpleNamespace(run=bench_memory.run_many, markdown=bench_memory.markdown_many), "arm64": bench_arm64, "budget": bench_budget,
           "kdtargets": SimpleNamespace(run=bench_budget.run_kd_targets, markdown=bench_budget.markdown_kd_targets),
           "logmel": bench_logmel, "torchaudio": bench_torchaudio, "listen": bench_listen,
           "listenhop": bench_listenhop, "resampler": bench_resampler, "cpmobile": bench_cpmobile,
           "cpmthroughput": SimpleNamespace(run=bench_cpmobile.run_throughput, markdown=bench_cpmobile.markdown_throughput)}


def machine() -> str:
    import numpy

    m = bench_machine()
    return (f"{m['cpu']}, {m['cores']} cores; Python {m['python']}, numpy {numpy.__version__}, "
            f"onnxruntime {m['onnxruntime']}")


def main(argv: list[str]) -> None:
    if argv == ["--render"]:
        render(json.loads((HERE / "results.json").read_text()))
        return
    unknown = [name for name in argv if name not in MODULES]
    if unknown:
        raise SystemExit(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    results = HERE / "results.json"
    raw = json.loads(results.read_text()) if argv and results.exists() else {}
    for name in argv or MODULES:
        t0 = time.perf_counter()
        result = MODULES[name].run()
        raw[name] = {**result, "wall_seconds": round(time.perf_counter() - t0, 1),
                     "machine": machine(), "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    render(raw)


def render(raw: dict) -> None:
    """RESULTS.md and results.json from the raw numbers (`run.py --render` re-renders only)."""
    raw = {name: raw[name] for name in MODULES if name in raw}
    header = ["# edgeasc benchmarks", "",
              "Regenerate with `.venv/bin/python benchmarks/run.py` (after `bash scripts/setup.sh`);",
              "`benchmarks/run.py export` re-measures one section and keeps the others.", ""]
    sections = []
    for name, result in raw.items():
        sections.append(MODULES[name].markdown(result))
        sections.append(f"*Measured {result.get('measured', '?')} on {result.get('machine', '?')}; "
                        f"this section took {result['wall_seconds']:.0f} s.*\n")
    atomic_write_text(HERE / "RESULTS.md", "\n".join(header + sections))
    atomic_write_json(HERE / "results.json", raw)
    print("\n".join(header + sections))


if __name__ == "__main__":
    main(sys.argv[1:])
