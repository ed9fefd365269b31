"""Regenerate benchmarks/RESULTS.md on this machine: `python benchmarks/run.py`.

Each benchmark module measures its candidates side by side in one run and returns a
markdown section; the machine description heads the file.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_export  # noqa: E402
import bench_features  # noqa: E402
import bench_training  # noqa: E402

from edgeasc.io import atomic_write_json, atomic_write_text  # noqa: E402


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    import onnxruntime

    return (f"{cpu}, {len(__import__('os').sched_getaffinity(0))} cores; Python {platform.python_version()}, "
            f"numpy {numpy.__version__}, onnxruntime {onnxruntime.__version__}")


def main() -> None:
    sections, raw = [], {}
    for name, module in (("features", bench_features), ("training", bench_training), ("export", bench_export)):
        t0 = time.perf_counter()
        result = module.run()
        raw[name] = {**result, "wall_seconds": round(time.perf_counter() - t0, 1)}
        sections.append(module.markdown(result))
    header = ["# edgeasc benchmarks", "",
              "Regenerate with `.venv/bin/python benchmarks/run.py` (after `bash scripts/setup.sh`).",
              f"Machine: {machine()}.", f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", ""]
    atomic_write_text(HERE / "RESULTS.md", "\n".join(header + sections))
    atomic_write_json(HERE / "results.json", raw)
    print("\n".join(header + sections))
    print(json.dumps(raw, indent=2), file=sys.stderr)


if __name__ == "__main__":
    main()
