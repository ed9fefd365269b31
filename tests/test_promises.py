"""Core promises pinned in-process, each against its definition or a hand count, so that a
small realistic bug fails a test: atomic writes under injected failures, BatchNorm folding at
near-zero variances, the linear mean of window probabilities, mixup's definition, per-class
and per-device accuracy and the confusion matrix, and the challenge rule sets' byte counts."""

import json
import os

import numpy as np
import pytest
import torch

from edgeasc.io import WriteError, atomic_write, atomic_write_group


# ----------------------------------------------------------------------------- atomic writes
def test_a_writer_failing_midway_leaves_the_old_file_and_no_partial(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"the old model")

    def half_then_fail(tmp):
        tmp.write_bytes(b"half of a new")
        raise RuntimeError("disk went away")

    with pytest.raises(RuntimeError):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"the old model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no partial left behind


def test_a_failing_rename_leaves_the_old_file_and_no_partial(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    path.write_text("{}")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(WriteError, match="no space left"):
        atomic_write(path, lambda tmp: tmp.write_text('{"new": true}'))
    monkeypatch.undo()
    assert path.read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_a_write_group_is_all_or_nothing(tmp_path, monkeypatch):
    a, b = tmp_path / "m.onnx", tmp_path / "m.size.json"
    a.write_text("old model")
    b.write_text("old report")
    real = os.replace
    calls = []

    def second_fails(src, dst):
        calls.append(dst)
        if str(dst) == str(b) and len([c for c in calls if str(c) == str(b)]) == 1:  # the new report lands
            raise OSError(30, "Read-only file system")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(WriteError):
        atomic_write_group({a: lambda t: t.write_text("new model"), b: lambda t: t.write_text("new report")})
    monkeypatch.undo()
    assert (a.read_text(), b.read_text()) == ("old model", "old report")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.size.json"]


# ----------------------------------------------------------------------------- folding
def test_batchnorm_folding_is_exact_at_near_zero_variances():
    from edgeasc.export.fold import fold_batchnorm

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
    bn = torch.nn.BatchNorm2d(4, eps=1e-3).eval()
    with torch.no_grad():
        bn.running_var.copy_(torch.tensor([1e-6, 1e-5, 2e-4, 0.0]))  # eps dominates: dropping it is visible
        bn.running_mean.uniform_(-1, 1)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        want = bn(conv(x))
        got = fold_batchnorm(conv, bn)(x)
    scale = float(want.abs().max())
    assert scale > 10  # near-zero variances make large activations
    assert torch.allclose(got, want, rtol=0, atol=1e-5 * scale)


# ----------------------------------------------------------------------------- predict's mean
def test_a_files_probabilities_are_the_linear_mean_of_its_windows():
    from edgeasc.runtime.predict import Prediction

    w = np.array([[0.98, 0.01, 0.01], [0.98, 0.01, 0.01], [1e-7, 0.5, 0.5 - 1e-7]])
    p = Prediction("f.wav", ["a", "b", "c"], 3.0, [0.0, 1.0, 2.0], 1.0, w)
    assert p.probabilities.tolist() == pytest.approx([(0.98 + 0.98 + 1e-7) / 3, (0.01 + 0.01 + 0.5) / 3,
                                                      (0.01 + 0.01 + 0.5 - 1e-7) / 3], rel=1e-12, abs=0)
    d = p.to_dict(top_k=2)
    assert [t["label"] for t in d["top"]] == ["a", "b"] and [x["label"] for x in d["windows"]] == ["a", "a", "b"]
    # a geometric (log-space) mean would rank a above c here: the linear one must not
    geometric = np.exp(np.log(w).mean(axis=0))
    assert geometric.argmax() != p.probabilities.argmax()


# ----------------------------------------------------------------------------- mixup
def test_mixup_follows_its_definition():
    from edgeasc.data.loader import mixup, mixup_cross_entropy

    rng_seed = 11
    x = torch.arange(6 * 2 * 3, dtype=torch.float32).view(6, 1, 2, 3)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    mixed, y_a, y_b, lam = mixup(x, y, np.random.default_rng(rng_seed), 0.4)
    rng = np.random.default_rng(rng_seed)  # the same draws, by the definition: λ ~ Beta, max(λ, 1-λ), permutation
    lam_ref = rng.beta(0.4, 0.4, size=6)
    lam_ref = np.maximum(lam_ref, 1 - lam_ref)
    perm = rng.permutation(6)
    assert not (perm == np.arange(6)).all() and (y[perm] != y).any()
    assert np.allclose(lam.numpy(), lam_ref) and (lam >= 0.5).all()
    want = x * lam.view(6, 1, 1, 1) + x[perm] * (1 - lam.view(6, 1, 1, 1))
    assert torch.equal(mixed, want) and torch.equal(y_a, y) and torch.equal(y_b, y[perm])
    logits = torch.randn(6, 3)
    ce = torch.nn.functional.cross_entropy
    by_hand = sum(lam[i] * ce(logits[i:i + 1], y[i:i + 1]) + (1 - lam[i]) * ce(logits[i:i + 1], y[perm[i]:perm[i] + 1])
                  for i in range(6)) / 6
    assert torch.allclose(mixup_cross_entropy(logits, y_a, y_b, lam), by_hand, atol=1e-6)


# ----------------------------------------------------------------------------- evaluation counts
class _ByFirstValue(torch.nn.Module):
    """Predicts class int(first feature value) (the clips are built so the answer is known)."""

    def forward(self, x):
        cls = x[:, 0, 0, 0].round().long().clamp(0, 2)
        return torch.nn.functional.one_hot(cls, 3).float() * 5


def test_per_class_per_device_accuracy_and_confusion_against_a_hand_count(tmp_path):
    from edgeasc.data.cache import FeatureCache
    from edgeasc.train.evaluate import evaluate

    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    preds = [0, 1, 0, 1, 1, 2, 0, 2, 1]
    devices = ["a", "a", "b", "b", "b", "c", "c", "a", None]
    feats = np.zeros((9, 1, 4, 5), np.float32)
    feats[:, 0, 0, 0] = preds
    np.save(tmp_path / "evaluate.npy", feats)
    np.save(tmp_path / "train.npy", feats[:2])
    manifest = {"splits": {"evaluate": {"labels": labels, "clips": [f"c{i}" for i in range(9)], "devices": devices},
                           "train": {"labels": [0, 1], "clips": ["t0", "t1"], "devices": ["a", "b"]}},
                "label_names": ["x", "y", "z"], "labels": ["x", "y", "z"], "channels": 1, "frames": 5,
                "normalization": {"mean": [0.0] * 4, "std": [1.0] * 4}, "params": {"n_mels": 4}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    cache = FeatureCache(tmp_path, manifest)
    r = evaluate(_ByFirstValue(), cache, batch_size=4)
    assert r.confusion == [[2, 1, 0], [0, 2, 0], [1, 1, 2]]
    assert r.n == 9 and r.accuracy == pytest.approx(6 / 9)
    assert r.per_class == pytest.approx({"x": 2 / 3, "y": 1.0, "z": 2 / 4})
    # devices: a = clips 0, 1, 7 (right, wrong, right); b = 2, 3, 4 (all right); c = 5, 6 (right, wrong)
    assert r.per_device == pytest.approx({"a": 2 / 3, "b": 1.0, "c": 0.5})
    assert r.device_counts == {"a": 3, "b": 3, "c": 2}
    assert (r.seen_devices, r.unseen_devices) == (["a", "b"], ["c"])
    assert r.seen_accuracy == pytest.approx((2 / 3 + 1.0) / 2) and r.unseen_accuracy == pytest.approx(0.5)


# ----------------------------------------------------------------------------- the rule sets
@pytest.mark.parametrize("rules, precision, counted, budget, macs_ok", [
    # dcase2020: non-zero, BatchNorm out (the official counter); dcase2021: non-zero, BN in;
    # dcase2022/2024: every parameter, zeros included, BN in, plus the MAC limit
    ("dcase2020", "fp16", 2 * (900 - 0), 512_000, True),
    ("dcase2021", "fp16", 2 * (900 + 22), 131_072, True),
    ("dcase2022", "int8", 1 * (1200 + 22), 131_072, False),
    ("dcase2024", "int8", 1 * (1200 + 22), 128_000, False),
])
def test_rule_sets_count_bytes_and_macs_by_their_definition(rules, precision, counted, budget, macs_ok):
    from types import SimpleNamespace

    from edgeasc.export.report import RULES, size_report

    conv = SimpleNamespace(name="c", kind="conv", kernel="3x3", params=1200, nonzero_params=900,
                           channels=[1, 2], dense_channels=[1, 2])
    bn = SimpleNamespace(name="b", kind="batchnorm", kernel="", params=22, nonzero_params=22,
                         channels=[11], dense_channels=[11])
    stats = SimpleNamespace(layers=[conv, bn], macs=31_000_000, seconds=1.0, params=1222, nonzero_params=922,
                            bn_params=22, dense_params=1222, dense_macs=31_000_000, channel_plan=None)
    r = size_report(stats, precision, RULES[rules])
    assert (r["counted_bytes"], r["budget_bytes"], r["macs_ok"]) == (counted, budget, macs_ok)
    assert r["verdict"] == ("PASS" if macs_ok and counted <= budget else "FAIL")


def test_the_size_report_and_its_markdown_in_full():
    """Every field of a report, the overrides (BatchNorm counted, a budget of one's own), the
    failures with their amounts, and the Markdown users read, line for line."""
    from types import SimpleNamespace

    from edgeasc.export.report import RULES, budget_failures, report_markdown, size_report

    pool = SimpleNamespace(name="p", kind="maxpool", kernel="2x2", params=0, nonzero_params=0, channels=[],
                           dense_channels=[])  # no parameters: not a row, and the rows after it still count
    conv = SimpleNamespace(name="c", kind="conv", kernel="3x3", params=1200, nonzero_params=900, channels=[1, 2],
                           dense_channels=[1, 4])
    bn = SimpleNamespace(name="b", kind="batchnorm", kernel="", params=22, nonzero_params=22, channels=[11],
                         dense_channels=[11])
    stats = SimpleNamespace(layers=[pool, conv, bn], macs=31_000_000, seconds=1.0, params=1222, nonzero_params=922,
                            bn_params=22, dense_params=2000, dense_macs=40_000_000, channel_plan={"g": 2})
    # dcase2020 with BatchNorm counted (as the winners did) and a budget of our own
    r20 = size_report(stats, "fp16", RULES["dcase2020"], budget_bytes=1844, count_bn=True)
    assert (r20["counted_values"], r20["counted_bytes"], r20["count_bn"], r20["budget_bytes"]) == (922, 1844, True, 1844)
    assert r20["verdict"] == "PASS" and r20["macs_ok"] and r20["macs_limit_per_second"] is None
    assert budget_failures(r20) == []
    assert size_report(stats, "fp16", RULES["dcase2020"], count_bn=False)["counted_bytes"] == 1800
    r = size_report(stats, "int8", RULES["dcase2024"], budget_bytes=1000, deployed={"params": 1211, "nonzero_params": 911},
                    file_bytes=5000)
    assert {k: v for k, v in r.items() if k != "layers"} == {
        "rules": "dcase2024", "rules_description": RULES["dcase2024"].description, "precision": "int8",
        "bytes_per_value": 1, "counts": "all", "count_bn": True,
        "counted_on": "the model as trained (BatchNorm separate from the convs)", "params": 1222,
        "nonzero_params": 922, "bn_params": 22, "counted_values": 1222, "counted_bytes": 1222,
        "macs_per_clip": 31_000_000, "clip_seconds": 1.0, "macs_per_second": 31_000_000.0,
        "dense": {"params": 2000, "macs_per_clip": 40_000_000}, "channel_plan": {"g": 2},
        "macs_limit_per_second": 30e6, "macs_ok": False, "budget_bytes": 1000, "bytes_ok": False, "verdict": "FAIL",
        "deployed": {"params": 1211, "nonzero_params": 911}, "file_bytes": 5000}
    assert r["layers"] == [
        {"name": "c", "kind": "conv", "kernel": "3x3", "params": 1200, "nonzero": 900, "counted_bytes": 1200,
         "channels": [1, 2], "dense_channels": [1, 4]},
        {"name": "b", "kind": "batchnorm", "kernel": "", "params": 22, "nonzero": 22, "counted_bytes": 22,
         "channels": [11], "dense_channels": [11]}]
    assert budget_failures(r) == ["bytes: 1,222 counted > budget 1,000, 222 over",
                                  "MACs: 31.000 M per second > limit 30 M, 1.000 M (3.3 %) over"]
    r["macs_onnx_graph"] = 31_000_000
    assert report_markdown(r) == (
        "# Size report: FAIL\n\n"
        "Rules: dcase2024 — DCASE 2024-2025 task 1: 128 000 bytes of all parameters, 30 M MACs per second.\n"
        "Counted on the model as trained (BatchNorm separate from the convs): all parameters, BatchNorm in, "
        "1 bytes per value (int8).\n\n"
        "| | value |\n|---|---:|\n| parameters | 1,222 |\n| non-zero parameters | 922 |\n"
        "| BatchNorm parameters | 22 |\n| MACs per 1 s clip | 31,000,000 |\n"
        "| before channel pruning: parameters / MACs per clip | 2,000 / 40,000,000 |\n"
        "| MACs counted on the ONNX graph | 31,000,000 |\n| MACs per second of audio | 31,000,000 |\n"
        "| MAC limit per second | 30,000,000 (over) |\n| counted bytes | 1,222 |\n| budget bytes | 1,000 |\n"
        "| ONNX file bytes | 5,000 |\n| deployed (BatchNorm folded): parameters / non-zero | 1,211 / 911 |\n\n"
        "| layer | kind | kernel | channels (dense) | params | non-zero | counted bytes |\n"
        "|---|---|---|---|---:|---:|---:|\n"
        "| c | conv | 3x3 | 1→2 (1→4) | 1,200 | 900 | 1,200 |\n"
        "| b | batchnorm |  | 11 | 22 | 22 | 22 |\n")
    md20 = report_markdown(r20)
    assert "BatchNorm in, 2 bytes per value (fp16)" in md20 and "non-zero parameters, BatchNorm in" in md20
    assert "MAC limit" not in md20 and "ONNX file bytes" not in md20 and "# Size report: PASS" in md20


@pytest.mark.parametrize("text, n", [("1", 1), ("1B", 1), ("7 b", 7), ("9bytes", 9), ("9 BYTES", 9), ("2MiB", 2 << 20),
                                     ("2 mib", 2 << 20), ("0.5MB", 1 << 19), ("3kB", 3000), ("3KiB", 3072)])
def test_budget_units(text, n):
    from edgeasc.export.report import parse_budget

    assert parse_budget(text) == n


@pytest.mark.parametrize("text, message", [
    ("lots", "malformed budget 'lots': use e.g. 500KB, 500KiB, 500kB, 0.5MB or 512000"),
    ("5zB", "malformed budget '5zB': unknown unit 'zB' (B, kB, KB, KiB, MB, MiB)"),
    ("0", "budget '0' must be a positive whole number of bytes, got 0"),
    ("0.5", "budget '0.5' must be a positive whole number of bytes, got 0.5"),
])
def test_malformed_budgets_say_what_is_wrong(text, message):
    from edgeasc.errors import ConfigError
    from edgeasc.export.report import parse_budget

    with pytest.raises(ConfigError) as refused:
        parse_budget(text)
    assert str(refused.value) == message


def test_a_report_at_its_limits_on_ten_second_clips():
    """Exactly at the byte budget and the MAC limit passes; MACs per second divide by the clip
    length; a layer the rules do not count counts 0 bytes; the Markdown says BatchNorm out and
    the MAC limit met, with no channel-pruning line."""
    from types import SimpleNamespace

    from edgeasc.export.report import RULES, budget_failures, report_markdown, size_report

    conv = SimpleNamespace(name="c", kind="conv", kernel="3x3", params=1200, nonzero_params=900, channels=[1, 2],
                           dense_channels=[1, 2])
    bn = SimpleNamespace(name="b", kind="batchnorm", kernel="", params=22, nonzero_params=22, channels=[11],
                         dense_channels=[11])
    stats = SimpleNamespace(layers=[conv, bn], macs=300_000_000, seconds=10.0, params=1222, nonzero_params=922,
                            bn_params=22, dense_params=1222, dense_macs=300_000_000, channel_plan=None)
    r = size_report(stats, "int8", RULES["dcase2024"], budget_bytes=1222)
    assert (r["macs_per_second"], r["macs_ok"], r["bytes_ok"], r["verdict"]) == (30e6, True, True, "PASS")
    assert budget_failures(r) == []
    r20 = size_report(stats, "fp16", RULES["dcase2020"], count_bn=False)
    assert [layer["counted_bytes"] for layer in r20["layers"]] == [1800, 0]
    md = report_markdown(r)
    assert "| MAC limit per second | 30,000,000 (met) |" in md and "before channel pruning" not in md
    assert "BatchNorm out, 2 bytes per value (fp16)." in report_markdown(r20)
    stats.macs = 12_345_678_900  # 1,234.5678900 M per second: the rounding of the third decimal shows
    assert budget_failures(size_report(stats, "int8", RULES["dcase2024"]))[-1] == (
        "MACs: 1,234.568 M per second > limit 30 M, 1,204.568 M (4015.2 %) over")


# ----------------------------------------------------------------------------- checkpoints never run code
def test_a_checkpoint_that_needs_python_objects_is_refused_in_one_plain_line(tmp_path):
    from edgeasc.train.checkpoint import CheckpointError, load_checkpoint

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    scalar = np.float64(1.0).__reduce__()[0]  # numpy.core or numpy._core, by numpy's version
    for name, payload, needed in (("numpy.pt", {"format": "edgeasc-checkpoint", "x": np.float64(1.0)},
                                   f"{scalar.__module__}.{scalar.__name__}"),
                                  ("evil.pt", {"format": "edgeasc-checkpoint", "x": Evil()}, "posix.system")):
        torch.save(payload, tmp_path / name)
        with pytest.raises(CheckpointError) as refused:
            load_checkpoint(tmp_path / name)
        assert str(refused.value) == (f"{tmp_path / name}: not a loadable edgeasc checkpoint (it needs the Python "
                                      f"object {needed}; edgeasc loads tensors and plain data only, never code)")
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "junk.pt").write_bytes(b"\x1b[1mnot a zip")
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(tmp_path / "junk.pt")
    assert "\x1b" not in str(refused.value) and "\n" not in str(refused.value)
