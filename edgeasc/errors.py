"""Errors that the CLI turns into one line on stderr and an exit code (never a traceback)."""

from __future__ import annotations


class EdgeascError(Exception):
    """A problem the user can fix; `exit_code` is what the CLI exits with."""

    exit_code = 1


class ConfigError(EdgeascError, ValueError):
    """An impossible or malformed configuration (bad flag values, unknown preset...)."""

    exit_code = 2


class MissingExtraError(EdgeascError, ImportError):
    """A command needs an optional dependency group that is not installed."""

    exit_code = 2

    def __init__(self, what: str, extra: str = "train") -> None:
        super().__init__(f"{what} needs the '{extra}' extra: pip install \"edgeasc[{extra}]\"")
