"""`edgeasc evaluate MODEL.onnx DATA`: scores on the device, torch-free. A hand-made set whose
every decision is known (the toy graph of test_predict: logits 10·mean, -10·mean, log power)
pins the numbers; a trained run's export agrees with `edgeasc eval` on its checkpoint."""

import json

import numpy as np
import soundfile as sf
from test_predict import CLIP, RATE, write_model

from conftest import HIDE_TORCH, assert_one_line_error, make_dcase, run_cli, run_cli_here

LABELS = ["a", "b", "c"]  # the toy's logits: a = 10·mean, b = -10·mean, c = log(mean power)


def _clip(path, offset, scale=0.05, seed=0):
    rng = np.random.default_rng(seed)
    sf.write(str(path), (offset + scale * rng.standard_normal(int(RATE * CLIP))).astype(np.float32), RATE,
             subtype="FLOAT")


def _dataset(root):
    """Evaluate rows: class a on devices a, s1 (right) and s5 (a negative mean: decided b); b on all
    three (right); c on all three plus a second on device a (right). One unreadable file. Train rows
    only because a layout needs some."""
    root.mkdir()
    kinds = {"a": 0.2, "b": -0.2}
    rows = []
    for device in ("a", "s1", "s5"):
        for label in LABELS:
            name = f"{label}_x-lyon-1-0-{device}.wav"
            if label == "c":
                _clip(root / name, 0.0, scale=3.0, seed=len(rows))
            else:
                _clip(root / name, -0.2 if (label, device) == ("a", "s5") else kinds[label], seed=len(rows))
            rows.append(f"{name},{label},evaluate")
    _clip(root / "c_x-lyon-2-0-a.wav", 0.0, scale=3.0, seed=99)
    rows.append("c_x-lyon-2-0-a.wav,c,evaluate")
    (root / "broken_x-lyon-3-0-a.wav").write_text("not audio")
    rows.append("broken_x-lyon-3-0-a.wav,a,evaluate")
    for label in LABELS:
        _clip(root / f"t{label}.wav", kinds.get(label, 0.0), seed=7)
        rows.append(f"t{label}.wav,{label},train")
    (root / "labels.csv").write_text("filename,label,split\n" + "\n".join(rows) + "\n")
    return root


def test_the_scores_of_a_set_whose_every_decision_is_known(tmp_path):
    model = write_model(tmp_path / "toy.onnx", labels=LABELS)
    data = _dataset(tmp_path / "data")
    proc = run_cli("evaluate", str(model), str(data), "--json", python_prelude=HIDE_TORCH)  # torch-free
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["confusion"] == [[2, 1, 0], [0, 3, 0], [0, 0, 4]] and r["n"] == 10
    assert r["accuracy"] == 9 / 10 and r["macro_accuracy"] == (2 / 3 + 1 + 1) / 3
    assert r["per_class"] == {"a": 2 / 3, "b": 1.0, "c": 1.0}
    assert r["per_device"] == {"a": 1.0, "s1": 1.0, "s5": 2 / 3} and r["device_counts"] == {"a": 4, "s1": 3, "s5": 3}
    assert r["device_groups"] == {"real": 1.0, "seen": 1.0, "unseen": 2 / 3}
    assert len(r["errors"]) == 1 and "broken_x-lyon-3-0-a.wav: cannot read audio" in r["errors"][0]
    table = run_cli_here("evaluate", str(model), str(data))
    assert table.returncode == 0 and "accuracy 90.00 %, macro-average (class-wise) 88.89 % on 10 clips" in table.stdout
    assert "mean, DCASE unseen (s4-s6)" in table.stdout and "1 recording(s) could not be read" in table.stdout
    everything = json.loads(run_cli_here("evaluate", str(model), str(data), "--split", "all", "--json").stdout)
    assert everything["n"] == 13  # and the three training clips


def test_bad_input_is_one_line(tmp_path):
    model = write_model(tmp_path / "toy.onnx", labels=LABELS)
    other = write_model(tmp_path / "other.onnx", labels=["up", "down", "loud"])
    data = _dataset(tmp_path / "data")
    assert_one_line_error(run_cli_here("evaluate", str(other), str(data)), 2, "the data's classes ['a', 'b', 'c'] are "
                          "not the model's ['up', 'down', 'loud']")
    assert_one_line_error(run_cli_here("evaluate", str(model), str(data), "--split", "train"), 2,
                          "--split must be evaluate or all")
    assert_one_line_error(run_cli_here("evaluate", str(model), str(tmp_path / "none")), 2, "none")
    assert_one_line_error(run_cli_here("evaluate", str(tmp_path / "none.onnx"), str(data)), 2, "none.onnx")


def test_an_export_scores_what_eval_scores_on_its_checkpoint(tmp_path):
    data = make_dcase(tmp_path / "tau22", "tau2022-mobile", seconds=1.0)
    run = tmp_path / "run"
    proc = run_cli_here("train", str(data), "--preset", "demo", "--width", "8", "--prune-ratio", "0", "--epochs", "2",
                        "--batch-size", "4", "--feature-workers", "1", "--cache-dir", str(tmp_path / "c"), "--out",
                        str(run))
    assert proc.returncode == 0, proc.stderr
    assert run_cli_here("export", str(run), "-o", str(tmp_path / "m.onnx")).returncode == 0
    ours = json.loads(run_cli("evaluate", str(tmp_path / "m.onnx"), str(data), "--json",
                              python_prelude=HIDE_TORCH).stdout)
    theirs = json.loads(run_cli_here("eval", str(run), "--json").stdout)
    assert ours["n"] == theirs["n"] == 6 and ours["confusion"] == theirs["confusion"]
    assert ours["accuracy"] == theirs["accuracy"] and ours["macro_accuracy"] == theirs["macro_accuracy"]
    assert ours["per_device"] == theirs["per_device"] and ours["device_groups"] == theirs["device_groups"]
    # fp16 weights: the same top-1 on every clip here (the bound: >= 99.5 % of clips)
    assert run_cli_here("export", str(run), "-o", str(tmp_path / "m16.onnx"), "--precision", "fp16").returncode == 0
    half = json.loads(run_cli_here("evaluate", str(tmp_path / "m16.onnx"), str(data), "--json").stdout)
    assert half["confusion"] == theirs["confusion"] and half["macro_accuracy"] == theirs["macro_accuracy"]
