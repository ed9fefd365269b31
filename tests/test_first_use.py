"""What a new user meets first, and the faults that must not be dead ends: synth into new
folders, help without type noise, readable artifacts, a budget FAIL said on stderr, eval on a
run's own cache, a run killed in its first epoch, a damaged cache, a truncated WAV."""

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import run_cli, run_cli_here, synthetic_scenes, write_wav

TRAIN = ["--preset", "demo", "--width", "4", "--seconds", "1", "--batch-size", "4", "--feature-workers", "1",
         "--lr", "3e-3", "--prune-ratio", "0.2", "--prune-epochs", "0"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("first-use")
    synthetic_scenes(tmp_path_factory, root / "scenes", seed=3)
    return root


def test_synth_creates_missing_parent_folders(tmp_path):
    out = tmp_path / "a" / "b" / "scenes"
    proc = run_cli("synth", str(out), "--clips-per-class", "8", "--seconds", "0.2", "--workers", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    assert (out / "meta.csv").is_file() and len(list((out / "audio").iterdir())) == 24


@pytest.mark.parametrize("command", ["train", "export", "bench", "predict", "synth", "features", "info", "eval"])
def test_help_shows_flags_without_type_noise_for_switches(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # as run_cli gives its subprocess: no line wrapped
    proc = run_cli_here(command, "--help")
    assert proc.returncode == 0
    assert "<bool>" not in proc.stdout
    assert not re.search(r"--no-(resume|force|json|with-frontend)\b", proc.stdout)


def test_run_artifacts_respect_the_umask_and_eval_reuses_the_runs_own_cache(scenes, tmp_path, monkeypatch):
    run = tmp_path / "run"
    umask = os.umask(0o022)  # in this process (and restored): what the files get is the point, not the interpreter
    try:
        proc = run_cli_here("train", str(scenes / "scenes"), *TRAIN, "--epochs", "1", "--cache-dir",
                            str(tmp_path / "cache"), "--out", str(run), "--json")
    finally:
        os.umask(umask)
    assert proc.returncode == 0, proc.stderr
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run.iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes  # not mkstemp's 0600
    assert not (run / ".edgeasc.lock").exists()  # the lock goes with the run
    empty_default = tmp_path / "default-cache"
    empty_default.mkdir()
    monkeypatch.setenv("EDGEASC_CACHE", str(empty_default))  # a fresh default
    proc = run_cli_here("eval", str(run), "--json")
    assert proc.returncode == 0, proc.stderr
    assert list(empty_default.iterdir()) == []  # the run's own cache was used, nothing extracted again
    assert json.loads(proc.stdout)["n"] > 0


def test_a_budget_fail_is_said_on_stderr_and_the_files_are_kept(scenes, tmp_path):
    run = tmp_path / "run"
    assert run_cli_here("train", str(scenes / "scenes"), *TRAIN, "--epochs", "1", "--cache-dir", str(tmp_path / "c"),
                        "--out", str(run), "--json").returncode == 0
    proc = run_cli_here("export", str(run), "--check-budget", "1KB", "--json")
    assert proc.returncode == 3
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "budget FAIL" in lines[0] and "kept" in lines[0] and "1,024" in lines[0], lines
    assert json.loads(proc.stdout)["report"]["verdict"] == "FAIL"
    assert (run / "model.onnx").is_file() and (run / "model.size.md").is_file()


def test_a_run_killed_in_its_first_epoch_is_not_a_dead_end(scenes, tmp_path):
    run = tmp_path / "run"
    args = ["train", str(scenes / "scenes"), *TRAIN, "--epochs", "2", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(run)]
    proc = subprocess.Popen([sys.executable, "-c", "from edgeasc.cli import main; main()", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / ".edgeasc.lock").exists() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # long before the first checkpoint: features are still being extracted
    proc.wait()
    assert run.is_dir() and not (run / "checkpoint-last.pt").exists()
    resumed = run_cli_here(*args, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert "no checkpoint yet" in resumed.stderr and json.loads(resumed.stdout)["epochs"] == 2
    shutil.rmtree(run)
    run.mkdir()  # the state a kill leaves: the folder, maybe a stale lock file, nothing else
    (run / ".edgeasc.lock").write_text("12345")
    again = run_cli_here(*args, "--json")
    assert again.returncode == 0, again.stderr


def test_a_cache_array_shorter_than_its_manifest_is_extracted_again(scenes, tmp_path):
    cache = tmp_path / "cache"
    first = run_cli_here("features", str(scenes / "scenes"), "--cache-dir", str(cache), "--workers", "1", "--json")
    assert first.returncode == 0, first.stderr
    train_npy = next(cache.rglob("train.npy"))
    whole = np.load(train_npy).copy()
    os.truncate(train_npy, train_npy.stat().st_size // 2)
    again = run_cli_here("features", str(scenes / "scenes"), "--cache-dir", str(cache), "--workers", "1", "--json")
    assert again.returncode == 0, again.stderr
    assert "damaged" in again.stderr and "shorter than its manifest" in again.stderr
    assert json.loads(again.stdout)["extracted"] is True
    np.testing.assert_array_equal(np.load(train_npy), whole)


def test_a_truncated_wav_gets_a_warning_naming_it(tmp_path):
    from edgeasc.runtime.audio import truncation

    wav = write_wav(tmp_path / "cut.wav", seconds=1.0)
    assert truncation(wav) is None
    data = 48000 * 2 * 2  # 1 s of 48 kHz 16-bit stereo
    header = wav.stat().st_size - data
    os.truncate(wav, header + data // 2)  # exactly half of the declared data
    assert "cut.wav" in truncation(wav) and "holds 50 %" in truncation(wav)
    os.truncate(wav, header + data // 2 - 4)  # one frame short of half: rounded down, not up
    assert "holds 49 %" in truncation(wav)
    (tmp_path / "x.txt").write_text("RIFF")
    assert truncation(tmp_path / "x.txt") is None


def test_a_write_group_that_fails_while_renaming_restores_what_it_replaced(tmp_path, monkeypatch):
    from edgeasc import io

    a, b, c = tmp_path / "m.onnx", tmp_path / "m.size.json", tmp_path / "m.size.md"
    a.write_text("old model")
    c.write_text("old report")  # b is new
    real, calls = os.replace, []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 5:  # two backups, the model and the new json renamed in, then the report fails
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(io.os, "replace", flaky)
    with pytest.raises(io.WriteError, match="no space left"):
        io.atomic_write_group({a: lambda p: p.write_text("new model"), b: lambda p: p.write_text("new json"),
                               c: lambda p: p.write_text("new report")})
    monkeypatch.setattr(io.os, "replace", real)
    assert (a.read_text(), c.read_text()) == ("old model", "old report")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.size.md"]  # the new json went again


def test_predict_refuses_a_hop_that_would_cut_too_many_windows(tmp_path, monkeypatch):
    from edgeasc.runtime import predict, windows
    from edgeasc.runtime.deployed import load_model

    model = tmp_path.parent / "first_use_model.onnx"
    _tiny_model(model)
    wav = write_wav(tmp_path / "long.wav", seconds=3.0)
    monkeypatch.setattr(windows, "MAX_WINDOWS", 10)
    m = load_model(model)
    refused = next(predict.predict_files(m, [wav], window=1.0, hop=0.1))
    assert "more than 10 windows" in refused.error and refused.window_probabilities is None
    assert len(next(predict.predict_files(m, [wav], window=1.0, hop=0.25)).starts) == 9


def test_export_refuses_an_fp16_file_whose_weights_overflow(tmp_path):
    import torch

    from edgeasc.errors import EdgeascError
    from edgeasc.export.pipeline import export_checkpoint
    from edgeasc.train.checkpoint import save_checkpoint

    ckpt = _tiny_checkpoint(tmp_path / "m.pt", scale=1e6)  # finite in float32, inf in float16
    with pytest.raises(EdgeascError, match="beyond float16's range"):
        export_checkpoint(ckpt, tmp_path / "m.onnx", precision="fp16")
    assert not (tmp_path / "m.onnx").exists()
    export_checkpoint(ckpt, tmp_path / "m32.onnx")  # float32 holds them
    del torch, save_checkpoint


def test_verification_fails_on_non_finite_onnx_outputs_where_torch_is_finite(tmp_path):
    """NaN compares false with everything: without the finite check, a NaN file 'agrees'."""
    import onnx
    import torch

    from edgeasc.export.onnx import verify
    from edgeasc.train.checkpoint import load_checkpoint, model_from_checkpoint

    onnx_path = _tiny_model(tmp_path / "m.onnx")
    model = model_from_checkpoint(load_checkpoint(tmp_path / "m.pt"))
    good = verify(onnx_path.read_bytes(), model, 2, 256, frames=(44,))
    assert good["finite"] and good["max_abs_logit_difference"] < 1e-4
    proto = onnx.load(onnx_path)
    conv = next(i for i in proto.graph.initializer if len(i.dims) == 4)
    conv.raw_data = np.full(int(np.prod(conv.dims)), np.nan, np.float32).tobytes()
    bad = verify(proto.SerializeToString(), model, 2, 256, frames=(44,))
    assert not bad["finite"] and np.isnan(bad["max_abs_logit_difference"])
    del torch


def _tiny_checkpoint(path, scale: float = 1.0):
    import torch

    from edgeasc.models import ModelConfig, build_model
    from edgeasc.runtime.features import FeatureParams
    from edgeasc.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model(ModelConfig(width=8, n_classes=3)).eval()
    state = model.state_dict()
    first = next(k for k, v in state.items() if k.endswith("weight") and v.dim() == 4)  # the stem conv
    state[first] = state[first] * scale
    save_checkpoint(path, {"model_config": model.config.to_dict(), "labels": ["a", "b", "c"],
                           "feature_params": FeatureParams(clip_seconds=1.0).to_dict(), "channels": 2,
                           "normalization": {"mean": [-30.0] * 256, "std": [10.0] * 256},
                           "model": state, "epoch": 1, "kind": "final"})
    return path


def _tiny_model(path):
    from edgeasc.export.pipeline import export_checkpoint

    if not path.exists():
        export_checkpoint(_tiny_checkpoint(path.with_suffix(".pt")), path)
    return path


def test_force_replaces_the_previous_run_only_once_the_new_one_has_a_checkpoint(scenes, tmp_path):
    run = tmp_path / "run"
    common = ["train", str(scenes / "scenes"), *TRAIN, "--epochs", "1", "--cache-dir", str(tmp_path / "c"),
              "--out", str(run), "--json"]
    assert run_cli_here(*common).returncode == 0
    assert not list(run.glob("*.png"))  # EDGEASC_PLOTS=0 (conftest) is --no-plots
    (run / "confusion-eval.png").write_bytes(b"a stale plot from `edgeasc eval`")
    again = run_cli_here(*common, "--force", "--seed", "7")
    assert again.returncode == 0, again.stderr
    assert not (run / "confusion-eval.png").exists()
    assert json.loads((run / "config.json").read_text())["train"]["seed"] == 7
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_swa_averages_the_saved_weights_and_is_exported(scenes, tmp_path):
    """Epoch by epoch with --resume, so every epoch's weights are on disk: model-swa.pt's
    parameters are the hand-computed mean of the weights the network computed with (W ⊙ mask)
    at epochs 2 and 4 (--swa-start 2 --swa-every 2), under the final mask; its BatchNorm
    statistics are estimated afresh; it exports with --swa."""
    import torch

    run = tmp_path / "run"
    args = ["train", str(scenes / "scenes"), *TRAIN, "--cache-dir", str(tmp_path / "c"), "--out", str(run),
            "--swa-start", "2", "--swa-every", "2", "--json"]
    states = {}
    for epoch in (1, 2, 3, 4):
        proc = run_cli_here(*args, "--epochs", str(epoch), *(["--resume"] if epoch > 1 else []))
        assert proc.returncode == 0, proc.stderr
        ckpt = torch.load(run / "checkpoint-last.pt", weights_only=True)
        masks = {f"{name}.weight": m.to(torch.float64) for name, m in ckpt["pruner"]["masks"].items()}
        states[epoch] = {k: v.double() * masks.get(k, 1.0) for k, v in ckpt["model"].items()}
    final_masks = masks
    summary = json.loads(proc.stdout)
    assert summary["swa"]["epochs_averaged"] == [2, 4]
    swa = torch.load(run / "model-swa.pt", weights_only=True)
    assert swa["kind"] == "swa"
    params = [k for k in swa["model"] if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert params
    for k in params:
        want = (states[2][k] + states[4][k]) / 2 * final_masks.get(k, 1.0)
        torch.testing.assert_close(swa["model"][k].double(), want, rtol=0, atol=1e-6)
    bn = next(k for k in swa["model"] if k.endswith("running_var"))
    assert not torch.equal(swa["model"][bn], states[4][bn])  # re-estimated, not copied
    best = torch.load(run / "model-best.pt", weights_only=True)
    losses = [h["eval_loss"] for h in best["history"]]
    assert best["kind"] == "best" and losses[-1] == min(losses)
    exported = run_cli_here("export", str(run), "--swa", "--json")
    assert exported.returncode == 0, exported.stderr
    assert (run / "model-swa.onnx").is_file()
    assert json.loads(exported.stdout)["checkpoint"].endswith("model-swa.pt")


def test_freq_mixstyle_trains_and_changes_the_run_only_when_asked(scenes, tmp_path):
    common = ["train", str(scenes / "scenes"), *TRAIN, "--epochs", "1", "--cache-dir", str(tmp_path / "c"), "--json"]
    plain = run_cli_here(*common, "--out", str(tmp_path / "plain"))
    styled = run_cli_here(*common, "--out", str(tmp_path / "styled"), "--freq-mixstyle", "1,0.3")
    assert plain.returncode == 0 and styled.returncode == 0, styled.stderr
    loss = {r: json.loads((tmp_path / r / "metrics.jsonl").read_text())["train_loss"] for r in ("plain", "styled")}
    assert loss["plain"] != loss["styled"]
    cfg = json.loads((tmp_path / "styled" / "config.json").read_text())["train"]
    assert cfg["freq_mixstyle"] == "1,0.3"
