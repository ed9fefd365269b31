"""The DCASE 2024/25 recipe (--recipe d24) next to the 2020 one: the learning rate at pinned
steps, the recipe's table and what overrides it, augmentations, bad values in one line; the
macro-average accuracy and device groups on a hand-made confusion; the winners' distillation
loss on fixed logits; teacher logits from a file."""

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_cli_here, synthetic_scenes
from edgeasc.errors import ConfigError
from edgeasc.train.config import TrainConfig, resolve_train_config
from edgeasc.train.schedule import LRSchedule, cosine_lr, lr_at, steps_per_epoch

DATA = {"dataset": "/data/tau22"}
TINY = ["--preset", "demo", "--width", "4", "--seconds", "1", "--batch-size", "4", "--feature-workers", "1",
        "--prune-ratio", "0", "--prune-epochs", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    synthetic_scenes(tmp_path_factory, root / "scenes", seed=5)
    return root


def train_here(data, out, *extra):
    return run_cli_here("train", str(data / "scenes"), *TINY, "--cache-dir", str(data / "cache"), "--out", str(out),
                        *extra)


# ----------------------------------------------------------------------------- the schedules
def test_cosine_lr_at_pinned_steps_of_the_d24_run():
    cfg = resolve_train_config({**DATA, "recipe": "d24"})
    spe = steps_per_epoch(139_620, 256)  # 545 full batches (the short last one is dropped)
    assert spe == 545
    s = LRSchedule.from_config(cfg, spe)
    total = 150 * 545
    assert (s.warmup_steps, s.total_steps, s.per_step) == (2000, total, True)
    assert s.at(0, 0) == 0.0                       # warm-up start: the first step takes 0, as in the reference
    assert s.at(0, 1) == 0.005 / 2000
    assert s.at(1, 1000 - 545) == 0.0025           # half-way up (step 1000)
    assert s.at(3, 2000 - 3 * 545) == 0.005        # the peak, at the end of the warm-up
    middle = 2000 + (total - 2000) // 2            # total - 2000 is even: exactly half-way down
    assert s.at(middle // 545, middle % 545) == 0.0025
    last = total - 1
    assert s.at(149, 544) == 0.005 * 0.5 * (1 + math.cos(math.pi * (last - 2000) / (total - 2000)))
    assert 0 < s.at(149, 544) < 1e-11              # the last step: all but 0
    assert s.at(150, 0) == 0.0                     # 0 exactly at the end of --epochs
    # one rate per step, falling monotonically after the warm-up
    down = [cosine_lr(1.0, k, 3, 10) for k in range(3, 11)]
    assert down == sorted(down, reverse=True) and down[0] == 1.0 and down[-1] == 0.0


def test_hold_linear_is_the_2020_schedule():
    cfg = TrainConfig()
    s = LRSchedule.from_config(cfg, 7)
    assert not s.per_step and s.at(0, 6) == 1e-4
    assert [s.at(e) for e in range(400)] == [lr_at(cfg, e) for e in range(400)]
    assert (s.at(49), s.at(150), s.at(249), s.at(250)) == (1e-4, 1e-4 * (1 - 100 / 200), 1e-4 * (1 - 199 / 200), 1e-6)
    # --epochs does not move the paper's epochs (a run extended by --resume stays one run); the
    # start line says when the run ends before the decay does
    short = resolve_train_config({**DATA, "epochs": 100})
    assert (short.lr_hold, short.lr_decay_end, short.lr_final) == (50, 250, 1e-6)
    assert LRSchedule.from_config(short, 1).line() == (
        "lr schedule: 0.0001 held for 50 epochs, linear to 0 at epoch 250, then 1e-06 (of 100 epochs), set every "
        "epoch; the run ends before the decay does, at 7.55e-05 (--lr-hold, --lr-decay-end)")
    assert LRSchedule.from_config(TrainConfig(), 1).line().endswith("(of 400 epochs), set every epoch")


# ----------------------------------------------------------------------------- the recipes' tables
D20 = dict(recipe="d20", optimizer="adam", lr=1e-4, weight_decay=0.0, schedule="hold-linear", lr_hold=50,
           lr_decay_end=250, lr_final=1e-6, warmup_steps=None, warmup_epochs=None, batch_size=10, epochs=400,
           freq_mask=0, roll=50, time_roll=None, freq_mixstyle=None, mixup_alpha=0.3)
D24 = dict(D20, recipe="d24", optimizer="adamw", lr=0.005, weight_decay=1e-4, schedule="cosine", warmup_steps=2000,
           batch_size=256, epochs=150, freq_mask=48, roll=None, time_roll=0.1, freq_mixstyle="0.4,0.3",
           mixup_alpha=0.0)


@pytest.mark.parametrize("recipe,table", [("d20", D20), ("d24", D24)])
def test_the_recipe_table(recipe, table, tmp_path):
    cfg = resolve_train_config({**DATA} if recipe == "d20" else {**DATA, "recipe": recipe})
    assert {k: getattr(cfg, k) for k in table} == table
    toml = tmp_path / "run.toml"
    toml.write_text(f'[train]\nrecipe = "{recipe}"\n')
    assert {k: getattr(resolve_train_config({**DATA}, toml), k) for k in table} == table


def test_explicit_values_override_the_recipe(tmp_path):
    given = dict(optimizer="adam", lr=0.001, weight_decay=0.0, batch_size=64, epochs=10, warmup_epochs=2.5,
                 freq_mask=8, roll=20, freq_mixstyle="0.2,0.5", mixup_alpha=0.3)
    cfg = resolve_train_config({**DATA, "recipe": "d24", **given})
    assert {k: getattr(cfg, k) for k in given} == given
    assert cfg.warmup_steps is None and cfg.time_roll is None and cfg.schedule == "cosine"  # the other unit goes
    toml = tmp_path / "run.toml"
    toml.write_text('recipe = "d24"\nwarmup-steps = 10\ntime-roll = 0.25\n')
    cfg = resolve_train_config({**DATA, "batch_size": 32}, toml)
    assert (cfg.warmup_steps, cfg.time_roll, cfg.roll, cfg.batch_size, cfg.lr) == (10, 0.25, None, 32, 0.005)
    # back to the 2020 schedule inside d24: its defaults, scaled to the recipe's epochs
    cfg = resolve_train_config({**DATA, "recipe": "d24", "schedule": "hold-linear", "lr_decay_end": 150})
    assert (cfg.schedule, cfg.lr_hold, cfg.lr_decay_end, cfg.optimizer) == ("hold-linear", 50, 150, "adamw")


BAD = [
    (["--recipe", "d99"], "--recipe must be one of d20, d24, got 'd99'"),
    (["--optimizer", "sgd"], "--optimizer must be one of adam, adamw, got 'sgd'"),
    (["--schedule", "step"], "--schedule must be one of hold-linear, cosine, got 'step'"),
    (["--weight-decay", "-1"], "weight-decay must be a finite number in [0, 1], got -1.0"),
    (["--weight-decay", "nan"], "weight-decay must be a finite number in [0, 1], got nan"),
    (["--recipe", "d24", "--warmup-steps", "-1"], "warmup-steps must be an integer >= 0, got -1"),
    (["--recipe", "d24", "--warmup-epochs", "inf"], "warmup-epochs must be a finite number in [0, 1e+06], got inf"),
    (["--freq-mask", "-2"], "freq-mask must be an integer >= 0, got -2"),
    (["--time-roll", "-0.1"], "time-roll must be a finite number in [0, 600], got -0.1"),
    (["--recipe", "d24", "--warmup-steps", "5", "--warmup-epochs", "1"],
     "give --warmup-steps or --warmup-epochs, not both"),
    (["--lr-hold", "30", "--lr-decay-end", "20"],
     "--lr-decay-end 20 is before --lr-hold 30: the linear decay ends after the held rate"),
    (["--recipe", "d24", "--lr-hold", "5"], "--lr-hold does nothing without --schedule hold-linear"),
    (["--recipe", "d24", "--lr-final", "1e-5"],
     "--lr-final does nothing without --schedule hold-linear (cosine ends at 0)"),
    (["--warmup-epochs", "2"], "--warmup-epochs does nothing without --schedule cosine"),
]


@pytest.mark.parametrize("extra,message", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_recipe_values_are_one_line(data, tmp_path, extra, message):
    proc = train_here(data, tmp_path / "run", *extra)
    assert_one_line_error(proc, 2, message)
    assert not (tmp_path / "run").exists()


def test_d24_needs_a_dataset_and_a_warm_up_inside_the_run(data, tmp_path):
    assert_one_line_error(run_cli_here("train", "--recipe", "d24"), 2,
                          "--recipe d24 trains on a real dataset (batch 256, 150 epochs): give DATASET")
    # 17 training clips in batches of 4: 4 steps per epoch, 8 in 2 epochs
    proc = train_here(data, tmp_path / "run", "--recipe", "d24", "--epochs", "2", "--json")
    assert_one_line_error(proc, 2, "--warmup-steps 2000 is not shorter than the run's 8 optimiser steps "
                                   "(--epochs 2 × 4 steps of --batch-size 4)")
    proc = train_here(data, tmp_path / "run", "--recipe", "d24", "--epochs", "2", "--warmup-steps", "1",
                      "--freq-mask", "300", "--json")
    assert_one_line_error(proc, 2, "--freq-mask 300 is more than the 256 mel bins of the features")


def test_a_d24_run_sets_the_rate_every_step_and_records_it(data, tmp_path):
    run = tmp_path / "run"
    proc = train_here(data, run, "--recipe", "d24", "--epochs", "2", "--warmup-epochs", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert ("recipe d24: adamw (weight decay 0.0001), batch 4; lr schedule: linear warm-up 0 → 0.005 over 2 steps "
            "(0.50 epochs), then cosine to 0 at step 8 (2 epochs × 4 steps), set every step") in proc.stdout
    assert "final macro-average accuracy (class-wise mean)" in proc.stdout
    config = json.loads((run / "config.json").read_text())
    assert config["schedule"] == {"kind": "cosine", "lr": 0.005, "epochs": 2, "steps_per_epoch": 4, "per": "step",
                                  "warmup_steps": 2, "total_steps": 8}
    assert config["augmentation"] == {"roll_frames": 4, "time_roll": 0.1, "freq_mask": 48,
                                      "freq_mixstyle": "0.4,0.3", "mixup_alpha": 0.0}
    assert (config["train"]["amp"], config["train"]["channels_last"]) == (False, False)  # automatic: off on a CPU
    s = LRSchedule(**{k: v for k, v in config["schedule"].items() if k not in ("per", "total_steps")})
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["lr"] for m in metrics] == [0.0, s.at(1, 0)] == [0.0, 0.005 * 0.5 * (1 + math.cos(math.pi / 3))]
    last = torch.load(run / "checkpoint-last.pt", weights_only=True)
    group = last["optimizer"]["param_groups"][0]
    # the rate of the very last step: set per step, not per epoch; AdamW's decoupled decay
    assert group["lr"] == s.at(1, 3) == cosine_lr(0.005, 7, 2, 8) and group["weight_decay"] == 1e-4
    # a cosine run ends at 0 at its planned epochs: extending it would change every step's rate
    proc = train_here(data, run, "--recipe", "d24", "--epochs", "3", "--warmup-epochs", "0.5", "--resume", "--json")
    assert_one_line_error(proc, 2, f"{run} was planned for --epochs 2: its cosine schedule ends at 0 there, and "
                                   "--epochs 3 would change the rate of every step (resume with --epochs 2)")
    summary = json.loads((run / "summary.json").read_text())
    from edgeasc.runtime.scores import macro_accuracy

    assert summary["recipe"] == "d24" and summary["final"]["macro_accuracy"] == macro_accuracy(
        summary["final"]["confusion"])
    ev = run_cli_here("eval", str(run), "--cache-dir", str(data / "cache"), "--json")
    assert ev.returncode == 0, ev.stderr
    result = json.loads(ev.stdout)
    assert result["macro_accuracy"] == summary["final"]["macro_accuracy"]
    assert result["device_groups"]["real"] == sum(result["per_device"].values()) / len(result["per_device"])
    assert set(result["per_device"]) <= {"a", "b", "c"} and result["other_devices"] == []
    shown = run_cli_here("eval", str(run), "--cache-dir", str(data / "cache"))
    assert f"macro-average (class-wise) {100 * result['macro_accuracy']:.2f} %" in shown.stdout
    assert "mean, DCASE real (a, b, c)" in shown.stdout


def test_time_roll_in_frames_and_frequency_masking():
    from edgeasc.data.loader import freq_mask
    from edgeasc.train.loop import roll_frames

    assert roll_frames(TrainConfig(time_roll=0.1, roll=None), {"sample_rate": 22050, "hop_length": 512}) == 4
    assert roll_frames(TrainConfig(time_roll=0.1, roll=None), {"sample_rate": 32000, "hop_length": 500}) == 6
    # rounded down: never more than the seconds asked for (8.82 frames -> 8)
    assert roll_frames(TrainConfig(time_roll=0.1, roll=None), {"sample_rate": 44100, "hop_length": 500}) == 8
    assert roll_frames(TrainConfig(), {"sample_rate": 22050, "hop_length": 512}) == 50
    x = torch.ones(64, 2, 256, 5)
    y = freq_mask(x, np.random.default_rng(0), 48)
    widths = []
    for clip in y:
        zero = (clip == 0).all(dim=(0, 2)).numpy()
        assert ((clip == 0) | (clip == 1)).all() and (clip[:, ~zero] == 1).all()
        bins = np.flatnonzero(zero)
        widths.append(len(bins))
        if len(bins):
            assert (np.diff(bins) == 1).all()   # one contiguous band
    assert max(widths) <= 47 and min(widths) == 0 and len(set(widths)) > 20
    assert freq_mask(x, np.random.default_rng(0), 0) is x


# ----------------------------------------------------------------------------- macro accuracy
def test_scores_on_a_hand_made_confusion():
    from edgeasc.runtime.scores import scores

    confusion = [[3, 1, 0, 0],   # 3/4
                 [0, 0, 0, 0],   # no clip: no accuracy, left out of the mean
                 [1, 0, 1, 0],   # 1/2
                 [0, 0, 0, 1]]   # 1/1
    correct = {"a": 3, "b": 1, "s1": 1, "s4": 0, "phone": 1, "s5": 0}
    total = {"a": 4, "b": 2, "s1": 1, "s4": 1, "phone": 2, "s5": 0}
    r = scores(confusion, ["w", "x", "y", "z"], correct, total)
    assert r["accuracy"] == float(Fraction(5, 7)) and r["n"] == 7
    assert r["macro_accuracy"] == float((Fraction(3, 4) + Fraction(1, 2) + 1) / 3) == 0.75
    assert r["per_class"] == {"w": 0.75, "x": None, "y": 0.5, "z": 1.0} and r["classes_without_clips"] == ["x"]
    assert r["per_device"] == {"a": 0.75, "b": 0.5, "s1": 1.0, "s4": 0.0, "phone": 0.5}  # s5: no clip
    assert r["device_groups"] == {"real": float((Fraction(3, 4) + Fraction(1, 2)) / 2), "seen": 1.0, "unseen": 0.0}
    assert r["other_devices"] == ["phone"]
    empty = scores([[0, 0], [0, 0]], ["p", "q"], {}, {})
    assert (empty["accuracy"], empty["macro_accuracy"], empty["device_groups"]) == (
        None, None, {"real": None, "seen": None, "unseen": None})
    with pytest.raises(ValueError):
        scores([[1, 0]], ["p", "q"], {}, {})


# ----------------------------------------------------------------------------- distillation
def test_the_winners_distillation_loss_on_fixed_logits():
    """--kd-weight 0.98 --kd-temperature 2: 0.02·CE + 0.98·T²·KL(softmax(t/T) ‖ softmax(s/T)),
    KL summed over classes and averaged over the batch, computed here with plain math."""
    from edgeasc.data.loader import mixup_cross_entropy
    from edgeasc.train.distill import distillation_loss, soft_targets

    s = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    t = [[2.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
    y = [1, 2]

    def softmax(v, temp=1.0):
        e = [math.exp(a / temp) for a in v]
        return [a / sum(e) for a in e]

    ce = sum(-math.log(softmax(si)[yi]) for si, yi in zip(s, y, strict=True)) / 2
    kl = sum(sum(p * math.log(p / q) for p, q in zip(softmax(ti, 2), softmax(si, 2), strict=True)) for si, ti in zip(s, t, strict=True)) / 2
    expected = 0.02 * ce + 0.98 * 4 * kl
    student, labels = torch.tensor(s), torch.tensor(y)
    hard = mixup_cross_entropy(student, labels, labels, torch.ones(2))  # no mixup: the plain CE
    got = float(distillation_loss(student, hard, soft_targets(torch.tensor(t), 2.0), 0.98, 2.0))
    assert got == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(1.5146040, abs=1e-6)
    # the CPJKU 2023-25 form (KLDivLoss(reduction="none").mean()): the element-wise KL terms
    # averaged over batch AND classes, what the d24 recipe uses by default
    elements = [p * math.log(p / q) for si, ti in zip(s, t, strict=True)
                for p, q in zip(softmax(ti, 2), softmax(si, 2), strict=True)]
    winners = 0.02 * ce + 0.98 * 4 * sum(elements) / len(elements)
    got = float(distillation_loss(student, hard, soft_targets(torch.tensor(t), 2.0), 0.98, 2.0, "elements"))
    assert got == pytest.approx(winners, rel=1e-6) and winners == pytest.approx(0.5084030, abs=1e-6)
    from edgeasc.train.config import resolve_train_config

    logits = {"dataset": "/d", "teacher_logits": "/t.csv"}
    assert resolve_train_config({**logits, "recipe": "d24"}).kd_reduction == "elements"
    assert resolve_train_config(logits).kd_reduction == "batch"
    assert resolve_train_config({**logits, "recipe": "d24", "kd_reduction": "batch"}).kd_reduction == "batch"
    with pytest.raises(ConfigError, match=r"^--kd-reduction must be one of batch, elements, got 'sum'$"):
        resolve_train_config({**logits, "kd_reduction": "sum"})


def _clips(data):
    from edgeasc.data.dcase import open_dataset

    ds = open_dataset(data / "scenes")
    return [c.name for c in ds.splits["train"]], ds.labels


def test_teacher_logits_from_a_csv_or_npz(data, tmp_path):
    from edgeasc.train.distill import load_teacher_logits

    clips, labels = _clips(data)
    rows = np.arange(len(clips) * 3, dtype=np.float32).reshape(-1, 3)
    csv = tmp_path / "t.csv"  # columns in another order, an extra clip of another split, base names only
    csv.write_text("filename\t" + "\t".join(labels[::-1]) + "\n"
                   + "".join(f"{c.rsplit('/', 1)[-1]}\t" + "\t".join(str(v) for v in r[::-1]) + "\n"
                             for c, r in zip(clips[::-1], rows[::-1], strict=True))
                   + "other.wav\t1\t2\t3\n")
    got = load_teacher_logits(csv, clips, labels)
    assert np.array_equal(got.logits, rows) and got.record()["clips"] == len(clips) and got.format == "csv"
    npz = tmp_path / "t.npz"
    np.savez(npz, filenames=np.array(clips), logits=rows, labels=np.array(labels))
    assert np.array_equal(load_teacher_logits(npz, clips, labels).logits, rows)


def _bad_files(tmp_path, clips, labels):
    rows = np.zeros((len(clips), 3), np.float32)
    nan = rows.copy()
    nan[2, 1] = np.nan
    cases = {"missing.npz": dict(filenames=np.array(clips[1:]), logits=rows[1:]),
             "classes.npz": dict(filenames=np.array(clips), logits=np.zeros((len(clips), 4))),
             "nan.npz": dict(filenames=np.array(clips), logits=nan),
             "twice.npz": dict(filenames=np.array(clips[:1] + clips[:-1]), logits=rows),
             "order.npz": dict(filenames=np.array(clips), logits=rows, labels=np.array(labels[::-1])),
             "arrays.npz": dict(names=np.array(clips))}
    for name, arrays in cases.items():
        np.savez(tmp_path / name, **arrays)
    (tmp_path / "header.csv").write_text("clip,a,b,c\n")
    (tmp_path / "t.json").write_text("{}")
    return {"missing.npz": f"no logits for 1 of the {len(clips)} training clips (first: {clips[0]!r})",
            "classes.npz": "4 logits per clip, the dataset has 3 classes",
            "nan.npz": f"1 row(s) with a non-finite logit (first: {clips[2]!r})",
            "twice.npz": f"clip {clips[0]!r} is listed twice",
            "order.npz": f"classes {labels[::-1]} differ from the dataset's {labels}",
            "arrays.npz": "an .npz needs the arrays 'filenames' and 'logits', it has names",
            "header.csv": "the first column must be 'filename', got 'clip'",
            "t.json": "unknown format '.json': give a .csv, .npz or .pt file",
            "absent.csv": "no such file"}


def test_bad_teacher_logits_are_one_line(data, tmp_path):
    from edgeasc.train.distill import load_teacher_logits

    clips, labels = _clips(data)
    for name, message in _bad_files(tmp_path, clips, labels).items():
        with pytest.raises(ConfigError) as exc:
            load_teacher_logits(tmp_path / name, clips, labels)
        assert str(exc.value) == f"--teacher-logits {tmp_path / name}: {message}"
    proc = train_here(data, tmp_path / "run", "--epochs", "1", "--teacher-logits", str(tmp_path / "nan.npz"), "--json")
    assert_one_line_error(proc, 2, "non-finite logit")
    assert not (tmp_path / "run").exists()
    proc = train_here(data, tmp_path / "run", "--teacher-logits", str(tmp_path / "nan.npz"), "--teacher",
                      str(tmp_path))
    assert_one_line_error(proc, 2, "give --teacher runs or --teacher-logits, not both")


def test_a_run_distils_from_a_logits_file(data, tmp_path):
    clips, labels = _clips(data)
    rng = np.random.default_rng(0)
    npz = tmp_path / "teacher.npz"
    np.savez(npz, filenames=np.array(clips), logits=rng.normal(size=(len(clips), 3)).astype(np.float32))
    run = tmp_path / "run"
    proc = train_here(data, run, "--epochs", "1", "--teacher-logits", str(npz), "--kd-weight", "0.98", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["kd"] == {"weight": 0.98, "temperature": 2.0, "targets": "cached", "reduction": "batch"}
    assert summary["teacher_logits"]["format"] == "npz" and summary["teacher_logits"]["clips"] == len(clips)
    info = run_cli_here("info", str(run))
    assert f"teacher logits: {npz}" in info.stdout and f"{len(clips)} clips)" in info.stdout
    assert "distillation: weight 0.98, temperature 2.0, cached targets" in info.stdout
    # other logits in the file, another student: the targets are the file's
    np.savez(npz, filenames=np.array(clips), logits=rng.normal(size=(len(clips), 3)).astype(np.float32))
    other = train_here(data, tmp_path / "other", "--epochs", "1", "--teacher-logits", str(npz), "--kd-weight",
                       "0.98", "--json")
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout)["final"]["loss"] != summary["final"]["loss"]
    # the objective is part of the run: a resume must distil from the same file (by content)
    again = train_here(data, run, "--epochs", "1", "--teacher-logits", str(npz), "--kd-weight", "0.98", "--resume",
                       "--json")
    assert_one_line_error(again, 2, f"{run} must resume with the --teacher-logits file it was trained with ({npz})")


def test_cuda_trains_in_bf16_with_channels_last_unless_told_otherwise(monkeypatch):
    """--amp/--channels-last default to None (automatic): on for CUDA, where bf16 autocast with
    channels_last trained 2.3-2.4x faster than fp32 on an H200; bf16 needs no grad scaler, fp16
    (a GPU without bf16) does."""
    from edgeasc.train.config import resolve_train_config
    from edgeasc.train.loop import amp_dtype

    cfg = resolve_train_config({"dataset": "/d"})
    assert (cfg.amp, cfg.channels_last) == (None, None)
    assert resolve_train_config({"dataset": "/d", "amp": False}).amp is False
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert amp_dtype(torch.device("cuda")) == torch.bfloat16 and amp_dtype(torch.device("cpu")) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert amp_dtype(torch.device("cuda")) == torch.float16


def test_the_organisers_tensor_of_logits_in_meta_csv_order(data, tmp_path):
    """CPJKU's released teacher logits (`ensemble_logits.pt`): one float tensor, a row per line
    of the dataset's meta.csv in its order, classes in sorted order (LabelEncoder). The same
    logits as a keyed .npz give the same targets, so the same run, to the last bit."""
    from edgeasc.data.dcase import meta_csv_order
    from edgeasc.train.distill import load_teacher_logits

    clips, labels = _clips(data)
    order = meta_csv_order(data / "scenes")
    assert order and set(clips) <= set(order) and len(order) > len(clips)  # evaluate rows too
    rng = np.random.default_rng(7)
    by_name = {name: rng.normal(size=len(labels)) for name in order}
    encoded = sorted(labels)
    tensor = torch.tensor([[by_name[n][labels.index(c)] for c in encoded] for n in order])  # meta.csv order
    torch.save(tensor, tmp_path / "ensemble_logits.pt")
    np.savez(tmp_path / "same.npz", filenames=np.array(clips), logits=np.stack([by_name[c] for c in clips]))
    pt = load_teacher_logits(tmp_path / "ensemble_logits.pt", clips, labels, order)
    npz = load_teacher_logits(tmp_path / "same.npz", clips, labels, order)
    assert pt.format == "pt" and np.array_equal(pt.logits, npz.logits)
    runs = {}
    for name in ("ensemble_logits.pt", "same.npz"):
        proc = train_here(data, tmp_path / name.split(".")[1], "--epochs", "1", "--teacher-logits",
                          str(tmp_path / name), "--kd-weight", "0.98", "--json")
        assert proc.returncode == 0, proc.stderr
        runs[name] = json.loads(proc.stdout)["final"]["loss"]
    assert runs["ensemble_logits.pt"] == runs["same.npz"]
    # refusals, one line each
    for bad, needle in ((torch.zeros(len(order) - 1, len(labels)), f"the dataset's meta.csv lists {len(order)}"),
                        (torch.zeros(len(order), len(labels) + 1), "classes"),
                        ({"logits": tensor}, "holds a dict, not one tensor"),
                        (torch.zeros(len(order), len(labels), dtype=torch.complex64), "real numbers")):
        torch.save(bad, tmp_path / "bad.pt")
        with pytest.raises(ConfigError, match=needle):
            load_teacher_logits(tmp_path / "bad.pt", clips, labels, order)
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a readable tensor file"):
        load_teacher_logits(tmp_path / "junk.pt", clips, labels, order)
    with pytest.raises(ConfigError, match="has no meta.csv"):
        load_teacher_logits(tmp_path / "ensemble_logits.pt", clips, labels, None)
