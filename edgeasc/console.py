"""Shared rich output helpers: results to stdout, progress and messages to stderr."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console

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
