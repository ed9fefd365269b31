"""`edgeasc info`: a network's parameters, MACs, shapes, receptive field and bytes, from a
preset or flags (torch-free arithmetic), a trained run, or an exported .onnx file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box

from edgeasc.cli.extras import require_torch
from edgeasc.console import Table, fmt_int, fmt_macs, fmt_shape, out, print_json


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
        from edgeasc.cli.device import info_onnx

        info_onnx(target, as_json)
        return
    if target is not None:
        require_torch("`edgeasc info` on a checkpoint")
        from edgeasc.train.evaluate import describe_checkpoint

        extra, stats = describe_checkpoint(target, seconds)
        config = stats.config
        if as_json:
            print_json({**extra, "variant": _variant(config), **stats.to_dict()})
            return
        from edgeasc.models import config_from_dict

        _render_stats(stats, config_from_dict(config), extra["checkpoint"], None)
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

    features = PRESETS[preset].input_features if preset else None  # where its published counts are taken
    default_seconds = features.clip_seconds if features else 10.0
    stats = describe_config(config, seconds=default_seconds if seconds is None else seconds, features=features,
                            prune_target=prune_target)
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
    logits = extra.get("teacher_logits")
    if logits:
        out.print(f"teacher logits: {logits.get('path')} (sha256 {str(logits.get('sha256'))[:12]}…, "
                  f"{logits.get('clips')} clips)", markup=False, soft_wrap=True)
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
    from edgeasc.models import config_from_dict

    return config_from_dict(config).variant


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
        if c.variant == "cp-mobile":  # no ρ, depth restriction or Z: width is its base width
            table.add_row(name, c.variant, "-", str(c.base_channels), "-", str(c.n_classes), str(c.in_channels),
                          "-", fmt_int(p.prune_target) if p.prune_target else "-", p.description)
            continue
        table.add_row(name, c.variant, str(c.rho), str(c.width), ",".join(map(str, c.depth_restriction)),
                      str(c.n_classes), str(c.in_channels), str(c.decomposition or "-"),
                      fmt_int(p.prune_target) if p.prune_target else "-", p.description)
    out.print(table)


def _render_stats(stats, config, preset, prune_target) -> None:
    if config.variant == "cp-mobile":
        network = f"base {config.base_channels} ×{config.channels_multiplier:g} expansion " \
                  f"{config.expansion_rate:g} blocks {','.join(map(str, config.n_blocks))}"
    else:
        network = f"ρ{config.rho} w{config.width} depth {','.join(map(str, config.depth_restriction))}"
    title = f"{preset or config.variant}: {network}, {config.n_classes} classes, " \
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
    summary.add_row("MACs per clip" + (" (BatchNorm counted, as the organisers)" if config.variant == "cp-mobile"
                                       else ""), f"{fmt_int(stats.macs)} ({fmt_macs(stats.macs)})")
    if pruned:
        summary.add_row("  before channel pruning", f"{fmt_int(stats.dense_macs)} "
                        f"({100 * stats.macs / stats.dense_macs:.1f} % kept)")
    summary.add_row("MACs per second of audio", fmt_macs(stats.macs_per_second))
    summary.add_row("receptive field (freq × time)", fmt_shape(stats.receptive_field))
    if stats.receptive_field_authors:
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
