"""Channel pruning through the real commands: train to a MAC budget then magnitude-prune, rebuild
the small network from the checkpoint alone (info, eval, export, --resume), MACs counted on the
exported ONNX graph, int8 packing, DDP, and one-line errors for bad input."""

import collections
import json

import numpy as np
import onnx
import pytest
import torch

from conftest import assert_one_line_error, run_cli_here, run_torchrun, synthetic_scenes
from edgeasc.data.cache import extract_features
from edgeasc.data.dcase import open_dataset
from edgeasc.export.graph import graph_macs
from edgeasc.runtime.features import FeatureParams

TINY = ["--preset", "demo", "--seconds", "1", "--batch-size", "4", "--feature-workers", "1", "--lr", "3e-3"]
STRUCTURED = ["--macs-target", "30%", "--prune-epochs", "2", "--channel-multiple", "1"]
TIMING = ("seconds", "train_clips_per_s", "prune_seconds")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("structured")
    synthetic_scenes(tmp_path_factory, root / "scenes", seed=2)
    # extracted up front, so that no test's stderr depends on being the first to need the features
    extract_features(open_dataset(root / "scenes"), FeatureParams(clip_seconds=1.0), workers=1, root=root / "cache",
                     progress=False)
    return root


def train_cli(data, out, *extra):
    return run_cli_here("train", str(data / "scenes"), *TINY, "--cache-dir", str(data / "cache"), "--out", str(out), *extra)


def _metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.fixture(scope="module")
def pruned_run(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "structured"
    proc = train_cli(data, run, *STRUCTURED, "--prune-target", "3000", "--epochs", "6", "--json")
    assert proc.returncode == 0, proc.stderr
    return run, json.loads(proc.stdout)


def test_channel_then_magnitude_pruning_hits_both_targets(pruned_run):
    run, summary = pruned_run
    assert summary["dense_params"] == 18_022 and summary["dense_macs"] == 12_527_520  # demo network, 1 s
    assert summary["macs"] <= 0.3 * 12_527_520 and summary["params"] < 18_022
    assert summary["nonzero_params"] == 3000 == summary["prune_target"]
    plan = summary["channel_plan"]
    assert set(plan) == set(summary["dense_channels"]) and all(1 <= plan[g] <= summary["dense_channels"][g] for g in plan)
    metrics = _metrics(run)
    macs = [m["macs"] for m in metrics]
    assert macs[0] == 12_527_520 and macs[1] < macs[0] and macs[2:] == [summary["macs"]] * 4  # ramp over 2 epochs
    assert [m["channels_removed"] > 0 for m in metrics] == [False, True, True, False, False, False]
    assert metrics[2]["nonzero_params"] == metrics[2]["params"]  # magnitude pruning starts after the channel ramp
    assert metrics[-1]["nonzero_params"] == 3000
    final = torch.load(run / "model-final.pt", weights_only=True)
    assert final["model_config"]["channels"] == plan
    assert final["model"]["stem.0.weight"].shape[0] == plan["stem"]
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["channels"] is None and config["channel_pruning"]["macs_budget"] == int(0.3 * 12_527_520)


def test_info_eval_export_rebuild_from_the_checkpoint_alone(pruned_run, data, tmp_path):
    run, summary = pruned_run
    info = json.loads(run_cli_here("info", str(run), "--seconds", "1", "--json").stdout)
    assert (info["params"], info["macs"], info["nonzero_params"]) == (summary["params"], summary["macs"], 3000)
    assert (info["dense_params"], info["dense_macs"]) == (18_022, 12_527_520)
    stem = next(layer for layer in info["layers"] if layer["name"] == "stem.0")
    assert stem["channels"] == [2, summary["channel_plan"]["stem"]] and stem["dense_channels"] == [2, 16]
    text = run_cli_here("info", str(run), "--seconds", "1").stdout
    assert "before channel pruning" in text and f"2→{summary['channel_plan']['stem']} (2→16)" in text
    ev = run_cli_here("eval", str(run), "--cache-dir", str(data / "cache"), "--json")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["accuracy"] == pytest.approx(summary["final"]["accuracy"])
    for precision in ("fp32", "fp16", "int8"):
        out = tmp_path / f"m-{precision}.onnx"
        proc = run_cli_here("export", str(run), "-o", str(out), "--precision", precision, "--rules", "dcase2024", "--json")
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)["report"]
        # the MACs of the exported file, counted from its graph by shape inference here, equal info's
        assert graph_macs(onnx.load(out), (1, 2, 256, 44)) == info["macs"] == report["macs_per_clip"]
        assert report["macs_onnx_graph"] == info["macs"]
        assert report["dense"] == {"params": 18_022, "macs_per_clip": 12_527_520}
        assert report["counted_bytes"] == summary["params"] * {"fp32": 4, "fp16": 2, "int8": 1}[precision]
        assert "before channel pruning" in out.with_suffix(".size.md").read_text()
    table = run_cli_here("export", str(run), "-o", str(tmp_path / "t.onnx"))
    assert table.returncode == 0 and "before channel pruning: params / MACs per clip" in table.stdout
    assert "18,022 / 12.528 M" in table.stdout


def test_graph_macs_counts_conv_and_gemm_by_hand():
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((6, 2, 3, 3), np.float32), "w")
    g = numpy_helper.from_array(np.zeros((6 * 4 * 5, 7), np.float32), "g")
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2]),
         helper.make_node("Reshape", ["y", "shape"], ["f"]), helper.make_node("Gemm", ["f", "g"], ["z"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 9, 11])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 7])], [w, g, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert graph_macs(model, (1, 2, 9, 11)) == 4 * 5 * 6 * 2 * 9 + 120 * 7


def test_resume_rebuilds_the_small_network(data, tmp_path):
    args = [*STRUCTURED, "--json"]
    whole = train_cli(data, tmp_path / "whole", *args, "--epochs", "4")
    assert whole.returncode == 0, whole.stderr
    part = train_cli(data, tmp_path / "part", *args, "--epochs", "3")  # stops after the channel ramp
    assert part.returncode == 0, part.stderr
    again = train_cli(data, tmp_path / "part", *args, "--epochs", "4", "--resume")
    assert again.returncode == 0, again.stderr
    assert _metrics(tmp_path / "part") == _metrics(tmp_path / "whole")
    a = torch.load(tmp_path / "part" / "model-final.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "whole" / "model-final.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_int8_weights_are_packed_and_optimise_to_the_same_graph(data, tmp_path):
    import onnxruntime as ort

    run = tmp_path / "mag"
    proc = train_cli(data, run, "--width", "8", "--prune-ratio", "0.8", "--prune-epochs", "1", "--epochs", "2",
                     "--json")
    assert proc.returncode == 0, proc.stderr
    files, packed = {}, {}
    for sparse in ("auto", "none"):
        files[sparse] = tmp_path / f"int8-{sparse}.onnx"
        r = run_cli_here("export", str(run), "-o", str(files[sparse]), "--precision", "int8", "--sparse", sparse, "--json")
        assert r.returncode == 0, r.stderr
        packed[sparse] = len(json.loads(r.stdout)["sparse"]["packed"])
    assert packed["auto"] > 0 == packed["none"]
    assert files["auto"].stat().st_size < files["none"].stat().st_size
    inits = {i.name: i for i in onnx.load(files["auto"]).graph.initializer}
    assert any(name.endswith(".values") and i.data_type == onnx.TensorProto.INT8 for name, i in inits.items())
    assert not [name for name in inits if "_quantized" in name or name.endswith("_scale")]  # compact names
    ops, outs = [], []
    x = np.random.default_rng(0).standard_normal((3, 2, 256, 44)).astype(np.float32)
    for sparse, path in files.items():
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(tmp_path / f"opt-{sparse}.onnx")
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        outs.append(session.run(None, {"features": x})[0])
        ops.append(collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node))
    assert ops[0] == ops[1] and ops[0]["QLinearConv"] > 0  # constant-folded, then fused: no rebuild at run time
    assert np.array_equal(outs[0], outs[1])


@pytest.mark.slow  # test_distill's torchrun distils and prunes channels on two ranks in the default suite
def test_torchrun_rebuilds_on_every_rank(data, tmp_path):
    run = tmp_path / "ddp"
    proc = run_torchrun("train", str(data / "scenes"), *TINY, "--cache-dir", str(data / "cache"), "--out", str(run),
                        *STRUCTURED, "--epochs", "3", "--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["ranks_in_sync"] is True and summary["macs"] <= 0.3 * 12_527_520


def test_a_run_too_short_for_the_ramps_shortens_them_and_says_so(data, tmp_path):
    """--prune-epochs 2 of channel pruning, then 2 of magnitude pruning, in 3 epochs: the ramps
    share the run (channel over 1 epoch, magnitude over the next), both targets are met by the
    last epoch, and one warning says how, instead of a refusal."""
    proc = train_cli(data, tmp_path / "short", *STRUCTURED, "--prune-target", "3000", "--epochs", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert lines == ["edgeasc: warning: --epochs 3 is too short for the channel-pruning ramp of --prune-epochs 2 and "
                     "magnitude pruning after it: channel pruning ramps over 1 epoch(s) instead, so that the budget "
                     "is met by the last epoch"]
    summary = json.loads(proc.stdout)
    assert summary["macs"] <= 0.3 * 12_527_520 and summary["nonzero_params"] == 3000
    metrics = _metrics(tmp_path / "short")
    assert [m["channels_removed"] > 0 for m in metrics] == [False, True, False]  # a 1-epoch ramp: cut before epoch 2
    assert [m["macs"] for m in metrics] == [12_527_520, summary["macs"], summary["macs"]]
    assert metrics[1]["nonzero_params"] == metrics[1]["params"] and metrics[-1]["nonzero_params"] == 3000
    alone = train_cli(data, tmp_path / "alone", *STRUCTURED, "--epochs", "2", "--json")  # channels only: 1 epoch
    assert alone.returncode == 0 and "ramps over 1 epoch(s) instead" in alone.stderr
    assert json.loads(alone.stdout)["macs"] <= 0.3 * 12_527_520


@pytest.mark.parametrize("extra, needles", [
    (["--macs-target", "25"], ["malformed --macs-target '25'", "25%"]),
    (["--macs-target", "-3M"], ["malformed --macs-target"]),
    (["--macs-target", "1e99G"], ["malformed --macs-target"]),
    (["--macs-target", "25%", "--prune-ratio", "0.3"], ["--macs-target cannot be combined with --prune-ratio"]),
    (["--params-target", "9000", "--prune-ratio", "0.3"], ["--params-target cannot be combined"]),
    (["--macs-target", "1k", "--epochs", "3"], ["outside what channel pruning can reach", "(dense)"]),
    (["--macs-target", "99G", "--epochs", "3"], ["outside what channel pruning can reach"]),
    (["--params-target", "50", "--epochs", "3"], ["--params-target 50 is outside"]),
    (["--params-target", "5000", "--prune-target", "6000", "--epochs", "5"], ["above --params-target"]),
    (["--macs-target", "25%", "--channel-importance", "random"], ["--channel-importance must be l2 or bn"]),
    (["--macs-target", "25%", "--channel-multiple", "0"], ["channel-multiple must be an integer >= 1"]),
])
def test_bad_structured_input_is_one_line(data, tmp_path, extra, needles):
    out = tmp_path / "bad"
    proc = train_cli(data, out, "--prune-epochs", "2", "--channel-multiple", "1", *extra)
    assert_one_line_error(proc, 2, *needles)
    assert not (out / "checkpoint-last.pt").exists()


def test_default_widths_of_16_say_so_when_the_target_is_out_of_reach(data, tmp_path):
    # the demo network is 16 channels wide: in blocks of 16 only its second stage can shrink
    proc = train_cli(data, tmp_path / "bad", "--macs-target", "25%", "--prune-epochs", "2", "--epochs", "3")
    assert_one_line_error(proc, 2, "is outside what channel pruning can reach", "(widths of 16 channels)",
                          "to 12,527,520 (dense)")


def test_a_channel_plan_that_does_not_fit_its_weights(pruned_run, tmp_path):
    run, summary = pruned_run
    ckpt = torch.load(run / "model-final.pt", weights_only=True)
    bad = tmp_path / "bad.pt"
    ckpt["model_config"]["channels"] = {**summary["channel_plan"], "stem": summary["channel_plan"]["stem"] + 1}
    torch.save(ckpt, bad)
    for args in (["info", str(bad)], ["export", str(bad), "-o", str(tmp_path / "x.onnx")]):
        assert_one_line_error(run_cli_here(*args), 2, "weights do not fit the stored config")
    ckpt["model_config"]["channels"] = {"stem": 4}
    torch.save(ckpt, bad)
    assert_one_line_error(run_cli_here("info", str(bad)), 2, "channel plan does not fit this network")
    assert not (tmp_path / "x.onnx").exists()


def test_export_refuses_a_graph_whose_macs_differ_from_the_report(pruned_run, tmp_path, monkeypatch):
    import edgeasc.export.pipeline as pipeline
    from edgeasc.errors import EdgeascError

    real = pipeline.graph_macs
    monkeypatch.setattr(pipeline, "graph_macs", lambda proto, shape: real(proto, shape) + 1)
    out = tmp_path / "m.onnx"
    with pytest.raises(EdgeascError, match="the exported graph computes .* MACs per clip, the model"):
        pipeline.export_checkpoint(pruned_run[0], out)
    assert not out.exists() and not out.with_suffix(".size.json").exists()
