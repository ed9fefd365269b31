"""The device runtime never imports torch, and the CLI works without it installed."""

import subprocess
import sys

from conftest import HIDE_TORCH, assert_one_line_error, run_cli

RUNTIME_MODULES = ["edgeasc", "edgeasc.cli", "edgeasc.audio", "edgeasc.features", "edgeasc.errors",
                   "edgeasc.console", "edgeasc.io", "edgeasc.parallel", "edgeasc.data.dcase",
                   "edgeasc.data.cache", "edgeasc.data.synth", "edgeasc.models", "edgeasc.models.config",
                   "edgeasc.models.presets", "edgeasc.models.receptive_field", "edgeasc.deployed",
                   "edgeasc.predict", "edgeasc.bench", "edgeasc.cli_runtime", "edgeasc.stream"]


def test_runtime_modules_do_not_import_torch():
    code = ("import importlib, sys\n"
            f"for m in {RUNTIME_MODULES!r}: importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxscript'))\n"
            "print(','.join(bad))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_help_and_presets_work_with_torch_hidden():
    proc = run_cli("--help", python_prelude=HIDE_TORCH)
    assert proc.returncode == 0, proc.stderr
    assert "info" in proc.stdout
    proc = run_cli("info", "--list-presets", "--json", python_prelude=HIDE_TORCH)
    assert proc.returncode == 0 and "d20-damped-pruned-250k" in proc.stdout


def test_audio_and_features_work_with_torch_hidden(tmp_path):
    code = (HIDE_TORCH + "\nimport numpy as np\nfrom edgeasc import audio, features\n"
            f"x, sr = audio.load({str(tmp_path / 'a.wav')!r})\n"
            "print(features.perceptual_mel(x).shape)")
    from conftest import write_wav

    write_wav(tmp_path / "a.wav", seconds=1.0)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(2, 256, 44)"
    synth = run_cli("synth", str(tmp_path / "s"), "--clips-per-class", "8", "--seconds", "0.5",
                    "--workers", "1", python_prelude=HIDE_TORCH)
    assert synth.returncode == 0, synth.stderr
    feats = run_cli("features", str(tmp_path / "s"), "--cache-dir", str(tmp_path / "c"), "--seconds", "0.5",
                    "--workers", "1", python_prelude=HIDE_TORCH)
    assert feats.returncode == 0, feats.stderr


def test_model_inspection_without_torch_names_the_extra():
    proc = run_cli("info", "--preset", "d20-damped", python_prelude=HIDE_TORCH)
    assert_one_line_error(proc, 2, "edgeasc[train]")
    # configuration errors are still found without torch
    proc = run_cli("info", "--rho", "-3", python_prelude=HIDE_TORCH)
    assert_one_line_error(proc, 2, "rho")
