"""No output ever replaces an input: a path a command writes that is one of its inputs (the
same file, through a link too) is refused before any work, and an existing file the command
did not write needs --force."""

import os
import shutil

import pytest
import torch

from conftest import assert_one_line_error, run_cli_here, write_wav
from edgeasc.export.pipeline import export_checkpoint
from edgeasc.models import ModelConfig, build_model
from edgeasc.runtime.features import FeatureParams
from edgeasc.train.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("outputs")
    torch.manual_seed(0)
    model = build_model(ModelConfig(width=4, n_classes=3)).eval()
    save_checkpoint(tmp / "m.pt", {"model_config": model.config.to_dict(), "labels": ["a", "b", "c"],
                                   "feature_params": FeatureParams(clip_seconds=1.0).to_dict(), "channels": 2,
                                   "normalization": {"mean": [-30.0] * 256, "std": [10.0] * 256},
                                   "model": model.state_dict(), "epoch": 1, "kind": "final"})
    export_checkpoint(tmp / "m.pt", tmp / "model.onnx")
    write_wav(tmp / "rec" / "clip.wav", seconds=1.0)
    return tmp


@pytest.fixture
def ws(tmp_path, assets):
    for name in ("model.onnx", "m.pt"):
        shutil.copy2(assets / name, tmp_path / name)
    shutil.copytree(assets / "rec", tmp_path / "rec")
    return tmp_path


def intact(ws):
    return {p: p.read_bytes() for p in sorted(ws.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("target", ["model.onnx", "rec/clip.wav", "link.wav", "hard.wav"])
def test_predict_csv_never_replaces_an_input(ws, target):
    os.symlink(ws / "rec" / "clip.wav", ws / "link.wav")
    os.link(ws / "rec" / "clip.wav", ws / "hard.wav")
    before = intact(ws)
    inputs = ["rec"] if target == "link.wav" else ["rec/clip.wav"]  # a folder's files are inputs too
    proc = run_cli_here("predict", str(ws / "model.onnx"), *(str(ws / i) for i in inputs),
                        "--csv", str(ws / target), "--force")
    assert_one_line_error(proc, 2, f"--csv {ws / target} is one of the inputs", "choose another path")
    assert intact(ws) == before


def test_predict_csv_replaces_only_its_own_files_without_force(ws):
    other = ws / "notes.csv"
    other.write_text("mine,not,predict's\n")
    args = ["predict", str(ws / "model.onnx"), str(ws / "rec" / "clip.wav"), "--csv", str(other)]
    assert_one_line_error(run_cli_here(*args), 2, f"--csv {other} exists and is not a CSV that predict wrote",
                          "use --force")
    assert other.read_text() == "mine,not,predict's\n"
    assert run_cli_here(*args, "--force").returncode == 0
    first = other.read_text()
    assert first.startswith("file,window_start,window_end,label,probability,a,b,c,error\n")
    assert run_cli_here(*args).returncode == 0  # its own file: replaced without --force
    assert other.read_text() == first


def test_export_never_writes_over_its_checkpoint(ws):
    ckpt = ws / "m.onnx"  # a checkpoint named like the output it would become
    shutil.copy2(ws / "m.pt", ckpt)
    before = intact(ws)
    proc = run_cli_here("export", str(ckpt), "-o", str(ckpt), "--force")
    assert_one_line_error(proc, 2, f"-o {ckpt} is one of the inputs", "choose another path")
    assert intact(ws) == before


@pytest.mark.parametrize("report", ["new.size.json", "new.size.md"])
def test_export_replaces_only_its_own_size_reports_without_force(ws, report):
    # -o new.onnx writes new.size.json and new.size.md beside it: a file there that export did
    # not write needs --force; the reports of an earlier export (its model since deleted) do not
    other = ws / report
    other.write_text("my notes\n")
    args = ["export", str(ws / "m.pt"), "-o", str(ws / "new.onnx")]
    assert_one_line_error(run_cli_here(*args), 2, f"{other} exists and is not a size report that export wrote",
                          "use --force")
    assert other.read_text() == "my notes\n" and not (ws / "new.onnx").exists()
    assert run_cli_here(*args, "--force").returncode == 0
    (ws / "new.onnx").unlink()
    assert run_cli_here(*args).returncode == 0  # its own reports: replaced without --force
    assert (ws / "new.size.md").read_text().startswith("# Size report: ")


@pytest.mark.parametrize("change, needle", [
    ({"sample_rate": None}, "lacks 'sample_rate'"),
    ({"window": "hann"}, "unknown key 'window'"),
    ({"fmin": 9000.0, "fmax": 8000.0}, "needs fmin < fmax"),
])
def test_export_refuses_bad_feature_parameters_in_one_line(ws, change, needle):
    ckpt = torch.load(ws / "m.pt", weights_only=True)
    params = {**ckpt["feature_params"], **change}
    ckpt["feature_params"] = {k: v for k, v in params.items() if v is not None}
    save_checkpoint(ws / "bad.pt", {k: v for k, v in ckpt.items() if k not in ("format", "version", "edgeasc_version")})
    proc = run_cli_here("export", str(ws / "bad.pt"), "-o", str(ws / "bad.onnx"))
    assert_one_line_error(proc, 2, "metadata edgeasc.feature_params", needle)
    assert not (ws / "bad.onnx").exists()
