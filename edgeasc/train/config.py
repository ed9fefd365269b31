"""The resolved configuration of a training run: paper defaults, or a fast demo setup when
no dataset is given; then a TOML file; then command-line flags (last wins)."""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from edgeasc.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class TrainConfig:
    dataset: str | None = None
    split: int | None = None  # TAU 2022 Mobile train subset, percent (split_setup/split{N}.csv)
    preset: str | None = None
    # model overrides (None = the preset's value)
    variant: str | None = None
    rho: int | None = None
    width: int | None = None
    depth_restriction: str | None = None
    decomp_factor: int | None = None
    damping_floor: float | None = None
    damp_stem: bool | None = None
    # pruning
    prune_target: int | None = None
    prune_ratio: float | None = None
    prune_schedule: str = "exp"
    prune_epochs: int = 100
    prune_monotone: bool = False
    prune_method: str = "magnitude"  # or "gate" (compress/gate.py): 1x1 convs only, learned scores
    # channel pruning (compress/structured.py): MACs per clip ("25%" or "460M") and/or all parameters
    macs_target: str | None = None
    params_target: int | None = None
    channel_importance: str = "l2"
    channel_multiple: int = 16
    # knowledge distillation (distill.py): finished runs whose mean logits teach the student
    teachers: tuple[str, ...] = ()
    kd_weight: float | None = None        # None: 0.5 with teachers
    kd_temperature: float | None = None   # None: 2 with teachers
    kd_targets: str | None = None         # cached (default) | online
    teacher_logits: str | None = None     # a file of pre-computed teacher logits per clip (distill.py)
    kd_reduction: str = "batch"           # batch | elements (the CPJKU 2023-25 form: KD_REDUCTIONS)
    # budget fit (compress/fit.py): a start network and channel pruning to a rule set's limits
    fit: str | None = None
    # stochastic weight averaging (swa.py): every swa_every-th epoch from epoch swa_start (1-based) on
    swa_start: int | None = None
    swa_every: int = 3
    # optimisation: the recipe (RECIPES) fills these; the dataclass defaults are the 2020 paper's
    # (docs/method.md §3)
    recipe: str = "d20"
    optimizer: str = "adam"   # adam | adamw
    weight_decay: float = 0.0
    schedule: str = "hold-linear"  # hold-linear (per epoch, 2020) | cosine (per step, 2024/25)
    epochs: int = 400
    batch_size: int = 10
    accumulate: int = 1       # gradient accumulation: each process's batch in this many parts
    lr: float = 1e-4          # hold-linear: the held rate; cosine: the peak
    lr_hold: int = 50         # hold-linear: constant lr for epochs < lr_hold
    lr_decay_end: int = 250   # then linear to 0 at this epoch, then lr_final
    lr_final: float = 1e-6
    warmup_steps: int | None = None     # cosine: linear warm-up over this many optimiser steps,
    warmup_epochs: float | None = None  # or over this many epochs' steps
    mixup_alpha: float = 0.3
    freq_mixstyle: str | None = None  # "P,ALPHA", e.g. "0.4,0.3" (data/loader.freq_mixstyle)
    freq_mask: int = 0        # mask up to this many mel bins per clip (data/loader.freq_mask)
    # device impulse-response augmentation (data/impulse.py): reference-device clips convolved with
    # a response from this folder with probability dir_p (the CPJKU 2023 submissions' 0.6)
    dir_folder: str | None = None
    dir_p: float = 0.6
    roll: int | None = 50     # time roll of up to this many frames; None: from time_roll
    time_roll: float | None = None  # time roll of up to this many seconds (frames: the run's hop)
    seed: int = 0
    # data and machinery
    frontend: str = "perceptual"  # a name in runtime.features.FRONTENDS: perceptual | d24 (the DCASE 2024/25 baselines')
    seconds: float | None = None  # None: the data's own clip length (data/cache.probe_clip_seconds)
    cache_dir: str | None = None
    feature_workers: int | None = None
    workers: int = 0
    device: str = "auto"
    # None = automatic: on for CUDA (bf16 autocast + channels_last trained CP-ResNets 2.3-2.4x
    # faster than fp32 on an H200; fp16 AMP alone 0-14 %), off on the CPU
    amp: bool | None = None
    channels_last: bool | None = None
    out: str = "runs/train"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Without a dataset: the built-in synthetic scenes and a small network that learns them in
# a couple of minutes on a laptop CPU (README states the numbers).
DEMO_DEFAULTS = dict(preset="demo", epochs=30, batch_size=8, lr=3e-3, lr_hold=10, lr_decay_end=30,
                     lr_final=1e-5, prune_epochs=15, out="runs/demo")

# A recipe is a table of defaults: flags and TOML keys still override each entry.
# d24: the DCASE 2024/2025 task-1 baselines (CPJKU/dcase2024_task1_baseline, run_training.py):
# AdamW, peak 0.005, weight decay 1e-4, 2000 warm-up steps then cosine to 0 per step,
# batch 256, 150 epochs, frequency masking up to 48 bins, roll up to 0.1 s, Freq-MixStyle
# p 0.4 α 0.3, and no mixup.
RECIPES: dict[str, dict[str, Any]] = {
    "d20": {},
    "d24": dict(optimizer="adamw", lr=0.005, weight_decay=1e-4, schedule="cosine", warmup_steps=2000,
                batch_size=256, epochs=150, freq_mask=48, time_roll=0.1, roll=None, freq_mixstyle="0.4,0.3",
                mixup_alpha=0.0, kd_reduction="elements"),
}
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("hold-linear", "cosine")

_FIELDS = {f.name: f for f in fields(TrainConfig)}


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    data = data.get("train", data)  # a [train] table or top-level keys
    data = {k.replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"{path}: unknown keys {', '.join(unknown)}")
    return data


def resolve_train_config(cli: dict[str, Any], config_file: str | Path | None = None) -> TrainConfig:
    """Defaults (paper or demo) <- config file <- explicit flags (None = not given)."""
    given = load_toml(config_file) if config_file else {}
    given.update({k: v for k, v in cli.items() if v is not None})
    base = {} if given.get("dataset") else dict(DEMO_DEFAULTS)
    _resolve_recipe(given, base)
    if given.get("fit") is not None:
        _resolve_fit(given, base)
    values = {**base, **given}
    _frontend_of_preset(values)
    _resolve_teachers(values)
    if values.get("prune_target") is not None and values.get("prune_ratio") is not None:
        raise ConfigError("give --prune-target or --prune-ratio, not both")
    structured = [f"--{k.replace('_', '-')}" for k in ("macs_target", "params_target") if values.get(k) is not None]
    if structured and values.get("prune_ratio") is not None:
        raise ConfigError(f"{' and '.join(structured)} cannot be combined with --prune-ratio (a share of the dense "
                          "network's conv weights); after channel pruning use --prune-target N non-zero parameters")
    if values.get("macs_target") is not None:
        from edgeasc.compress.structured import parse_macs_target

        values["macs_target"] = str(values["macs_target"])
        parse_macs_target(values["macs_target"])
    pt = values.get("params_target")
    if pt is not None and (not isinstance(pt, int) or isinstance(pt, bool) or pt < 1):
        raise ConfigError(f"--params-target must be a positive integer (all parameters), got {pt!r}")
    if values.get("freq_mixstyle") is not None:
        from edgeasc.data.loader import parse_freq_mixstyle

        values["freq_mixstyle"] = str(values["freq_mixstyle"])
        parse_freq_mixstyle(values["freq_mixstyle"])
    method = values.get("prune_method", "magnitude")
    if method not in ("magnitude", "gate"):
        raise ConfigError(f"--prune-method must be magnitude or gate, got {method!r}")
    if method == "gate" and (structured or values.get("prune_ratio") is not None):
        raise ConfigError("--prune-method gate takes --prune-target (non-zero parameters), not "
                          + (" or ".join(structured) if structured else "--prune-ratio"))
    from edgeasc.runtime.features import FRONTENDS

    if values.get("frontend", "perceptual") not in FRONTENDS:
        raise ConfigError(f"--frontend must be one of {', '.join(FRONTENDS)}, got {values['frontend']!r}")
    if values.get("channel_importance", "l2") not in ("l2", "bn"):
        raise ConfigError(f"--channel-importance must be l2 or bn, got {values['channel_importance']!r}")
    for name in ("epochs", "batch_size", "accumulate", "prune_epochs", "lr_hold", "lr_decay_end", "roll", "workers",
                 "seed", "channel_multiple", "swa_every", "warmup_steps", "freq_mask"):
        low = 1 if name in ("epochs", "batch_size", "accumulate", "channel_multiple", "swa_every") else 0
        v = values.get(name, getattr(TrainConfig, name))
        if v is None and name in ("roll", "warmup_steps"):
            continue
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise ConfigError(f"--{name.replace('_', '-')} must be an integer >= {low}, got {v!r}")
    swa = values.get("swa_start")
    if swa is not None and (not isinstance(swa, int) or isinstance(swa, bool) or swa < 1):
        raise ConfigError(f"--swa-start must be an epoch >= 1, got {swa!r}")
    for name in ("lr", "lr_final", "seconds"):
        v = values.get(name, getattr(TrainConfig, name))
        if v is None and name == "seconds":
            continue
        if not isinstance(v, int | float) or isinstance(v, bool) or not (math.isfinite(v) and v > 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be a finite number > 0, got {v!r}")
    for name in ("lr", "lr_final"):  # Adam's step is about lr: above 1 it overflows float32, not a schedule
        if values.get(name, getattr(TrainConfig, name)) > 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at most 1 (Adam), got {values[name]!r}")
    if (values.get("seconds") or 0) > 600:
        raise ConfigError(f"--seconds must be at most 600 (a clip, not a recording), got {values['seconds']!r}")
    for name, low, high in (("mixup_alpha", 0.0, 100.0), ("damping_floor", 0.0, 1.0), ("prune_ratio", 0.0, 1.0),
                            ("weight_decay", 0.0, 1.0), ("warmup_epochs", 0.0, 1e6), ("time_roll", 0.0, 600.0),
                            ("dir_p", 0.0, 1.0)):
        v = values.get(name, getattr(TrainConfig, name))
        if v is None and name not in ("mixup_alpha", "weight_decay", "dir_p"):
            continue
        if not isinstance(v, int | float) or isinstance(v, bool) or not (math.isfinite(v) and low <= v <= high):
            raise ConfigError(f"--{name.replace('_', '-')} must be a finite number in [{low:g}, {high:g}], got {v!r}")
    if values.get("lr_decay_end", TrainConfig.lr_decay_end) < values.get("lr_hold", TrainConfig.lr_hold):
        raise ConfigError(f"--lr-decay-end {values['lr_decay_end']} is before --lr-hold {values['lr_hold']}: the "
                          "linear decay ends after the held rate")
    if values.get("device", "auto") not in ("auto", "cpu", "cuda") and not str(values["device"]).startswith("cuda:"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {values['device']!r}")
    refuse_idle_options(given, values)
    if values.get("dir_folder") is not None and (not isinstance(values["dir_folder"], str | Path)
                                                 or not str(values["dir_folder"])):
        raise ConfigError(f"--dir-folder must be a folder, got {values['dir_folder']!r}")
    for name in ("dataset", "cache_dir", "dir_folder"):  # stored in checkpoints: must not depend on the working directory
        if values.get(name):
            values[name] = str(Path(values[name]).expanduser().resolve())
    try:
        return TrainConfig(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None


def _frontend_of_preset(values: dict[str, Any]) -> None:
    """A preset with a frontend of its own (cp-mobile-d24: the 2024 baselines' 32 kHz log-mel)
    trains on it unless --frontend is given: its network was designed for that input."""
    from edgeasc.models.presets import get_preset
    from edgeasc.runtime.features import frontend_name

    if values.get("frontend") is not None or values.get("preset") is None:
        return
    try:
        own = get_preset(values["preset"]).input_features
    except ConfigError:  # an unknown preset is refused where the network is resolved, with the list
        return
    if own is not None and frontend_name(own) is not None:
        values["frontend"] = frontend_name(own)


def _preset_prunes(values: dict[str, Any]) -> bool:
    from edgeasc.models.presets import get_preset

    try:
        return values.get("preset") is not None and get_preset(values["preset"]).prune_target is not None
    except ConfigError:  # an unknown preset is refused where the network is resolved, with the list
        return False


def _channel_pruning(v: dict[str, Any]) -> bool:
    return any(v.get(k) is not None for k in ("macs_target", "params_target", "fit"))


def _magnitude_pruning(v: dict[str, Any]) -> bool:
    # a preset's own target describes its dense network: it does not apply after channel pruning
    return (v.get("prune_target") is not None or v.get("prune_ratio") is not None
            or (_preset_prunes(v) and not _channel_pruning(v)))


_MAGNITUDE = "a magnitude target (--prune-target, --prune-ratio, or a preset that prunes)"
_CHANNELS = "channel pruning (--macs-target, --params-target or --fit)"
# An option that acts only together with another: given without it, the run would silently do
# nothing with it. option -> (what it needs, whether the run has that). kd options: distill.py.
IDLE_OPTIONS: dict[str, tuple[str, Any]] = {
    "swa_every": ("--swa-start (the epoch weight averaging starts)", lambda v: v.get("swa_start") is not None),
    "prune_method": (_MAGNITUDE, _magnitude_pruning),
    "prune_monotone": (_MAGNITUDE, _magnitude_pruning),
    "prune_schedule": (f"{_MAGNITUDE} or {_CHANNELS}", lambda v: _magnitude_pruning(v) or _channel_pruning(v)),
    "prune_epochs": (f"{_MAGNITUDE} or {_CHANNELS}", lambda v: _magnitude_pruning(v) or _channel_pruning(v)),
    "channel_importance": (_CHANNELS, _channel_pruning),
    "channel_multiple": (_CHANNELS, _channel_pruning),
    "lr_hold": ("--schedule hold-linear", lambda v: v.get("schedule", "hold-linear") == "hold-linear"),
    "lr_decay_end": ("--schedule hold-linear", lambda v: v.get("schedule", "hold-linear") == "hold-linear"),
    "lr_final": ("--schedule hold-linear (cosine ends at 0)", lambda v: v.get("schedule", "hold-linear") == "hold-linear"),
    "warmup_steps": ("--schedule cosine", lambda v: v.get("schedule") == "cosine"),
    "warmup_epochs": ("--schedule cosine", lambda v: v.get("schedule") == "cosine"),
    "dir_p": ("--dir-folder (the impulse responses)", lambda v: v.get("dir_folder") is not None),
    "kd_reduction": ("--teacher or --teacher-logits",
                     lambda v: bool(v.get("teachers")) or v.get("teacher_logits") is not None),
}


def refuse_idle_options(given: dict[str, Any], values: dict[str, Any]) -> None:
    """One line for the first option the user gave that this run would ignore."""
    for name, (needs, active) in IDLE_OPTIONS.items():
        if name in given and not active(values):
            raise ConfigError(f"--{name.replace('_', '-')} does nothing without {needs}")


def _resolve_recipe(given: dict[str, Any], base: dict[str, Any]) -> None:
    """The recipe's table under the flags; each warm-up unit and roll unit replaces the other."""
    recipe = given.setdefault("recipe", "d20")
    if recipe not in RECIPES:
        raise ConfigError(f"--recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        if name in given and given[name] not in allowed:
            raise ConfigError(f"--{name} must be one of {', '.join(allowed)}, got {given[name]!r}")
    if recipe != "d20" and not given.get("dataset"):
        raise ConfigError(f"--recipe {recipe} trains on a real dataset (batch {RECIPES[recipe]['batch_size']}, "
                          f"{RECIPES[recipe]['epochs']} epochs): give DATASET (the demo uses the 2020 recipe)")
    base.update(RECIPES[recipe])
    for a, b in (("warmup_steps", "warmup_epochs"), ("roll", "time_roll")):
        if given.get(a) is not None and given.get(b) is not None:
            raise ConfigError(f"give --{a.replace('_', '-')} or --{b.replace('_', '-')}, not both")
        for mine, other in ((a, b), (b, a)):
            if given.get(mine) is not None:
                base.pop(other, None)
    if given.get("time_roll") is not None:
        base["roll"] = None  # the frames follow from the seconds


def _resolve_fit(given: dict[str, Any], base: dict[str, Any]) -> None:
    """--fit chooses the start network unless one is named, prunes channels in finer steps, and
    owns the channel targets."""
    from edgeasc.compress.fit import FIT_CHANNEL_MULTIPLE, FIT_RULES

    if given["fit"] not in FIT_RULES:
        raise ConfigError(f"--fit must be one of {', '.join(FIT_RULES)} (the rule sets that cap all parameters and "
                          f"MACs), got {given['fit']!r}")
    clash = [f"--{k.replace('_', '-')}" for k in ("macs_target", "params_target") if given.get(k) is not None]
    if clash:
        raise ConfigError(f"--fit sets the channel targets from the rules: drop {' and '.join(clash)}")
    base.pop("preset", None)  # the demo's network is not a choice the user made
    given.setdefault("channel_multiple", FIT_CHANNEL_MULTIPLE)


def _resolve_teachers(values: dict[str, Any]) -> None:
    from edgeasc.train.distill import check_kd_options

    teachers = values.get("teachers") or ()
    if isinstance(teachers, str | Path):
        teachers = (teachers,)
    if not isinstance(teachers, list | tuple) or not all(isinstance(t, str | Path) and str(t) for t in teachers):
        raise ConfigError(f"teachers must be a list of run directories or checkpoints, got {teachers!r}")
    logits = values.get("teacher_logits")
    if logits is not None and (not isinstance(logits, str | Path) or not str(logits)):
        raise ConfigError(f"--teacher-logits must be a file, got {logits!r}")
    if logits is not None and teachers:
        raise ConfigError("give --teacher runs or --teacher-logits, not both (the file is the teacher)")
    if logits is not None and values.get("kd_targets") == "online":
        raise ConfigError("--kd-targets online runs teacher networks on each batch: --teacher-logits has none")
    check_kd_options(teachers or ((logits,) if logits else ()), values.get("kd_weight"), values.get("kd_temperature"),
                     values.get("kd_targets"), values.get("kd_reduction"))
    values["teachers"] = tuple(str(Path(t).expanduser().resolve()) for t in teachers)
    if logits is not None:
        values["teacher_logits"] = str(Path(logits).expanduser().resolve())


def explicit_network(cfg: TrainConfig) -> bool:
    """Whether the user named a network (a preset or any architecture flag)."""
    return cfg.preset is not None or any(getattr(cfg, k) is not None for k in (
        "variant", "rho", "width", "depth_restriction", "decomp_factor", "damping_floor", "damp_stem"))
