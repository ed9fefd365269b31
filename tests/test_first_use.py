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

from conftest import run_cli, write_wav
from edgeasc.data.synth import write_dataset

TRAIN = ["--preset", "demo", "--width", "4", "--seconds", "1", "--batch-size", "4", "--feature-workers", "1",
         "--lr", "3e-3", "--prune-ratio", "0.2", "--prune-epochs", "0"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("first-use")
    write_dataset(root / "scenes", classes=3, clips_per_class=8, seconds=1.0, seed=3, workers=1, progress=False)
    return root


def test_synth_creates_missing_parent_folders(tmp_path):
    out = tmp_path / "a" / "b" / "scenes"
    proc = run_cli("synth", str(out), "--clips-per-class", "8", "--seconds", "0.2", "--workers", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    assert (out / "meta.csv").is_file() and len(list((out / "audio").iterdir())) == 24


@pytest.mark.parametrize("command", ["train", "export", "bench", "predict", "synth", "features", "info", "eval"])
def test_help_shows_flags_without_type_noise_for_switches(command):
    proc = run_cli(command, "--help")
    assert proc.returncode == 0
    assert "<bool>" not in proc.stdout
    assert not re.search(r"--no-(resume|force|json|with-frontend)\b", proc.stdout)


def test_run_artifacts_respect_the_umask_and_eval_reuses_the_runs_own_cache(scenes, tmp_path):
    run = tmp_path / "run"
    proc = run_cli("train", str(scenes / "scenes"), *TRAIN, "--epochs", "1", "--cache-dir", str(tmp_path / "cache"),
                   "--out", str(run), "--json", python_prelude="import os; os.umask(0o022)")
    assert proc.returncode == 0, proc.stderr
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run.iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes  # not mkstemp's 0600
    assert not (run / ".edgeasc.lock").exists()  # the lock goes with the run
    empty_default = tmp_path / "default-cache"
    empty_default.mkdir()
    proc = run_cli("eval", str(run), "--json", env={"EDGEASC_CACHE": str(empty_default)})
    assert proc.returncode == 0, proc.stderr
    assert list(empty_default.iterdir()) == []  # the run's own cache was used, nothing extracted again
    assert json.loads(proc.stdout)["n"] > 0


def test_a_budget_fail_is_said_on_stderr_and_the_files_are_kept(scenes, tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", str(scenes / "scenes"), *TRAIN, "--epochs", "1", "--cache-dir", str(tmp_path / "c"),
                   "--out", str(run), "--json").returncode == 0
    proc = run_cli("export", str(run), "--check-budget", "1KB", "--json")
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
    resumed = run_cli(*args, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert "no checkpoint yet" in resumed.stderr and json.loads(resumed.stdout)["epochs"] == 2
    shutil.rmtree(run)
    run.mkdir()  # the state a kill leaves: the folder, maybe a stale lock file, nothing else
    (run / ".edgeasc.lock").write_text("12345")
    again = run_cli(*args, "--json")
    assert again.returncode == 0, again.stderr


def test_a_cache_array_shorter_than_its_manifest_is_extracted_again(scenes, tmp_path):
    cache = tmp_path / "cache"
    first = run_cli("features", str(scenes / "scenes"), "--cache-dir", str(cache), "--workers", "1", "--json")
    assert first.returncode == 0, first.stderr
    train_npy = next(cache.rglob("train.npy"))
    whole = np.load(train_npy).copy()
    os.truncate(train_npy, train_npy.stat().st_size // 2)
    again = run_cli("features", str(scenes / "scenes"), "--cache-dir", str(cache), "--workers", "1", "--json")
    assert again.returncode == 0, again.stderr
    assert "damaged" in again.stderr and "shorter than its manifest" in again.stderr
    assert json.loads(again.stdout)["extracted"] is True
    np.testing.assert_array_equal(np.load(train_npy), whole)


def test_a_truncated_wav_gets_a_warning_naming_it(tmp_path):
    from edgeasc.audio import truncation

    wav = write_wav(tmp_path / "cut.wav", seconds=1.0)
    assert truncation(wav) is None
    os.truncate(wav, wav.stat().st_size // 2)
    assert "cut.wav" in truncation(wav) and "50 %" in truncation(wav)
    (tmp_path / "x.txt").write_text("RIFF")
    assert truncation(tmp_path / "x.txt") is None
