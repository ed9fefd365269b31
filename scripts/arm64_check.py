"""The two halves of scripts/arm64-check.sh that are Python.

`prepare DIR` (workstation, x86): a small network trained on synthetic scenes, exported fp32,
fp16, int8 and waveform-in (fp32 --with-frontend); four recordings (44.1 kHz stereo 16-bit and
48 kHz mono 24-bit among them); the x86 predictions of every model on them.

`compare DIR CPU...` (workstation): the predictions the arm64 userland wrote for each emulated
CPU against x86: same top-1 on every file and window, max |Δp| <= 1e-4; prints a Markdown
table and writes DIR/result.json. Exit code 1 when any check fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

MODELS = {"fp32": [], "fp16": ["--precision", "fp16"], "int8": ["--precision", "int8"],
          "waveform-in": ["--with-frontend"]}
TOLERANCE = 1e-4


def edgeasc(*args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run([sys.executable, "-m", "edgeasc", *args], capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise SystemExit(f"edgeasc {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def prepare(out: Path) -> None:
    import soundfile as sf

    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    edgeasc("synth", str(work / "scenes"), "--classes", "3", "--clips-per-class", "8", "--seconds", "2",
            "--seed", "3", "--workers", "2")
    edgeasc("train", str(work / "scenes"), "--preset", "demo", "--width", "8", "--epochs", "3", "--batch-size", "4",
            "--lr", "3e-3", "--prune-ratio", "0", "--cache-dir", str(work / "cache"), "--out", str(work / "run"),
            "--force", "--json")
    for name, flags in MODELS.items():
        edgeasc("export", str(work / "run"), "-o", str(out / f"model-{name}.onnx"), "--cache-dir", str(work / "cache"),
                "--force", *flags)
    rng = np.random.default_rng(0)
    clips = sorted((work / "scenes").rglob("*.wav"))[:2]
    audio = out / "audio"
    audio.mkdir(exist_ok=True)
    for i, clip in enumerate(clips):
        x, sr = sf.read(str(clip), dtype="float32")
        sf.write(str(audio / f"clip{i}-{sr}-stereo.wav"), x, sr, subtype="PCM_24")
    t = np.arange(int(5.5 * 44100)) / 44100
    tone = 0.3 * np.sin(2 * np.pi * 440 * t * (1 + 0.2 * t))[:, None] + 0.02 * rng.standard_normal((len(t), 2))
    sf.write(str(audio / "chirp-44100-stereo-16.wav"), tone.astype(np.float32), 44100, subtype="PCM_16")
    sf.write(str(audio / "chirp-48000-mono-24.wav"),
             np.interp(np.arange(int(5.5 * 48000)) / 48000, t, tone[:, 0]).astype(np.float32), 48000, subtype="PCM_24")
    files = [str(p.relative_to(out)) for p in sorted(audio.glob("*.wav"))]
    x86 = {name: json.loads(edgeasc("predict", f"model-{name}.onnx", *files, "--hop", "1", "--json", cwd=out))
           for name in MODELS}
    (out / "x86.json").write_text(json.dumps(x86))
    (out / "files.txt").write_text("\n".join(files) + "\n")


def _probabilities(result: list[dict]) -> dict[str, np.ndarray]:
    """file -> (windows, classes): every window's probabilities (the file's mean last)."""
    out = {}
    for r in result:
        rows = [w["probabilities"] for w in r.get("windows", [])] + [r["probabilities"]]
        out[r["file"]] = np.array([[row[k] for k in sorted(row)] if isinstance(row, dict) else row for row in rows])
    return out


def compare(out: Path, cpus: list[str]) -> int:
    x86 = json.loads((out / "x86.json").read_text())
    rows, ok = [], True
    for cpu in cpus:
        arm = json.loads((out / f"arm64-{cpu}.json").read_text())
        for name in MODELS:
            a, b = _probabilities(x86[name]), _probabilities(arm[name]["predict"])
            same_files = sorted(a) == sorted(b)
            diff = max(float(np.abs(a[f] - b[f]).max()) for f in a) if same_files else float("inf")
            top1 = same_files and all(np.array_equal(a[f].argmax(1), b[f].argmax(1)) for f in a)
            windows = sum(len(v) for v in a.values())
            bench = arm[name]["bench"]
            passed = top1 and diff <= TOLERANCE
            ok &= passed
            rows.append({"cpu": cpu, "model": name, "windows": windows, "top1_equal": top1, "max_abs_dp": diff,
                         "emulated_ms": bench, "pass": passed, "kernels": arm[name].get("kernels")})
    lines = ["| emulated CPU | model | windows and files | same top-1 | max abs Δp | emulated latency (not Pi timing) | result |",
             "|---|---|---:|---|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['cpu']} | {r['model']} | {r['windows']} | {'yes' if r['top1_equal'] else 'NO'} | "
                     f"{r['max_abs_dp']:.1e} | {r['emulated_ms']:.1f} ms | {'PASS' if r['pass'] else 'FAIL'} |")
    print("\n".join(lines))
    (out / "result.json").write_text(json.dumps({"rows": rows, "tolerance": TOLERANCE, "pass": ok}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "prepare":
        prepare(Path(sys.argv[2]))
    elif len(sys.argv) >= 4 and sys.argv[1] == "compare":
        sys.exit(compare(Path(sys.argv[2]), sys.argv[3:]))
    else:
        raise SystemExit("usage: arm64_check.py prepare DIR | compare DIR CPU...")
