"""Options that would do nothing are refused, all of them in this file: CASES for the training
settings (a new training option must be classified here, it acts alone or it needs another, or
this file fails) and COMMAND_CASES for the commands' own flags (--force, --resume, bench --clip)."""

from dataclasses import fields

import pytest

from edgeasc.errors import ConfigError
from edgeasc.train.config import IDLE_OPTIONS, TrainConfig, resolve_train_config

DATA = {"dataset": "/data/scenes", "preset": "d20-damped"}  # a preset that does not prune
# option given alone -> (its value, the exact refusal, what makes it act)
CASES = {
    "swa_every": (5, "--swa-every does nothing without --swa-start (the epoch weight averaging starts)",
                  {"swa_start": 10}),
    "prune_method": ("gate", "--prune-method does nothing without a magnitude target (--prune-target, "
                     "--prune-ratio, or a preset that prunes)", {"prune_target": 50_000}),
    "prune_monotone": (True, "--prune-monotone does nothing without a magnitude target (--prune-target, "
                       "--prune-ratio, or a preset that prunes)", {"prune_ratio": 0.5}),
    "prune_schedule": ("linear", "--prune-schedule does nothing without a magnitude target (--prune-target, "
                       "--prune-ratio, or a preset that prunes) or channel pruning (--macs-target, "
                       "--params-target or --fit)", {"macs_target": "50%"}),
    "prune_epochs": (10, "--prune-epochs does nothing without a magnitude target (--prune-target, "
                     "--prune-ratio, or a preset that prunes) or channel pruning (--macs-target, "
                     "--params-target or --fit)", {"preset": "d20-damped-pruned-250k"}),
    "channel_importance": ("bn", "--channel-importance does nothing without channel pruning (--macs-target, "
                           "--params-target or --fit)", {"params_target": 40_000}),
    "channel_multiple": (8, "--channel-multiple does nothing without channel pruning (--macs-target, "
                         "--params-target or --fit)", {"fit": "dcase2024"}),
    "lr_hold": (5, "--lr-hold does nothing without --schedule hold-linear", {"schedule": "hold-linear"}),
    "lr_decay_end": (60, "--lr-decay-end does nothing without --schedule hold-linear", {"schedule": "hold-linear"}),
    "lr_final": (1e-5, "--lr-final does nothing without --schedule hold-linear (cosine ends at 0)",
                 {"schedule": "hold-linear"}),
    "warmup_steps": (100, "--warmup-steps does nothing without --schedule cosine", {"schedule": "cosine"}),
    "warmup_epochs": (2.5, "--warmup-epochs does nothing without --schedule cosine", {"schedule": "cosine"}),
    "kd_weight": (0.9, "--kd-weight without --teacher: name the run(s) to distil from", None),
    "kd_temperature": (2.0, "--kd-temperature without --teacher: name the run(s) to distil from", None),
    "kd_targets": ("online", "--kd-targets without --teacher: name the run(s) to distil from", None),
    "dir_p": (0.3, "--dir-p does nothing without --dir-folder (the impulse responses)",
              {"dir_folder": "/irs/micirp"}),
    "kd_reduction": ("elements", "--kd-reduction does nothing without --teacher or --teacher-logits",
                     {"teacher_logits": "/teachers/logits.csv"}),
}
# where the option acts by default: the setting in which it is idle
CONTEXT = {"lr_hold": {"schedule": "cosine"}, "lr_decay_end": {"schedule": "cosine"},
           "lr_final": {"schedule": "cosine"}}
# every other setting acts on its own (or is the requirement of another)
ACTS_ALONE = {"dataset", "split", "preset", "variant", "rho", "width", "depth_restriction", "decomp_factor",
              "damping_floor", "damp_stem", "prune_target", "prune_ratio", "macs_target", "params_target",
              "teachers", "teacher_logits", "fit", "swa_start", "epochs", "batch_size", "accumulate", "lr",
              "recipe", "optimizer", "weight_decay", "schedule", "freq_mask", "time_roll", "mixup_alpha",
              "freq_mixstyle", "dir_folder", "roll", "seed", "seconds", "frontend",
              "cache_dir", "feature_workers", "workers", "device", "amp", "channels_last", "out"}


def test_every_training_option_is_classified():
    assert set(CASES) | ACTS_ALONE == {f.name for f in fields(TrainConfig)}
    assert not set(CASES) & ACTS_ALONE
    assert set(IDLE_OPTIONS) <= set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_option_without_what_it_needs_is_refused_in_one_line(name):
    value, message, _ = CASES[name]
    with pytest.raises(ConfigError) as exc:
        resolve_train_config({**DATA, **CONTEXT.get(name, {}), name: value})
    assert str(exc.value) == message


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if c[2] is not None))
def test_the_same_option_with_what_it_needs_is_taken(name):
    value, _, needs = CASES[name]
    cfg = resolve_train_config({**DATA, **CONTEXT.get(name, {}), name: value, **needs})
    assert getattr(cfg, name) == value


def test_a_preset_that_prunes_is_a_target_and_channel_pruning_replaces_it():
    assert resolve_train_config({**DATA, "preset": "d20-damped-pruned-250k", "prune_method": "gate"}).prune_method \
        == "gate"
    with pytest.raises(ConfigError, match="^--prune-monotone does nothing without a magnitude target"):
        resolve_train_config({**DATA, "preset": "d20-damped-pruned-250k", "macs_target": "50%",
                              "prune_monotone": True})


def test_the_demo_defaults_prune_so_its_options_act():
    assert resolve_train_config({"prune_schedule": "cubic"}).prune_schedule == "cubic"


# The commands' own options, refused before any file is read (so no model or data is needed):
# arguments -> the exact refusal
COMMAND_CASES = {
    "train --resume --force": (("train", "--resume", "--force", "--out", "nowhere"),
                               "--resume continues the run in --out, --force starts it over: give one of them"),
    "predict --force without --csv": (("predict", "m.onnx", "a.wav", "--force"),
                                      "--force does nothing without --csv (it lets --csv replace a file predict did "
                                      "not write)"),
    "bench --clip --batch": (("bench", "m.onnx", "--clip", "a.wav", "--batch", "4"), "--batch does nothing with --clip"),
    "bench --clip --seconds": (("bench", "m.onnx", "--clip", "a.wav", "--seconds", "2"),
                               "--seconds does nothing with --clip"),
    "bench --clip --no-arena": (("bench", "m.onnx", "--clip", "a.wav", "--no-arena"),
                                "--no-arena does nothing with --clip"),
    "export --calibration without int8": (("export", "run", "--precision", "fp16", "--calibration", "data"),
                                          "--calibration only applies to --precision int8"),
    "bench --top without --profile": (("bench", "m.onnx", "--top", "3"),
                                      "--top does nothing without --profile (the nodes of the profile to show)"),
    "bench --force without --profile-out": (("bench", "m.onnx", "--profile", "--force"),
                                            "--force does nothing without --profile-out (it lets the trace replace "
                                            "a file that is not an onnxruntime trace)"),
    "listen --threshold without --events": (("listen", "m.onnx", "-", "--threshold", "0.7"),
                                            "--threshold does nothing without --events (it decides when the scene "
                                            "changes)"),
    "listen --hold without --events": (("listen", "m.onnx", "-", "--hold", "5"),
                                       "--hold does nothing without --events (it decides when the scene changes)"),
}


@pytest.mark.parametrize("case", sorted(COMMAND_CASES))
def test_a_command_option_that_would_do_nothing_is_refused_in_one_line(case, tmp_path, monkeypatch):
    from conftest import assert_one_line_error, run_cli_here

    monkeypatch.chdir(tmp_path)  # nothing of these names exists: the refusal comes before any file is read
    args, message = COMMAND_CASES[case]
    proc = run_cli_here(*args)
    assert_one_line_error(proc, 2, f"edgeasc: error: {message}")
    assert not any(tmp_path.iterdir())
