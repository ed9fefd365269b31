"""`edgeasc export`: fold, export and verify a run as ONNX, and render its size report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box

from edgeasc.cli.extras import require_torch
from edgeasc.console import Table, err, fmt_int, fmt_macs, out, print_json, styled
from edgeasc.errors import ConfigError


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
    from edgeasc.export.pipeline import export_run

    if swa:
        if not source.is_dir():
            raise ConfigError(f"--swa takes a run directory, not {source}")
        if not (source / "model-swa.pt").is_file():
            raise ConfigError(f"{source} has no model-swa.pt: train it with --swa-start")
        source = source / "model-swa.pt"
        output = output or source.parent / "model-swa.onnx"
    result = export_run(source, output, force, fold_damping=fold_damping, fold_bn=fold_bn, precision=precision,
                        budget=check_budget, rules=rules, count_bn=count_bn, sparse=sparse, calibration=calibration,
                        cache_dir=cache_dir, with_frontend=with_frontend)
    if as_json:
        print_json(result)
    else:
        _render_export(result)
        for device_id, each in result["devices"].items():
            out.print(f"device {device_id}: its own fine-tuned model", markup=False)
            _render_export(each)
    # the verdict of every file written: the general model's, then each device model's
    for each in [result, *result["devices"].values()]:
        _verdict(each)


def _verdict(result: dict) -> None:
    from edgeasc.export.report import budget_failures, precisions_that_fit

    report = result["report"]
    if report["verdict"] != "PASS":
        over = budget_failures(report)
        fits = precisions_that_fit(report)
        hint = f"; --precision {fits[0]} would fit" if fits else ""
        if not result["budget_asked"]:  # a report, not a verdict: nobody asked for this budget
            err.print(f"edgeasc: note: over the {report['rules']} budget ({'; '.join(over)}){hint}; ask with "
                      "--check-budget or --rules to make it an error", markup=False, soft_wrap=True)
            return
        err.print(f"edgeasc: error: budget FAIL under {report['rules']} ({'; '.join(over)}){hint}; {result['onnx']} "
                  "and its report were written and kept", markup=False, soft_wrap=True)
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
    table.add_row("verdict", styled(r["verdict"], f"bold {colour}"))
    out.print(table)
    out.print(f"counted on {r['counted_on']}; report: {Path(result['onnx']).with_suffix('.size.md')}")
