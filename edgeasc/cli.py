"""The `edgeasc` command line: parse, call the library, render. No logic lives here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich import box
from rich.table import Table

from edgeasc import __version__
from edgeasc.console import err, fmt_int, fmt_macs, fmt_shape, out, print_json
from edgeasc.errors import ConfigError, EdgeascError, require_torch

try:  # recent typer releases ship their own copy of click
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover - typer built on the click package
    from click.exceptions import ClickException, UsageError

def _quiet_switches() -> None:
    """typer >= 0.20 prints `<bool>` after every on/off switch (--json, --force, --help), where a
    switch takes no value: that column says nothing. Show types for options that take one."""
    option = getattr(getattr(typer, "core", None), "TyperOption", None)
    show = getattr(option, "display_type_rich", None)
    if show is None or getattr(show, "_edgeasc", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) or getattr(self, "is_bool_flag", False) else show(self, ctx)

    display_type_rich._edgeasc = True
    option.display_type_rich = display_type_rich


_quiet_switches()
app = typer.Typer(
    name="edgeasc",
    help="Train, compress, export and run low-complexity acoustic scene classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        out.print(f"edgeasc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass


# ----------------------------------------------------------------------------- info
@app.command()
def info(
    target: Path | None = typer.Argument(None, help="A run directory, checkpoint or exported .onnx file to describe (optional)."),
    preset: str | None = typer.Option(None, help="A named configuration (see --list-presets)."),
    variant: str | None = typer.Option(None, help="cp-resnet | damped | decomposed | damped-decomposed"),
    rho: int | None = typer.Option(None, help="Receptive-field hyper-parameter ρ."),
    width: int | None = typer.Option(None, help="Base channels w (stages w, 2w, 4w)."),
    depth_restriction: str | None = typer.Option(None, help="Blocks removed from the end of stages 1,2,3, e.g. 0,1,4."),
    classes: int | None = typer.Option(None, help="Number of classes."),
    channels: int | None = typer.Option(None, help="Input channels (1 mono, 2 stereo)."),
    decomp_factor: int | None = typer.Option(None, help="Compression factor Z of decomposed convs."),
    damping_floor: float | None = typer.Option(None, help="Damping λ at the kernel's outer rows."),
    damp_stem: bool | None = typer.Option(None, "--damp-stem/--no-damp-stem",
                                          help="Damp the 5×5 stem too (default; the released DCASE'20 winner did not)."),
    seconds: float | None = typer.Option(None, help="Clip length the shapes and MACs are computed for "
                                         "(default: a run's own clip length, else 10 s)."),
    list_presets: bool = typer.Option(False, "--list-presets", help="List the named presets and exit."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Parameters, non-zeros, MACs, shapes, receptive field and bytes of a network or a trained run."""
    from edgeasc.models import PRESETS
    from edgeasc.models.presets import resolve_model

    if list_presets:
        _render_presets(PRESETS, as_json)
        return
    if target is not None and target.suffix.lower() == ".onnx":
        from edgeasc.runtime.cli import info_onnx

        info_onnx(target, as_json)
        return
    if target is not None:
        require_torch("`edgeasc info` on a checkpoint")
        from edgeasc.evaluation_run import describe_checkpoint

        extra, stats = describe_checkpoint(target, seconds)
        config = stats.config
        if as_json:
            print_json({**extra, "variant": _variant(config), **stats.to_dict()})
            return
        from edgeasc.models import ModelConfig

        _render_stats(stats, ModelConfig.from_dict(config), extra["checkpoint"], None)
        out.print(f"labels: {', '.join(extra['labels'])}; trained {extra['epoch']} epochs ({extra['kind']} checkpoint)")
        summary = extra["summary"] or {}
        if summary.get("reported_accuracy") is not None:
            out.print(f"accuracy: {100 * summary['reported_accuracy']:.2f} % (mean of the last "
                      f"{summary['reported_over_epochs']} epochs), final {100 * summary['final']['accuracy']:.2f} %")
        elif extra["last_metrics"]:
            out.print(f"last epoch accuracy: {100 * extra['last_metrics']['eval_accuracy']:.2f} %")
        _render_lineage(extra)
        return
    config, prune_target = resolve_model(
        preset, variant=variant, decomp_factor=decomp_factor, rho=rho, width=width,
        depth_restriction=depth_restriction, n_classes=classes, in_channels=channels,
        damping_floor=damping_floor, damp_stem=damp_stem)
    from edgeasc.models.describe import (
        describe_config,  # arithmetic, no torch: works in the device install
    )

    stats = describe_config(config, seconds=10.0 if seconds is None else seconds, prune_target=prune_target)
    if as_json:
        print_json({"preset": preset, "variant": config.variant, "prune_target": prune_target,
                    **stats.to_dict()})
        return
    _render_stats(stats, config, preset, prune_target)


def _render_lineage(extra: dict) -> None:
    """Who taught the run, and which rules it was fitted to (both stored in its checkpoint)."""
    for t in extra.get("teachers") or []:
        acc = f", final accuracy {100 * t['accuracy']:.2f} %" if isinstance(t.get("accuracy"), int | float) else ""
        out.print(f"teacher: {t.get('path')} (sha256 {str(t.get('sha256'))[:12]}…{acc})", markup=False, soft_wrap=True)
    kd = extra.get("kd")
    if kd:
        out.print(f"distillation: weight {kd.get('kd_weight') if kd.get('kd_weight') is not None else 0.5}, "
                  f"temperature {kd.get('kd_temperature') if kd.get('kd_temperature') is not None else 2.0}, "
                  f"{kd.get('kd_targets') or 'cached'} targets", markup=False)
    fit = extra.get("fit")
    if fit:
        out.print(f"fitted to {fit.get('rules')}: started from {fit.get('start')}, limits "
                  f"{fit.get('params_limit'):,} parameters ({fit.get('precision')}) and "
                  f"{fit.get('macs_limit_per_second', 0) / 1e6:g} M MACs per second", markup=False, soft_wrap=True)


def _variant(config: dict) -> str:
    from edgeasc.models import ModelConfig

    return ModelConfig.from_dict(config).variant


def _render_presets(presets, as_json: bool) -> None:
    if as_json:
        print_json({name: {"config": p.config.to_dict(), "variant": p.config.variant,
                           "prune_target": p.prune_target, "description": p.description}
                    for name, p in presets.items()})
        return
    table = Table(title="edgeasc presets", box=box.SIMPLE_HEAD)
    for col in ("preset", "variant", "ρ", "width", "depth", "classes", "ch", "Z", "prune to", "what"):
        table.add_column(col, justify="left" if col in {"preset", "variant", "what"} else "right",
                         no_wrap=col != "what")
    for name, p in presets.items():
        c = p.config
        table.add_row(name, c.variant, str(c.rho), str(c.width), ",".join(map(str, c.depth_restriction)),
                      str(c.n_classes), str(c.in_channels), str(c.decomposition or "-"),
                      fmt_int(p.prune_target) if p.prune_target else "-", p.description)
    out.print(table)


def _render_stats(stats, config, preset, prune_target) -> None:
    title = f"{preset or config.variant}: ρ{config.rho} w{config.width} depth " \
            f"{','.join(map(str, config.depth_restriction))}, {config.n_classes} classes, " \
            f"{config.in_channels} ch, input {fmt_shape(stats.input_shape)} ({stats.seconds:g} s)"
    table = Table(title=title, box=box.SIMPLE_HEAD)
    pruned = stats.channel_plan is not None
    for col, justify in (("layer", "left"), ("type", "left"), ("kernel", "center"),
                         ("channels" + (" (dense)" if pruned else ""), "right"),
                         ("output", "right"), ("params", "right"), ("MACs", "right")):
        table.add_column(col, justify=justify, no_wrap=True)
    for layer in stats.layers:
        table.add_row(layer.name, layer.kind, layer.kernel, _channels_cell(layer), fmt_shape(layer.output_shape),
                      fmt_int(layer.params) if layer.params else "", fmt_macs(layer.macs) if layer.macs else "")
    out.print(table)

    summary = Table(show_header=False, title="totals")
    summary.add_column(justify="left")
    summary.add_column(justify="right")
    summary.add_row("parameters", fmt_int(stats.params))
    if pruned:
        summary.add_row("  before channel pruning", f"{fmt_int(stats.dense_params)} "
                        f"({100 * stats.params / stats.dense_params:.1f} % kept)")
    summary.add_row("  of which BatchNorm", fmt_int(stats.bn_params))
    label = f"non-zero (pruned to {fmt_int(prune_target)})" if prune_target else "non-zero"
    summary.add_row(label, fmt_int(stats.nonzero_params))
    summary.add_row("MACs per clip", f"{fmt_int(stats.macs)} ({fmt_macs(stats.macs)})")
    if pruned:
        summary.add_row("  before channel pruning", f"{fmt_int(stats.dense_macs)} "
                        f"({100 * stats.macs / stats.dense_macs:.1f} % kept)")
    summary.add_row("MACs per second of audio", fmt_macs(stats.macs_per_second))
    summary.add_row("receptive field (freq × time)", fmt_shape(stats.receptive_field))
    summary.add_row("  as the authors' scripts print it", fmt_shape(stats.receptive_field_authors))
    for stage, shape in stats.output_shapes.items():
        summary.add_row(f"shape after {stage}", fmt_shape(shape))
    for dtype, n in stats.bytes.items():
        summary.add_row(f"bytes of non-zeros at {dtype}", f"{fmt_int(n)} ({n / 1024:.1f} KiB)")
    out.print(summary)


def _channels_cell(layer) -> str:
    if not layer.channels:
        return ""
    now = "→".join(map(str, layer.channels))
    if layer.dense_channels and layer.dense_channels != layer.channels:
        return f"{now} ({'→'.join(map(str, layer.dense_channels))})"
    return now


# ----------------------------------------------------------------------------- data
@app.command()
def synth(
    out_dir: Path = typer.Argument(..., help="Folder to write the dataset into."),
    profile: str = typer.Option("dcase2020", help="dcase2020: 10-s 48 kHz stereo clips in the DCASE'20 layout; "
                                "dcase2022: 1-s 44.1 kHz mono clips, 10 scenes, 9 devices (3 unseen), in the "
                                "TAU 2022 Mobile layout with its split_setup/ train subsets."),
    classes: int | None = typer.Option(None, help="dcase2020: 3 (indoor/outdoor/transportation, DCASE'20 1b, the "
                                       "default) or 10 (DCASE'18 scenes); dcase2022 has 10."),
    clips_per_class: int | None = typer.Option(None, help="Clips per class (default 40; dcase2022: about 500)."),
    seconds: float | None = typer.Option(None, help="Clip length in seconds (dcase2020, default 10; dcase2022 is 1)."),
    seed: int = typer.Option(0, help="Random seed: the same seed writes the same audio."),
    workers: int | None = typer.Option(None, help="Worker processes (default: all cores)."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty OUT_DIR."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Write a synthetic acoustic-scene dataset (WAV clips, meta.csv, the official split files)."""
    if profile == "dcase2022":
        from edgeasc.data.synth2022 import DEFAULT_CLIPS_PER_CLASS, write_dataset_2022

        if classes not in (None, 10):
            raise ConfigError(f"--profile dcase2022 has 10 classes (TAU 2022 Mobile), not {classes}")
        if seconds not in (None, 1.0):
            raise ConfigError(f"--profile dcase2022 writes 1-s clips (TAU 2022 Mobile), not {seconds:g} s")
        summary = write_dataset_2022(out_dir, DEFAULT_CLIPS_PER_CLASS if clips_per_class is None else clips_per_class,
                                     seed, workers, force,
                                     progress=not as_json)
    elif profile == "dcase2020":
        from edgeasc.data.synth import write_dataset

        summary = write_dataset(out_dir, classes or 3, 40 if clips_per_class is None else clips_per_class,
                                10.0 if seconds is None else seconds, seed, workers, force, progress=not as_json)
    else:
        raise ConfigError(f"--profile must be dcase2020 or dcase2022, got {profile!r}")
    if as_json:
        print_json(summary)
        return
    devices = (f"; devices {', '.join(summary['seen_devices'])} seen, {', '.join(summary['unseen_devices'])} "
               "only in evaluate") if "seen_devices" in summary else ""
    out.print(f"wrote {summary['clips']} clips of {summary['seconds']:g} s ({summary['train']} train, "
              f"{summary['evaluate']} evaluate; classes: {', '.join(summary['labels'])}{devices}) to "
              f"{summary['path']}", soft_wrap=True)


@app.command()
def features(
    dataset_dir: Path = typer.Argument(..., help="A DCASE development set, a folder per class, or a labels CSV."),
    workers: int | None = typer.Option(None, help="Worker processes (default: all cores)."),
    cache_dir: Path | None = typer.Option(None, help="Cache root (default: $EDGEASC_CACHE or ~/.cache/edgeasc)."),
    channels: int | None = typer.Option(None, help="1 or 2 input channels (default: as the audio)."),
    seconds: float | None = typer.Option(None, help="Clip length: shorter clips are zero-padded, longer cropped "
                                         "(default: the data's own, e.g. 1 s for TAU 2022, 10 s for TAU 2020)."),
    fold: int = typer.Option(1, help="Official fold to read."),
    split: int | None = typer.Option(None, help="TAU 2022 Mobile: train on split_setup/splitN.csv (5, 10, 25, 50, 100)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Extract (once) and cache the perceptual mel features of a dataset, with normalisation stats."""
    from edgeasc.data.cache import extract_features, probe_clip_seconds
    from edgeasc.data.dcase import open_dataset
    from edgeasc.runtime.features import FeatureParams

    if channels not in (None, 1, 2):
        raise ConfigError(f"--channels must be 1 or 2, got {channels}")
    if seconds is not None and not 0 < seconds <= 600:
        raise ConfigError(f"--seconds must be in (0, 600], got {seconds}")
    dataset = open_dataset(dataset_dir, fold=fold, split=split)
    seconds = seconds or probe_clip_seconds(dataset)
    cache, extracted = extract_features(dataset, FeatureParams(clip_seconds=seconds), channels, workers,
                                        cache_dir, progress=not as_json)
    m = cache.manifest
    summary = {"layout": m["layout"], "labels": m["labels"], "cache": str(cache.directory),
               "extracted": extracted, "channels": m["channels"], "frames": m["frames"],
               "splits": {s: len(m["splits"][s]["clips"]) for s in m["splits"]},
               "devices": sorted({d for s in m["splits"].values() for d in s["devices"] if d}),
               "extraction": m["extraction"]}
    if as_json:
        print_json(summary)
        return
    table = Table(title=f"features of {dataset.root}", box=box.SIMPLE_HEAD, show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="left")
    table.add_row("layout", m["layout"])
    table.add_row("classes", ", ".join(m["labels"]))
    for split, n in summary["splits"].items():
        table.add_row(split, f"{n} clips × {m['channels']} ch × {m['params']['n_mels']} mels × {m['frames']} frames")
    if summary["devices"]:
        table.add_row("devices", ", ".join(summary["devices"]))
    table.add_row("cache", summary["cache"])
    e = m["extraction"]
    rate = e["clips"] / e["seconds"] if e["seconds"] else float("nan")
    table.add_row("extraction", f"{e['clips']} clips in {e['seconds']:.1f} s ({rate:.1f} clips/s, "
                  f"{e['workers']} workers)" + ("" if extracted else " — reused, nothing to do"))
    out.print(table)


# ----------------------------------------------------------------------------- training
@app.command()
def train(
    dataset_dir: Path | None = typer.Argument(None, help="A dataset (DCASE layout, folders, CSV). "
                                              "None: the built-in synthetic scenes and a small demo setup."),
    preset: str | None = typer.Option(None, help="Named network (see `edgeasc info --list-presets`)."),
    split: int | None = typer.Option(None, help="TAU 2022 Mobile: train on split_setup/splitN.csv (5, 10, 25, 50, 100)."),
    variant: str | None = typer.Option(None, help="cp-resnet | damped | decomposed | damped-decomposed"),
    rho: int | None = typer.Option(None, help="Receptive-field hyper-parameter ρ."),
    width: int | None = typer.Option(None, help="Base channels."),
    depth_restriction: str | None = typer.Option(None, help="e.g. 0,1,4"),
    decomp_factor: int | None = typer.Option(None, help="Z of decomposed convs."),
    damping_floor: float | None = typer.Option(None, help="Damping λ."),
    damp_stem: bool | None = typer.Option(None, "--damp-stem/--no-damp-stem",
                                          help="Damp the 5×5 stem too (default; the released DCASE'20 winner did not)."),
    prune_target: int | None = typer.Option(None, help="Non-zero parameters at the end (BatchNorm counted)."),
    prune_ratio: float | None = typer.Option(None, help="Fraction of conv weights to prune instead."),
    prune_schedule: str | None = typer.Option(None, help="exp (default) | linear | cubic"),
    prune_method: str | None = typer.Option(None, help="magnitude (default: all convs by |W|) | gate (the released "
                                            "DCASE'20 winner: 1×1 convs only, learned scores)"),
    prune_epochs: int | None = typer.Option(None, help="Epochs over which pruning ramps up (default 100)."),
    prune_monotone: bool | None = typer.Option(None, "--prune-monotone/--prune-revivable",
                                               help="Freeze pruned weights (default: they may come back)."),
    macs_target: str | None = typer.Option(None, help="Channel pruning to a MAC budget: a share of the dense "
                                           "network (25%) or MACs per clip of --seconds (460M; k/M/G)."),
    params_target: int | None = typer.Option(None, help="Channel pruning to a budget of all parameters (zeros and "
                                             "BatchNorm included: the DCASE 2022+ count)."),
    channel_importance: str | None = typer.Option(None, help="Channel ranking: l2 (group L2 norm, default) | bn (|γ|)."),
    channel_multiple: int | None = typer.Option(None, help="Kept widths are multiples of this (default 16: "
                                                "onnxruntime's fast conv block on AVX-512 and ARM64; 8 on AVX2; 1 = any)."),
    freq_mixstyle: str | None = typer.Option(None, help="Freq-MixStyle P,ALPHA (the DCASE 2022-2025 baselines: "
                                             "0.4,0.3): mixes per-band statistics across the batch."),
    teacher: list[Path] | None = typer.Option(None, "--teacher", help="Distil from this finished run (repeat for an "
                                              "ensemble: the mean of their logits teaches)."),
    kd_weight: float | None = typer.Option(None, help="Share w of the distillation loss: (1-w)·CE + w·τ²·KL "
                                           "(default 0.5 with --teacher)."),
    kd_temperature: float | None = typer.Option(None, help="Distillation temperature τ (default 2)."),
    kd_targets: str | None = typer.Option(None, help="cached (default: the teachers run once per clip, "
                                          "un-augmented) | online (on every augmented batch)."),
    fit: str | None = typer.Option(None, help="Fit a challenge's complexity rules: dcase2024 | dcase2022 (start "
                                   "network + channel pruning to the limits, int8)."),
    swa_start: int | None = typer.Option(None, help="Average the weights from this epoch on (the authors' "
                                         "submissions: 250); saved as model-swa.pt."),
    swa_every: int | None = typer.Option(None, help="Average every N-th epoch (default 3)."),
    epochs: int | None = typer.Option(None, help="Epochs (paper: 400)."),
    batch_size: int | None = typer.Option(None, help="Global batch size (paper: 10)."),
    accumulate: int | None = typer.Option(None, help="Gradient accumulation: each process takes its batch in N "
                                          "parts (same steps, 1/N of the activation memory; default 1)."),
    lr: float | None = typer.Option(None, help="Adam learning rate (paper: 1e-4)."),
    seed: int | None = typer.Option(None, help="Seed: same seed, same run (on CPU)."),
    device: str | None = typer.Option(None, help="auto | cpu | cuda"),
    workers: int | None = typer.Option(None, help="DataLoader worker processes (default 0)."),
    feature_workers: int | None = typer.Option(None, help="Feature-extraction processes (default: all cores)."),
    cache_dir: Path | None = typer.Option(None, help="Cache root for features and the synthetic set."),
    seconds: float | None = typer.Option(None, help="Clip length in seconds (default: the data's own)."),
    amp: bool | None = typer.Option(None, "--amp/--no-amp", help="Mixed precision (CUDA)."),
    channels_last: bool | None = typer.Option(None, "--channels-last/--no-channels-last", help="channels_last memory format."),
    out_dir: Path | None = typer.Option(None, "--out", help="Run directory (default runs/train, demo: runs/demo)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last completed epoch."),
    force: bool = typer.Option(False, "--force", help="Start over in a --out that holds another run."),
    config: Path | None = typer.Option(None, help="TOML file with any of these settings (flags win)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (no live display)."),
) -> None:
    """Train a CP-ResNet (damped / decomposed / pruned) on a dataset; resumable, DDP under torchrun."""
    require_torch("`edgeasc train`")
    from edgeasc.train import train as run_training
    from edgeasc.train_config import resolve_train_config

    cli = dict(dataset=str(dataset_dir) if dataset_dir else None, split=split, preset=preset, variant=variant, rho=rho,
               width=width, depth_restriction=depth_restriction, decomp_factor=decomp_factor,
               damping_floor=damping_floor, damp_stem=damp_stem, prune_target=prune_target, prune_ratio=prune_ratio,
               prune_schedule=prune_schedule, prune_method=prune_method, prune_epochs=prune_epochs, prune_monotone=prune_monotone,
               macs_target=macs_target, params_target=params_target, channel_importance=channel_importance,
               channel_multiple=channel_multiple, teachers=[str(t) for t in teacher] if teacher else None,
               kd_weight=kd_weight, kd_temperature=kd_temperature, kd_targets=kd_targets, fit=fit, swa_start=swa_start, swa_every=swa_every, freq_mixstyle=freq_mixstyle,
               epochs=epochs, batch_size=batch_size, accumulate=accumulate, lr=lr, seed=seed, device=device, workers=workers,
               feature_workers=feature_workers, cache_dir=str(cache_dir) if cache_dir else None, seconds=seconds,
               amp=amp, channels_last=channels_last, out=str(out_dir) if out_dir else None)
    cfg = resolve_train_config(cli, config)
    summary = run_training(cfg, resume=resume, force=force, progress=not as_json)
    if int(os.environ.get("RANK", 0)) != 0:  # under torchrun only rank 0 reports
        return
    if as_json:
        print_json(summary)
    else:
        _render_summary(summary)


def _render_summary(summary: dict) -> None:
    table = Table(title=f"run {summary['run_dir']}", box=box.SIMPLE_HEAD, show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="right")
    table.add_row("network", f"{summary['variant']} ρ{summary['model']['rho']} w{summary['model']['width']}")
    table.add_row("epochs", str(summary["epochs"]))
    if summary["reported_accuracy"] is not None:
        table.add_row(f"accuracy (mean of last {summary['reported_over_epochs']} epochs)",
                      f"{100 * summary['reported_accuracy']:.2f} %")
    table.add_row("final accuracy", f"{100 * summary['final']['accuracy']:.2f} %")
    if summary.get("swa"):
        s = summary["swa"]
        table.add_row(f"weight average of {len(s['epochs_averaged'])} epochs (model-swa.pt)",
                      f"{100 * s['accuracy']:.2f} %")
    pruned = summary.get("channel_plan") is not None
    table.add_row("parameters" + (" (dense → pruned)" if pruned else ""),
                  (f"{fmt_int(summary['dense_params'])} → " if pruned else "") + fmt_int(summary["params"]))
    table.add_row(f"MACs per {summary['seconds']:g} s clip" + (" (dense → pruned)" if pruned else ""),
                  (f"{fmt_macs(summary['dense_macs'])} → " if pruned else "") + fmt_macs(summary["macs"]))
    table.add_row("non-zero parameters", fmt_int(summary["nonzero_params"]))
    if summary["prune_target"]:
        table.add_row("prune target", fmt_int(summary["prune_target"]))
    out.print(table)
    if pruned:
        _render_channels(summary["channel_plan"], summary["dense_channels"])
    _render_eval(summary["final"], summary["labels"])


def _render_channels(plan: dict, dense: dict) -> None:
    table = Table(title="channels (dense → kept)", box=box.SIMPLE_HEAD)
    table.add_column("group")
    table.add_column("channels", justify="right")
    for name, kept in plan.items():
        table.add_row(name, f"{dense[name]} → {kept}")
    out.print(table)


def _render_eval(result: dict, labels: list[str]) -> None:
    per_class = Table(title="per class", box=box.SIMPLE_HEAD)
    per_class.add_column("class")
    per_class.add_column("accuracy", justify="right")
    for name, acc in result["per_class"].items():
        per_class.add_row(name, f"{100 * acc:.1f} %")
    out.print(per_class)
    if result["per_device"]:
        per_device = Table(title="per device", box=box.SIMPLE_HEAD)
        per_device.add_column("device")
        per_device.add_column("clips", justify="right")
        per_device.add_column("accuracy", justify="right")
        per_device.add_column("in training", justify="left")
        unseen = set(result.get("unseen_devices") or [])
        for name, acc in result["per_device"].items():
            per_device.add_row(name, str(result["device_counts"][name]), f"{100 * acc:.1f} %",
                               "unseen" if name in unseen else "seen")
        for group in ("seen", "unseen"):
            if result.get(f"{group}_accuracy") is not None:
                per_device.add_row(f"mean, {group} devices", "", f"{100 * result[f'{group}_accuracy']:.1f} %", "")
        out.print(per_device)


@app.command("eval")
def eval_command(
    run: Path = typer.Argument(..., help="A run directory or a checkpoint file."),
    dataset_dir: Path | None = typer.Argument(None, help="Dataset to evaluate on (default: the run's own)."),
    cache_dir: Path | None = typer.Option(None, help="Cache root for features."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Accuracy, per-class and per-device tables and a confusion-matrix PNG of a trained model."""
    require_torch("`edgeasc eval`")
    from edgeasc.evaluation_run import evaluate_run

    result = evaluate_run(run, dataset_dir, cache_dir, device, progress=not as_json)
    if as_json:
        print_json(result)
        return
    out.print(f"{result['checkpoint']}: accuracy {100 * result['accuracy']:.2f} % on {result['n']} clips of "
              f"{result['dataset']} (loss {result['loss']:.4f}); confusion matrix: {result['confusion_png']}"
              + (f"; per device: {result['devices_png']}" if result["devices_png"] else ""), soft_wrap=True)
    _render_eval(result, result["labels"])


# ----------------------------------------------------------------------------- export
@app.command()
def export(
    source: Path = typer.Argument(..., help="A run directory or a checkpoint."),
    output: Path | None = typer.Option(None, "-o", "--output", help="The .onnx file (default RUN/model.onnx)."),
    fold_damping: bool = typer.Option(True, "--fold-damping/--no-fold-damping", help="W ⊙ C stored as the weight."),
    fold_bn: bool = typer.Option(True, "--fold-bn/--no-fold-bn", help="BatchNorm folded into conv biases."),
    precision: str | None = typer.Option(None, help="fp32 | fp16 (float16 storage, float32 compute) | int8 (static "
                                         "QDQ). Default fp32; int8 for a run trained with --fit."),
    calibration: Path | None = typer.Option(None, help="int8: dataset whose clips calibrate (default: the run's own)."),
    cache_dir: Path | None = typer.Option(None, help="Cache root for calibration features."),
    with_frontend: bool = typer.Option(False, "--with-frontend", help="Export waveform (22.05 kHz) -> logits, frontend in the graph."),
    sparse: str = typer.Option("auto", help="Pruned weights as values + positions: auto (where it saves bytes) | pack | none."),
    check_budget: str | None = typer.Option(None, help="Size budget, e.g. 500KB (=512000), 500kB, 0.5MB, 512000."),
    rules: str | None = typer.Option(None, help="dcase2020 | dcase2021 | dcase2022 | dcase2024 (default: the "
                                     "run's --fit rule set, else dcase2020)."),
    count_bn: bool | None = typer.Option(None, "--count-bn/--no-count-bn", help="Count BatchNorm (default: per rules)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output file."),
    swa: bool = typer.Option(False, "--swa", help="Export the run's weight average (model-swa.pt)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Fold, export a verified single-file ONNX with its metadata, and check its size against a budget."""
    require_torch("`edgeasc export`")
    from edgeasc.export.pipeline import export_checkpoint
    from edgeasc.export.report import budget_failures

    if swa:
        if not source.is_dir():
            raise ConfigError(f"--swa takes a run directory, not {source}")
        if not (source / "model-swa.pt").is_file():
            raise ConfigError(f"{source} has no model-swa.pt: train it with --swa-start")
        source = source / "model-swa.pt"
        output = output or source.parent / "model-swa.onnx"
    result = export_checkpoint(source, output, fold_damping, fold_bn, precision, check_budget, rules, count_bn,
                               force, sparse, calibration, cache_dir, with_frontend)
    report = result["report"]
    if as_json:
        print_json(result)
    else:
        _render_export(result)
    if report["verdict"] != "PASS":
        over = budget_failures(report)
        err.print(f"edgeasc: error: budget FAIL under {report['rules']} ({'; '.join(over)}); {result['onnx']} and its "
                  "report were written and kept", markup=False, soft_wrap=True)
        raise typer.Exit(3)


def _render_export(result: dict) -> None:
    r, v = result["report"], result["verification"]
    table = Table(title=f"{result['onnx']} ({r['precision']}, rules {r['rules']})", box=box.SIMPLE_HEAD,
                  show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="right")
    table.add_row("parameters (as trained)", fmt_int(r["params"]))
    table.add_row("non-zero parameters", fmt_int(r["nonzero_params"]))
    table.add_row("  of which BatchNorm", fmt_int(r["bn_params"]))
    table.add_row("deployed (BN folded): params / non-zero",
                  f"{fmt_int(r['deployed']['params'])} / {fmt_int(r['deployed']['nonzero_params'])}")
    limit = r.get("macs_limit_per_second")
    table.add_row(f"MACs per {r['clip_seconds']:g} s / per second" + (f" (limit {fmt_macs(limit)})" if limit else ""),
                  f"{fmt_macs(r['macs_per_clip'])} / {fmt_macs(r['macs_per_second'])}"
                  + ("" if r["macs_ok"] else " (over the limit)"))
    if r.get("channel_plan"):
        table.add_row("before channel pruning: params / MACs per clip",
                      f"{fmt_int(r['dense']['params'])} / {fmt_macs(r['dense']['macs_per_clip'])}")
    what = "non-zero" if r["counts"] == "nonzero" else "all"
    table.add_row(f"counted: {what} values, BN {'in' if r['count_bn'] else 'out'}, {r['bytes_per_value']} B each",
                  f"{fmt_int(r['counted_values'])} values = {fmt_int(r['counted_bytes'])} bytes")
    table.add_row("budget", f"{fmt_int(r['budget_bytes'])} bytes")
    table.add_row("ONNX file", f"{fmt_int(r['file_bytes'])} bytes ({len(result['sparse']['packed'])} tensors "
                  f"packed sparse, --sparse {result['sparse']['mode']})")
    table.add_row("ONNX vs PyTorch (max |Δ logit|, top-1)",
                  f"{v['max_abs_logit_difference']:.2e}, {100 * v['top1_agreement']:.1f} % of {v['clips']} "
                  f"({v['real_clips']} real)")
    if result.get("int8"):
        q = result["int8"]
        table.add_row("int8 calibration clips", str(q["calibration_clips"]))
        if "accuracy_int8" in q:
            table.add_row(f"accuracy fp32 → int8 ({q['evaluate_clips']} evaluate clips)",
                          f"{100 * q['accuracy_fp32']:.1f} % → {100 * q['accuracy_int8']:.1f} %")
    colour = "green" if r["verdict"] == "PASS" else "red"
    table.add_row("verdict", f"[bold {colour}]{r['verdict']}[/]")
    out.print(table)
    out.print(f"counted on {r['counted_on']}; report: {Path(result['onnx']).with_suffix('.size.md')}")


# ----------------------------------------------------------------------------- bench, predict
from edgeasc.runtime.cli import register as _register_runtime  # noqa: E402

_register_runtime(app)


# ----------------------------------------------------------------------------- demo
@app.command()
def demo(
    workdir: Path = typer.Option(Path(".edgeasc-cache/demo"), help="Where the demo writes its files."),
    workers: int | None = typer.Option(None, help="Worker processes for data (default: all cores)."),
) -> None:
    """Run the quickstart pipeline on built-in synthetic data."""
    require_torch("`edgeasc demo`")
    from edgeasc.demo import run_demo

    run_demo(workdir, workers)


# ----------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every user-fixable problem ends as one line on stderr and an exit code."""
    try:
        rv = app(args=argv, prog_name="edgeasc", standalone_mode=False)
    except UsageError as e:
        if not e.format_message():  # bare `edgeasc`: the help was shown, nothing to add
            sys.exit(e.exit_code)
        where = e.ctx.command_path if e.ctx else "edgeasc"
        err.print(f"{where}: error: {e.format_message()}", markup=False, soft_wrap=True)
        sys.exit(2)
    except ClickException as e:
        err.print(f"edgeasc: error: {e.format_message()}", markup=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except EdgeascError as e:
        err.print(f"edgeasc: error: {e}", markup=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        rv = 130
    except OSError as e:  # the OS said no where no edgeasc code expected it: still one line
        from edgeasc.io import os_reason

        where = f"{e.filename}: " if e.filename else ""
        err.print(f"edgeasc: error: {where}{os_reason(e)}", markup=False, soft_wrap=True)
        sys.exit(1)
    except MemoryError:
        err.print("edgeasc: error: not enough memory for this request (a model or recording far larger than "
                  "this machine can hold?)", markup=False, soft_wrap=True)
        sys.exit(1)
    if rv == 130:  # typer turns Ctrl-C into Exit(130) before edgeasc sees it
        err.print("edgeasc: interrupted; finished outputs are kept, nothing was left half-written", markup=False)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
