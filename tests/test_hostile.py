"""Hostile input and faults, tried as a hostile user would: every case runs the real CLI (in a
subprocess, or through the same main() in this process where a second interpreter proves
nothing: refusals of flags and folders) and must end with a non-zero exit, exactly one stderr
line without a traceback, and the working folder exactly as it was (no file changed, none left
behind).

The faults the OS produces (a full disk, a read-only file system, no permission) are made by
patching the OS call (os.fsync / os.posix_fallocate / tempfile.mkstemp) for one in-process
command: the edgeasc code path from there on is the real one. A worker killed mid-extraction is a real
SIGBUS, raised by a sitecustomize module in the spawned worker."""

import contextlib
import errno
import fcntl
import hashlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from conftest import run_cli, run_cli_here, synthetic_scenes, write_wav
from edgeasc.data.cache import extract_features
from edgeasc.data.dcase import open_dataset
from edgeasc.export.pipeline import export_checkpoint
from edgeasc.models import ModelConfig, build_model
from edgeasc.runtime.features import FeatureParams
from edgeasc.train.checkpoint import save_checkpoint

DEVICE = "import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None"
LABELS = ["indoor", "outdoor", "transportation"]
TRAIN = ["--preset", "demo", "--width", "4", "--seconds", "1", "--batch-size", "4", "--feature-workers", "1",
         "--lr", "3e-3", "--prune-ratio", "0.2", "--prune-epochs", "0"]


@contextlib.contextmanager
def failing(errno_name: str, call: str, after: int = 0):
    """Make the (after+1)-th and later calls of `call` fail as the OS would with `errno_name`, for the
    duration of one in-process command: the OS error is the point, not a fresh interpreter, and a
    command here skips a 2-s torch import."""
    module_name, name = call.rsplit(".", 1)
    module = importlib.import_module(module_name)
    real, calls = getattr(module, name), [0]
    code = getattr(errno, errno_name)

    def fake(*args, **kwargs):
        calls[0] += 1
        if calls[0] > after:
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    setattr(module, name, fake)
    try:
        yield
    finally:
        setattr(module, name, real)


# ----------------------------------------------------------------------------- the contract
def snapshot(root: Path) -> dict:
    """Every file under root with its size, mtime and content hash, and every folder."""
    state = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_dir():
            state[rel] = "dir"
        else:
            st = p.stat()
            state[rel] = (st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return state


def refused(proc: subprocess.CompletedProcess, workspace: Path, before: dict, *needles: str,
            code: int | None = None) -> str:
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    if code is not None:
        assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    after = snapshot(workspace)
    assert after == before, {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
                             if before.get(k) != after.get(k)}
    return lines[0]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """An exported model (1-s clips, 3 classes), a WAV, a small dataset with its features cached,
    and a run trained for one epoch."""
    tmp = tmp_path_factory.mktemp("hostile")
    torch.manual_seed(0)
    model = build_model(ModelConfig(width=8, n_classes=3)).eval()
    ckpt = tmp / "m.pt"
    save_checkpoint(ckpt, {"model_config": model.config.to_dict(), "labels": LABELS,
                           "feature_params": FeatureParams(clip_seconds=1.0).to_dict(), "channels": 2,
                           "normalization": {"mean": [-30.0] * 256, "std": [10.0] * 256},
                           "model": model.state_dict(), "epoch": 1, "kind": "final"})
    export_checkpoint(ckpt, tmp / "model.onnx")
    write_wav(tmp / "clip.wav", seconds=1.0)
    synthetic_scenes(tmp_path_factory, tmp / "scenes", seed=2)
    extract_features(open_dataset(tmp / "scenes"), FeatureParams(clip_seconds=1.0), workers=1,
                     root=tmp / "cache", progress=False)
    proc = run_cli_here("train", str(tmp / "scenes"), *TRAIN, "--cache-dir", str(tmp / "cache"), "--epochs", "1",
                        "--out", str(tmp / "run"), "--json")
    assert proc.returncode == 0, proc.stderr
    return tmp


@pytest.fixture
def ws(tmp_path, assets):
    """The working folder of one case, with its own copy of the model, the WAV and the run."""
    for name in ("model.onnx", "clip.wav"):
        shutil.copy2(assets / name, tmp_path / name)
    shutil.copytree(assets / "run", tmp_path / "run")
    return tmp_path


def train(assets, ws, out="new-run", *extra, here=False, **kw):
    """`edgeasc train` into ws/out: a subprocess, or in this process (`here`: refusals of flags)."""
    args = ("train", str(assets / "scenes"), *TRAIN, "--cache-dir", str(assets / "cache"), "--out", str(ws / out),
            *extra)
    return run_cli_here(*args) if here else run_cli(*args, **kw)


def tampered(ws: Path, key: str, value: str | None, name: str = "bad.onnx", **more: str | None) -> Path:
    """The model with metadata `edgeasc.KEY` set to the raw string `value` (None: removed), and
    likewise every KEY=value of `more`."""
    proto = onnx.load(ws / "model.onnx")
    props = {p.key: p.value for p in proto.metadata_props}
    for k, v in {key: value, **more}.items():
        if v is None:
            props.pop(f"edgeasc.{k}")
        else:
            props[f"edgeasc.{k}"] = v
    del proto.metadata_props[:]
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, ws / name)
    return ws / name


def metadata(ws: Path, key: str) -> dict:
    proto = onnx.load(ws / "model.onnx")
    return json.loads(next(p.value for p in proto.metadata_props if p.key == f"edgeasc.{key}"))


def fp(ws, **change) -> str:
    return json.dumps({**metadata(ws, "feature_params"), **change})


# ----------------------------------------------------------------------------- 1. the model file is untrusted
METADATA_CASES = {
    "unknown feature_params key": ("feature_params", lambda ws: fp(ws, window="hann"), "unknown key 'window'"),
    "zero sample rate": ("feature_params", lambda ws: fp(ws, sample_rate=0), "sample_rate"),
    "negative hop": ("feature_params", lambda ws: fp(ws, hop_length=-512), "hop_length"),
    "hop longer than the FFT": ("feature_params", lambda ws: fp(ws, hop_length=4096), "longer than n_fft"),
    "fmax above Nyquist": ("feature_params", lambda ws: fp(ws, fmax=30000.0), "fmax"),
    "sample rate as a word": ("feature_params", lambda ws: fp(ws, sample_rate="fast"), "sample_rate"),
    "channels as a word": ("channels", lambda ws: '"two"', "edgeasc.channels"),
    "labels shorter than the logits": ("labels", lambda ws: '["indoor", "outdoor"]', "2 labels"),
    "a label twice": ("labels", lambda ws: '["indoor", "indoor", "outdoor"]', "twice"),
    "labels that are not JSON": ("labels", lambda ws: "indoor,outdoor,transportation", "not valid JSON"),
    "zero std": ("normalization", lambda ws: json.dumps({"mean": [0.0] * 256, "std": [0.0] * 256}),
                 "standard deviation"),
    "NaN in the mean": ("normalization", lambda ws: json.dumps({"mean": [float("nan")] * 256, "std": [1.0] * 256}),
                        "finite"),
    "normalization of the wrong length": ("normalization", lambda ws: json.dumps({"mean": [0.0], "std": [1.0]}),
                                          "256 mel bands"),
    "absurd clip length": ("clip_seconds", lambda ws: "1e9", "clip_seconds"),
    "absurd declared input": ("feature_params", lambda ws: fp(ws, n_mels=2048, hop_length=1, n_fft=16,
                                                                 sample_rate=384_000), "GiB"),
    "unknown input kind": ("input", lambda ws: '{"name": "spectrogram"}', "edgeasc.input"),
    "a channel plan that does not fit": ("model_config", lambda ws: json.dumps(
        {**metadata(ws, "model_config"), "channels": {"stem": 999}}), "channel plan"),
    "model_config classes disagree": ("model_config", lambda ws: json.dumps(
        {**metadata(ws, "model_config"), "n_classes": 5}), "network of 5 classes"),
    "precision unknown": ("precision", lambda ws: "fp64", "precision"),
    "size report without a verdict": ("size_report", lambda ws: '{"params": 1}', "size_report"),
    "channels disagree with the network": ("channels", lambda ws: "1", "in_channels"),
}


@pytest.mark.parametrize("case", sorted(METADATA_CASES))
def test_predict_refuses_bad_metadata(ws, case):
    key, value, needle = METADATA_CASES[case]
    bad = tampered(ws, key, value(ws))
    before = snapshot(ws)
    refused(run_cli_here("predict", str(bad), str(ws / "clip.wav"), "--csv", str(ws / "out.csv")), ws, before,
            str(bad), needle, code=2)


@pytest.mark.parametrize("key, value, needle", [("labels", '["indoor", "outdoor"]', "outputs 3 classes"),
                                                ("channels", "1", "input axis 1 is 2")])
def test_metadata_must_describe_the_graph(ws, key, value, needle):
    bad = tampered(ws, key, value, model_config=None)  # no network description to disagree with first
    before = snapshot(ws)
    refused(run_cli_here("predict", str(bad), str(ws / "clip.wav")), ws, before, needle, code=2)


def test_info_and_bench_refuse_bad_metadata_too(ws):
    bad = tampered(ws, "feature_params", fp(ws, sample_rate=0))
    before = snapshot(ws)
    refused(run_cli_here("info", str(bad)), ws, before, "sample_rate", code=2)
    refused(run_cli_here("bench", str(bad), "--runs", "1"), ws, before, "sample_rate", code=2)


def test_predict_shape_mismatch_in_onnxruntime_is_one_line(ws):
    proto = onnx.load(ws / "model.onnx")  # the graph fixes its time axis at 7 frames; a clip has 44
    proto.graph.input[0].type.tensor_type.shape.dim[3].dim_value = 7
    onnx.save(proto, ws / "fixed.onnx")
    before = snapshot(ws)
    refused(run_cli_here("predict", str(ws / "fixed.onnx"), str(ws / "clip.wav")), ws, before,
            "fixed.onnx")


def test_a_nan_network_never_prints_nan_percent(ws):
    proto = onnx.load(ws / "model.onnx")
    for init in proto.graph.initializer:  # every float weight NaN: the logits are NaN
        if init.data_type == onnx.TensorProto.FLOAT and init.raw_data:
            init.raw_data = np.full(len(init.raw_data) // 4, np.nan, np.float32).tobytes()
    onnx.save(proto, ws / "nan.onnx")
    before = snapshot(ws)
    proc = run_cli_here("predict", str(ws / "nan.onnx"), str(ws / "clip.wav"))
    refused(proc, ws, before, "non-finite")
    assert "nan %" not in proc.stdout.lower() and "error" in proc.stdout


# ----------------------------------------------------------------------------- 2. non-finite numbers
@pytest.mark.parametrize("lr", ["inf", "nan", "-1", "1e38"])
def test_train_refuses_non_finite_learning_rates(assets, ws, lr):
    before = snapshot(ws)
    refused(train(assets, ws, "new-run", "--lr", lr, here=True), ws, before, "lr", code=2)


def _poisoned_cache(assets, ws) -> Path:
    """A copy of the feature cache whose training clips are NaN (shape and size intact)."""
    shutil.copytree(assets / "cache", ws / "cache")
    train_npy = next((ws / "cache").rglob("train.npy"))
    x = np.load(train_npy, mmap_mode="r+")
    x[:] = np.nan
    x.flush()
    return ws / "cache"


def test_training_that_diverges_stops_at_the_first_nan_and_keeps_the_last_checkpoint(assets, ws):
    cache = _poisoned_cache(assets, ws)
    before = snapshot(ws)
    args = ["train", str(assets / "scenes"), *TRAIN, "--cache-dir", str(cache)]
    refused(run_cli_here(*args, "--out", str(ws / "run"), "--epochs", "3", "--resume"), ws, before,
            "training diverged", "the loss is nan at step 1 in epoch 2", "checkpoint of epoch 1 is kept")
    # a fresh run that diverges in its first epoch leaves no folder behind
    refused(run_cli_here(*args, "--out", str(ws / "fresh"), "--epochs", "2"), ws, before, "no checkpoint was written")
    # and --force over a finished run that fails before its first checkpoint leaves the old run intact
    refused(run_cli_here(*args, "--out", str(ws / "run"), "--epochs", "2", "--force"), ws, before, "training diverged")


def test_export_refuses_a_network_that_outputs_nan(assets, ws):
    ckpt = torch.load(assets / "m.pt", weights_only=True)
    ckpt["model"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                     for k, v in ckpt["model"].items()}
    torch.save(ckpt, ws / "nan.pt")
    before = snapshot(ws)
    refused(run_cli_here("export", str(ws / "nan.pt"), "-o", str(ws / "nan.onnx")), ws, before, "non-finite")


# ----------------------------------------------------------------------------- 3. one process per run folder
def test_a_second_training_into_a_folder_in_use_is_refused(assets, ws):
    lock = ws / "run" / ".edgeasc.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)  # this test process plays the first training
    os.write(fd, b"4242")
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        before = snapshot(ws)
        # in this process too: a flock belongs to its open file, and the command opens its own
        # (test_io_lock races two real processes)
        refused(train(assets, ws, "run", "--epochs", "2", "--resume", here=True), ws, before, "in use", "pid 4242")
        refused(train(assets, ws, "run", "--epochs", "1", "--force", here=True), ws, before, "in use")
    finally:
        os.close(fd)


def test_resume_with_fewer_epochs_is_refused_and_leaves_config_alone(assets, ws):
    shutil.rmtree(ws / "run")
    proc = train(assets, ws, "run", "--epochs", "2", "--json", here=True)
    assert proc.returncode == 0, proc.stderr
    before = snapshot(ws)
    refused(train(assets, ws, "run", "--epochs", "1", "--resume", here=True), ws, before, "trained 2 epochs", code=2)


def test_resume_of_a_folder_that_never_existed_is_refused(assets, ws):
    before = snapshot(ws)
    refused(train(assets, ws, "typo", "--epochs", "1", "--resume", here=True), ws, before, "nothing to resume", code=2)


# ----------------------------------------------------------------------------- 4. the OS says no
def test_train_on_a_full_disk(assets, ws):
    before = snapshot(ws)
    with failing("ENOSPC", "os.fsync"):
        proc = train(assets, ws, "full", "--epochs", "1", here=True)
    refused(proc, ws, before, "cannot write", "checkpoint-last.pt", "no space left")


def test_resume_on_a_full_disk_keeps_the_old_checkpoint(assets, ws):
    before = snapshot(ws)
    with failing("ENOSPC", "os.fsync"):
        proc = train(assets, ws, "run", "--epochs", "2", "--resume", here=True)
    refused(proc, ws, before, "checkpoint-last.pt", "no space left")


def test_features_on_a_full_disk(assets, ws):
    before = snapshot(ws)
    with failing("ENOSPC", "os.posix_fallocate"):
        proc = run_cli_here("features", str(assets / "scenes"), "--cache-dir", str(ws / "cache"), "--workers", "1",
                            "--json")
    refused(proc, ws, before, "train.npy", "no space left")


def test_features_into_a_path_under_a_file(assets, ws):
    (ws / "afile").write_text("x")
    before = snapshot(ws)
    refused(run_cli_here("features", str(assets / "scenes"), "--cache-dir", str(ws / "afile" / "cache"), "--json"),
            ws, before, "afile")


def test_features_never_hang_when_a_worker_dies(assets, ws, tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    (site / "sitecustomize.py").write_text(
        "import os, signal, sys\n"
        "if '--multiprocessing-fork' in sys.argv:  # a spawned worker: die like a full disk under a mmap\n"
        "    import edgeasc.data.cache as c\n"
        "    def _die(job):\n"
        "        os.kill(os.getpid(), signal.SIGBUS)\n"
        "    c._extract_chunk = _die\n")
    before = snapshot(ws)
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    proc = run_cli("features", str(assets / "scenes"), "--cache-dir", str(ws / "cache"), "--workers", "2",
                   "--json", env=env, timeout=120)
    refused(proc, ws, before, "worker process died")


def test_synth_on_a_full_disk_leaves_nothing(ws):
    before = snapshot(ws)
    with failing("ENOSPC", "os.fsync"):
        proc = run_cli_here("synth", str(ws / "new" / "scenes"), "--clips-per-class", "8", "--seconds", "0.5",
                            "--workers", "1", "--json")
    refused(proc, ws, before, "meta.csv", "no space left")


def test_export_to_a_read_only_folder(assets, ws):
    before = snapshot(ws)
    with failing("EROFS", "tempfile.mkstemp"):
        proc = run_cli_here("export", str(assets / "m.pt"), "-o", str(ws / "m.onnx"))
    refused(proc, ws, before, "m.onnx",
            "read-only file system")


@pytest.mark.parametrize("after", [1, 2])
def test_an_export_whose_report_does_not_fit_leaves_nothing(assets, ws, after):
    before = snapshot(ws)  # the .onnx is written (fsync 1), a report is not: none of them may land
    with failing("ENOSPC", "os.fsync", after=after):
        proc = run_cli_here("export", str(assets / "m.pt"), "-o", str(ws / "m.onnx"))
    refused(proc, ws, before, "no space left")


def test_a_failed_export_with_force_keeps_the_previous_outputs(assets, ws):
    proc = run_cli_here("export", str(assets / "m.pt"), "-o", str(ws / "m.onnx"), "--json")
    assert proc.returncode == 0, proc.stderr
    before = snapshot(ws)
    with failing("ENOSPC", "os.fsync", after=2):
        proc = run_cli_here("export", str(assets / "m.pt"), "-o", str(ws / "m.onnx"), "--force", "--precision", "fp16")
    refused(proc, ws, before, "m.size.md",
            "no space left")


def test_predict_csv_into_a_folder_without_permission(ws):
    before = snapshot(ws)
    with failing("EACCES", "tempfile.mkstemp"):
        proc = run_cli_here("predict", str(ws / "model.onnx"), str(ws / "clip.wav"), "--csv", str(ws / "p.csv"))
    refused(proc, ws, before, "p.csv", "permission denied")


# ----------------------------------------------------------------------------- 5. datasets that contradict themselves
def _plain(ws: Path, rows: list[str]) -> Path:
    d = ws / "plain"
    for i in range(4):
        write_wav(d / f"c{i}.wav", seconds=0.2, seed=i)
    (d / "labels.csv").write_text("filename,label,split\n" + "\n".join(rows) + "\n")
    return d


DATASET_CASES = {
    "a clip in train and evaluate": (["c0.wav,a,train", "c1.wav,b,train", "c2.wav,a,evaluate",
                                      "c0.wav,a,evaluate"], "in both train and evaluate"),
    "one file with two labels": (["c0.wav,a,train", "c1.wav,b,train", "c2.wav,a,evaluate", "c0.wav,b,train"],
                                 "labelled"),
    "a duplicate row": (["c0.wav,a,train", "c1.wav,b,train", "c2.wav,a,evaluate", "c1.wav,b,train"],
                        "listed twice"),
    "the same file by two names": (["c0.wav,a,train", "c1.wav,b,train", "c2.wav,a,evaluate",
                                    "./c2.wav,a,train"], "in both train and evaluate"),
    "a class with no training clips": (["c0.wav,a,train", "c1.wav,a,train", "c2.wav,b,evaluate"],
                                       "no training clips"),
}


@pytest.mark.parametrize("case", sorted(DATASET_CASES))
def test_contradicting_labels_csv_is_refused(ws, case):
    rows, needle = DATASET_CASES[case]
    data = _plain(ws, rows)
    before = snapshot(ws)
    refused(run_cli_here("features", str(data), "--cache-dir", str(ws / "cache"), "--json"), ws, before, needle,
            code=2)


@pytest.mark.parametrize("split, needle", [("train", "listed twice"), ("evaluate", "in both train and evaluate")])
def test_contradicting_official_fold_files_are_refused(assets, ws, split, needle):
    data = ws / "scenes"
    shutil.copytree(assets / "scenes", data)
    train_fold = data / "evaluation_setup" / "fold1_train.csv"
    first = train_fold.read_text().splitlines()[1]
    fold = data / "evaluation_setup" / f"fold1_{split}.csv"
    fold.write_text(fold.read_text() + first + "\n")
    before = snapshot(ws)
    refused(run_cli_here("features", str(data), "--cache-dir", str(ws / "cache"), "--json"), ws, before,
            f"fold1_{split}.csv", needle, code=2)


# ----------------------------------------------------------------------------- 6. absurd requests
@pytest.mark.parametrize("args, needle", [
    (("predict", "model.onnx", "clip.wav", "--hop", "0.0001"), "--hop"),
    (("predict", "model.onnx", "clip.wav", "--batch", "1000000"), "--batch"),
    (("predict", "model.onnx", "clip.wav", "--window", "nan"), "--window"),
    (("predict", "model.onnx", "clip.wav", "--threads", "100000"), "thread count"),
    (("bench", "model.onnx", "--threads", "100000"), "thread count"),
    (("bench", "model.onnx", "--runs", "1000000000"), "--runs"),
    (("bench", "model.onnx", "--seconds", "inf"), "--seconds"),
])
def test_absurd_runtime_requests_are_refused_at_once(ws, args, needle):
    before = snapshot(ws)
    t0 = time.perf_counter()
    proc = run_cli_here(*(str(ws / a) if a.endswith((".onnx", ".wav")) else a for a in args))
    refused(proc, ws, before, needle, code=2)
    assert time.perf_counter() - t0 < 30


@pytest.mark.parametrize("flag, value", [("--seconds", "1e9"), ("--epochs", "-3"), ("--damping-floor", "nan"),
                                         ("--freq-mixstyle", "2,0.3")])
def test_absurd_training_requests_are_refused(assets, ws, flag, value):
    before = snapshot(ws)
    refused(train(assets, ws, "new-run", flag, value, here=True), ws, before, flag.lstrip("-").split("-")[0], code=2)


# ----------------------------------------------------------------------------- 7. signals
def _ctrl_c_enabled() -> None:
    """A shell that starts a job in the background (CI runners, `cmd &`) makes it ignore SIGINT,
    and Python then never raises KeyboardInterrupt: give the child the terminal's default back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_training_says_what_was_kept(assets, ws):
    shutil.rmtree(ws / "run")
    args = ["train", str(assets / "scenes"), *TRAIN, "--cache-dir", str(assets / "cache"), "--out",
            str(ws / "run"), "--epochs", "50"]
    proc = subprocess.Popen([sys.executable, "-c", "from edgeasc.cli import main; main()", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"}, preexec_fn=_ctrl_c_enabled)
    for line in proc.stdout:  # the first epoch is done and checkpointed
        if line.startswith("epoch   1/50"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "interrupted in epoch" in lines[0] and "--resume" in lines[0], lines[0]
    epoch = int(lines[0].split("checkpoint of epoch ")[1].split()[0])
    kept = torch.load(ws / "run" / "checkpoint-last.pt", weights_only=True)
    assert kept["epoch"] == epoch  # the message names the checkpoint that is on disk
    assert not list((ws / "run").glob(".*.partial"))
    resumed = train(assets, ws, "run", "--epochs", str(epoch + 1), "--resume", "--json", here=True)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["epochs"] == epoch + 1


def test_ctrl_c_in_any_other_command_is_one_line_and_exit_130(ws):
    proc = subprocess.Popen([sys.executable, "-c", DEVICE + "\nfrom edgeasc.cli import main; main()", "bench",
                             str(ws / "model.onnx"), "--runs", "100000", "--batch", "256", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_enabled)
    before = snapshot(ws)
    time.sleep(3)  # measuring
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    refused(subprocess.CompletedProcess([], proc.returncode, out, err), ws, before, "interrupted", code=130)
