"""`edgeasc package`: finished runs -> a DCASE 2025 Task 1 inference package, and `--check` of one."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box

from edgeasc.cli.extras import require_torch
from edgeasc.console import Table, err, fmt_int, out, print_json, styled
from edgeasc.errors import ConfigError


def package(
    runs: list[Path] | None = typer.Argument(None, help="1 to 4 finished runs: submission modules 1..4, in order."),
    label: str | None = typer.Option(None, "--label", help="The DCASE submission label, e.g. Surname_LAB_task1."),
    output: Path | None = typer.Option(None, "-o", "--output", help="The package folder to write."),
    precision: str = typer.Option("fp16", help="fp16 (2 bytes per parameter) | fp32."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
    check: Path | None = typer.Option(None, "--check", help="Check a written package instead: the organisers' "
                                      "complexity check on all 13 devices, and predict() against edgeasc predict."),
    audio: list[Path] | None = typer.Option(None, "--audio", help="--check: audio files or folders for the "
                                            "fidelity check (default: the package's dummy.wav)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Write a DCASE 2025 Task 1 inference package (the organisers' API) from finished runs, or --check one."""
    require_torch("`edgeasc package`")
    from edgeasc.export.package import check_package, package_runs

    if check is not None:
        if runs or label or output:
            raise ConfigError("--check takes the package folder only (no runs, --label or -o)")
        result = check_package(check, audio)
        if as_json:
            print_json(result)
        else:
            for m in result["modules"]:
                _render_complexity(m["module"], m["complexity"], m["device_map"], result["limits"])
                f = m["fidelity"]
                out.print(f"{m['module']}: predict() vs edgeasc predict on {f['files']} files (devices "
                          f"{', '.join(f['devices'])}): max |Δp| {f['max_abs_probability_difference']:.2e} "
                          f"(limit {f['tolerance']:g}), top-1 {'identical' if f['top1_identical'] else 'DIFFERENT'}",
                          markup=False)
        failed = [f"{m['module']}: {'; '.join(m['problems'])}" for m in result["modules"] if m["problems"]]
        if failed:
            err.print(f"edgeasc: error: package check FAIL ({' | '.join(failed)})", markup=False, soft_wrap=True)
            raise typer.Exit(3)
        if not as_json:
            out.print(f"{result['folder']}: PASS", markup=False)
        return
    if audio:
        raise ConfigError("--audio only applies to --check")
    if not runs or label is None or output is None:
        raise ConfigError("give the runs, --label and -o (or --check FOLDER)")
    result = package_runs(runs, label, output, precision, force)
    if as_json:
        print_json(result)
    else:
        for m in result["modules"]:
            _render_complexity(m["module"], m["complexity"], m["device_map"], result["limits"])
    if not result["written"]:
        over = [f"{m['module']}: {o}" for m in result["modules"] for o in m["over"]]
        err.print(f"edgeasc: error: over the DCASE 2025 limits ({'; '.join(over)}); nothing was written; "
                  f"{result['hint']}",
                  markup=False, soft_wrap=True)
        raise typer.Exit(3)
    if not as_json:
        out.print(f"wrote {result['output']} ({result['label']}, {result['precision']}): "
                  f"pip install -e {result['output']}", markup=False)


def _render_complexity(module: str, result: dict, device_map: dict | None, limits: dict) -> None:
    table = Table(title=f"{module}: the organisers' complexity check", box=box.SIMPLE_HEAD)
    for name, justify in (("device", "left"), ("submodel", "left"), ("MACs", "right"), ("parameter bytes", "right"),
                          ("", "left")):
        table.add_column(name, justify=justify)
    for device_id, c in result["per_device"].items():
        ok = c["MACs"] <= limits["MACs"] and c["Params"] <= limits["Params"]
        table.add_row(device_id, (device_map or {}).get(device_id, "general"), fmt_int(c["MACs"]),
                      fmt_int(c["Params"]), styled("ok" if ok else "OVER", "green" if ok else "bold red"))
    table.add_row("any other id", "general", "", "", "")
    table.add_row("limit", "", fmt_int(limits["MACs"]), fmt_int(limits["Params"]), "")
    out.print(table)
