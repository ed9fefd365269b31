"""The run directory: what a run writes there, when a folder may be written into or resumed, and
that it never replaces a file the run reads. Checked before any work (train/run.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from edgeasc.console import err
from edgeasc.errors import ConfigError
from edgeasc.io import FolderLock, is_within, refuse_input_as_output
from edgeasc.train.checkpoint import CheckpointError
from edgeasc.train.config import TrainConfig

RUN_FILES = ("config.json", "metrics.jsonl", "checkpoint-last.pt", "model-final.pt", "summary.json",
             "curves.png", "nonzero.png", "confusion.png", "confusion-eval.png", "devices.png", "devices-eval.png",
             "model-best.pt", "model-swa.pt")


def check_run_dir(run_dir: Path, resume: bool, force: bool, existed: bool = True) -> bool:
    """Whether to resume from the run's checkpoint. A folder whose run was stopped before its
    first checkpoint holds nothing to lose: a plain start reuses it, and --resume starts it
    from epoch 1, saying so. --resume on a folder that did not exist is a typo, not a run."""
    if (run_dir / "checkpoint-last.pt").is_file():
        if resume:
            return True
        if not force:
            raise ConfigError(f"{run_dir} already holds a run: use --resume to continue it or --force to start over")
        return False
    if resume and existed and not (run_dir / "model-final.pt").is_file():
        err.print(f"edgeasc: note: {run_dir} has no checkpoint yet (stopped during its first epoch): "
                  "starting it from epoch 1", markup=False, soft_wrap=True)
        return False
    if resume:
        raise CheckpointError(f"{run_dir}: nothing to resume (no checkpoint-last.pt); start without --resume")
    if (run_dir / "model-final.pt").is_file() and not force:
        raise ConfigError(f"{run_dir} already holds a run: use --force to start over")
    return False


RUN_MARKERS = ("checkpoint-last.pt", "model-final.pt", "model-swa.pt", "model-best.pt", "metrics.jsonl")


def _is_run(folder: Path) -> bool:
    """Whether `folder` holds an edgeasc run: one of its checkpoints or metrics, or a config.json
    that this tool wrote (a config.json of someone else's is not a run to write over)."""
    if any((folder / name).is_file() for name in RUN_MARKERS):
        return True
    try:
        record = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and {"train", "model", "labels"} <= record.keys()


def refuse_outputs_over_inputs(cfg: TrainConfig, force: bool, inputs: Sequence[str | Path] = ()) -> None:
    """Before any work: --out never holds the data it trains on, never writes a file the run reads
    (the --config file, a --teacher checkpoint, a labels CSV; through any link), and never writes
    into a folder of other files without --force."""
    run_dir = Path(cfg.out)
    if cfg.dataset and Path(cfg.dataset).is_dir() and is_within(cfg.dataset, run_dir):
        raise ConfigError(f"--out {run_dir} holds the dataset {cfg.dataset}: choose a run directory outside the data")
    read = [*inputs, *([cfg.dataset] if cfg.dataset else [])]
    for teacher in cfg.teachers:
        if Path(teacher).is_dir():
            if is_within(teacher, run_dir) and is_within(run_dir, teacher):
                raise ConfigError(f"--teacher {teacher} is the run being trained: a run cannot teach itself")
            read += [Path(teacher) / "model-final.pt", Path(teacher) / "checkpoint-last.pt"]
        else:
            read.append(teacher)
    for name in (*RUN_FILES, FolderLock.NAME):
        refuse_input_as_output(run_dir / name, read, "--out")
    if run_dir.is_dir() and not force and not _is_run(run_dir):
        other = sorted(e.name for e in run_dir.iterdir()
                       if e.name != FolderLock.NAME and not (e.name.startswith(".") and e.name.endswith(".partial")))
        if other:
            more = f" and {len(other) - 1} more" if len(other) > 1 else ""
            raise ConfigError(f"--out {run_dir} exists and is not an edgeasc run (it holds {other[0]}{more}): "
                              "choose a new or empty folder, or --force to write the run into it")
