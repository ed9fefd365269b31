"""`edgeasc predict`: classify recordings with an exported model, torch-free; the table, the
JSON and the CSV it renders, one file's result at a time. It parses, calls
edgeasc.runtime.predict, and renders."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

import typer
from rich import box

from edgeasc.console import Table, err, out, safe, styled
from edgeasc.errors import ConfigError


def predict(
    model: Path = typer.Argument(..., help="An .onnx file written by `edgeasc export`."),
    audio_files: list[Path] = typer.Argument(..., help="WAV/FLAC/OGG recordings (any rate, mono or stereo), "
                                             "folders (searched for them), or '-' for a WAV stream on stdin "
                                             "(16/24/32-bit PCM or 32-bit float, read as it comes)."),
    top_k: int = typer.Option(1, "--top-k", help="Classes to show per file."),
    window: float | None = typer.Option(None, help="Window seconds (default: the model's clip length)."),
    hop: float | None = typer.Option(None, help="Hop between windows in seconds (default: the window)."),
    batch: int | None = typer.Option(None, help="Windows per onnxruntime call (default: up to 8 for small "
                                     "networks, fewer for big ones, so that a batch holds at most 2 GMAC)."),
    threads: int = typer.Option(1, help="onnxruntime intra-op threads."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    csv_out: Path | None = typer.Option(None, "--csv", help="Also write one row per window and per file here."),
    force: bool = typer.Option(False, "--force", help="--csv may replace a file that is not an earlier predict CSV."),
) -> None:
    """Classify recordings, torch-free, with only what the ONNX file carries."""
    from edgeasc.console import progress_bar
    from edgeasc.io import atomic_write
    from edgeasc.runtime.audio import truncation
    from edgeasc.runtime.deployed import load_model
    from edgeasc.runtime.predict import expand_inputs, predict_files

    if force and csv_out is None:
        raise ConfigError("--force does nothing without --csv (it lets --csv replace a file predict did not write)")
    audio_files = expand_inputs(audio_files, skipped=lambda line: err.print(safe(f"edgeasc: warning: {line}"),
                                                                           markup=False, soft_wrap=True))
    m = load_model(model, threads)
    m.require_metadata("predict")
    if not 1 <= top_k <= len(m.labels):
        raise ConfigError(f"--top-k must be between 1 and {len(m.labels)} (the model's classes), got {top_k}")
    if csv_out is not None:
        from edgeasc.io import refuse_input_as_output

        refuse_input_as_output(csv_out, [model, *audio_files], "--csv")
        if csv_out.is_file() and not force and not _is_predict_csv(csv_out):
            raise ConfigError(f"--csv {csv_out} exists and is not a CSV that predict wrote: use --force to replace it")
    if csv_out is not None and not csv_out.parent.is_dir():
        raise ConfigError(f"--csv: folder {csv_out.parent} does not exist")
    if csv_out is not None and (csv_out.is_dir() or not os.access(csv_out.parent, os.W_OK)):
        raise ConfigError(f"--csv: cannot write {csv_out}" + (" (a folder)" if csv_out.is_dir() else
                                                              " (the folder is not writable)"))
    # one file's result at a time: its line of JSON, its CSV rows (to a temporary file) and its
    # table row are made as it comes and the Prediction, with its windows' probabilities, is
    # dropped, so memory does not grow with the number of files or windows
    rows, failed, first = [], 0, True
    # a table is rendered whole (its columns fit every row), so past STREAMED_TABLE files it is
    # printed a row at a time instead, in columns sized from what is known before the first file
    streamed = None if as_json or len(audio_files) <= STREAMED_TABLE else StreamedTable(audio_files, m.labels, top_k)
    spool = tempfile.TemporaryFile("w+", encoding="utf-8", newline="") if csv_out is not None else None
    try:
        writer = csv.writer(spool, lineterminator="\n") if spool is not None else None
        if writer is not None:
            writer.writerow(csv_header(m.labels))
        with progress_bar("predict", len(audio_files), unit="files", transient=True,
                          enabled=not as_json and streamed is None and len(audio_files) > 1) as advance:
            for p in predict_files(m, audio_files, window, hop, batch, progress=advance):
                if p.error:
                    failed += 1
                    err.print(safe(f"edgeasc: error: {p.error}"), markup=False, soft_wrap=True)
                elif warning := truncation(p.path):
                    err.print(safe(f"edgeasc: warning: {warning}"), markup=False, soft_wrap=True)
                if writer is not None:
                    writer.writerows(csv_rows(p))
                if as_json:  # the bytes print_json writes for the whole list, item by item
                    item = textwrap.indent(json.dumps(p.to_dict(top_k), indent=2), "  ")
                    sys.stdout.write(("[\n" if first else ",\n") + item)
                    sys.stdout.flush()
                elif streamed is not None:
                    streamed.row(prediction_row(p, top_k))
                else:
                    rows.append(prediction_row(p, top_k))
                first = False
        if spool is not None:
            spool.flush()
            spool.seek(0)
            atomic_write(csv_out, lambda tmp: _copy_text(spool, tmp))
    finally:
        if spool is not None:
            spool.close()
    if as_json:
        sys.stdout.write("[]\n" if first else "\n]\n")
        sys.stdout.flush()
    elif streamed is None:
        render_rows(rows, top_k)
    if failed:
        raise typer.Exit(1)


def _copy_text(source, path: Path) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        shutil.copyfileobj(source, f)


CSV_HEADER = "file,window_start,window_end,label,probability,"


def _is_predict_csv(path: Path) -> bool:
    """Whether `path` starts with the header predictions_csv writes (it may be replaced)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(CSV_HEADER)) == CSV_HEADER.encode()
    except OSError:
        return False


def csv_header(labels: list[str]) -> list[str]:
    return ["file", "window_start", "window_end", "label", "probability", *labels, "error"]


def csv_rows(p) -> list[list[str]]:
    """One row per window and one for the whole file (or one error row)."""
    if p.error:
        return [[p.path, "", "", "", "", *([""] * len(p.labels)), p.error]]
    rows = []
    for start, probs in zip(p.starts, p.window_probabilities, strict=True):
        label, prob = p.top(1, probs)[0]
        rows.append([p.path, f"{start:.3f}", f"{start + p.window_seconds:.3f}", label, f"{prob:.6f}",
                     *(f"{v:.6f}" for v in probs), ""])
    label, prob = p.top(1)[0]
    rows.append([p.path, "all", "", label, f"{prob:.6f}", *(f"{v:.6f}" for v in p.probabilities), ""])
    return rows


def predictions_csv(results) -> str:
    labels = next((p.labels for p in results), [])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(csv_header(labels))
    for p in results:
        w.writerows(csv_rows(p))
    return buf.getvalue()


def prediction_row(p, top_k: int) -> tuple:
    if p.error:
        return (p.path, "", "", styled("error", "red"), "", *([""] if top_k > 1 else []))
    top = p.top(top_k)
    rest = [", ".join(f"{label} {100 * prob:.1f} %" for label, prob in top[1:])] if top_k > 1 else []
    return (p.path, f"{p.seconds:.1f}", str(len(p.starts)), top[0][0], f"{100 * top[0][1]:.1f} %", *rest)


STREAMED_TABLE = 1_000  # files beyond which predict's table is printed row by row


class StreamedTable:
    """predict's table for many files, a row as each file is done, so memory does not grow
    with the number of files: the columns of render_rows, sized from the input paths, the
    model's labels and the widest numbers (seconds up to 10^7); a longer cell pushes its row."""

    def __init__(self, paths: list, labels: list[str], top_k: int) -> None:
        self.columns = ["file", "seconds", "windows", "prediction", "probability", *(["next"] if top_k > 1 else [])]
        self.widths = [max([4, *(len(safe(str(path))) for path in paths)]), 9, 7,
                       max([10, *(len(safe(label)) for label in labels)]), 11, *([0] if top_k > 1 else [])]
        self.right = [False, True, True, False, True, False][:len(self.widths)]
        self._line(self.columns)
        self._line(["-" * (w or 4) for w in self.widths])

    def _line(self, cells) -> None:
        text = "  ".join(c if not w else f"{c:>{w}}" if right else f"{c:<{w}}"
                         for c, w, right in zip(cells, self.widths, self.right, strict=True))
        sys.stdout.write(text.rstrip() + "\n")
        sys.stdout.flush()

    def row(self, cells: tuple) -> None:
        self._line([safe(str(c.plain if hasattr(c, "plain") else c)) for c in cells])


def render_rows(rows: list[tuple], top_k: int) -> None:
    table = Table(box=box.SIMPLE_HEAD)
    for col in ("file", "seconds", "windows", "prediction", "probability", *(["next"] if top_k > 1 else [])):
        table.add_column(col, justify="left" if col in ("file", "prediction", "next") else "right")
    for row in rows:
        table.add_row(*row)
    out.print(table)


def render_predictions(results, top_k: int) -> None:
    render_rows([prediction_row(p, top_k) for p in results], top_k)
