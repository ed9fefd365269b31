"""Dataset layouts: the official DCASE development sets and plain layouts for own data.

Official (docs/method.md §5), auto-detected:
  dcase2018       evaluation_setup/fold1_{train,evaluate}.txt, no header, 10 classes
  dcase2020-1b    evaluation_setup/fold1_{train,evaluate}.csv, header, indoor/outdoor/transportation
  tau2020-mobile  evaluation_setup/fold1_{train,evaluate}.csv, header, 10 classes, devices a..s6
all with audio/*.wav and a tab-separated meta.csv (filename, scene_label[, identifier,
source_label]). Plain layouts: a folder per class, or labels.csv (filename,label[,split]).
Labels are sorted alphabetically into class indices.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from edgeasc.errors import EdgeascError
from edgeasc.runtime.audio import AUDIO_SUFFIXES

DCASE20_1B_LABELS = ("indoor", "outdoor", "transportation")
# scene-city-location-segment[-subsegment]-device.wav, e.g. airport-barcelona-0-0-a.wav, bus-lyon-1-12-s2.wav,
# and TAU 2022's 1-s pieces airport-lisbon-1000-40000-3-a.wav
_DCASE_NAME = re.compile(r"^(?P<scene>[a-z_]+)-(?P<city>[a-z]+)-(?P<loc>\d+)-(?P<seg>\d+)(-(?P<sub>\d+))?"
                         r"-(?P<device>[a-z0-9]+)$")
TRAIN_SUBSETS = (5, 10, 25, 50, 100)  # DCASE 2024/2025: split_setup/split{N}.csv
EVALUATE_EVERY = 5  # plain layouts without a split: every 5th clip of a class (or location) evaluates


class DatasetError(EdgeascError):
    exit_code = 2


@dataclass(frozen=True)
class Clip:
    name: str            # as listed in the dataset, relative to the root
    path: Path           # absolute, checked to lie inside the root
    label: int
    location: str | None = None
    device: str | None = None
    where: str = field(default="", compare=False)  # file:line that listed it, for error messages


@dataclass
class Dataset:
    root: Path
    layout: str
    labels: list[str]
    splits: dict[str, list[Clip]]

    @property
    def devices(self) -> list[str]:
        return sorted({c.device for s in self.splits.values() for c in s if c.device})

    def summary(self) -> dict:
        return {"root": str(self.root), "layout": self.layout, "labels": self.labels,
                "splits": {k: len(v) for k, v in self.splits.items()}, "devices": self.devices}


def _subsegment(name: str) -> bool:
    m = _DCASE_NAME.match(Path(name).stem)
    return bool(m and m["sub"] is not None)


def parse_clip_name(name: str) -> tuple[str | None, str | None]:
    """(location, device) from a DCASE-style file name, or (None, None)."""
    m = _DCASE_NAME.match(Path(name).stem)
    if not m:
        return None, None
    return f"{m['city']}-{m['loc']}", m["device"]


def open_dataset(path: str | Path, fold: int = 1, split: int | None = None) -> Dataset:
    """Detect the layout of `path` (a folder, or a labels CSV) and read it, checking every entry
    and, whatever the layout, that the lists do not contradict each other (check_consistent).
    `split` (TAU 2022 Mobile, DCASE 2024/2025): train on split_setup/split{N}.csv only."""
    if split is not None and split not in TRAIN_SUBSETS:
        raise DatasetError(f"--split must be one of {', '.join(map(str, TRAIN_SUBSETS))} (percent of the "
                           f"training set), got {split}")
    dataset = _open(path, fold)
    if split is not None:
        dataset = _train_subset(dataset, split)
    check_consistent(dataset)
    return dataset


def _train_subset(dataset: Dataset, split: int) -> Dataset:
    """The DCASE 2024/2025 train subsets: split_setup/split{N}.csv lists the training clips, and
    split_setup/test.csv (when present) the evaluation clips; both must be in meta.csv."""
    if dataset.layout != "tau2022-mobile":
        raise DatasetError(f"{dataset.root}: --split needs the TAU 2022 Mobile layout (split_setup/), "
                           f"not {dataset.layout}")
    by_name = {c.name: c for s in dataset.splits.values() for c in s}
    splits = dict(dataset.splits)
    for part, file in (("train", f"split{split}.csv"), ("evaluate", "test.csv")):
        path = dataset.root / "split_setup" / file
        if not path.is_file():
            if part == "evaluate":
                continue
            raise DatasetError(f"{path}: missing (--split {split} reads it)")
        clips = []
        for line_no, row in _rows(path, header=True, columns=("filename",)):
            name = row.get("filename") or ""
            if name not in by_name:
                raise DatasetError(f"{path}:{line_no}: {name!r} is not in meta.csv's fold lists")
            clip = by_name[name]
            clips.append(Clip(clip.name, clip.path, clip.label, clip.location, clip.device, f"{path}:{line_no}"))
        if not clips:
            raise DatasetError(f"{path}: lists no clips")
        splits[part] = clips
    return Dataset(dataset.root, dataset.layout, dataset.labels, splits)


def _open(path: str | Path, fold: int) -> Dataset:
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() not in (".csv", ".tsv", ".txt"):
            raise DatasetError(f"{path}: not a dataset folder or a labels CSV")
        return _read_plain_csv(path, path.parent.resolve())
    root = path.resolve()
    setup = root / "evaluation_setup"
    if (root / "meta.csv").is_file() and setup.is_dir():
        if (setup / f"fold{fold}_train.txt").is_file():
            return _read_official(root, "dcase2018", ".txt", fold)
        if (setup / f"fold{fold}_train.csv").is_file():
            return _read_official(root, None, ".csv", fold)
        raise DatasetError(f"{setup}: no fold{fold}_train.csv or fold{fold}_train.txt")
    if (root / "labels.csv").is_file():
        return _read_plain_csv(root / "labels.csv", root)
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
                        and any(f.suffix.lower() in AUDIO_SUFFIXES for f in d.iterdir()))
    if class_dirs:
        return _read_folders(root, class_dirs)
    raise DatasetError(f"{root}: unknown dataset layout (expected meta.csv + evaluation_setup/, "
                       "labels.csv, or one folder of audio per class)")


def meta_csv_order(root: str | Path) -> list[str] | None:
    """The file names of the dataset's meta.csv in its row order (None without one): the row order
    the organisers' released teacher logits follow (one tensor row per meta.csv line)."""
    meta_path = Path(root) / "meta.csv"
    if not meta_path.is_file():
        return None
    return [row.get("filename", "") for _, row in _rows(meta_path, header=True)]


# ----------------------------------------------------------------------------- official layouts
def _read_official(root: Path, layout: str | None, ext: str, fold: int) -> Dataset:
    meta_path = root / "meta.csv"
    meta: dict[str, tuple[str, str | None, str | None, int]] = {}
    has_source = True
    for line_no, row in _rows(meta_path, header=True):
        has_source = has_source and "source_label" in row
        name, label = row.get("filename"), row.get("scene_label")
        if not name or not label:
            raise DatasetError(f"{meta_path}:{line_no}: needs 'filename' and 'scene_label'")
        if name in meta:
            raise DatasetError(f"{meta_path}:{line_no}: {name} is listed twice")
        meta[name] = (label, row.get("identifier") or None, row.get("source_label") or None, line_no)
    if not meta:
        raise DatasetError(f"{meta_path}: lists no clips")

    folds = {}
    for split in ("train", "evaluate"):
        fold_path = root / "evaluation_setup" / f"fold{fold}_{split}{ext}"
        if not fold_path.is_file():
            raise DatasetError(f"{fold_path}: missing")
        folds[split] = list(_rows(fold_path, header=ext == ".csv", columns=("filename", "scene_label")))
    labels = sorted({m[0] for m in meta.values()})
    if layout is None:
        if set(labels) <= set(DCASE20_1B_LABELS):
            layout = "dcase2020-1b"
        elif (root / "split_setup").is_dir() or any(_subsegment(name) for name in meta):
            layout = "tau2022-mobile"
        else:
            layout = "tau2020-mobile"
    if layout == "tau2022-mobile" and not has_source:
        raise DatasetError(f"{meta_path}: no source_label column; TAU 2022 Mobile is evaluated per recording "
                           "device (seen and unseen), so meta.csv needs filename, scene_label, identifier and "
                           "source_label")
    index = {label: i for i, label in enumerate(labels)}
    splits: dict[str, list[Clip]] = {}
    for split, rows in folds.items():
        fold_path = root / "evaluation_setup" / f"fold{fold}_{split}{ext}"
        clips = []
        for line_no, row in rows:
            name = row.get("filename") or ""
            where = f"{fold_path}:{line_no}"
            if name not in meta:
                raise DatasetError(f"{where}: {name!r} is not in meta.csv")
            label, identifier, source, _ = meta[name]
            if row.get("scene_label") and row["scene_label"] != label:
                raise DatasetError(f"{where}: label {row['scene_label']!r} disagrees with meta.csv ({label!r})")
            location, device = parse_clip_name(name)
            clips.append(Clip(name, _safe_path(root, name, where), index[label],
                              identifier or location, source or device, where))
        if not clips:
            raise DatasetError(f"{fold_path}: lists no clips")
        splits[split] = clips
    return Dataset(root, layout, labels, splits)


# ----------------------------------------------------------------------------- plain layouts
def _read_plain_csv(csv_path: Path, root: Path) -> Dataset:
    rows = list(_rows(csv_path, header=None, columns=("filename", "label", "split")))
    if not rows:
        raise DatasetError(f"{csv_path}: lists no clips")
    labels = sorted({row.get("label") or "" for _, row in rows})
    if "" in labels:
        line_no = next(n for n, r in rows if not r.get("label"))
        raise DatasetError(f"{csv_path}:{line_no}: needs a filename and a label")
    index = {label: i for i, label in enumerate(labels)}
    entries = []
    for line_no, row in rows:
        where = f"{csv_path}:{line_no}"
        split = (row.get("split") or "").strip().lower() or None
        if split not in (None, "train", "evaluate"):
            raise DatasetError(f"{where}: split must be 'train' or 'evaluate', got {split!r}")
        name = row["filename"]
        location, device = parse_clip_name(name)
        entries.append((Clip(name, _safe_path(root, name, where), index[row["label"]], location, device, where),
                        split))
    return Dataset(root, "csv", labels, _split(entries))


def _read_folders(root: Path, class_dirs: list[Path]) -> Dataset:
    labels = [d.name for d in class_dirs]
    entries = []
    for i, d in enumerate(class_dirs):
        for f in sorted(d.iterdir()):
            if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file():
                name = f"{d.name}/{f.name}"
                location, device = parse_clip_name(name)
                entries.append((Clip(name, _safe_path(root, name, str(d)), i, location, device, str(f)), None))
    return Dataset(root, "folders", labels, _split(entries))


def _split(entries: list[tuple[Clip, str | None]]) -> dict[str, list[Clip]]:
    """Explicit splits win; the rest: by recording location where names carry one (no location
    in both splits), else every 5th clip of each class, in name order. Deterministic."""
    splits: dict[str, list[Clip]] = {"train": [], "evaluate": []}
    ordinal: dict[tuple[int, str], int] = {}  # (class, location or clip) -> its rank within the class
    units: dict[int, int] = {}
    for clip, split in sorted(entries, key=lambda e: e[0].name):
        if split is None:
            key = (clip.label, clip.location or clip.name)
            if key not in ordinal:
                ordinal[key] = units.get(clip.label, 0)
                units[clip.label] = ordinal[key] + 1
            split = "evaluate" if ordinal[key] % EVALUATE_EVERY == EVALUATE_EVERY - 1 else "train"
        splits[split].append(clip)
    if not splits["train"]:
        raise DatasetError("the dataset has no training clips")
    if not splits["evaluate"]:
        raise DatasetError("the dataset has no evaluation clips: add a split column or more clips per class")
    return splits


# ----------------------------------------------------------------------------- helpers
def _rows(path: Path, header: bool | None, columns: tuple[str, ...] = ()):
    """(line number, row dict) of a tab- or comma-separated file. header=None: sniff for one."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    lines = text.splitlines()
    delimiter = "\t" if any("\t" in line for line in lines[:5]) else ","
    reader = csv.reader(lines, delimiter=delimiter)
    names: list[str] | None = None
    for line_no, row in enumerate(reader, start=1):
        if not any(cell.strip() for cell in row):
            continue
        row = [cell.strip() for cell in row]
        if names is None:
            is_header = header if header is not None else row[0].lower() in ("filename", "file", "path")
            if is_header:
                names = [c.lower() for c in row]
                alias = next((a for a in ("file", "path") if a in names), None)
                if columns and alias and "filename" not in names:  # the sniffed header words
                    names[names.index(alias)] = "filename"
                continue
            names = list(columns)
        if len(row) > len(names):
            raise DatasetError(f"{path}:{line_no}: {len(row)} columns, expected at most {len(names)}")
        yield line_no, dict(zip(names, row, strict=False))


def _safe_path(root: Path, name: str, where: str) -> Path:
    """The file `name` inside `root`; refuses absolute paths, escapes and missing files."""
    if not name:
        raise DatasetError(f"{where}: empty file name")
    rel = Path(name)
    if rel.is_absolute() or rel.drive or name.startswith(("/", "\\")):
        raise DatasetError(f"{where}: absolute path {name!r} is not allowed; paths are relative to {root}")
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise DatasetError(f"{where}: {name!r} points outside the dataset root {root}")
    if not path.is_file():
        raise DatasetError(f"{where}: {name!r} does not exist")
    return path


def check_consistent(dataset: Dataset) -> None:
    """One file is one clip with one label in one split; every class has training clips.
    Files are compared by resolved path, so `a.wav` and `./a.wav` are the same clip."""
    seen: dict[Path, tuple[str, Clip]] = {}
    for split in ("train", "evaluate"):
        for clip in dataset.splits[split]:
            first = seen.get(clip.path)
            if first is None:
                seen[clip.path] = (split, clip)
                continue
            other_split, other = first
            here = clip.where or str(dataset.root)
            if other.label != clip.label:
                raise DatasetError(f"{here}: {clip.name} is labelled {dataset.labels[clip.label]!r} here and "
                                   f"{dataset.labels[other.label]!r} at {other.where}")
            if other_split != split:
                raise DatasetError(f"{here}: {clip.name} is in both train and evaluate (also at {other.where}): "
                                   "evaluating on training clips leaks")
            raise DatasetError(f"{here}: {clip.name} is listed twice (also at {other.where}): it would count twice")
    trained = {c.label for c in dataset.splits["train"]}
    empty = [label for i, label in enumerate(dataset.labels) if i not in trained]
    if empty:
        raise DatasetError(f"{dataset.root}: class {empty[0]!r} has no training clips"
                           + (f" ({len(empty)} classes have none)" if len(empty) > 1 else ""))
