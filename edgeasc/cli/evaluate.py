"""`edgeasc evaluate MODEL.onnx DATA`: an exported model's scores on labelled recordings, on the
device (torch-free: the runtime install only)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box

from edgeasc.console import Table, out, print_json
from edgeasc.errors import ConfigError

GROUP_NAMES = {"real": "DCASE real (a, b, c)", "seen": "DCASE seen (s1-s3)", "unseen": "DCASE unseen (s4-s6)"}


def evaluate(
    model: Path = typer.Argument(..., help="An ONNX model exported by edgeasc."),
    data: Path = typer.Argument(..., help="Labelled recordings: a DCASE layout, a folder per class, or a labels CSV's "
                                "folder (filename,label[,split])."),
    split: str = typer.Option("evaluate", help="evaluate (the layout's evaluation clips, as `edgeasc eval`) | all "
                              "(every listed clip: your own recordings)."),
    threads: int = typer.Option(1, help="onnxruntime intra-op threads."),
    batch: int | None = typer.Option(None, help="Windows per onnxruntime call (default: as predict)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Accuracy, macro-average accuracy, per-class and per-device tables and the confusion matrix of an ONNX model."""
    from edgeasc.console import progress_bar
    from edgeasc.data.dcase import open_dataset
    from edgeasc.runtime.deployed import load_model
    from edgeasc.runtime.evaluation import check_labels, evaluate_recordings

    if split not in ("evaluate", "all"):
        raise ConfigError(f"--split must be evaluate or all, got {split!r}")
    dataset = open_dataset(data)
    clips = dataset.splits["evaluate"] + (dataset.splits["train"] if split == "all" else [])
    m = load_model(model, threads)
    m.require_metadata("evaluate")
    check_labels(m, dataset.labels)  # before the progress bar: a refusal is one line
    with progress_bar("evaluating", len(clips), enabled=not as_json) as advance:
        result = evaluate_recordings(m, [(c.path, c.label, c.device) for c in clips], dataset.labels, batch, advance)
    result = {"model": str(model), "dataset": str(dataset.root), "layout": dataset.layout, "split": split, **result}
    if as_json:
        print_json(result)
        return
    render(result)


def render(result: dict) -> None:
    macro = result["macro_accuracy"]
    out.print(f"{result['model']}: accuracy {100 * result['accuracy']:.2f} %"
              + (f", macro-average (class-wise) {100 * macro:.2f} %" if macro is not None else "")
              + f" on {result['n']:,} clips of {result['dataset']} ({result['layout']}, {result['split']})",
              markup=False, soft_wrap=True)
    labels = result["labels"]
    per_class = Table(title="per class", box=box.SIMPLE_HEAD)
    for col, justify in (("class", "left"), ("clips", "right"), ("accuracy", "right")):
        per_class.add_column(col, justify=justify)
    for i, name in enumerate(labels):
        acc = result["per_class"][name]
        per_class.add_row(name, f"{sum(result['confusion'][i]):,}", "no clips" if acc is None else f"{100 * acc:.1f} %")
    if macro is not None:
        per_class.add_row("macro average" + (" (classes with clips)" if result["classes_without_clips"] else ""), "",
                          f"{100 * macro:.1f} %")
    out.print(per_class)
    if result["per_device"]:
        per_device = Table(title="per device", box=box.SIMPLE_HEAD)
        for col, justify in (("device", "left"), ("clips", "right"), ("accuracy", "right")):
            per_device.add_column(col, justify=justify)
        for name, acc in result["per_device"].items():
            per_device.add_row(name, f"{result['device_counts'][name]:,}", f"{100 * acc:.1f} %")
        for group, acc in result["device_groups"].items():
            if acc is not None:
                per_device.add_row(f"mean, {GROUP_NAMES[group]}", "", f"{100 * acc:.1f} %")
        out.print(per_device)
    confusion = Table(title="confusion (rows: true class, columns: predicted)", box=box.SIMPLE_HEAD)
    confusion.add_column("")
    for i in range(len(labels)):
        confusion.add_column(str(i), justify="right")
    for i, (name, row) in enumerate(zip(labels, result["confusion"], strict=True)):
        confusion.add_row(f"{i} {name}", *(f"{v:,}" if v else "·" for v in row))
    out.print(confusion)
    if result["errors"]:
        out.print(f"{len(result['errors'])} recording(s) could not be read and are not scored; first: "
                  f"{result['errors'][0]}", markup=False, soft_wrap=True)
