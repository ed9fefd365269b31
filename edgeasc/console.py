"""Shared rich output helpers: results to stdout, progress bars and messages to stderr."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# Piped output (logs, CI, `| less`) gets 160 columns instead of rich's 80 so that
# tables are not squeezed; a terminal or $COLUMNS still decides when present.
_width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
out = Console(highlight=False, width=_width)
err = Console(stderr=True, highlight=False)


def print_json(obj: Any) -> None:
    """One JSON document on stdout, unwrapped (rich would wrap long lines)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def fmt_int(n: int) -> str:
    return f"{n:,}"


def fmt_macs(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3f} {unit}"
    return f"{n:.0f}"


def fmt_shape(shape: list[int]) -> str:
    return "×".join(str(s) for s in shape)


@contextmanager
def progress_bar(description: str, total: int, unit: str = "clips", enabled: bool = True,
                 transient: bool = False):
    """A progress bar on stderr showing items/s and the ETA; yields an `advance(n)` function."""
    if not enabled:
        yield lambda n=1: None
        return
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TaskProgressColumn(), TextColumn("{task.fields[rate]}"),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                        console=err, transient=transient)
    with progress:
        task = progress.add_task(description, total=total, rate="")

        def advance(n: int = 1) -> None:
            progress.advance(task, n)
            speed = progress.tasks[0].speed
            if speed:
                progress.update(task, rate=f"{speed:.1f} {unit}/s")

        yield advance
