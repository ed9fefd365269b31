"""The device side: `edgeasc predict`, `edgeasc bench`, `edgeasc info MODEL.onnx`, run in
subprocesses with torch and the onnx package hidden, on real exported files and real WAVs."""

import csv
import json

import numpy as np
import onnx
import pytest
import torch

from conftest import assert_one_line_error, run_cli, run_cli_here, write_wav
from edgeasc.compress.pruning import Pruner
from edgeasc.export.pipeline import export_checkpoint
from edgeasc.models import ModelConfig, build_model
from edgeasc.runtime import audio
from edgeasc.runtime.features import FeatureParams, perceptual_mel
from edgeasc.runtime.predict import softmax, window_starts
from edgeasc.train.checkpoint import save_checkpoint

DEVICE = "import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None"
LABELS = ["indoor", "outdoor", "transportation"]
MEAN, STD = np.linspace(-40, -20, 256), np.linspace(5, 15, 256)


def build_exported(tmp):
    """A small pruned model on 1 s clips with non-trivial normalisation, exported three ways
    (conftest's session fixture `exported`: built once for this module, test_listen, test_profile)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(width=8, n_classes=3))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    pruner = Pruner(model, ratio=0.5, epochs=0)
    pruner.update(0)
    pruner.finalize()
    model.eval()
    ckpt = tmp / "m.pt"
    save_checkpoint(ckpt, {"model_config": model.config.to_dict(), "labels": LABELS,
                           "feature_params": FeatureParams(clip_seconds=1.0).to_dict(), "channels": 2,
                           "normalization": {"mean": MEAN.tolist(), "std": STD.tolist()},
                           "model": model.state_dict(), "epoch": 1, "kind": "final"})
    paths = {"fp32": tmp / "fp32.onnx", "fp16": tmp / "fp16.onnx", "wave": tmp / "wave.onnx"}
    export_checkpoint(ckpt, paths["fp32"])
    export_checkpoint(ckpt, paths["fp16"], precision="fp16")
    export_checkpoint(ckpt, paths["wave"], with_frontend=True)
    bare = onnx.load(paths["fp32"])  # the same graph without edgeasc metadata
    del bare.metadata_props[:]
    paths["bare"] = tmp / "bare.onnx"
    onnx.save(bare, paths["bare"])
    (tmp / "notes.onnx").write_text("this is not a model\n")
    paths["text"] = tmp / "notes.onnx"
    return model, paths


def torch_probabilities(model, wav, seconds=1.0, start=0.0):
    x, sr = audio.load(wav, channels=2)
    n = FeatureParams().n_samples(seconds)
    s = int(round(start * sr))
    piece = audio.fit_length(x[:, s:s + n], n)
    feats = (perceptual_mel(piece) - MEAN[:, None].astype(np.float32)) / STD[:, None].astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(feats[None].astype(np.float32))).numpy()
    return softmax(logits.astype(np.float64))[0]


def predict_json(*args, device: bool = False):
    """`edgeasc predict ARGS --json`: in this process, or (`device`) in a fresh interpreter where
    importing torch or onnx fails, as on a device install."""
    argv = ("predict", *map(str, args), "--json")
    proc = run_cli(*argv, python_prelude=DEVICE) if device else run_cli_here(*argv)
    return proc, (json.loads(proc.stdout) if proc.stdout.strip() else None)


def test_window_starts_cover_the_recording_without_padding():
    assert window_starts(100, 100, 100) == [0]
    assert window_starts(60, 100, 100) == [0]  # shorter: one zero-padded window
    assert window_starts(250, 100, 100) == [0, 100, 150]  # last window ends at the end
    assert window_starts(250, 100, 50) == [0, 50, 100, 150]
    assert window_starts(300, 100, 100) == [0, 100, 200]
    # an overshoot shorter than one STFT hop adds no window (it moved no frame, and the end
    # would count twice in the mean); from one hop on, it gets its own end-aligned window
    assert window_starts(101, 100, 100, min_overhang=8) == [0]
    assert window_starts(107, 100, 100, min_overhang=8) == [0]
    assert window_starts(108, 100, 100, min_overhang=8) == [0, 8]
    assert window_starts(101, 100, 100) == [0, 1]
    assert window_starts(250, 100, 151) == [0, 150]  # 151 would end one sample past the end
    for n in range(100, 400):
        starts = window_starts(n, 100, 30, min_overhang=8)
        assert len(set(starts)) == len(starts) and starts[-1] + 100 >= n - 7


def test_predict_matches_the_pytorch_model_without_torch(exported, tmp_path):
    model, paths = exported
    wavs = [write_wav(tmp_path / f"{i}.wav", seconds=1.0, seed=i, freq=200 + 300 * i) for i in range(3)]
    wavs.append(write_wav(tmp_path / "mono22k.wav", seconds=0.7, sr=22050, channels=1, seed=9))  # padded, duplicated
    for key in ("fp32", "wave"):
        proc, results = predict_json(paths[key], *wavs, "--top-k", "3", device=True)
        assert proc.returncode == 0, proc.stderr
        assert [r["file"] for r in results] == [str(w) for w in wavs]
        for wav, r in zip(wavs, results, strict=True):
            want = torch_probabilities(model, wav)
            got = np.array([r["probabilities"][label] for label in LABELS])
            # the in-graph frontend (ONNX STFT, float32) is verified against numpy to ~1e-3 dB
            assert np.abs(got - want).max() <= (1e-5 if key == "fp32" else 2e-3), key
            assert [t["label"] for t in r["top"]] == [LABELS[i] for i in np.argsort(-want, kind="stable")]
            assert len(r["windows"]) == 1


def test_long_recordings_are_classified_in_sliding_windows(exported, tmp_path):
    model, paths = exported
    wav = write_wav(tmp_path / "long.wav", seconds=2.5, seed=3)
    proc, results = predict_json(paths["fp32"], wav, "--hop", "0.5")
    assert proc.returncode == 0, proc.stderr
    r = results[0]
    assert r["seconds"] == 2.5
    assert [(w["start"], w["end"]) for w in r["windows"]] == [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0), (1.5, 2.5)]
    for w in r["windows"]:
        assert np.abs(np.array(w["probabilities"]) - torch_probabilities(model, wav, start=w["start"])).max() < 1e-5
    mean = np.mean([w["probabilities"] for w in r["windows"]], axis=0)
    assert np.allclose([r["probabilities"][label] for label in LABELS], mean, atol=1e-12)
    proc, batched = predict_json(paths["fp32"], wav, "--hop", "0.5", "--batch", "3")
    assert len(batched[0]["windows"]) == 4  # batching changes nothing beyond float rounding
    for a, b in zip(batched[0]["windows"], r["windows"], strict=True):
        assert np.abs(np.array(a["probabilities"]) - b["probabilities"]).max() < 1e-6


def test_a_window_other_than_the_clip_length(exported, tmp_path):
    model, paths = exported
    wav = write_wav(tmp_path / "w.wav", seconds=1.5, seed=8)
    proc, results = predict_json(paths["fp32"], wav, "--window", "0.6", "--hop", "0.4")
    assert proc.returncode == 0, proc.stderr
    r = results[0]
    # 0.0, 0.4, 0.8, then the last window aligned to the end (0.9): none is padded
    assert [(w["start"], w["end"]) for w in r["windows"]] == [(0.0, 0.6), (0.4, 1.0), (0.8, 1.4), (0.9, 1.5)]
    for w in r["windows"]:
        want = torch_probabilities(model, wav, seconds=0.6, start=w["start"])
        assert np.abs(np.array(w["probabilities"]) - want).max() < 1e-5


def test_an_overshoot_shorter_than_one_stft_hop_adds_no_window(exported, tmp_path):
    """A recorder's overshoot (one sample here) used to add a second window with the same printed
    span, counted twice in the mean; from one STFT hop (512 samples at 22 050 Hz) on it gets one."""
    _, paths = exported
    over = write_wav(tmp_path / "over.wav", seconds=48001 / 48000)
    proc, r = predict_json(paths["fp32"], over)
    assert proc.returncode == 0, proc.stderr
    assert [(w["start"], w["end"]) for w in r[0]["windows"]] == [(0.0, 1.0)]
    longer = write_wav(tmp_path / "longer.wav", seconds=1.05)  # 1,103 samples over at 22 050 Hz
    _, r = predict_json(paths["fp32"], longer)
    assert [(w["start"], w["end"]) for w in r[0]["windows"]] == [(0.0, 1.0), (0.05, 1.05)]


def test_unreadable_files_are_reported_and_the_rest_classified(exported, tmp_path):
    _, paths = exported
    good = write_wav(tmp_path / "good.wav", seconds=1.0)
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    out_csv = tmp_path / "out.csv"
    proc = run_cli("predict", str(paths["fp16"]), str(good), str(bad), str(tmp_path / "missing.wav"), str(good),
                   "--csv", str(out_csv), "--json", python_prelude=DEVICE)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 2 and "notes.wav: cannot read audio" in errors[0] and "missing.wav: no such file" in errors[1]
    results = json.loads(proc.stdout)
    assert [("error" in r) for r in results] == [False, True, True, False]
    # the same clip, in another batch position: onnxruntime's batched kernels may differ in the last bits
    assert results[0]["probabilities"] == pytest.approx(results[3]["probabilities"], abs=1e-6)
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["window_start"] for r in rows] == ["0.000", "all", "", "", "0.000", "all"]
    assert rows[1]["label"] == results[0]["top"][0]["label"]
    assert abs(float(rows[1][rows[1]["label"]]) - results[0]["top"][0]["probability"]) < 1e-6


def test_predict_bad_input(exported, tmp_path):
    _, paths = exported
    wav = write_wav(tmp_path / "a.wav", seconds=1.0)
    assert_one_line_error(run_cli_here("predict", str(paths["text"]), str(wav)), 2,
                          "notes.onnx", "not a usable ONNX model")
    assert_one_line_error(run_cli_here("predict", str(paths["bare"]), str(wav)), 2,
                          "not an edgeasc export", "edgeasc.labels")
    assert_one_line_error(run_cli_here("predict", str(tmp_path / "nope.onnx"), str(wav)), 2,
                          "no such model file")
    assert_one_line_error(run_cli_here("predict", str(paths["fp32"]), str(wav), "--threads", "0"),
                          2, "thread count")
    assert_one_line_error(run_cli_here("predict", str(paths["fp32"]), str(wav), "--top-k", "4"),
                          2, "--top-k")
    assert_one_line_error(run_cli_here("predict", str(paths["fp32"]), str(wav), "--hop", "2"),
                          2, "--hop")
    assert_one_line_error(run_cli_here("predict", str(paths["fp32"]), str(wav), "--window", "0.01"), 2, "--window")
    assert_one_line_error(run_cli_here("predict", str(paths["fp32"]), str(wav), "--csv", str(tmp_path / "no" / "x.csv")), 2, "--csv")


def test_bench_side_by_side_without_torch(exported):
    _, paths = exported
    proc = run_cli("bench", str(paths["fp32"]), str(paths["fp16"]), "--threads", "1,2", "--runs", "5",
                   "--warmup", "1", "--batch", "2", "--json", python_prelude=DEVICE)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    rows = result["results"]
    assert [(r["model"], r["threads"]) for r in rows] == [
        (str(paths["fp32"]), 1), (str(paths["fp32"]), 2), (str(paths["fp16"]), 1), (str(paths["fp16"]), 2)]
    frames = FeatureParams().n_frames(1.0)
    for r in rows:
        lat = r["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert r["input_shape"] == [2, 2, 256, frames] and r["runs"] == 5 and r["batch"] == 2
        assert r["macs_per_clip"] == json.loads(json.dumps(r))["macs_per_clip"] > 0
        assert r["file_bytes"] == paths["fp32" if "fp32" in r["model"] else "fp16"].stat().st_size
        assert r["peak_rss_bytes"] >= result["empty_process_peak_rss_bytes"] > 10 * 2**20
        assert abs(r["real_time_factor"] - 1.0 / (lat["p50"] / 1e3)) < 1e-6 * r["real_time_factor"]
    assert rows[0]["speedup_vs_first"] == 1.0 and rows[1]["speedup_vs_first"] == 1.0
    assert rows[2]["size_vs_first"] < 1.0  # fp16 storage (metadata dominates so small a file)
    assert result["machine"]["onnxruntime"] and result["machine"]["cpu"]
    table = run_cli("bench", str(paths["fp32"]), "--runs", "3", python_prelude=DEVICE)
    assert table.returncode == 0, table.stderr
    assert "fp32.onnx" in table.stdout and "p99" in table.stdout and "RTF" in table.stdout


def test_bench_python_api_and_models_without_metadata(exported):
    from edgeasc.runtime.bench import bench_models

    _, paths = exported
    result = bench_models([paths["bare"]], runs=3, warmup=0, seconds=2.0)
    r = result["results"][0]
    # measured in a fresh process: not the peak of this pytest process, which holds torch
    assert result["empty_process_peak_rss_bytes"] < 250 * 2**20 <= r["peak_rss_bytes"] + 250 * 2**20
    assert r["input_shape"] == [1, 2, 256, FeatureParams().n_frames(2.0)] and r["macs_per_clip"] is None
    assert_one_line_error(run_cli_here("bench", str(paths["bare"]), "--runs", "2"), 2,
                          "--seconds")
    assert_one_line_error(run_cli_here("bench", str(paths["text"])), 2, "not a usable ONNX")
    assert_one_line_error(run_cli_here("bench", str(paths["fp32"]), "--threads", "0"), 2,
                          "thread count")
    assert_one_line_error(run_cli_here("bench", str(paths["fp32"]), "--threads", "one"), 2,
                          "--threads")


def test_info_on_an_onnx_file_without_torch(exported):
    _, paths = exported
    proc = run_cli("info", str(paths["fp16"]), "--json", python_prelude=DEVICE)
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["edgeasc_export"] and d["metadata"]["labels"] == LABELS and d["metadata"]["precision"] == "fp16"
    assert d["file_bytes"] == paths["fp16"].stat().st_size
    assert d["inputs"][0]["shape"] == ["batch", 2, 256, "frames"]
    table = run_cli("info", str(paths["wave"]), python_prelude=DEVICE)
    assert table.returncode == 0, table.stderr
    assert "waveform" in table.stdout and "in the graph" in table.stdout and "[batch, 2, samples]" in table.stdout
    bare = run_cli("info", str(paths["bare"]), python_prelude=DEVICE)
    assert bare.returncode == 0 and "not an edgeasc export" in bare.stdout
    assert_one_line_error(run_cli_here("info", str(paths["text"])), 2, "not a usable ONNX")


def test_bench_rows_of_different_files_get_distinct_names():
    from edgeasc.cli.device import distinct_names

    assert distinct_names(["runs/a/model.onnx", "runs/b/model.onnx", "x/other.onnx"]) == {
        "runs/a/model.onnx": "a/model.onnx", "runs/b/model.onnx": "b/model.onnx", "x/other.onnx": "other.onnx"}
    assert distinct_names(["m.onnx", "m.onnx"]) == {"m.onnx": "m.onnx"}  # the same file twice: one name
    assert distinct_names(["/a/x/m.onnx", "/b/x/m.onnx"]) == {"/a/x/m.onnx": "a/x/m.onnx", "/b/x/m.onnx": "b/x/m.onnx"}
