"""Per-device models (`edgeasc finetune-devices`): a finished run's model fine-tuned once per
training device on that device's clips only, seeded; export writes each beside the general model;
package routes each seen device to its own network and every other id to the general one."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from conftest import assert_one_line_error, make_dcase, run_cli_here, write_wav
from edgeasc.export.dcase2025 import DEVICE_IDS, complexity, dummy_path, imported_submission

LABEL = "Doe_DEV_task1"
TRAIN_DEVICES = ["a", "b", "s1"]  # the fixture's TAU 2022 layout: every device has 2 training clips


def _train(data: Path, out: Path, cache: Path) -> None:
    proc = run_cli_here("train", str(data), "--preset", "demo", "--width", "24", "--prune-ratio", "0", "--epochs", "1",
                        "--seconds", "1", "--batch-size", "4", "--feature-workers", "1", "--cache-dir", str(cache),
                        "--out", str(out))
    assert proc.returncode == 0, proc.stderr


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("devices")
    data = make_dcase(root / "tau22", "tau2022-mobile", scenes=("airport", "bus", "park"), seconds=1.0)
    run = root / "run"
    _train(data, run, root / "cache")
    general_only = root / "general-only"
    shutil.copytree(run, general_only)
    proc = run_cli_here("finetune-devices", str(run), "--epochs", "1", "--lr", "1e-3", "--json")
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "data": data, "run": run, "general_only": general_only,
            "manifest": json.loads(proc.stdout)}


def test_every_training_device_gets_its_own_model_and_a_manifest(work):
    run, manifest = work["run"], work["manifest"]
    assert json.loads((run / "devices.json").read_text()) == manifest
    assert list(manifest["devices"]) == TRAIN_DEVICES
    assert (manifest["epochs"], manifest["lr"], manifest["seed"]) == (1, 1e-3, 0)
    for d, e in manifest["devices"].items():
        assert e["checkpoint"] == f"devices/{d}/model-final.pt" and (run / e["checkpoint"]).is_file()
        assert (e["train_clips"], e["evaluate_clips"]) == (2, 2)
        assert e["accuracy_before"] in (0.0, 0.5, 1.0) and e["accuracy_after"] in (0.0, 0.5, 1.0)
    # the general model is untouched
    assert _same(_weights(run / "model-final.pt"), _weights(work["general_only"] / "model-final.pt"))


def test_each_device_model_learned_from_its_own_clips_only(work):
    """Same start, same seed, same schedule: only the clips differ. Trained on all clips, the
    three copies would be identical."""
    run = work["run"]
    general = _weights(run / "model-final.pt")
    models = {d: _weights(run / "devices" / d / "model-final.pt") for d in TRAIN_DEVICES}
    for i, a in enumerate(TRAIN_DEVICES):
        assert not _same(models[a], general)
        for b in TRAIN_DEVICES[:i]:
            assert not _same(models[a], models[b]), (a, b)
    # one epoch of one step on a device's 2 clips: loss of that step only, logged by the loop itself
    history = [json.loads(x) for x in (run / "devices" / "a" / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 1 and history[0]["epoch"] == 1


def test_the_same_seed_gives_the_same_weights_and_another_seed_others(work, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    shutil.copytree(work["general_only"], again)
    shutil.copytree(work["general_only"], other)
    assert run_cli_here("finetune-devices", str(again), "--epochs", "1", "--lr", "1e-3").returncode == 0
    assert run_cli_here("finetune-devices", str(other), "--epochs", "1", "--lr", "1e-3", "--seed", "7",
                        "--device-id", "b").returncode == 0
    for d in TRAIN_DEVICES:
        assert _same(_weights(again / "devices" / d / "model-final.pt"),
                     _weights(work["run"] / "devices" / d / "model-final.pt")), d
    assert list(json.loads((other / "devices.json").read_text())["devices"]) == ["b"]
    assert not _same(_weights(other / "devices" / "b" / "model-final.pt"),
                     _weights(work["run"] / "devices" / "b" / "model-final.pt"))


def test_model_for_device_falls_back_to_the_general_model(work):
    from edgeasc.train.devices import model_for_device

    run = work["run"]
    for d in TRAIN_DEVICES:
        assert model_for_device(run, d) == run / "devices" / d / "model-final.pt"
    for d in ("c", "s4", "s10", "unknown", ""):
        assert model_for_device(run, d) == run / "model-final.pt"
    assert model_for_device(work["general_only"], "a") == work["general_only"] / "model-final.pt"


def test_export_writes_the_general_model_and_each_device_model(work, tmp_path):
    out = tmp_path / "m.onnx"
    proc = run_cli_here("export", str(work["run"]), "-o", str(out), "--rules", "dcase2024", "--precision", "fp16",
                        "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert list(result["devices"]) == TRAIN_DEVICES
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"m{s}.{e}" for s in ("", "-a", "-b", "-s1") for e in ("onnx", "size.json", "size.md"))
    graphs = {}
    for d, each in [("general", result), *result["devices"].items()]:
        path = Path(each["onnx"])
        assert each["report"]["verdict"] == "PASS" and each["verification"]["top1_agreement"] == 1.0
        assert json.loads(path.with_suffix(".size.json").read_text())["file_bytes"] == path.stat().st_size
        graphs[d] = [np.asarray(onnx.numpy_helper.to_array(t)) for t in onnx.load(str(path)).graph.initializer]
    assert result["devices"]["a"]["checkpoint"].endswith("devices/a/model-final.pt")
    # four different networks, not one written four times
    for d in TRAIN_DEVICES:
        assert any(not np.array_equal(x, y) for x, y in zip(graphs[d], graphs["general"], strict=True)), d


def test_package_routes_seen_devices_to_their_own_network_and_the_rest_to_the_general_one(work, tmp_path):
    from edgeasc.export.fold import fold_model
    from edgeasc.train.checkpoint import load_checkpoint, model_from_checkpoint

    out = tmp_path / "pkg"
    made = run_cli_here("package", str(work["run"]), "--label", LABEL, "-o", str(out))
    assert made.returncode == 0, made.stderr
    rows = {line.split()[0]: line.split()[1] for line in made.stdout.splitlines() if line.split()[:1] and
            line.split()[0] in DEVICE_IDS}
    assert rows == {d: d if d in TRAIN_DEVICES else "general" for d in DEVICE_IDS}
    with imported_submission(out, LABEL, 1) as module, dummy_path(LABEL) as dummy:
        result = complexity(module, str(dummy))  # the organisers' check, all 13 ids
        model = module.load_model()
        x = module.load_inputs([str(dummy)], ["a"], model)[0]
        for d in (*DEVICE_IDS, "unknown", "s11", ""):
            net = module.get_model_for_device(model, d)
            assert net is model.submodels[d if d in TRAIN_DEVICES else "general"], d
        with torch.no_grad():  # each submodel is its own checkpoint's folded network (fp16 weights)
            for name, ckpt in [("general", work["run"] / "model-final.pt"),
                               *((d, work["run"] / "devices" / d / "model-final.pt") for d in TRAIN_DEVICES)]:
                want = fold_model(model_from_checkpoint(load_checkpoint(ckpt))).half().float()(x)
                got = module.get_model_for_device(model, name if name != "general" else "s4").float()(x)
                assert torch.allclose(got, want, rtol=0, atol=1e-5), name
    assert list(result["per_device"]) == list(DEVICE_IDS) and not result["max_Params"] > 128_000
    manifest = json.loads((out / "edgeasc-package.json").read_text())
    assert manifest["modules"][0]["submodels"] == sorted(["general", *TRAIN_DEVICES])
    # --check: predict() on device a's files against an export of device a's own checkpoint
    files = sorted(str(p) for p in (work["data"] / "audio").glob("*-a.wav"))
    check = run_cli_here("package", "--check", str(out), *(x for f in files for x in ("--audio", f)), "--json")
    assert check.returncode == 0, check.stderr
    fid = json.loads(check.stdout)["modules"][0]["fidelity"]
    assert (fid["files"], fid["devices"], fid["submodels"]) == (4, ["a"], ["a"])
    # the package runs BatchNorm as its own layers at fp16, the export folds it: rounding apart (3.8e-6)
    assert fid["top1_identical"] and fid["max_abs_probability_difference"] < 1e-5


def test_the_modules_device_map_is_what_routes_and_must_name_stored_networks(work, tmp_path):
    # an entrant edits DEVICE_MAP in the module (the table the template tells them to edit):
    # predict() and get_model_for_device() follow it, and a name the weights lack is refused at load
    out = tmp_path / "pkg"
    assert run_cli_here("package", str(work["run"]), "--label", LABEL, "-o", str(out)).returncode == 0
    source = out / LABEL / f"{LABEL}_1.py"
    text = source.read_text()
    assert '"b": "b",' in text and '"s4": "general",' in text
    source.write_text(text.replace('"b": "b",', '"b": "general",').replace('"s4": "general",', '"s4": "a",'))
    with imported_submission(out, LABEL, 1) as module:
        model = module.load_model()
        assert module.get_model_for_device(model, "b") is model.submodels["general"]
        assert module.get_model_for_device(model, "s4") is model.submodels["a"]
        assert module.get_model_for_device(model, "s1") is model.submodels["s1"]
    source.write_text(text.replace('"b": "b",', '"b": "s9",'))
    with imported_submission(out, LABEL, 1) as module, pytest.raises(ValueError) as info:
        module.load_model()
    assert str(info.value) == f"{LABEL}: DEVICE_MAP names ['s9'], but the weights hold only ['a', 'b', 'general', 's1']"


def test_refusals_are_one_line(work, tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    assert_one_line_error(run_cli_here("finetune-devices", str(unfinished)), 2, "has not finished")
    assert_one_line_error(run_cli_here("finetune-devices", str(work["run"])), 2, "per-device models already",
                          "--force")
    assert_one_line_error(run_cli_here("finetune-devices", str(work["general_only"]), "--device-id", "s4"), 2,
                          "device 's4' has no training clips", "a, b, s1")
    assert not (work["general_only"] / "devices").exists() and not (work["general_only"] / "devices.json").exists()
    # data without devices: a folder per class, plain file names
    plain = tmp_path / "plain"
    for c in ("cat", "dog"):
        for i in range(5):
            write_wav(plain / c / f"{c}{i}.wav", seconds=1.0, sr=44_100, channels=1, seed=i, freq=300 + 200 * i)
    _train(plain, tmp_path / "plain-run", work["root"] / "cache")
    assert_one_line_error(run_cli_here("finetune-devices", str(tmp_path / "plain-run")), 2,
                          "per-device models on data without devices")
