"""`edgeasc export`: folding, a verified single-file ONNX, metadata, size rules and budgets."""

import copy
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import ROOT, assert_one_line_error, run_cli_here, synthetic_scenes
from edgeasc.compress.pruning import Pruner
from edgeasc.errors import ConfigError
from edgeasc.export.fold import fold_model, max_abs_difference
from edgeasc.export.onnx import read_metadata
from edgeasc.export.pipeline import export_checkpoint
from edgeasc.export.report import RULES, parse_budget, precisions_that_fit, size_report
from edgeasc.models import ModelConfig, build_model, get_preset
from edgeasc.models.complexity import analyse
from edgeasc.runtime.features import FeatureParams
from edgeasc.train.checkpoint import load_checkpoint, save_checkpoint

PACK_OPS = {"Unsqueeze", "BitShift", "BitwiseAnd", "Reshape", "Slice", "NonZero", "Transpose", "ConstantOfShape",
            "ScatterND", "CumSum", "Sub", "Mul", "Gather", "Concat"}
VARIANTS = {"cp-resnet": dict(damping=False), "damped": dict(), "decomposed": dict(damping=False, decomposition=4),
            "damped-decomposed": dict(decomposition=4)}


def trained_like(config: ModelConfig, prune_ratio: float | None = 0.5, seed: int = 0):
    """A model with non-trivial weights and BatchNorm statistics (fixup starts with zeros)."""
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    if prune_ratio:
        pruner = Pruner(model, ratio=prune_ratio, epochs=0)
        pruner.update(0)
        pruner.finalize()
    # BatchNorm statistics from inputs, as training leaves them (random statistics make a network
    # whose logits barely depend on its input), and a classifier BN that spreads the logits over
    # units: an export that computes something else cannot hide under the tolerances
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the calibration batch
    x = torch.randn(16, config.in_channels, config.n_mels, 60)
    model.train()
    with torch.no_grad():
        model(x)
        for m in bns:
            m.momentum = 0.1
        model.eval()
        spread = model(x).std(dim=0)  # per class, over inputs: what the classifier BN's scale sets
        model.head[1].weight.mul_(torch.linspace(2.0, 3.0, config.n_classes) / spread.clamp_min(1e-6))
        model.head[1].bias.mul_(2.0)
    return model


def write_checkpoint(path, model, labels=("indoor", "outdoor", "transportation"), mean=None, std=None):
    params = FeatureParams(clip_seconds=1.0)
    normalization = {"mean": [0.0] * 256 if mean is None else [float(v) for v in mean],
                     "std": [1.0] * 256 if std is None else [float(v) for v in std]}
    save_checkpoint(path, {"model_config": model.config.to_dict(), "labels": list(labels),
                           "feature_params": params.to_dict(), "channels": model.config.in_channels,
                           "normalization": normalization,
                           "model": model.state_dict(), "epoch": 1, "kind": "final"})
    return path


@pytest.mark.parametrize("variant", VARIANTS)
def test_folding_keeps_the_function(variant):
    model = trained_like(ModelConfig(width=8, n_classes=3, **VARIANTS[variant]))
    folded = fold_model(model)
    x = torch.randn(2, 2, 256, 60)
    with torch.no_grad():
        scale = float(model(x).abs().max())
    assert scale > 1  # logits of a few units: the tolerance is relative to them, as the export gate's
    assert max_abs_difference(model, folded, x) <= 1e-5 * scale
    kinds = {type(m).__name__ for m in folded.modules()}
    assert "BatchNorm2d" not in kinds and "DampedConv2d" not in kinds
    assert folded.stem[0].bias is not None and folded.head[0].bias is not None  # BN became biases
    assert model.stem[1].__class__.__name__ == "BatchNorm2d"  # the original is untouched


@pytest.mark.parametrize("fold_damping, fold_bn", [(False, True), (True, False), (False, False)])
def test_folding_options_keep_what_they_leave_and_still_fold_the_mask(fold_damping, fold_bn):
    """--no-fold-damping keeps the damped convs (the damping Mul stays in the graph) with the live
    pruning mask multiplied into their weights; --no-fold-bn keeps BatchNorm and adds no bias."""
    from edgeasc.models.layers import DampedConv2d

    model = trained_like(ModelConfig(width=8, n_classes=3, **VARIANTS["damped"]), prune_ratio=None)
    pruner = Pruner(model, ratio=0.5, epochs=0)
    pruner.update(0)  # masks live on the convs, not yet multiplied in
    folded = fold_model(model, fold_damping=fold_damping, fold_bn=fold_bn)
    x = torch.randn(2, 2, 256, 60)
    with torch.no_grad():
        scale = float(model(x).abs().max())
    assert max_abs_difference(model, folded, x) <= 1e-5 * scale
    damped = [m for m in folded.modules() if isinstance(m, DampedConv2d)]
    assert bool(damped) != fold_damping
    for m in damped:
        assert m.weight_mask is None and float((m.weight == 0).float().mean()) > 0.3
    bns = [m for m in folded.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bool(bns) != fold_bn
    assert (folded.stem[0].bias is not None) == fold_bn
    assert next(m for m in model.modules() if isinstance(m, DampedConv2d)).weight_mask is not None  # untouched


def test_an_export_that_keeps_the_damping_still_folds_batchnorm(tmp_path):
    """`export --no-fold-damping` (BatchNorm folded, the default) on a damped network: the fold
    gate used to refuse it, because folding BN into a damped conv dropped the damping."""
    ckpt = write_checkpoint(tmp_path / "m.pt", trained_like(ModelConfig(width=8, n_classes=3, **VARIANTS["damped"])))
    result = export_checkpoint(ckpt, tmp_path / "m.onnx", fold_damping=False)
    assert result["verification"]["top1_agreement"] == 1.0
    ops = [n.op_type for n in onnx.load(tmp_path / "m.onnx").graph.node]
    assert "Mul" in ops and "BatchNormalization" not in ops


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_round_trip_every_variant_and_precision(tmp_path, variant, precision):
    model = trained_like(ModelConfig(width=8, n_classes=3, **VARIANTS[variant]))
    ckpt = write_checkpoint(tmp_path / "m.pt", model)
    result = export_checkpoint(ckpt, tmp_path / "m.onnx", precision=precision)
    path = tmp_path / "m.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.pt", "m.size.json", "m.size.md"]
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= {"Conv", "Relu", "Add", "MaxPool", "ReduceMean", "Cast"} | PACK_OPS  # no mask
    pack_outputs = {o for n in proto.graph.node if n.name.startswith("sp") for o in n.output}
    assert not any(n.op_type == "Mul" and not n.name.startswith("sp") for n in proto.graph.node)  # no damping Mul
    assert all(i.startswith("sp") or i in pack_outputs for n in proto.graph.node if n.name.startswith("sp")
               for i in n.input)  # the pack subgraphs read only their own constants
    assert not any("mask" in i.name or "damping" in i.name for i in proto.graph.initializer)
    assert proto.opset_import[0].version >= 18
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] == "batch" and dims[3] == "frames" and dims[1:3] == [2, 256]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for frames in (44, 150):
        x = np.random.default_rng(frames).standard_normal((3, 2, 256, frames)).astype(np.float32)
        got = session.run(["logits"], {"features": x})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        # relative to the logits (several units, input-dependent): fp16 weights move them by ~1 % of the spread
        tolerance = 1e-4 * max(1.0, float(np.abs(want).max())) if precision == "fp32" else 2e-2 * float(np.ptp(want))
        assert np.abs(got - want).max() <= tolerance
        assert (got.argmax(1) == want.argmax(1)).mean() >= (1.0 if precision == "fp32" else 2 / 3)
    assert result["verification"]["top1_agreement"] >= (1.0 if precision == "fp32" else 0.5)
    if precision == "fp16":
        types = {i.data_type for i in proto.graph.initializer}
        assert onnx.TensorProto.FLOAT16 in types and onnx.TensorProto.FLOAT not in types


@pytest.mark.real_export  # two runs of the exporter, not one and its memo
def test_metadata_determinism_and_no_local_paths(tmp_path):
    model = trained_like(ModelConfig(width=8, n_classes=3))
    ckpt = write_checkpoint(tmp_path / "m.pt", model)
    from edgeasc.export import onnx as onnx_export

    onnx_export._REGISTRIES.clear()  # the first export builds torch.onnx's registry, the second reuses it
    builds = onnx_export.REGISTRY_BUILDS["count"]
    export_checkpoint(ckpt, tmp_path / "a.onnx")
    export_checkpoint(ckpt, tmp_path / "b.onnx")
    assert onnx_export.REGISTRY_BUILDS["count"] == builds + 1
    data = (tmp_path / "a.onnx").read_bytes()
    assert data == (tmp_path / "b.onnx").read_bytes()  # same checkpoint, same bytes
    for leak in (str(ROOT).encode(), b"site-packages", b"stack_trace", str(tmp_path).encode()):
        assert leak not in data
    meta = read_metadata(tmp_path / "a.onnx")
    assert meta["labels"] == ["indoor", "outdoor", "transportation"]
    assert meta["feature_params"]["n_mels"] == 256 and len(meta["normalization"]["mean"]) == 256
    assert meta["model_config"]["width"] == 8 and meta["version"] == "0.1.0"
    assert meta["size_report"]["nonzero_params"] == analyse(model).nonzero_params
    assert meta["macs_per_clip"] == analyse(model, seconds=1.0).macs
    assert not (tmp_path / "a.onnx.data").exists()


def kaiming_scaled_pruned(config: ModelConfig, ratio: float) -> torch.nn.Module:
    """Per-layer weight scale 1/sqrt(fan-in) (what training keeps from its init), so global magnitude
    pruning leaves the wide 3x3 convs far sparser than the 1x1s; one conv is pruned away entirely."""
    model = trained_like(config, prune_ratio=None)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.normal_(0, (2 / m.weight[0].numel()) ** 0.5)
        model.stage1.block1.conv2.weight.mul_(1e-3)
    pruner = Pruner(model, ratio=ratio, epochs=0)
    pruner.update(0)
    pruner.finalize()
    return model.eval()


def test_gap_coding_round_trips_long_gaps():
    from edgeasc.export.sparse import gap_code

    nz = np.array([0, 3, 300, 301, 1000])
    gaps, real = gap_code(nz)
    assert gaps.dtype == np.uint8 and gaps.tolist() == [1, 3, 255, 42, 1, 255, 255, 189]
    positions = np.cumsum(gaps.astype(np.int64)) - 1
    assert positions[real].tolist() == nz.tolist() and len(set(positions)) == len(positions)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_sparse_packing_is_smaller_and_exact(tmp_path, precision):
    model = kaiming_scaled_pruned(ModelConfig(width=32, n_classes=3), ratio=0.8)
    ckpt = write_checkpoint(tmp_path / "m.pt", model)
    packed = export_checkpoint(ckpt, tmp_path / "packed.onnx", precision=precision, sparse="auto")
    dense = export_checkpoint(ckpt, tmp_path / "dense.onnx", precision=precision, sparse="none")
    assert not dense["sparse"]["packed"]
    # each tensor in its cheapest coding: 3x3 convs at ~7 % density as gaps, 1x1s as bitmasks
    codings = {e["name"]: e["coding"] for e in packed["sparse"]["packed"]}
    assert codings["stage1.block1.conv2.weight"] == "zeros"
    assert codings["stage1.block2.conv1.weight"] == "gaps" and codings["stage2.block1.conv1.weight"] == "bitmask"
    assert packed["bytes"] < 0.4 * dense["bytes"]
    proto = onnx.load(tmp_path / "packed.onnx")
    onnx.checker.check_model(proto, full_check=True)
    assert "ScatterND" in {n.op_type for n in proto.graph.node}
    assert "ScatterND" not in {n.op_type for n in onnx.load(tmp_path / "dense.onnx").graph.node}
    names = {i.name: i for i in proto.graph.initializer}
    for entry in packed["sparse"]["packed"]:  # only non-zeros (+ rare fillers) and their positions are stored
        assert entry["name"] not in names
        if entry["coding"] != "zeros":
            assert entry["nonzero"] <= np.prod(names[entry["prefix"] + ".values"].dims) <= entry["nonzero"] * 1.05
    assert sum(e["packed_bytes"] for e in packed["sparse"]["packed"]) < sum(
        (e["params"] + 7) // 8 + e["nonzero"] * (2 if precision == "fp16" else 4) for e in packed["sparse"]["packed"])
    x = np.random.default_rng(1).standard_normal((2, 2, 256, 44)).astype(np.float32)
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"features": x})[0]  # noqa: E731
    assert np.abs(run(tmp_path / "packed.onnx") - run(tmp_path / "dense.onnx")).max() <= 1e-6
    # onnxruntime folds every pack when the session starts: its optimised graph is the dense one's
    optimised = {}
    for name in ("packed", "dense"):
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / f"{name}.opt.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(tmp_path / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
        optimised[name] = sorted(n.op_type for n in onnx.load(tmp_path / f"{name}.opt.onnx").graph.node)
    assert optimised["packed"] == optimised["dense"]


@pytest.fixture(scope="module")
def calibration_set(tmp_path_factory):
    data = tmp_path_factory.mktemp("calib") / "scenes"
    synthetic_scenes(tmp_path_factory, data, seed=5)
    return data


@pytest.mark.parametrize("variant", VARIANTS)
def test_int8_round_trip_every_variant(tmp_path, calibration_set, variant):
    model = trained_like(ModelConfig(width=8, n_classes=3, **VARIANTS[variant]))
    ckpt = write_checkpoint(tmp_path / "m.pt", model)
    result = export_checkpoint(ckpt, tmp_path / "m.onnx", precision="int8", calibration=calibration_set,
                               cache_dir=tmp_path / "cache")
    proto = onnx.load(tmp_path / "m.onnx")
    onnx.checker.check_model(proto, full_check=True)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in proto.graph.node}
    assert not any("mask" in i.name or "damping" in i.name for i in proto.graph.initializer)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    from edgeasc.export.clips import calibration_features

    _, clips, _ = calibration_features(load_checkpoint(ckpt), calibration_set, tmp_path / "cache")
    got = session.run(["logits"], {"features": clips})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(clips)).numpy()
    # int8 on real clips: close to the float model relative to the logits' spread (several units,
    # input-dependent: an untrained random network quantises worse than a trained one), same decisions
    assert want.max() - want.min() > 3
    assert np.abs(got - want).max() <= 0.15 * (want.max() - want.min())
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.8
    assert result["verification"]["real_clips"] > 0


def test_int8_static_qdq_calibrated_on_real_clips(tmp_path, tmp_path_factory):
    data = tmp_path / "scenes"
    synthetic_scenes(tmp_path_factory, data, seed=4)
    ckpt = write_checkpoint(tmp_path / "m.pt", trained_like(ModelConfig(width=8, n_classes=3)))
    out = tmp_path / "m.onnx"
    proc = run_cli_here("export", str(ckpt), "-o", str(out), "--precision", "int8", "--calibration", str(data),
                        "--cache-dir", str(tmp_path / "cache"), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    proto = onnx.load(out)
    onnx.checker.check_model(proto, full_check=True)
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert any(i.data_type == onnx.TensorProto.INT8 for i in proto.graph.initializer)
    q = result["int8"]
    assert q["calibration_clips"] + q["evaluate_clips"] == 24  # all training clips calibrate (< 64)
    # the accuracies before and after, recomputed here: PyTorch for fp32, the written file for int8
    from edgeasc.export.clips import calibration_features

    _, eval_x, eval_y = calibration_features(load_checkpoint(ckpt), data, tmp_path / "cache")
    assert len(eval_y) == q["evaluate_clips"]
    model = trained_like(ModelConfig(width=8, n_classes=3))
    with torch.no_grad():
        fp32_pred = model(torch.from_numpy(eval_x)).numpy().argmax(1)
    int8_pred = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        ["logits"], {"features": eval_x})[0].argmax(1)
    assert q["accuracy_fp32"] == float((fp32_pred == eval_y).mean())
    assert q["accuracy_int8"] == float((int8_pred == eval_y).mean())
    assert result["report"]["bytes_per_value"] == 1
    assert result["verification"]["top1_agreement"] >= 0.5
    assert read_metadata(out)["precision"] == "int8"
    assert_one_line_error(run_cli_here("export", str(ckpt), "-o", str(tmp_path / "x.onnx"), "--precision", "int8",
                                  "--calibration", str(tmp_path / "nowhere")), 2, "--calibration")
    assert_one_line_error(run_cli_here("export", str(ckpt), "-o", str(tmp_path / "x.onnx"), "--calibration", str(data)),
                          2, "only applies to --precision int8")
    assert_one_line_error(run_cli_here("export", str(ckpt), "-o", str(tmp_path / "x.onnx"), "--precision", "int8"),
                          2, "int8 needs calibration clips")
    # a run whose dataset's features are cached: fp32/fp16 are verified on its evaluate clips too
    run = load_checkpoint(ckpt)
    run["train_config"] = {"dataset": str(data), "cache_dir": str(tmp_path / "cache")}
    save_checkpoint(tmp_path / "run.pt", {k: v for k, v in run.items() if k != "path"})
    r = export_checkpoint(tmp_path / "run.pt", tmp_path / "run16.onnx", precision="fp16")
    n_eval = q["evaluate_clips"]  # all of them: fewer than 16
    assert r["verification"]["real_clips"] == n_eval and r["verification"]["clips"] == n_eval + 6
    assert r["verification"]["top1_agreement"] >= 0.9
    # no cache yet: verification does not start an extraction
    r = export_checkpoint(tmp_path / "run.pt", tmp_path / "run32.onnx", cache_dir=tmp_path / "empty")
    assert r["verification"]["real_clips"] == 0 and not (tmp_path / "empty").exists()


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_with_frontend_takes_raw_audio(tmp_path, precision):
    from edgeasc.runtime.features import perceptual_mel

    model = trained_like(ModelConfig(width=8, n_classes=3))
    # per-band statistics as training leaves them: the graph must normalise exactly like the runtime
    mean, std = np.linspace(-45.0, -25.0, 256), np.linspace(4.0, 12.0, 256)
    ckpt = write_checkpoint(tmp_path / "m.pt", model, mean=mean, std=std)
    result = export_checkpoint(ckpt, tmp_path / "w.onnx", precision=precision, with_frontend=True)
    proto = onnx.load(tmp_path / "w.onnx")
    onnx.checker.check_model(proto, full_check=True)
    assert proto.graph.input[0].name == "waveform" and "STFT" in {n.op_type for n in proto.graph.node}
    meta = read_metadata(proto)
    assert meta["frontend"] is True and meta["input"]["sample_rate"] == 22050
    assert result["bytes"] < 400_000  # the 256 x 1025 mel matrix (1 MB dense) is stored sparse
    session = ort.InferenceSession(str(tmp_path / "w.onnx"), providers=["CPUExecutionProvider"])
    wave = (0.1 * np.random.default_rng(3).standard_normal((2, 2, 30000))).astype(np.float32)
    got = session.run(["logits"], {"waveform": wave})[0]
    feats = np.stack([(perceptual_mel(w) - mean[:, None]) / std[:, None] for w in wave]).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(feats)).numpy()
    spread = float(np.ptp(want))
    assert spread > 1
    assert np.abs(got - want).max() <= (1e-3 * max(1.0, float(np.abs(want).max())) if precision == "fp32"
                                        else 2e-2 * spread)
    assert (got.argmax(1) == want.argmax(1)).all()


@pytest.mark.parametrize("text, expected", [("500KB", 512_000), ("500KiB", 512_000), ("500kB", 500_000),
                                            ("0.5MB", 524_288), ("512000", 512_000), ("128 KB", 131_072)])
def test_budget_strings(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["", "KB", "five hundred", "500 zB", "-5KB", "0", "0.3"])
def test_malformed_budgets(text):
    with pytest.raises(ConfigError):
        parse_budget(text)


@pytest.fixture(scope="module")
def winner():
    """The paper's winning configuration: DCASE'20 damped, exactly 250 000 non-zero parameters."""
    model = trained_like(get_preset("d20-damped").config, prune_ratio=None)
    pruner = Pruner(model, target=250_000, epochs=0)
    pruner.update(0)
    pruner.finalize()
    return analyse(model)


def test_winning_configuration_passes_500kb_at_fp16_and_fails_at_fp32(winner):
    assert winner.nonzero_params == 250_000 and winner.bn_params == 5_894
    official = size_report(winner, "fp16", RULES["dcase2020"], parse_budget("500KB"))
    assert official["counted_bytes"] == (250_000 - 5_894) * 2 and official["verdict"] == "PASS"
    with_bn = size_report(winner, "fp16", RULES["dcase2020"], parse_budget("500KB"), count_bn=True)
    assert with_bn["counted_bytes"] == 500_000 and with_bn["verdict"] == "PASS"
    fp32 = size_report(winner, "fp32", RULES["dcase2020"], parse_budget("500KB"), count_bn=True)
    assert fp32["counted_bytes"] == 1_000_000 and fp32["verdict"] == "FAIL"
    later = size_report(winner, "fp16", RULES["dcase2022"])  # all parameters, zeros included
    assert later["counted_bytes"] == 1_061_638 * 2 and later["verdict"] == "FAIL" and not later["macs_ok"]


def test_cli_export_budget_and_bad_input(tmp_path):
    ckpt = write_checkpoint(tmp_path / "m.pt", trained_like(ModelConfig(width=8, n_classes=3)))
    out = tmp_path / "model.onnx"
    over = run_cli_here("export", str(ckpt), "-o", str(out), "--check-budget", "1kB", "--json")
    assert over.returncode == 3, over.stderr
    result = json.loads(over.stdout)
    assert result["report"]["verdict"] == "FAIL" and result["report"]["budget_bytes"] == 1000
    assert out.is_file() and (tmp_path / "model.size.json").is_file()  # the report is written
    before = out.read_bytes()
    # exporting again after a failed check is the obvious next step: the failed export is ours, no --force
    ok = run_cli_here("export", str(ckpt), "-o", str(out), "--precision", "fp16", "--check-budget", "500KB")
    assert ok.returncode == 0 and "PASS" in ok.stdout and "512,000" in ok.stdout
    assert out.read_bytes() != before
    # a passing export (or any file the tool did not leave failed) still needs --force
    assert_one_line_error(run_cli_here("export", str(ckpt), "-o", str(out)), 2, "exists")
    stranger = tmp_path / "stranger.onnx"
    stranger.write_bytes(b"not ours")
    stranger.with_suffix(".size.json").write_text('{"verdict": "FAIL", "file_bytes": 99}')
    assert_one_line_error(run_cli_here("export", str(ckpt), "-o", str(stranger)), 2, "exists")
    assert stranger.read_bytes() == b"not ours"
    assert_one_line_error(run_cli_here("export", str(ckpt), "-o", str(tmp_path / "x.onnx"), "--check-budget", "5zB"),
                          2, "malformed budget")
    assert_one_line_error(run_cli_here("export", str(ckpt), "-o", str(tmp_path / "nope" / "x.onnx")), 2, "no such folder")
    assert_one_line_error(run_cli_here("export", str(ckpt), "--precision", "int4"), 2, "--precision")
    assert_one_line_error(run_cli_here("export", str(ckpt), "--rules", "dcase1999"), 2, "--rules")
    assert_one_line_error(run_cli_here("export", str(ckpt), "--sparse", "zip"), 2, "--sparse")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert_one_line_error(run_cli_here("export", str(junk)), 2, "not a loadable edgeasc checkpoint")
    assert not (tmp_path / "x.onnx").exists()


def test_a_budget_nobody_asked_for_is_a_note_and_a_failed_check_names_the_precision_that_fits(tmp_path):
    """168,576 counted values (BatchNorm out): 674,304 bytes at fp32 are over the 2020 budget (512,000), 337,152 at fp16
    are under. Without --check-budget/--rules/--fit the report says so and the exit is 0; asked
    for, it is exit 3; either way the line names the precision that would fit."""
    ckpt = write_checkpoint(tmp_path / "m.pt", trained_like(ModelConfig(width=48, n_classes=3), prune_ratio=None))
    unasked = run_cli_here("export", str(ckpt), "-o", str(tmp_path / "a.onnx"), "--json")
    assert unasked.returncode == 0, unasked.stderr
    report = json.loads(unasked.stdout)["report"]
    assert (report["verdict"], report["counted_bytes"], report["budget_bytes"]) == ("FAIL", 674_304, 512_000)
    lines = [x for x in unasked.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgeasc: note: over the dcase2020 budget (bytes: 674,304")
    assert "--precision fp16 would fit" in lines[0]
    asked = run_cli_here("export", str(ckpt), "-o", str(tmp_path / "b.onnx"), "--rules", "dcase2020")
    assert asked.returncode == 3
    assert "budget FAIL under dcase2020" in asked.stderr and "--precision fp16 would fit" in asked.stderr
    again = run_cli_here("export", str(ckpt), "-o", str(tmp_path / "b.onnx"), "--rules", "dcase2020",
                         "--precision", "fp16", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["report"]["verdict"] == "PASS"
    report["counted_values"], report["budget_bytes"] = 100, 150  # only int8 fits; MACs over: none does
    assert precisions_that_fit(report) == ["int8"]
    assert precisions_that_fit({**report, "macs_ok": False}) == []


def _perturbed(model: torch.nn.Module, amount: float = 0.02) -> torch.nn.Module:
    """A copy whose classifier weights are off by `amount` (relative): a plausible fold or
    export bug, far above the tolerances and far below a wrong-model mistake."""
    import copy

    bad = copy.deepcopy(model)
    with torch.no_grad():
        w = bad.head[0].weight
        w.add_(amount * w.abs().mean() * torch.sign(torch.randn_like(w)))
    return bad


def test_the_test_model_is_input_sensitive():
    model = trained_like(ModelConfig(width=8, n_classes=3))
    x = torch.randn(4, 2, 256, 60)
    with torch.no_grad():
        logits, blank = model(x), model(torch.zeros_like(x))
    assert float(logits.max() - logits.min()) > 3  # logits spread over units, not hundredths
    assert float((logits - blank).abs().max()) > 1  # and depend on the input


@pytest.mark.parametrize("stage", ["fold", "onnx"])
def test_an_export_that_disagrees_with_pytorch_is_refused_and_nothing_is_written(tmp_path, monkeypatch, stage):
    import edgeasc.export.pipeline as pipeline
    from edgeasc.errors import EdgeascError

    ckpt = write_checkpoint(tmp_path / "m.pt", trained_like(ModelConfig(width=8, n_classes=3)))
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    if stage == "fold":  # the folded network no longer computes what the trained one did
        real_fold = pipeline.fold_model
        monkeypatch.setattr(pipeline, "fold_model", lambda m, **kw: _perturbed(real_fold(m, **kw)))
        needle = "folding changed the outputs"
    else:  # the folded network is right, but the graph written is not
        real_export = pipeline.export_proto
        monkeypatch.setattr(pipeline, "export_proto", lambda m, *a, **kw: real_export(_perturbed(m), *a, **kw))
        needle = "onnxruntime disagrees with PyTorch"
    with pytest.raises(EdgeascError, match=needle):
        export_checkpoint(ckpt, out, precision="fp32")
    assert list(out.parent.iterdir()) == []  # no model, no report, no partial file


def test_the_export_memo_puts_another_networks_weights_into_a_graph_as_the_exporter_would():
    """The suite's memo (tests/export_memo.py) reuses one structure's graph with another network's
    weights: the result must be the exporter's own bytes for that network, and a network whose
    tensors are equal where the first one's were not (onnxslim merges equal initializers), or whose
    tensors outside the graph changed, must be exported afresh."""
    import export_memo

    from edgeasc.export import onnx as onnx_mod

    memo = onnx_mod.export_proto
    assert getattr(memo, "__wrapped_by_memo__", False)  # conftest installs it once torch is loaded
    config = ModelConfig(width=4, n_classes=3)
    first, second = (fold_model(trained_like(config, prune_ratio=None, seed=s)) for s in (31, 32))
    args = (config.in_channels, config.n_mels, 44)
    memo(first, *args)
    substituted = export_memo.STATS["substituted"]
    reused = memo(second, *args)
    assert export_memo.STATS["substituted"] == substituted + 1
    export_memo.enabled = False
    assert reused.SerializeToString() == memo(second, *args).SerializeToString()  # the exporter itself
    skey = export_memo.module_key(second, (*args, None), tensors=False)
    assert export_memo._with_weights(skey, second, (*args, None)) is not None
    merged = copy.deepcopy(second)
    with torch.no_grad():  # two tensors of one shape made equal: the exporter would merge them
        weights = [p for n, p in merged.named_parameters() if n.endswith("conv1.weight")]
        same = [w for w in weights if w.shape == weights[0].shape]
        same[1].copy_(same[0])
    assert export_memo._with_weights(skey, merged, (*args, None)) is None
