"""A CP-Mobile network through the whole pipeline on synthetic data: train (magnitude-pruned),
checkpoint (code-free), resume, info, export (fp32 and int8) and a torch-free predict of the
ONNX file."""

import json

import onnx
import pytest
import torch

from conftest import HIDE_TORCH, assert_one_line_error, run_cli, run_cli_here
from edgeasc.data.synth import write_dataset
from edgeasc.models.cp_mobile import CPMobile
from edgeasc.models.cp_mobile_config import CPMobileConfig, mobile_complexity
from edgeasc.runtime.features import FeatureParams
from edgeasc.train.checkpoint import load_checkpoint, model_from_checkpoint

TINY = ["--preset", "cp-mobile-d24", "--width", "8", "--seconds", "1", "--batch-size", "4",
        "--feature-workers", "1", "--lr", "3e-3", "--prune-target", "3000", "--prune-epochs", "1"]
FRAMES = FeatureParams().n_frames(1.0)  # 44: the run's frontend, not the organisers' 65


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cpm")
    write_dataset(root / "scenes", classes=3, clips_per_class=8, seconds=1.0, seed=2, workers=1, progress=False)
    common = ["train", str(root / "scenes"), *TINY, "--cache-dir", str(root / "cache"), "--out", str(root / "run")]
    first = run_cli_here(*common, "--epochs", "1", "--json")
    assert first.returncode == 0, first.stderr
    resumed = run_cli_here(*common, "--epochs", "2", "--resume", "--json")  # the stored config is read back
    assert resumed.returncode == 0, resumed.stderr
    return root, common, json.loads(resumed.stdout)


def test_a_run_trains_and_stores_its_family(trained):
    root, _, summary = trained
    config = CPMobileConfig(base_channels=8, n_classes=3, in_channels=2)  # the synthetic clips are stereo
    assert summary["epochs"] == 2 and summary["variant"] == "cp-mobile"
    assert summary["nonzero_params"] == 3_000 == summary["prune_target"]  # magnitude pruning, as any family
    assert (summary["params"], summary["macs"]) == mobile_complexity(config, FRAMES) == (5_558, 1_653_946)
    raw = torch.load(root / "run" / "model-final.pt", weights_only=True)  # no code runs on load
    assert raw["model_config"] == config.to_dict() and raw["model_config"]["family"] == "cp-mobile"
    model = model_from_checkpoint(load_checkpoint(root / "run"))
    assert isinstance(model, CPMobile) and model.config == config
    info = json.loads(run_cli_here("info", str(root / "run"), "--json").stdout)
    assert (info["variant"], info["params"], info["macs"]) == ("cp-mobile", 5_558, 1_653_946)
    assert info["input_shape"] == [2, 256, FRAMES]


def test_cp_resnet_only_training_flags_are_refused(trained):
    root, common, _ = trained
    other = [a if a != str(root / "run") else str(root / "other") for a in common]
    assert_one_line_error(run_cli_here(*other, "--epochs", "3", "--macs-target", "1M"), 2,
                          "--macs-target", "CP-ResNet")
    assert_one_line_error(run_cli_here(*other, "--epochs", "1", "--rho", "3"), 2, "--rho", "CP-ResNet")
    assert not (root / "other").exists()


def test_export_fp32_and_int8_and_predict_without_torch(trained):
    root, _, _ = trained
    out = root / "model.onnx"
    proc = run_cli_here("export", str(root / "run"), "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    report = result["report"]
    assert report["rules"] == "dcase2024" and report["verdict"] == "PASS"
    assert report["macs_per_clip"] == 1_653_946
    assert report["macs_onnx_graph"] == 1_653_946 - report["bn_params"]  # BatchNorm folded away
    assert report["counted_bytes"] == 4 * 5_558  # dcase2024 counts zeros too
    assert report["nonzero_params"] == 3_000
    assert result["verification"]["max_abs_logit_difference"] < 1e-4
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert json.loads(meta["edgeasc.model_config"])["family"] == "cp-mobile"
    plan = json.loads(meta["edgeasc.conv_plan"])
    assert [g[0] for g in plan["groups"]][:4] == ["in_c.0", "stem", "b1", "b2"]
    wav = next((root / "scenes" / "audio").glob("*.wav"))
    pred = run_cli("predict", str(out), str(wav), "--json", python_prelude=HIDE_TORCH)
    assert pred.returncode == 0, pred.stderr
    probs = json.loads(pred.stdout)[0]["probabilities"]
    assert set(probs) == {"indoor", "outdoor", "transportation"} and sum(probs.values()) == pytest.approx(1.0)

    int8 = root / "model-int8.onnx"
    proc = run_cli_here("export", str(root / "run"), "-o", str(int8), "--precision", "int8", "--json")
    assert proc.returncode == 0, proc.stderr
    q = json.loads(proc.stdout)
    assert q["report"]["counted_bytes"] == 5_558 and q["int8"]["calibration_clips"] > 0
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(int8).graph.node)
