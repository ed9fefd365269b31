"""`edgeasc train` and `edgeasc eval`: run training from flags and a TOML file, evaluate a run;
render their summaries (network, accuracy, channels, per class and per device)."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich import box

from edgeasc.cli.extras import require_torch
from edgeasc.console import Table, fmt_int, fmt_macs, out, print_json


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
    kd_reduction: str | None = typer.Option(None, help="batch (KL summed over classes, batch mean; default) | "
                                            "elements (also averaged over classes, as the CPJKU 2023-25 systems: "
                                            "the d24 recipe's default)."),
    kd_targets: str | None = typer.Option(None, help="cached (default: the teachers run once per clip, "
                                          "un-augmented) | online (on every augmented batch)."),
    teacher_logits: Path | None = typer.Option(None, help="Distil from pre-computed teacher logits: a .csv "
                                               "(filename,<class>,...) or .npz (filenames, logits) per clip."),
    recipe: str | None = typer.Option(None, help="d20 (default: the 2020 paper) | d24 (the DCASE 2024/25 "
                                      "baselines: AdamW 0.005, cosine, batch 256, 150 epochs, masking, MixStyle). "
                                      "Fills defaults; flags override."),
    optimizer: str | None = typer.Option(None, help="adam (d20) | adamw (d24)."),
    weight_decay: float | None = typer.Option(None, help="Weight decay (d20: 0, d24: 1e-4; AdamW: decoupled)."),
    schedule: str | None = typer.Option(None, help="hold-linear (d20: per epoch) | cosine (d24: linear warm-up, "
                                        "then cosine to 0 at the end of --epochs, per step)."),
    lr_hold: int | None = typer.Option(None, help="hold-linear: epochs at --lr (paper 50 of 400; follows "
                                       "--epochs when not given)."),
    lr_decay_end: int | None = typer.Option(None, help="hold-linear: epoch the linear decay reaches 0 (paper 250 "
                                            "of 400; follows --epochs when not given)."),
    lr_final: float | None = typer.Option(None, help="hold-linear: rate after --lr-decay-end (paper 1e-6)."),
    warmup_steps: int | None = typer.Option(None, help="cosine: linear warm-up over N optimiser steps (d24: 2000)."),
    warmup_epochs: float | None = typer.Option(None, help="cosine: warm-up over N epochs' steps instead."),
    freq_mask: int | None = typer.Option(None, help="Mask up to N mel bins per clip (d20: 0, d24: 48)."),
    time_roll: float | None = typer.Option(None, help="Roll clips in time by up to S seconds (d24: 0.1; d20 rolls "
                                           "up to 50 frames)."),
    dir_folder: Path | None = typer.Option(None, help="Device impulse-response augmentation: a folder of impulse "
                                           "responses (WAV, up to 2 s; e.g. MicIRP) convolved into reference-device "
                                           "(a) training clips."),
    dir_p: float | None = typer.Option(None, help="Share of reference-device clips convolved (default 0.6)."),
    fit: str | None = typer.Option(None, help="Fit a challenge's complexity rules: dcase2024 | dcase2022 (start "
                                   "network + channel pruning to the limits, int8)."),
    swa_start: int | None = typer.Option(None, help="Average the weights from this epoch on (the authors' "
                                         "submissions: 250); saved as model-swa.pt."),
    swa_every: int | None = typer.Option(None, help="Average every N-th epoch (default 3)."),
    epochs: int | None = typer.Option(None, help="Epochs (d20: 400, d24: 150)."),
    batch_size: int | None = typer.Option(None, help="Global batch size (d20: 10, d24: 256)."),
    accumulate: int | None = typer.Option(None, help="Gradient accumulation: each process takes its batch in N "
                                          "parts (same steps, 1/N of the activation memory; default 1)."),
    lr: float | None = typer.Option(None, help="Learning rate: held (d20: 1e-4) or the cosine peak (d24: 0.005)."),
    seed: int | None = typer.Option(None, help="Seed: same seed, same run (on CPU)."),
    device: str | None = typer.Option(None, help="auto | cpu | cuda"),
    workers: int | None = typer.Option(None, help="DataLoader worker processes (default 0)."),
    feature_workers: int | None = typer.Option(None, help="Feature-extraction processes (default: all cores, at most one per 64 clips)."),
    cache_dir: Path | None = typer.Option(None, help="Cache root for features and the synthetic set."),
    seconds: float | None = typer.Option(None, help="Clip length in seconds (default: the data's own)."),
    frontend: str | None = typer.Option(None, help="perceptual (default: the paper's perceptual mel, 22.05 kHz) | d24 "
                                        "(the DCASE 2024/25 baselines' log-mel: 32 kHz, 4096-FFT, hop 500, 256 HTK mels)."),
    amp: bool | None = typer.Option(None, "--amp/--no-amp", help="Mixed precision: bf16 autocast where the GPU has it, else "
                                  "fp16 with a grad scaler (default: on for CUDA, off on the CPU)."),
    channels_last: bool | None = typer.Option(None, "--channels-last/--no-channels-last", help="channels_last memory format (default: on for CUDA; "
                                            "with bf16 2.3-2.4x faster than fp32 on an H200)."),
    out_dir: Path | None = typer.Option(None, "--out", help="Run directory (default runs/train, demo: runs/demo)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last completed epoch."),
    force: bool = typer.Option(False, "--force", help="Start over in a --out that holds another run."),
    config: Path | None = typer.Option(None, help="TOML file with any of these settings (flags win)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (no live display)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", envvar="EDGEASC_PLOTS", show_envvar=True,
                               help="Write the PNG figures at the end (curves, non-zeros, confusion, devices; "
                               "about 1 s); --no-plots for sweeps, where summary.json and metrics.jsonl say it all."),
) -> None:
    """Train a CP-ResNet (damped / decomposed / pruned) on a dataset; resumable, DDP under torchrun."""
    require_torch("`edgeasc train`")
    from edgeasc.train.config import resolve_train_config
    from edgeasc.train.run import train as run_training

    cli = dict(dataset=str(dataset_dir) if dataset_dir else None, split=split, preset=preset, variant=variant, rho=rho,
               width=width, depth_restriction=depth_restriction, decomp_factor=decomp_factor,
               damping_floor=damping_floor, damp_stem=damp_stem, prune_target=prune_target, prune_ratio=prune_ratio,
               prune_schedule=prune_schedule, prune_method=prune_method, prune_epochs=prune_epochs, prune_monotone=prune_monotone,
               macs_target=macs_target, params_target=params_target, channel_importance=channel_importance,
               channel_multiple=channel_multiple, teachers=[str(t) for t in teacher] if teacher else None,
               kd_weight=kd_weight, kd_temperature=kd_temperature, kd_targets=kd_targets, kd_reduction=kd_reduction, teacher_logits=str(teacher_logits) if teacher_logits else None,
               recipe=recipe, optimizer=optimizer, weight_decay=weight_decay, schedule=schedule, lr_hold=lr_hold,
               lr_decay_end=lr_decay_end, lr_final=lr_final, warmup_steps=warmup_steps, warmup_epochs=warmup_epochs,
               freq_mask=freq_mask, time_roll=time_roll, fit=fit, swa_start=swa_start, swa_every=swa_every, freq_mixstyle=freq_mixstyle,
               dir_folder=str(dir_folder) if dir_folder else None, dir_p=dir_p,
               epochs=epochs, batch_size=batch_size, accumulate=accumulate, lr=lr, seed=seed, device=device, workers=workers,
               feature_workers=feature_workers, cache_dir=str(cache_dir) if cache_dir else None, seconds=seconds,
               frontend=frontend, amp=amp, channels_last=channels_last, out=str(out_dir) if out_dir else None)
    cfg = resolve_train_config(cli, config)
    summary = run_training(cfg, resume=resume, force=force, progress=not as_json, inputs=[config] if config else [],
                           plots=plots)
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
    m = summary["model"]
    shape = f"base {m['base_channels']}" if summary["variant"] == "cp-mobile" else f"ρ{m['rho']} w{m['width']}"
    table.add_row("network", f"{summary['variant']} {shape}")
    table.add_row("epochs", str(summary["epochs"]))
    macro = summary["final"].get("macro_accuracy")
    if macro is not None and summary.get("recipe") == "d24":  # DCASE 2024/25 rank by the class-wise mean
        table.add_row("final macro-average accuracy (class-wise mean)", f"{100 * macro:.2f} %")
    if summary["reported_accuracy"] is not None:
        table.add_row(f"accuracy (mean of last {summary['reported_over_epochs']} epochs)",
                      f"{100 * summary['reported_accuracy']:.2f} %")
    table.add_row("final accuracy", f"{100 * summary['final']['accuracy']:.2f} %")
    if macro is not None and summary.get("recipe") != "d24":
        table.add_row("final macro-average accuracy", f"{100 * macro:.2f} %")
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
        per_class.add_row(name, f"{100 * acc:.1f} %" if acc == acc else "no clips")  # NaN: no clip of it
    if result.get("macro_accuracy") is not None:
        per_class.add_row("macro average" + (" (classes with clips)" if result.get("classes_without_clips") else ""),
                          f"{100 * result['macro_accuracy']:.1f} %")
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
        names = {"real": "DCASE real (a, b, c)", "seen": "DCASE seen (s1-s3)", "unseen": "DCASE unseen (s4-s6)"}
        for group, acc in (result.get("device_groups") or {}).items():
            if acc is not None:
                per_device.add_row(f"mean, {names[group]}", "", f"{100 * acc:.1f} %", "")
        out.print(per_device)


def eval_command(
    run: Path = typer.Argument(..., help="A run directory or a checkpoint file."),
    dataset_dir: Path | None = typer.Argument(None, help="Dataset to evaluate on (default: the run's own)."),
    cache_dir: Path | None = typer.Option(None, help="Cache root for features."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Accuracy, per-class and per-device tables and a confusion-matrix PNG of a trained model."""
    require_torch("`edgeasc eval`")
    from edgeasc.train.evaluate import evaluate_run

    result = evaluate_run(run, dataset_dir, cache_dir, device, progress=not as_json)
    if as_json:
        print_json(result)
        return
    macro = result.get("macro_accuracy")
    out.print(f"{result['checkpoint']}: accuracy {100 * result['accuracy']:.2f} %"
              + (f", macro-average (class-wise) {100 * macro:.2f} %" if macro is not None else "")
              + f" on {result['n']} clips of "
              f"{result['dataset']} (loss {result['loss']:.4f}); confusion matrix: {result['confusion_png']}"
              + (f"; per device: {result['devices_png']}" if result["devices_png"] else ""), soft_wrap=True)
    _render_eval(result, result["labels"])
