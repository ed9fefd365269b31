"""Checkpoints: plain tensors and JSON-like values, loadable with torch.load(weights_only=True),
so a checkpoint from a stranger can never execute code. Written atomically."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from edgeasc import __version__
from edgeasc.errors import EdgeascError
from edgeasc.io import atomic_write

FORMAT = "edgeasc-checkpoint"
VERSION = 1
REQUIRED = ("model_config", "labels", "feature_params", "normalization", "model", "epoch")


class CheckpointError(EdgeascError):
    exit_code = 2


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    payload = {"format": FORMAT, "version": VERSION, "edgeasc_version": __version__, **payload}

    def write(tmp: Path) -> None:
        # through a Python file: a full disk is then an OSError (ENOSPC) that atomic_write puts in
        # words; torch.save on a path writes in C++ and reports it as "unexpected pos 704 vs 598"
        with open(tmp, "wb") as f:
            torch.save(payload, f)

    return atomic_write(path, write)


def _load_failure(exc: Exception) -> str:
    """torch's reason in one plain line. A weights-only refusal is several paragraphs of advice
    to load the file unsafely (with terminal escapes): say instead which Python object the file
    asks for, and that edgeasc never loads one."""
    text = str(exc).strip()
    if "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f"the Python object {found.group(1)}" if found else "Python objects beyond tensors"
        return f"it needs {what}; edgeasc loads tensors and plain data only, never code"
    reason = text.splitlines()[0] if text else type(exc).__name__
    return re.sub(r"\x1b\[[0-9;]*m", "", reason)[:160]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if path.is_dir():
        path = find_checkpoint(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, refused globals: all "not a checkpoint"
        raise CheckpointError(f"{path}: not a loadable edgeasc checkpoint ({_load_failure(exc)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an edgeasc checkpoint (no '{FORMAT}' marker)")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {ckpt.get('version')} is not supported "
                              f"(this edgeasc reads version {VERSION})")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    ckpt["path"] = str(path)
    return ckpt


def find_checkpoint(run_dir: Path) -> Path:
    """The final model of a run if it finished, else its last checkpoint."""
    for name in ("model-final.pt", "checkpoint-last.pt"):
        if (run_dir / name).is_file():
            return run_dir / name
    raise CheckpointError(f"{run_dir}: no model-final.pt or checkpoint-last.pt (is it an edgeasc run?)")


def model_from_checkpoint(ckpt: dict):
    """The trained network, masks folded (final) or applied (last), in eval mode."""
    from edgeasc.models import build_model, config_from_dict

    model = build_model(config_from_dict(ckpt["model_config"]))  # any family; its config is plain data
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{ckpt.get('path')}: weights do not fit the stored config "
                              f"({str(exc).splitlines()[0][:160]})") from None
    masks = (ckpt.get("pruner") or {}).get("masks") or {}
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        conv = modules.get(name)
        if conv is None or not hasattr(conv, "weight_mask") or tuple(mask.shape) != tuple(conv.weight.shape):
            raise CheckpointError(f"{ckpt.get('path')}: pruning mask {name!r} does not fit the model")
        conv.weight_mask = mask.to(conv.weight.dtype)
    return model.eval()


def run_cache_root(ckpt: dict) -> Path | None:
    """The feature-cache root a run trained with (`--cache-dir`), None for the default."""
    cfg = ckpt.get("train_config") or {}
    return Path(cfg["cache_dir"]) if cfg.get("cache_dir") else None
