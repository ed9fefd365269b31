"""A normal run shows edgeasc's own lines and nothing else: no library warning, no onnxruntime
log, no exporter chatter (`--verbose` lets them through, on stderr). A full disk while a
checkpoint or an ONNX file is written is one line, and what was there before is intact; so is
a clip length too short for the frontend or the network.

stderr is read at the file descriptor too: onnxruntime logs from C++ and torch's log handlers
hold the stream they found at import, so sys.stderr alone would miss them. The quiet export runs
in a fresh interpreter for that reason."""

import contextlib
import json
import os
import shutil
import tempfile
import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edgeasc.io
from conftest import assert_one_line_error, run_cli, run_cli_here, synthetic_scenes
from edgeasc.train.checkpoint import load_checkpoint

TINY = ["--preset", "demo", "--width", "4", "--prune-ratio", "0.5", "--seconds", "1", "--batch-size", "4",
        "--feature-workers", "1"]


@contextlib.contextmanager
def fd2_text():
    """What reaches file descriptor 2 (C++ libraries, handlers bound to the original stderr)."""
    got = []
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield got
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            got.append(tmp.read().decode(errors="replace"))


def run_here(*args):
    """run_cli_here, and everything else that reached stderr meanwhile; Python warnings too,
    which pytest would otherwise collect instead of letting them reach stderr (recorded here
    with every filter open: a warning the command does not silence itself is shown)."""
    with fd2_text() as fd2, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        proc = run_cli_here(*args)
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught)
    return proc, proc.stderr + fd2[0] + shown


def only_edgeasc_lines(stderr):
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("edgeasc: ")]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    ws = tmp_path_factory.mktemp("quiet")
    synthetic_scenes(tmp_path_factory, ws / "scenes", seed=3)
    return ws


def train_args(ws, out, epochs, *extra):
    return ("train", str(ws / "scenes"), *TINY, "--epochs", str(epochs), "--cache-dir", str(ws / "cache"),
            "--out", str(ws / out), "--json", *extra)  # --json: no live display, whose bars are ours too


@pytest.fixture(scope="module")
def trained(ws):
    proc, stderr = run_here(*train_args(ws, "run", 1))
    assert proc.returncode == 0, stderr
    return proc, stderr


@pytest.fixture(scope="module")
def exported(ws, trained):
    return run_cli("export", str(ws / "run"), "--json")


def test_train_says_nothing_but_its_own_lines(trained):
    _, stderr = trained
    assert only_edgeasc_lines(stderr) == []
    assert "ends before the pruning ramp" in stderr  # its own note does come through


def test_export_says_nothing_in_a_fresh_interpreter(exported):
    assert exported.returncode == 0, exported.stderr
    assert exported.stderr == ""
    assert json.loads(exported.stdout)["report"]["verdict"] == "PASS"


@pytest.mark.filterwarnings("ignore::FutureWarning")  # --verbose lets the exporter's warnings through: pytest sees them
def test_export_verbose_lets_the_exporter_speak_on_stderr_only(ws, exported):
    proc, _ = run_here("--verbose", "export", str(ws / "run"), "-o", str(ws / "verbose.onnx"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "[torch.onnx] Obtain model graph" in proc.stderr
    assert json.loads(proc.stdout)["onnx"] == str(ws / "verbose.onnx")  # stdout stays one JSON document


def test_eval_says_nothing(ws, trained):
    proc, stderr = run_here("eval", str(ws / "run"), "--json")
    assert proc.returncode == 0, stderr
    assert stderr == ""


def test_onnxruntime_log_only_with_verbose(ws, exported):
    """A model with an unused initializer: onnxruntime warns about it (in terminal colours)."""
    model = onnx.load(ws / "run" / "model.onnx")
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(3, np.float32), "unused_extra"))
    onnx.save(model, ws / "extra.onnx")
    clip = str(next((ws / "scenes" / "audio").iterdir()))
    proc, stderr = run_here("predict", str(ws / "extra.onnx"), clip)
    assert proc.returncode == 0, stderr
    assert stderr == ""
    proc, stderr = run_here("--verbose", "predict", str(ws / "extra.onnx"), clip)
    assert proc.returncode == 0, stderr
    assert "Removing initializer 'unused_extra'" in stderr
    proc, stderr = run_here("predict", str(ws / "extra.onnx"), clip)  # --verbose ended with its command
    assert stderr == ""
    assert_one_line_error(run_cli_here("predict", str(ws / "extra.onnx"), clip, "--verbose"), 2,
                          "No such option: --verbose (a global option: edgeasc --verbose COMMAND ...)")


def test_a_library_warning_is_shown_only_with_verbose(ws, exported, monkeypatch):
    """A Python warning from a library during a command (onnxruntime's session, here) does not
    reach the user; with --verbose it does."""
    import onnxruntime

    class Warns(onnxruntime.InferenceSession):
        def __init__(self, *args, **kwargs):
            warnings.warn("a library's own warning", FutureWarning, stacklevel=2)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", Warns)
    clip = str(next((ws / "scenes" / "audio").iterdir()))
    proc, stderr = run_here("predict", str(ws / "run" / "model.onnx"), clip)
    assert proc.returncode == 0 and stderr == "", stderr
    proc, stderr = run_here("--verbose", "predict", str(ws / "run" / "model.onnx"), clip)
    assert proc.returncode == 0 and "FutureWarning: a library's own warning" in stderr, stderr


# ----------------------------------------------------------------------------- a full disk
def disk_full_for(monkeypatch, name, after):
    """The temp file of every write of `name` after the first `after` is /dev/full: each write to it
    fails with ENOSPC, as on a full disk, in whatever library does the writing."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    real, seen = edgeasc.io._tempfile_for, []

    def tempfile_for(path):
        tmp = real(path)
        if path.name == name:
            seen.append(path)
            if len(seen) > after:
                tmp.unlink()
                os.symlink("/dev/full", tmp)
        return tmp

    monkeypatch.setattr(edgeasc.io, "_tempfile_for", tempfile_for)
    return seen


def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_previous_one(ws, trained, monkeypatch):
    seen = disk_full_for(monkeypatch, "checkpoint-last.pt", after=1)
    proc, stderr = run_here(*train_args(ws, "full", 2, "--prune-epochs", "1"))
    run = ws / "full"
    assert_one_line_error(proc, 1, f"cannot write {run / 'checkpoint-last.pt'}: no space left on the device")
    assert only_edgeasc_lines(stderr) == []
    assert len(seen) == 2
    assert load_checkpoint(run / "checkpoint-last.pt")["epoch"] == 1  # the first epoch's, intact
    assert not list(run.glob(".*.partial"))


def test_a_full_disk_at_export_is_one_line_and_keeps_the_previous_model(ws, exported, monkeypatch, tmp_path):
    shutil.copytree(ws / "run", tmp_path / "run")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").glob("model.*")}
    assert set(before) == {"model.onnx", "model.size.json", "model.size.md"}
    disk_full_for(monkeypatch, "model.onnx", after=0)
    proc, stderr = run_here("export", str(tmp_path / "run"), "--force")
    assert_one_line_error(proc, 1, f"cannot write {tmp_path / 'run' / 'model.onnx'}: no space left on the device")
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").glob("model.*")} == before
    assert not list((tmp_path / "run").glob(".*.partial"))


# ----------------------------------------------------------------------------- clips too short
def test_a_clip_too_short_for_the_fft_is_one_line_naming_the_option(ws, tmp_path):
    proc = run_cli_here("features", str(ws / "scenes"), "--workers", "1", "--seconds", "0.01",
                        "--cache-dir", str(tmp_path / "cache"))
    assert_one_line_error(proc, 2, "--seconds 0.01 is too short for the frontend: its 2048-point FFT frames clips "
                          "of more than 1024 samples (0.046 s at 22050 Hz)")
    assert not (tmp_path / "cache").exists()


def test_a_clip_too_short_for_the_network_is_one_line_before_training(ws, tmp_path):
    proc = run_cli_here("train", str(ws / "scenes"), "--preset", "demo", "--width", "4", "--prune-ratio", "0.5",
                        "--seconds", "0.05", "--batch-size", "4", "--feature-workers", "1", "--epochs", "1",
                        "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "short"), "--json")
    assert_one_line_error(proc, 2, "clips of 0.05 s are too short for this network: input of 3 frames is too short: "
                          "the feature map is empty after the stage1 max-pool")
    assert not (tmp_path / "short").exists()
