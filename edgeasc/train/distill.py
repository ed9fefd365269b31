"""Knowledge distillation from one or more finished runs (docs/distillation.md).

The student's loss is (1 - w)·CE(labels) + w·τ²·KL(p_T ‖ p_S), with p = softmax(logits / τ)
and the teachers' logits averaged first (an ensemble: Hinton et al.; every top DCASE task-1
system since 2022 trains its small model this way). KL is summed over classes and averaged
over the batch; the τ² keeps the gradient scale independent of τ.

Targets are `cached` by default: each teacher runs once per training clip, on the clip as
stored (no roll, no Freq-MixStyle, no mixup), and its logits are kept next to the features,
keyed by the teacher checkpoint's hash, the clip list and the feature parameters. Under
mixup the soft targets are mixed with the same λ and partner as the inputs (cross-entropy is
linear in the target, so this is exactly the mixup of the two KD losses). Roll and
Freq-MixStyle are treated as label-preserving, as for the hard labels: a cached target is
the teacher's view of the un-augmented clip. `online` runs the teachers on the exact batch
the student sees (rolled, styled, mixed), at the cost of a teacher forward pass per step;
benchmarks/RESULTS.md measures the difference.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgeasc.data.cache import FeatureCache
from edgeasc.errors import ConfigError
from edgeasc.io import atomic_write, file_sha256, make_folder
from edgeasc.train.checkpoint import (
    CheckpointError,
    find_checkpoint,
    load_checkpoint,
    model_from_checkpoint,
)

KD_TARGETS = ("cached", "online")
DEFAULT_WEIGHT = 0.5
DEFAULT_TEMPERATURE = 2.0
LOGITS_VERSION = 1


@dataclass
class Teacher:
    path: str                 # the checkpoint file
    sha256: str               # of that file: what the cached logits are keyed by
    model: torch.nn.Module    # eval mode
    mean: torch.Tensor        # the teacher's own input normalisation, (1, mels, 1)
    std: torch.Tensor
    accuracy: float | None    # its final evaluate accuracy, as its run reported it

    def record(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "accuracy": self.accuracy,
                "params": sum(p.numel() for p in self.model.parameters())}


def load_teacher(source: str | Path, labels: list[str], feature_params: dict, channels: int,
                 student_dir: str | Path | None = None) -> Teacher:
    """A finished run (its model-final.pt) or a checkpoint file, checked against the student's
    labels, feature parameters and input channels: a teacher that saw other inputs or names
    other classes would teach nonsense, silently."""
    source = Path(source).expanduser()
    if not source.exists():
        raise ConfigError(f"--teacher {source}: no such run or checkpoint")
    if source.is_dir():
        if student_dir is not None and source.resolve() == Path(student_dir).resolve():
            raise ConfigError(f"--teacher {source} is the run being trained: a run cannot teach itself")
        if not (source / "model-final.pt").is_file():
            if (source / "checkpoint-last.pt").is_file():
                raise ConfigError(f"--teacher {source} has not finished training (no model-final.pt): finish it "
                                  "with --resume, or give its checkpoint-last.pt explicitly")
            find_checkpoint(source)  # raises: not a run
        source = source / "model-final.pt"
    ckpt = load_checkpoint(source)
    where = f"--teacher {source}"
    if list(ckpt["labels"]) != list(labels):
        raise ConfigError(f"{where} has other labels than the student's data: {list(ckpt['labels'])} vs {list(labels)}")
    theirs, ours = dict(ckpt["feature_params"]), dict(feature_params)
    differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if differ:
        detail = ", ".join(f"{k} {theirs.get(k)!r} vs {ours.get(k)!r}" for k in differ)
        raise ConfigError(f"{where} was trained on other feature parameters ({detail}): train the teacher on the "
                          "student's features")
    if int(ckpt.get("channels", -1)) != int(channels):
        raise ConfigError(f"{where} takes {ckpt.get('channels')}-channel input, the student's data has {channels}")
    try:
        model = model_from_checkpoint(ckpt)
    except (ConfigError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{source}: the teacher's model config is invalid ({exc})") from None
    norm = ckpt["normalization"]
    mean, std = (torch.tensor(np.asarray(norm[k], dtype=np.float32)).view(1, -1, 1) for k in ("mean", "std"))
    if mean.shape[1] != feature_params["n_mels"] or std.shape != mean.shape or not bool((std > 0).all()):
        raise CheckpointError(f"{source}: the teacher's normalisation does not fit {feature_params['n_mels']} mel bins")
    final = (ckpt.get("summary") or {}).get("final") or {}
    accuracy = final.get("accuracy") if isinstance(final.get("accuracy"), int | float) else None
    for p in model.parameters():
        p.requires_grad_(False)
    return Teacher(str(source.resolve()), file_sha256(source), model, mean, std, accuracy)


def load_teachers(sources, labels, feature_params, channels, student_dir=None) -> list[Teacher]:
    teachers = [load_teacher(s, labels, feature_params, channels, student_dir) for s in sources]
    seen: dict[str, str] = {}
    for t in teachers:
        if t.sha256 in seen:
            raise ConfigError(f"--teacher {t.path} is the same checkpoint as {seen[t.sha256]}: give each teacher once")
        seen[t.sha256] = t.path
    return teachers


@dataclass
class TeacherLogitsFile:
    """--teacher-logits: pre-computed teacher logits, one row per training clip in the cache's
    order, float32 (clips, classes)."""

    path: str
    sha256: str
    format: str
    logits: np.ndarray

    def record(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "format": self.format, "clips": int(len(self.logits))}


def load_teacher_logits(path: str | Path, clips: list[str], labels: list[str],
                        meta_order: list[str] | None = None) -> TeacherLogitsFile:
    """Read and check a teacher-logits file (docs/distillation.md, "Teacher logits from a file"):
    `.csv` (or tab-separated) with a header `filename,<class>,...` naming every class of the
    dataset once, or `.npz` with `filenames` (N strings) and `logits` (N × classes), and
    optionally `labels` (the class order, checked), or `.pt`, the organisers' release format
    (CPJKU's `ensemble_logits.pt`): one tensor, one row per line of the dataset's meta.csv
    (`meta_order`) in its order, classes in sorted order (sklearn's LabelEncoder). Rows are
    matched to the training clips by name as the dataset lists it, else by file name when that is
    unique; other rows (other splits) are ignored. Missing clips, a duplicate, a wrong class count
    or order, and a non-finite value are refused in one line."""
    path = Path(path).expanduser()
    where = f"--teacher-logits {path}"
    if not path.is_file():
        raise ConfigError(f"{where}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        names, rows = _read_npz(path, where, labels)
    elif suffix in (".csv", ".tsv", ".txt"):
        names, rows = _read_csv(path, where, labels)
    elif suffix == ".pt":
        names, rows = _read_pt(path, where, labels, meta_order)
    else:
        raise ConfigError(f"{where}: unknown format {suffix or '(no suffix)'!r}: give a .csv, .npz or .pt file")
    if rows.ndim != 2 or rows.shape[1] != len(labels):
        raise ConfigError(f"{where}: {rows.shape[1] if rows.ndim == 2 else rows.shape} logits per clip, the dataset "
                          f"has {len(labels)} classes")
    if len(names) != len(rows):
        raise ConfigError(f"{where}: {len(names)} file names for {len(rows)} rows of logits")
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    if len(bad):
        raise ConfigError(f"{where}: {len(bad)} row(s) with a non-finite logit (first: {names[bad[0]]!r})")
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in index:
            raise ConfigError(f"{where}: clip {name!r} is listed twice")
        index[name] = i
    by_base: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        by_base.setdefault(name.replace("\\", "/").rsplit("/", 1)[-1], []).append(i)
    order, missing = [], []
    for clip in clips:
        i = index.get(clip)
        if i is None:
            hits = by_base.get(clip.replace("\\", "/").rsplit("/", 1)[-1], [])
            i = hits[0] if len(hits) == 1 else None
        if i is None:
            missing.append(clip)
        else:
            order.append(i)
    if missing:
        raise ConfigError(f"{where}: no logits for {len(missing)} of the {len(clips)} training clips "
                          f"(first: {missing[0]!r})")
    return TeacherLogitsFile(str(path.resolve()), file_sha256(path), suffix.lstrip("."),
                             np.ascontiguousarray(rows[order], dtype=np.float32))


def _read_npz(path: Path, where: str, labels: list[str]) -> tuple[list[str], np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k in ("filenames", "logits", "labels")}
            files = sorted(data.files)
    except (OSError, ValueError, EOFError) as exc:  # not a zip, or object arrays (pickles are refused)
        raise ConfigError(f"{where}: not a readable .npz ({exc})") from None
    if "filenames" not in arrays or "logits" not in arrays:
        raise ConfigError(f"{where}: an .npz needs the arrays 'filenames' and 'logits', it has "
                          f"{', '.join(files) or 'none'}")
    names, rows = arrays["filenames"], arrays["logits"]
    stored = [str(v) for v in arrays["labels"]] if "labels" in arrays else None
    if stored is not None and stored != list(labels):
        raise ConfigError(f"{where}: classes {stored} differ from the dataset's {list(labels)}")
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise ConfigError(f"{where}: 'filenames' must be one string per clip, got {names.dtype} {names.shape}")
    if rows.dtype.kind not in "fiu":
        raise ConfigError(f"{where}: 'logits' must be numbers, got {rows.dtype}")
    return [str(n) for n in names], rows.astype(np.float64)


def _read_pt(path: Path, where: str, labels: list[str], meta_order: list[str] | None
             ) -> tuple[list[str], np.ndarray]:
    """The organisers' tensor: rows in meta.csv order, columns in sorted class order. Loaded with
    weights_only=True: tensors only, no code runs."""
    if meta_order is None:
        raise ConfigError(f"{where}: a .pt file holds one row per line of the dataset's meta.csv, and this dataset "
                          "has no meta.csv: give a .csv or .npz keyed by file name")
    try:
        tensor = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a file that is not a tensor archive
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{where}: not a readable tensor file ({reason[:200]})") from None
    if not isinstance(tensor, torch.Tensor):
        raise ConfigError(f"{where}: holds a {type(tensor).__name__}, not one tensor of logits")
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise ConfigError(f"{where}: the logits must be real numbers, got {tensor.dtype}")
    rows = tensor.detach().to(torch.float64).numpy()
    if rows.ndim != 2 or rows.shape[1] != len(labels):
        raise ConfigError(f"{where}: a tensor of shape {tuple(rows.shape)}, the dataset has {len(labels)} classes "
                          f"(one row per meta.csv line: {len(meta_order)} × {len(labels)})")
    if rows.shape[0] != len(meta_order):
        raise ConfigError(f"{where}: {rows.shape[0]} rows, the dataset's meta.csv lists {len(meta_order)} clips")
    encoded = sorted(labels)  # LabelEncoder's classes_
    return list(meta_order), rows[:, [encoded.index(name) for name in labels]]


def _read_csv(path: Path, where: str, labels: list[str]) -> tuple[list[str], np.ndarray]:
    import csv

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    lines = text.splitlines()
    if not lines:
        raise ConfigError(f"{where}: empty file")
    delimiter = "\t" if "\t" in lines[0] else ","
    reader = csv.reader(lines, delimiter=delimiter)
    header = [h.strip() for h in next(reader)]
    if not header or header[0] != "filename":
        raise ConfigError(f"{where}: the first column must be 'filename', got {header[0] if header else ''!r}")
    columns = header[1:]
    if len(columns) != len(labels) or sorted(columns) != sorted(labels):
        raise ConfigError(f"{where}: {len(columns)} class columns {columns}, the dataset has {len(labels)}: "
                          f"{list(labels)}")
    take = [columns.index(name) for name in labels]
    names, rows = [], []
    for line_no, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise ConfigError(f"{where}:{line_no}: {len(row)} fields, the header has {len(header)}")
        try:
            values = [float(v) for v in row[1:]]
        except ValueError:
            raise ConfigError(f"{where}:{line_no}: a logit is not a number") from None
        names.append(row[0].strip())
        rows.append([values[j] for j in take])
    return names, np.asarray(rows, dtype=np.float64).reshape(len(rows), len(labels))


def to_teacher_input(x: torch.Tensor, student_mean: torch.Tensor, student_std: torch.Tensor,
                     teacher: Teacher) -> torch.Tensor:
    """Features normalised with the student's statistics -> with the teacher's (identical when
    both trained on the same split; a teacher from another train subset has its own)."""
    raw = x * student_std.to(x.device) + student_mean.to(x.device)
    return (raw - teacher.mean.to(x.device)) / teacher.std.to(x.device)


def logits_key(teacher: Teacher, cache: FeatureCache, split: str) -> str:
    ident = {"version": LOGITS_VERSION, "teacher": teacher.sha256, "split": split, "clips": cache.clips(split),
             "feature_params": cache.manifest["params"], "channels": cache.manifest["channels"]}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


@torch.no_grad()
def compute_logits(teacher: Teacher, cache: FeatureCache, split: str = "train", device: str | torch.device = "cpu",
                   batch_size: int = 64) -> np.ndarray:
    """The teacher's logits for every clip of a split, un-augmented, float32 (clips, classes)."""
    feats = cache.features(split)
    mean, std = teacher.mean.to(device), teacher.std.to(device)
    model = teacher.model.to(device).eval()
    out = []
    for start in range(0, len(feats), batch_size):
        x = torch.from_numpy(np.array(feats[start:start + batch_size], dtype=np.float32)).to(device)
        out.append(model((x - mean) / std).float().cpu().numpy())
    n_classes = model.config.n_classes
    return np.concatenate(out) if out else np.zeros((0, n_classes), np.float32)


def cached_logits(teacher: Teacher, cache: FeatureCache, split: str = "train", device: str | torch.device = "cpu",
                  compute=None) -> tuple[np.ndarray, bool]:
    """(logits, whether they came from the cache). Stored as
    <feature cache>/teachers/<key>.npy; a file of the wrong shape or with non-finite values is
    computed again."""
    path = cache.directory / "teachers" / f"{logits_key(teacher, cache, split)}.npy"
    want = (len(cache.clips(split)), teacher.model.config.n_classes)
    if path.is_file():
        try:
            stored = np.load(path, allow_pickle=False)
            if stored.shape == want and stored.dtype == np.float32 and np.isfinite(stored).all():
                return stored, True
        except (OSError, ValueError, EOFError):
            pass
    logits = np.asarray((compute or compute_logits)(teacher, cache, split, device), dtype=np.float32)
    if logits.shape != want or not np.isfinite(logits).all():
        raise ConfigError(f"--teacher {teacher.path} outputs non-finite logits on the training clips (did its "
                          "training diverge?)")
    make_folder(path.parent)
    atomic_write(path, lambda tmp: _save(tmp, logits))
    return logits, False


def _save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def ensemble_logits(teachers: list[Teacher], cache: FeatureCache, split: str = "train",
                    device: str | torch.device = "cpu") -> tuple[np.ndarray, int]:
    """The mean of the teachers' cached logits, and how many teachers had to run."""
    total, ran = None, 0
    for t in teachers:
        logits, hit = cached_logits(t, cache, split, device)
        ran += not hit
        total = logits.astype(np.float64) if total is None else total + logits
    return (total / len(teachers)).astype(np.float32), ran


@torch.no_grad()
def online_logits(teachers: list[Teacher], x: torch.Tensor, student_mean: torch.Tensor,
                  student_std: torch.Tensor) -> torch.Tensor:
    """The ensemble's logits on the batch the student sees (augmented, mixed)."""
    total = None
    for t in teachers:
        t.model.to(x.device).eval()
        z = t.model(to_teacher_input(x, student_mean, student_std, t)).float()
        total = z if total is None else total + z
    return total / len(teachers)


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.softmax(logits.float() / temperature, dim=1)


# How the KL divergence is reduced. "batch": summed over the classes, averaged over the batch
# (Hinton et al.; PyTorch's reduction="batchmean"). "elements": averaged over the classes too, as
# the CPJKU DCASE 2023-2025 systems compute it (KLDivLoss(reduction="none").mean()): 1/C of the
# former, so their 0.02·CE + 0.98·KD balances CE and KD differently from the same weights here.
KD_REDUCTIONS = ("batch", "elements")


def kd_loss(student_logits: torch.Tensor, targets: torch.Tensor, temperature: float,
            reduction: str = "batch") -> torch.Tensor:
    """τ²·KL(targets ‖ softmax(student / τ)), reduced as KD_REDUCTIONS says."""
    log_q = F.log_softmax(student_logits.float() / temperature, dim=1)
    kl = (targets * (torch.log(targets.clamp_min(1e-30)) - log_q)).sum(dim=1)
    per_clip = kl / student_logits.shape[1] if reduction == "elements" else kl
    return temperature ** 2 * per_clip.mean()


def distillation_loss(student_logits: torch.Tensor, hard_loss: torch.Tensor, targets: torch.Tensor,
                      weight: float, temperature: float, reduction: str = "batch") -> torch.Tensor:
    """(1 - w)·hard_loss + w·τ²·KL. `hard_loss` is the (mixup) cross-entropy with the labels."""
    return (1.0 - weight) * hard_loss + weight * kd_loss(student_logits, targets, temperature, reduction)


def check_kd_options(teachers, weight, temperature, targets, reduction=None) -> None:
    if reduction is not None and reduction not in KD_REDUCTIONS:
        raise ConfigError(f"--kd-reduction must be one of {', '.join(KD_REDUCTIONS)}, got {reduction!r}")
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int | float)
                               or not (math.isfinite(weight) and 0 <= weight <= 1)):
        raise ConfigError(f"--kd-weight must be a number in [0, 1] (the share of the distillation loss), got {weight!r}")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, int | float)
                                    or not (math.isfinite(temperature) and temperature > 0)):
        raise ConfigError(f"--kd-temperature must be a finite number > 0, got {temperature!r}")
    if targets is not None and targets not in KD_TARGETS:
        raise ConfigError(f"--kd-targets must be one of {', '.join(KD_TARGETS)}, got {targets!r}")
    if not teachers:
        given = [n for n, v in (("--kd-weight", weight), ("--kd-temperature", temperature), ("--kd-targets", targets))
                 if v is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} without --teacher: name the run(s) to distil from")
