"""The optional installs a command needs: one line naming the extra, never an ImportError."""

from __future__ import annotations

from edgeasc.errors import MissingExtraError


def require_torch(what: str):
    """Import torch or fail with one line saying which extra to install."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
        raise MissingExtraError(what) from exc
    return torch
