"""`edgeasc train` end to end on tiny models: exact pruning, outputs, determinism, kill and
resume (torchrun with two gloo processes: test_distill), eval/info on runs, and bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import assert_one_line_error, make_dcase, run_cli, run_cli_here, synthetic_scenes

TINY = ["--preset", "demo", "--width", "4", "--seconds", "1", "--batch-size", "4", "--feature-workers", "1",
        "--lr", "3e-3"]
TIMING = ("seconds", "train_clips_per_s", "prune_seconds")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    synthetic_scenes(tmp_path_factory, root / "scenes", seed=2)
    return root


def train_cli(data, out, *extra, here=False, **kw):
    """`edgeasc train` on the module's data: a real subprocess, or in this process (`here`: for refusals)."""
    args = ("train", str(data / "scenes"), *TINY, "--cache-dir", str(data / "cache"), "--out", str(out), *extra)
    return run_cli_here(*args) if here else run_cli(*args, **kw)


def _metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_pruned_run_hits_target_and_writes_everything(data, tmp_path):
    run = tmp_path / "run"
    proc = train_cli(data, run, "--epochs", "4", "--prune-target", "1000", "--prune-epochs", "2", "--json", "--plots",
                     here=True)  # --plots: the flag wins over the suite's EDGEASC_PLOTS=0
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["nonzero_params"] == 1000 == summary["prune_target"]
    assert summary["epochs"] == 4 and summary["reported_over_epochs"] == 4
    for name in ("config.json", "metrics.jsonl", "checkpoint-last.pt", "model-final.pt", "summary.json",
                 "curves.png", "nonzero.png", "confusion.png"):
        assert (run / name).is_file(), name
    metrics = _metrics(run)
    assert [m["nonzero_params"] for m in metrics][-2:] == [1000, 1000]  # reached at prune_epochs
    assert metrics[0]["pruned"] == 0 and metrics[0]["lr"] == pytest.approx(3e-3)
    # the paper's measure: the mean evaluate accuracy of the last 10 epochs, as metrics.jsonl has them
    last = [m["eval_accuracy"] for m in metrics][-10:]
    assert summary["reported_accuracy"] == pytest.approx(sum(last) / len(last), abs=1e-12)
    final = torch.load(run / "model-final.pt", weights_only=True)  # no code runs on load
    assert final["format"] == "edgeasc-checkpoint" and final["labels"] == ["indoor", "outdoor", "transportation"]
    assert not any("mask" in k for k in final["model"])
    conv = sum(int(torch.count_nonzero(v)) for k, v in final["model"].items() if k.endswith("weight") and v.dim() == 4)
    bn = sum(v.numel() for k, v in final["model"].items() if v.dim() == 1 and (k.endswith("weight") or k.endswith("bias")))
    assert conv + bn == 1000
    resolved = json.loads((run / "config.json").read_text())
    assert resolved["train"]["prune_target"] == 1000 and resolved["model"]["width"] == 4
    # info and eval on the run
    info = json.loads(run_cli_here("info", str(run), "--json").stdout)
    assert info["nonzero_params"] == 1000 and info["labels"] == summary["labels"]
    assert info["params"] == summary["params"] and info["macs"] > 0
    ev = run_cli_here("eval", str(run), "--cache-dir", str(data / "cache"), "--json")
    assert ev.returncode == 0, ev.stderr
    result = json.loads(ev.stdout)
    assert result["accuracy"] == pytest.approx(summary["final"]["accuracy"])
    assert set(result["per_device"]) <= {"a", "b", "c"} and sum(result["device_counts"].values()) == result["n"]
    assert (run / "confusion-eval.png").is_file()


def test_lr_schedule_at_every_phase_boundary():
    from edgeasc.train.config import TrainConfig
    from edgeasc.train.schedule import lr_at

    cfg = TrainConfig(lr=1e-3, lr_hold=5, lr_decay_end=15, lr_final=1e-6, epochs=20)
    assert [lr_at(cfg, e) for e in (0, 4)] == [1e-3, 1e-3]  # held
    assert lr_at(cfg, 5) == pytest.approx(1e-3)             # the linear decay starts at the full rate
    assert lr_at(cfg, 10) == pytest.approx(5e-4)
    assert lr_at(cfg, 14) == pytest.approx(1e-4)            # one step before 0
    assert [lr_at(cfg, e) for e in (15, 19)] == [1e-6, 1e-6]  # then the final rate


def test_same_seed_same_run(data, tmp_path):
    a = train_cli(data, tmp_path / "a", "--epochs", "2", "--prune-ratio", "0.3", "--prune-epochs", "1", "--json")
    # the second in this process: the same run, so nothing leaks between runs or depends on the process
    b = train_cli(data, tmp_path / "b", "--epochs", "2", "--prune-ratio", "0.3", "--prune-epochs", "1", "--json",
                  here=True)
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")


def test_killed_run_resumes_to_the_same_result(data, tmp_path):
    args = ["--epochs", "6", "--prune-target", "900", "--prune-epochs", "4", "--json"]
    whole = train_cli(data, tmp_path / "whole", *args, here=True)  # the killed run below is the subprocess
    assert whole.returncode == 0, whole.stderr
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "edgeasc", "train", str(data / "scenes"), *TINY, "--cache-dir",
           str(data / "cache"), "--out", str(run), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (run / "metrics.jsonl").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) >= 2:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len((run / "metrics.jsonl").read_text().splitlines())
    assert 2 <= done < 6, "the run was not interrupted"
    assert not (run / "model-final.pt").exists()
    again = train_cli(data, run, *args[:-1], "--resume", "--json", here=True)
    assert again.returncode == 0, again.stderr
    assert _metrics(run) == _metrics(tmp_path / "whole")
    a = torch.load(run / "model-final.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "whole" / "model-final.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_config_file_and_flags(data, tmp_path):
    cfg = tmp_path / "train.toml"
    cfg.write_text(f'[train]\nepochs = 1\nprune-ratio = 0.25\nprune_epochs = 0\nout = "{tmp_path / "cfgrun"}"\n')
    proc = run_cli_here("train", str(data / "scenes"), *TINY, "--cache-dir", str(data / "cache"), "--config", str(cfg),
                        "--seed", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    resolved = json.loads((tmp_path / "cfgrun" / "config.json").read_text())["train"]
    assert (resolved["epochs"], resolved["prune_ratio"], resolved["seed"]) == (1, 0.25, 3)
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = [")
    assert_one_line_error(run_cli_here("train", "--config", str(bad)), 2, "invalid TOML")
    bad.write_text("colour = 'red'")
    assert_one_line_error(run_cli_here("train", "--config", str(bad)), 2, "unknown keys colour")


def test_bad_input(data, tmp_path):
    run = tmp_path / "run"
    assert train_cli(data, run, "--epochs", "1", "--prune-ratio", "0.2", "--json", here=True).returncode == 0
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    assert_one_line_error(train_cli(data, tmp_path / "x", "--epochs", "1", here=True), 2, "preset 'demo' prunes to 8,500")
    assert_one_line_error(train_cli(data, run, "--epochs", "1", "--prune-ratio", "0.2", here=True), 2,
                          "already holds a run")  # (train's entry point: test_same_seed_same_run)
    assert_one_line_error(train_cli(data, tmp_path / "x", "--preset", "nope", here=True), 2, "unknown preset")
    assert_one_line_error(train_cli(data, tmp_path / "x", "--prune-target", "99999999", here=True), 2, "prune target")
    assert_one_line_error(train_cli(data, tmp_path / "x", "--prune-target", "0", here=True), 2, "prune target")
    assert_one_line_error(train_cli(data, tmp_path / "x", "--prune-target", "10", "--prune-ratio", "0.1", here=True), 2,
                          "not both")
    assert_one_line_error(train_cli(data, tmp_path / "x", "--epochs", "0", here=True), 2, "epochs")
    assert_one_line_error(train_cli(data, tmp_path / "x", "--device", "tpu", here=True), 2, "--device")
    assert_one_line_error(train_cli(data, tmp_path / "x", "--accumulate", "0", here=True), 2, "accumulate must be")
    assert_one_line_error(train_cli(data, tmp_path / "x", "--prune-ratio", "0.2", "--accumulate", "5", here=True), 2,
                          "--accumulate 5 is more than the 4 clips a step takes (--batch-size 4)")
    assert not (tmp_path / "x").exists()
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before  # untouched
    # corrupt, foreign and malicious checkpoints are refused on --resume
    ckpt = run / "checkpoint-last.pt"
    original = ckpt.read_bytes()
    ckpt.write_bytes(original[:1000])
    resume = ("--epochs", "2", "--prune-ratio", "0.2", "--resume")
    assert_one_line_error(train_cli(data, run, *resume, here=True), 2, "not a loadable edgeasc checkpoint")
    torch.save({"state_dict": {}}, ckpt)
    assert_one_line_error(train_cli(data, run, *resume, here=True), 2, "not an edgeasc checkpoint")

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"format": "edgeasc-checkpoint", "payload": Evil()}, ckpt)
    assert_one_line_error(train_cli(data, run, *resume, here=True), 2, "not a loadable")
    assert not (tmp_path / "pwned").exists()
    assert_one_line_error(run_cli_here("info", str(ckpt)), 2, "not a loadable")
    ckpt.write_bytes(original)
    # a dataset with other classes (the scenes, not their groups) cannot resume this run
    other = make_dcase(tmp_path / "scenes", "dcase2018")
    proc = run_cli_here("train", str(other), *TINY, "--cache-dir", str(data / "cache"), "--out", str(run), *resume)
    assert_one_line_error(proc, 2, "differ")
    assert_one_line_error(run_cli_here("eval", str(tmp_path / "nothing")), 2, "no such checkpoint")


def test_out_of_memory_is_one_clear_error(data, tmp_path, monkeypatch):
    import edgeasc.train.loop as loop
    import edgeasc.train.run as train_module
    from edgeasc.errors import EdgeascError
    from edgeasc.train.config import resolve_train_config

    def oom(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(loop, "mixup_cross_entropy", oom)
    cfg = resolve_train_config(dict(dataset=str(data / "scenes"), preset="demo", width=4, seconds=1.0,
                                    batch_size=4, prune_ratio=0.2, epochs=1, cache_dir=str(data / "cache"),
                                    feature_workers=1, out=str(tmp_path / "oom")))
    with pytest.raises(EdgeascError, match=r"out of memory at batch size 4 on cpu: try --accumulate 2 .* or --batch-size 2$"):
        train_module.train(cfg, progress=False)


def test_gate_pruning_trains_to_its_exact_target_and_resumes_bit_exactly(data, tmp_path):
    """--prune-method gate: the target non-zero count exactly, zeros only in 1x1 weights, the
    scores neither counted nor exported; killed after epoch 2 and resumed, the run ends where
    an uninterrupted one does."""
    args = ["--rho", "4", "--no-damp-stem", "--prune-method", "gate", "--prune-target", "1350",
            "--prune-epochs", "1", "--json"]
    whole = train_cli(data, tmp_path / "whole", "--epochs", "3", *args, here=True)
    assert whole.returncode == 0, whole.stderr
    summary = json.loads(whole.stdout)
    assert summary["nonzero_params"] == 1350 and summary["prune_target"] == 1350
    final = torch.load(tmp_path / "whole" / "model-final.pt", weights_only=True)
    assert not any("gate" in k for k in final["model"])
    for name, w in final["model"].items():
        if w.dim() == 4 and (w == 0).any():
            assert name.startswith("stage") and tuple(w.shape[2:]) == (1, 1), name
    part = train_cli(data, tmp_path / "part", "--epochs", "2", *args, here=True)
    assert part.returncode == 0, part.stderr
    resumed = train_cli(data, tmp_path / "part", "--epochs", "3", "--resume", *args, here=True)
    assert resumed.returncode == 0, resumed.stderr
    assert _metrics(tmp_path / "part") == _metrics(tmp_path / "whole")
    exported = run_cli_here("export", str(tmp_path / "whole"), "--json")
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["report"]["nonzero_params"] == 1350
    assert_one_line_error(train_cli(data, tmp_path / "x", "--prune-method", "gate", "--prune-ratio", "0.5", here=True), 2,
                          "--prune-method gate takes --prune-target")
