"""Every option that writes, one case each: a path the command would write that is one of its
inputs (the same path, a symlink, a hard link) or a folder holding its data is refused in one
line before any work, and nothing in the workspace changes, inputs byte for byte. A folder or
file the tool did not write needs --force. (predict --csv: tests/test_outputs.py.)"""

import os
import shutil

import pytest
import torch

from conftest import assert_one_line_error, run_cli_here, synthetic_scenes
from edgeasc.models import ModelConfig, build_model
from edgeasc.runtime.features import FeatureParams
from edgeasc.train.checkpoint import save_checkpoint

LABELS = ["indoor", "outdoor", "transportation"]
TINY = ["--preset", "demo", "--width", "4", "--seconds", "1", "--batch-size", "4", "--feature-workers", "1"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("writers")
    synthetic_scenes(tmp_path_factory, tmp / "scenes", seed=1)
    torch.manual_seed(0)
    model = build_model(ModelConfig(width=4, n_classes=3)).eval()
    save_checkpoint(tmp / "teacher.pt", {"model_config": model.config.to_dict(), "labels": LABELS,
                                         "feature_params": FeatureParams(clip_seconds=1.0).to_dict(), "channels": 2,
                                         "normalization": {"mean": [-30.0] * 256, "std": [10.0] * 256},
                                         "model": model.state_dict(), "epoch": 1, "kind": "final"})
    return tmp


@pytest.fixture
def ws(tmp_path, assets):
    shutil.copytree(assets / "scenes", tmp_path / "scenes")
    shutil.copy2(assets / "teacher.pt", tmp_path / "teacher.pt")
    (tmp_path / "run").mkdir()
    (tmp_path / "my.toml").write_text("epochs = 1\n")
    return tmp_path


def snapshot(ws):
    """Every path under the workspace (links as links) and the bytes of every file."""
    return {p: (os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else None)
            for p in sorted(ws.rglob("*"))}


def train(ws, *extra, out="run"):
    return ("train", str(ws / "scenes"), *TINY, "--cache-dir", str(ws / "cache"), "--out", str(ws / out), *extra)


def link(ws, kind, target, name):
    (os.symlink if kind == "symlink" else os.link)(ws / target, ws / name)


# id -> (setup(ws) -> the command line, exit code, needles of the one line; {ws} is the workspace)
CASES = {
    "train --out is the dataset": (
        lambda ws: train(ws, out="scenes"), 2, ["--out {ws}/scenes holds the dataset"]),
    "train --out holds the dataset": (
        lambda ws: train(ws, out="."), 2, ["--out {ws} holds the dataset {ws}/scenes"]),
    "train --out is a symlink to the dataset": (
        lambda ws: (link(ws, "symlink", "scenes", "data-link"), train(ws, out="data-link"))[1], 2,
        ["--out {ws}/data-link holds the dataset"]),
    "train --out would replace its --teacher (the same path)": (
        lambda ws: (shutil.copy2(ws / "teacher.pt", ws / "run" / "model-final.pt"),
                    train(ws, "--teacher", str(ws / "run" / "model-final.pt"), "--force"))[1], 2,
        ["--out {ws}/run/model-final.pt is one of the inputs", "choose another path"]),
    "train --out would replace its --teacher (a symlink)": (
        lambda ws: (link(ws, "symlink", "teacher.pt", "run/model-best.pt"),
                    train(ws, "--teacher", str(ws / "teacher.pt"), "--force"))[1], 2,
        ["--out {ws}/run/model-best.pt is one of the inputs ({ws}/teacher.pt)"]),
    "train --out would replace its --teacher (a hard link)": (
        lambda ws: (link(ws, "hardlink", "teacher.pt", "run/checkpoint-last.pt"),
                    train(ws, "--teacher", str(ws / "teacher.pt"), "--force"))[1], 2,
        ["--out {ws}/run/checkpoint-last.pt is one of the inputs ({ws}/teacher.pt)"]),
    "train --teacher is the run itself": (
        lambda ws: (shutil.copy2(ws / "teacher.pt", ws / "run" / "model-final.pt"),
                    train(ws, "--teacher", str(ws / "run"), "--force"))[1], 2,
        ["--teacher {ws}/run is the run being trained"]),
    "train --out would replace its --config (a hard link)": (
        lambda ws: (link(ws, "hardlink", "my.toml", "run/config.json"),
                    train(ws, "--config", str(ws / "my.toml"), "--force"))[1], 2,
        ["--out {ws}/run/config.json is one of the inputs ({ws}/my.toml)"]),
    "train --out is a folder of other files": (
        lambda ws: ((ws / "run" / "notes.txt").write_text("mine\n"), train(ws))[1], 2,
        ["--out {ws}/run exists and is not an edgeasc run (it holds notes.txt)", "--force"]),
    "train --out holds a config.json edgeasc did not write": (
        lambda ws: ((ws / "run" / "config.json").write_text('{"mine": 1}\n'), train(ws, "--resume"))[1], 2,
        ["--out {ws}/run exists and is not an edgeasc run (it holds config.json)"]),
    "train --cache-dir inside the dataset": (
        lambda ws: train(ws, "--cache-dir", str(ws / "scenes" / "cache")), 2,
        ["the cache root {ws}/scenes/cache (--cache-dir) is inside the dataset {ws}/scenes"]),
    "features --cache-dir is the dataset": (
        lambda ws: ("features", str(ws / "scenes"), "--workers", "1", "--cache-dir", str(ws / "scenes")), 2,
        ["the cache root {ws}/scenes (--cache-dir) is inside the dataset {ws}/scenes"]),
    "features --cache-dir is a symlink into the dataset": (
        lambda ws: (link(ws, "symlink", "scenes/audio", "cache-link"),
                    ("features", str(ws / "scenes"), "--workers", "1", "--cache-dir", str(ws / "cache-link")))[1], 2,
        ["the cache root {ws}/cache-link (--cache-dir) is inside the dataset {ws}/scenes"]),
    "eval --cache-dir inside the dataset": (
        lambda ws: ("eval", str(ws / "teacher.pt"), str(ws / "scenes"), "--cache-dir", str(ws / "scenes" / "c")), 2,
        ["the cache root {ws}/scenes/c (--cache-dir) is inside the dataset"]),
    "eval's plot would replace the checkpoint (the same path)": (
        lambda ws: (shutil.copy2(ws / "teacher.pt", ws / "run" / "confusion-eval.png"),
                    ("eval", str(ws / "run" / "confusion-eval.png"), str(ws / "scenes")))[1], 2,
        ["eval's plot {ws}/run/confusion-eval.png is one of the inputs"]),
    "eval's plot would replace the checkpoint (a symlink)": (
        lambda ws: (shutil.copy2(ws / "teacher.pt", ws / "run" / "m.pt"),
                    link(ws, "symlink", "run/m.pt", "run/devices-eval.png"),
                    ("eval", str(ws / "run" / "m.pt"), str(ws / "scenes")))[2], 2,
        ["eval's plot {ws}/run/devices-eval.png is one of the inputs ({ws}/run/m.pt)"]),
    "export -o is a hard link to the checkpoint": (
        lambda ws: (link(ws, "hardlink", "teacher.pt", "hard.onnx"),
                    ("export", str(ws / "teacher.pt"), "-o", str(ws / "hard.onnx"), "--force"))[1], 2,
        ["-o {ws}/hard.onnx is one of the inputs ({ws}/teacher.pt)"]),
    "export -o is a symlink to the checkpoint": (
        lambda ws: (link(ws, "symlink", "teacher.pt", "soft.onnx"),
                    ("export", str(ws / "teacher.pt"), "-o", str(ws / "soft.onnx"), "--force"))[1], 2,
        ["-o {ws}/soft.onnx is one of the inputs ({ws}/teacher.pt)"]),
    "export's size report (.size.json) would replace the checkpoint": (
        lambda ws: (shutil.copy2(ws / "teacher.pt", ws / "m.size.json"),
                    ("export", str(ws / "m.size.json"), "-o", str(ws / "m.onnx")))[1], 2,
        ["the size report {ws}/m.size.json is one of the inputs"]),
    "export's size report (.size.md) is a hard link to the checkpoint": (
        lambda ws: (link(ws, "hardlink", "teacher.pt", "m.size.md"),
                    ("export", str(ws / "teacher.pt"), "-o", str(ws / "m.onnx")))[1], 2,
        ["the size report {ws}/m.size.md is one of the inputs ({ws}/teacher.pt)"]),
    "export --cache-dir inside the calibration dataset": (
        lambda ws: ("export", str(ws / "teacher.pt"), "-o", str(ws / "m.onnx"), "--precision", "int8",
                    "--calibration", str(ws / "scenes"), "--cache-dir", str(ws / "scenes" / "c")), 2,
        ["the cache root {ws}/scenes/c (--cache-dir) is inside the dataset {ws}/scenes"]),
    "synth OUT_DIR is a folder of other files": (
        lambda ws: ("synth", str(ws / "run"), "--clips-per-class", "8", "--seconds", "1", "--workers", "1")
        if (ws / "run" / "notes.txt").write_text("mine\n") else None, 2,
        ["{ws}/run exists and is not empty (use --force to replace it)"]),
    "synth OUT_DIR is a symlink to a folder of other files": (
        lambda ws: (link(ws, "symlink", "scenes", "scenes-link"),
                    ("synth", str(ws / "scenes-link"), "--clips-per-class", "8", "--seconds", "1"))[1], 2,
        ["{ws}/scenes-link exists and is not empty (use --force to replace it)"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_writing_option_never_replaces_an_input(ws, case):
    setup, code, needles = CASES[case]
    args = setup(ws)
    before = snapshot(ws)
    proc = run_cli_here(*args)
    assert_one_line_error(proc, code, *(n.format(ws=ws) for n in needles))
    assert snapshot(ws) == before


def test_a_folder_of_other_files_takes_the_run_with_force_and_keeps_them(ws):
    (ws / "run" / "notes.txt").write_text("mine\n")
    proc = run_cli_here(*train(ws, "--epochs", "1", "--prune-ratio", "0.5", "--force", "--json"))
    assert proc.returncode == 0, proc.stderr
    assert (ws / "run" / "notes.txt").read_text() == "mine\n"
    assert (ws / "run" / "model-final.pt").is_file()
    again = run_cli_here(*train(ws, "--epochs", "1", "--prune-ratio", "0.5"))  # now a run: the usual refusal
    assert_one_line_error(again, 2, f"{ws / 'run'} already holds a run: use --resume to continue it or --force")


def test_synth_force_over_a_symlink_replaces_the_link_never_the_folder_it_points_to(ws):
    link(ws, "symlink", "scenes", "scenes-link")
    before = snapshot(ws / "scenes")
    proc = run_cli_here("synth", str(ws / "scenes-link"), "--clips-per-class", "8", "--seconds", "1", "--workers", "1",
                        "--force", "--json")
    assert proc.returncode == 0, proc.stderr
    assert snapshot(ws / "scenes") == before
    assert not (ws / "scenes-link").is_symlink() and (ws / "scenes-link" / "meta.csv").is_file()
    assert sorted(p.name for p in ws.iterdir() if p.name.startswith(".")) == []  # no .scenes-link.old left
