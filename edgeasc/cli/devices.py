"""`edgeasc finetune-devices`: per-device copies of a finished run's model, and their table."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box

from edgeasc.cli.extras import require_torch
from edgeasc.console import Table, out, print_json


def finetune_devices(
    run: Path = typer.Argument(..., help="A finished run (its model-final.pt is the general model)."),
    epochs: int | None = typer.Option(None, help="Fine-tuning epochs per device (default 10)."),
    lr: float | None = typer.Option(None, help="Peak learning rate, cosine to 0 (default: a tenth of the run's)."),
    seed: int | None = typer.Option(None, help="Seed (default: the run's)."),
    device_id: list[str] | None = typer.Option(None, "--device-id", help="Only this training device (repeat; "
                                               "default: every device of the training split)."),
    force: bool = typer.Option(False, "--force", help="Train the per-device models again."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Fine-tune one copy of a finished run's model per recording device of its training split
    (RUN/devices/<id>/model-final.pt, RUN/devices.json); export and package use them."""
    require_torch("`edgeasc finetune-devices`")
    from edgeasc.train.devices import finetune_devices as finetune

    manifest = finetune(run, epochs, lr, seed, device_id, force, progress=not as_json)
    if as_json:
        print_json(manifest)
        return
    table = Table(title=f"{run}: per-device models ({manifest['epochs']} epochs, lr {manifest['lr']:g})",
                  box=box.SIMPLE_HEAD)
    for name, justify in (("device", "left"), ("train clips", "right"), ("evaluate clips", "right"),
                          ("general", "right"), ("fine-tuned", "right"), ("checkpoint", "left")):
        table.add_column(name, justify=justify)

    def pct(v):
        return "-" if v is None else f"{100 * v:.1f} %"

    for d, e in manifest["devices"].items():
        table.add_row(d, str(e["train_clips"]), str(e["evaluate_clips"]), pct(e["accuracy_before"]),
                      pct(e["accuracy_after"]), e["checkpoint"])
    out.print(table)
    out.print("every other device: the general model (model-final.pt)", markup=False)
