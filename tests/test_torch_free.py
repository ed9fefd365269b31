"""The device runtime never imports torch, and the CLI works without it installed."""

import subprocess
import sys

from conftest import HIDE_TORCH, ROOT, assert_one_line_error, run_cli

# the whole device subpackage (every module in it, found on disk) plus what the device CLI needs around it
RUNTIME_MODULES = sorted({"edgeasc", "edgeasc.errors", "edgeasc.console", "edgeasc.io",
                          "edgeasc.data.workers", "edgeasc.data.dcase", "edgeasc.data.cache", "edgeasc.data.synth",
                          "edgeasc.models", "edgeasc.models.config", "edgeasc.models.presets",
                          "edgeasc.models.receptive_field", "edgeasc.models.describe", "edgeasc.models.channels",
                          "edgeasc.compress.fit", "edgeasc.runtime"}
                         | {f"edgeasc.{pkg}.{p.stem}" for pkg in ("runtime", "cli")
                            for p in (ROOT / "edgeasc" / pkg).glob("*.py") if p.stem != "__init__"}
                         | {"edgeasc.cli"})


def test_runtime_modules_do_not_import_torch():
    assert {"edgeasc.runtime.predict", "edgeasc.cli.device", "edgeasc.cli.predict", "edgeasc.cli.train", "edgeasc.runtime.microphone"} \
        <= set(RUNTIME_MODULES)
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
    code = (HIDE_TORCH + "\nimport numpy as np\nfrom edgeasc.runtime import audio, features\n"
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


def test_describing_a_network_needs_no_torch():
    """`info --preset/--variant` is arithmetic: the device install answers it, with the numbers
    the workstation gives."""
    import json

    for args in (["--preset", "d20-damped-pruned-250k"], ["--preset", "d20-submission-1", "--seconds", "1"],
                 ["--variant", "damped-decomposed", "--rho", "5", "--width", "24", "--depth-restriction", "0,0,2"]):
        without = run_cli("info", *args, "--json", python_prelude=HIDE_TORCH)
        assert without.returncode == 0, without.stderr
        shown = json.loads(without.stdout)
        from edgeasc.models.complexity import analyse
        from edgeasc.models.presets import resolve_model

        opts = dict(zip([a.lstrip("-").replace("-", "_") for a in args[::2]], args[1::2], strict=True))
        seconds = float(opts.pop("seconds", 10.0))
        config, target = resolve_model(opts.pop("preset", None), **{k: int(v) if v.isdigit() else v
                                                                     for k, v in opts.items()})
        assert {k: v for k, v in shown.items() if k not in ("preset", "variant", "prune_target")} == \
            analyse(config, seconds=seconds, prune_target=target).to_dict()
    table = run_cli("info", "--preset", "demo", python_prelude=HIDE_TORCH)
    assert table.returncode == 0 and "18,022" in table.stdout and "8,500" in table.stdout


def test_model_inspection_without_torch_names_the_extra(tmp_path):
    (tmp_path / "run").mkdir()
    proc = run_cli("info", str(tmp_path / "run"), python_prelude=HIDE_TORCH)  # a checkpoint needs torch
    assert_one_line_error(proc, 2, "edgeasc[train]")
    # configuration errors are still found without torch
    proc = run_cli("info", "--rho", "-3", python_prelude=HIDE_TORCH)
    assert_one_line_error(proc, 2, "rho")
