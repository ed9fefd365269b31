"""Shared rich output helpers: results to stdout, progress bars and messages to stderr.

Strings from outside (labels in a model's metadata, dataset labels, file names, the messages
that quote them) reach the terminal only as text: `safe()` shows every control character and
Unicode bidi control as an escape (an OSC sequence cannot retitle the terminal, `\r` cannot
overwrite a line, U+202E cannot reverse what follows), and the consoles never read rich
markup (`[bold]` in a label prints as those characters). Our own styles are `Text` objects.
The consoles also escape whatever control character a caller forgot to pass through `safe()`
(the last line of defence); JSON output is exact (json.dumps escapes these itself).
"""

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
from rich.segment import Segment
from rich.table import Table as _RichTable
from rich.text import Text

# C0 controls, DEL, C1 controls, the Unicode bidi embeddings/overrides/isolates and marks, and
# the line/paragraph separators: each shown as its Python escape.
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPES = {c: _NAMED.get(chr(c), f"\\x{c:02x}") for c in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({ord(ch): f"\\u{ord(ch):04x}" for ch in
                 "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"})
# rich's own line breaks are the one control character its segments may carry
_SEGMENT_ESCAPES = {k: v for k, v in _ESCAPES.items() if k != ord("\n")}


def safe(text: object) -> str:
    """`text` as a string a terminal shows as it is: control characters and bidi controls
    escaped (`\\x1b`, `\\r`, `\\u202e`). Plain text comes back unchanged."""
    return str(text).translate(_ESCAPES)


class SafeConsole(Console):
    """A rich Console that never interprets markup in strings and escapes any control
    character in the text it writes (rich's own styles and cursor moves are untouched)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, highlight=False, emoji=False, **kwargs)

    def _render_buffer(self, buffer):  # the one place every printed segment passes through
        return super()._render_buffer(
            segment if segment.control else Segment(segment.text.translate(_SEGMENT_ESCAPES), segment.style)
            for segment in buffer)


class Table(_RichTable):
    """rich's Table with every string cell, title and caption passed through safe()."""

    def __init__(self, *columns: Any, title: Any = None, caption: Any = None, **kwargs: Any) -> None:
        super().__init__(*columns, title=safe(title) if isinstance(title, str) else title,
                         caption=safe(caption) if isinstance(caption, str) else caption, **kwargs)

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        super().add_row(*(safe(r) if isinstance(r, str) else r for r in renderables), **kwargs)


def styled(text: str, style: str) -> Text:
    """Our own emphasis (a verdict, a heading), as rich Text: no markup is parsed anywhere."""
    return Text(safe(text), style=style)

# Piped output (logs, CI, `| less`) gets 160 columns instead of rich's 80 so that
# tables are not squeezed; a terminal or $COLUMNS still decides when present.
_width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
out = SafeConsole(width=_width)
err = SafeConsole(stderr=True)


# ----------------------------------------------------------------------------- libraries' own output
# A normal run shows edgeasc's lines only: the libraries' warnings (Python warnings, onnxruntime's
# log, the ONNX exporter's progress and log lines, the quantizer's advice) are about their
# internals, not the user's input. `edgeasc --verbose` (or EDGEASC_VERBOSE=1, which worker and
# measuring processes inherit) lets them through, on stderr.
VERBOSE_ENV = "EDGEASC_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def ort_log_severity() -> int:
    """onnxruntime's log_severity_level: 2 (warnings) when verbose, else 3 (errors; those become
    edgeasc's own one-line messages)."""
    return 2 if verbose() else 3


@contextmanager
def library_output(verbose_run: bool):
    """For the length of one command: the libraries' warnings hidden unless `verbose_run` (the
    filters, and the environment that child processes inherit, are restored afterwards)."""
    import warnings

    saved = {k: os.environ.get(k) for k in (VERBOSE_ENV, "PYTHONWARNINGS")}
    with warnings.catch_warnings():
        if verbose_run:
            os.environ[VERBOSE_ENV] = "1"
        else:
            warnings.simplefilter("ignore")
            os.environ["PYTHONWARNINGS"] = "ignore"  # spawned feature workers and bench processes too
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


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
    progress = Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(),
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
