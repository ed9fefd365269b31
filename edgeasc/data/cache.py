"""The feature cache: every clip extracted once, one memory-mappable float32 array per split.

Layout: <cache root>/features/<layout>-<key>/{train,evaluate}.npy + manifest.json. The key
hashes the frontend parameters, the channel count and the file list (names, sizes,
mtimes), so a changed parameter or file never reuses stale features. Arrays are written
under temp names and renamed when complete; the manifest (with the normalisation
statistics) is written last, so a cache without one is incomplete and is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from edgeasc.console import err, progress_bar
from edgeasc.data.dcase import Clip, Dataset, DatasetError
from edgeasc.data.workers import chunks, default_workers, imap
from edgeasc.errors import ConfigError
from edgeasc.io import (
    atomic_write_json,
    is_within,
    make_folder,
    missing_folders,
    remove_empty_folders,
    remove_partials,
    write_error,
)
from edgeasc.runtime.audio import AudioError, fit_length, load, truncation
from edgeasc.runtime.features import FeatureParams, compute_features

CACHE_VERSION = 1
# A kind whose numbers changed while its parameters did not gets a revision in the key, so that
# caches written before are computed again (the perceptual kind's keys stay those of version 1).
# logmel 2: float64 FFT, 2026-12-06.
KIND_REVISION = {"logmel": 2}
SPLITS = ("train", "evaluate")


def cache_root() -> Path:
    return Path(os.environ.get("EDGEASC_CACHE") or Path.home() / ".cache" / "edgeasc")


@dataclass
class FeatureCache:
    directory: Path
    manifest: dict

    def features(self, split: str) -> np.ndarray:
        """(clips, channels, n_mels, frames) float32, memory-mapped read-only."""
        return np.load(self.directory / f"{split}.npy", mmap_mode="r")

    def problem(self) -> str | None:
        """Why the arrays do not hold what the manifest says (missing, truncated, another
        shape), or None. Checked before a cache is reused: a short memory map would be read
        as garbage or fault, not fail cleanly."""
        m = self.manifest
        for split in SPLITS:
            path = self.directory / f"{split}.npy"
            want = (len(m["splits"][split]["clips"]), m["channels"], m["params"]["n_mels"], m["frames"])
            try:
                shape = np.load(path, mmap_mode="r").shape
            except FileNotFoundError:
                return f"{split}.npy is missing"
            except (OSError, ValueError, EOFError):
                return f"{split}.npy is shorter than its manifest says"
            if tuple(shape) != want:
                return f"{split}.npy has shape {tuple(shape)}, the manifest says {want}"
        return None

    def labels(self, split: str) -> np.ndarray:
        return np.asarray(self.manifest["splits"][split]["labels"], dtype=np.int64)

    def clips(self, split: str) -> list[str]:
        return self.manifest["splits"][split]["clips"]

    def devices(self, split: str) -> list[str | None]:
        return self.manifest["splits"][split]["devices"]

    @property
    def label_names(self) -> list[str]:
        return self.manifest["labels"]

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.manifest["normalization"]["mean"], dtype=np.float32)[None, :, None]

    @property
    def std(self) -> np.ndarray:
        return np.asarray(self.manifest["normalization"]["std"], dtype=np.float32)[None, :, None]


def cache_key(dataset: Dataset, params: FeatureParams, channels: int) -> str:
    h = hashlib.sha256()
    fields = {"v": CACHE_VERSION, "params": params.to_dict(), "channels": channels, "labels": dataset.labels}
    if params.kind in KIND_REVISION:
        fields["kind_revision"] = KIND_REVISION[params.kind]
    h.update(json.dumps(fields, sort_keys=True).encode())
    for split in SPLITS:
        for clip in dataset.splits[split]:
            st = clip.path.stat()
            h.update(f"{split}\0{clip.name}\0{clip.label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def probe_channels(dataset: Dataset) -> int:
    first = dataset.splits["train"][0]
    try:
        n = sf.info(str(first.path)).channels
    except Exception:
        raise DatasetError(f"{first.path}: cannot read audio") from None
    if n > 2:
        raise DatasetError(f"{first.path}: {n} channels; edgeasc takes mono or stereo audio")
    return n


PROBE_CLIPS = 25
TAU2022_SECONDS = 1.0


def probe_clip_seconds(dataset: Dataset) -> float:
    """The data's own clip length: the median duration of up to 25 training clips spread over
    the list, to the millisecond (1.0 for TAU 2022 Mobile, 10.0 for the 2018/2020 sets)."""
    clips = dataset.splits["train"]
    picks = sorted(set(np.linspace(0, len(clips) - 1, min(PROBE_CLIPS, len(clips))).astype(int).tolist()))
    durations = []
    for i in picks:
        try:
            info = sf.info(str(clips[i].path))
        except Exception:
            raise DatasetError(f"{clips[i].path}: cannot read audio") from None
        if info.samplerate <= 0 or info.frames <= 0:
            raise DatasetError(f"{clips[i].path}: holds no audio")
        durations.append(info.frames / info.samplerate)
    seconds = round(float(np.median(durations)), 3)
    if not 0 < seconds <= 600:
        raise DatasetError(f"{dataset.root}: clips are {seconds:g} s long; edgeasc takes clips of up to 600 s "
                           "(give --seconds to cut them)")
    if dataset.layout == "tau2022-mobile" and abs(seconds - TAU2022_SECONDS) > 0.05:
        raise DatasetError(f"{dataset.root}: the TAU 2022 Mobile layout holds 1-s clips, but its clips are "
                           f"{seconds:g} s long (10-s TAU 2020 audio under 2022 names?)")
    return seconds


def find_cache(dataset: Dataset, params: FeatureParams, channels: int, root: Path | None = None
               ) -> FeatureCache | None:
    """The complete cache of exactly this dataset, these parameters and channels, if one exists."""
    key = cache_key(dataset, params, channels)
    directory = (root or cache_root()) / "features" / f"{dataset.layout}-{key}"
    manifest_path = directory / "manifest.json"
    if manifest_path.is_file():
        try:
            cache = FeatureCache(directory, json.loads(manifest_path.read_text()))
        except (OSError, ValueError):
            return None
        if cache.manifest.get("key") == key:
            problem = cache.problem()
            if problem is None:
                return cache
            err.print(f"edgeasc: note: the feature cache {directory} is damaged ({problem}): extracting again",
                      markup=False, soft_wrap=True)
    return None


def refuse_cache_in_dataset(root: Path, dataset: Dataset) -> None:
    """The cache never writes into the dataset folder it reads (through a symlink either): a
    dataset folder is input, and a copy or a read-only mount of it must stay what it was. A
    labels CSV names its clips wherever they are: its folder is not the dataset's."""
    if dataset.layout != "csv" and is_within(root, dataset.root):
        raise ConfigError(f"the cache root {root} (--cache-dir) is inside the dataset {dataset.root}: the cache "
                          "would write into the data it reads; choose a folder outside it")


CLIPS_PER_WORKER = 64


def extraction_workers(clips: int) -> int:
    """The default: all cores, but no more than one per CLIPS_PER_WORKER clips. A spawned worker
    costs 0.5-1 CPU-s to start (its imports), more than extracting a few dozen clips here."""
    return max(1, min(default_workers(), -(-clips // CLIPS_PER_WORKER)))


def extract_features(dataset: Dataset, params: FeatureParams | None = None, channels: int | None = None,
                     workers: int | None = None, root: Path | None = None,
                     progress: bool = True) -> tuple[FeatureCache, bool]:
    """Build (or reuse) the cache for `dataset`; returns (cache, whether anything was extracted)."""
    params = params or FeatureParams()
    half = params.n_fft // 2
    if params.n_samples() <= half:  # else every clip fails alike, blamed on its file
        raise ConfigError(f"--seconds {params.clip_seconds:g} is too short for the frontend: its {params.n_fft}-point "
                          f"FFT frames clips of more than {half} samples ({(half + 1) / params.sample_rate:.3f} s at "
                          f"{params.sample_rate} Hz)")
    if dataset.layout == "tau2022-mobile":
        probe_clip_seconds(dataset)  # refuses 10-s audio under 2022 names, whatever --seconds says
    refuse_cache_in_dataset(root or cache_root(), dataset)
    channels = channels or probe_channels(dataset)
    found = find_cache(dataset, params, channels, root)
    if found is not None:
        return found, False
    key = cache_key(dataset, params, channels)
    directory = (root or cache_root()) / "features" / f"{dataset.layout}-{key}"
    manifest_path = directory / "manifest.json"
    created = missing_folders(directory)
    make_folder(directory)
    remove_partials(directory)  # leftovers of a killed run: restart cleanly
    frames = params.n_frames()
    total = sum(len(dataset.splits[s]) for s in SPLITS)
    workers = extraction_workers(total) if workers is None else max(1, workers)
    start = time.perf_counter()
    try:
        with progress_bar("extracting features", total, enabled=progress) as advance:
            _extract_splits({s: dataset.splits[s] for s in SPLITS}, directory, params, channels, frames, workers,
                            advance)
    except BaseException:
        remove_empty_folders(created)  # a failed first extraction leaves no trace
        raise
    elapsed = time.perf_counter() - start
    mean, std = normalization_stats(np.load(directory / "train.npy", mmap_mode="r"))
    manifest = {
        "version": CACHE_VERSION, "key": key, "layout": dataset.layout, "root": str(dataset.root),
        "labels": dataset.labels, "params": params.to_dict(), "channels": channels, "frames": frames,
        "splits": {s: {"clips": [c.name for c in dataset.splits[s]],
                       "labels": [c.label for c in dataset.splits[s]],
                       "locations": [c.location for c in dataset.splits[s]],
                       "devices": [c.device for c in dataset.splits[s]]} for s in SPLITS},
        "normalization": {"mean": mean.tolist(), "std": std.tolist()},
        "extraction": {"seconds": round(elapsed, 3), "clips": total, "workers": workers},
    }
    atomic_write_json(manifest_path, manifest)
    return FeatureCache(directory, manifest), True


def normalization_stats(train: np.ndarray, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One mean and std per mel bin, pooled over clips, channels and frames (float64 sums)."""
    n_mels = train.shape[2]
    total = np.zeros(n_mels)
    total_sq = np.zeros(n_mels)
    count = 0
    for i in range(0, train.shape[0], chunk):
        block = np.asarray(train[i:i + chunk], dtype=np.float64)
        total += block.sum(axis=(0, 1, 3))
        total_sq += np.square(block).sum(axis=(0, 1, 3))
        count += block.shape[0] * block.shape[1] * block.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return mean, np.maximum(std, 1e-8)


# ----------------------------------------------------------------------------- extraction
_WORKER: dict = {}


def _init_worker(params: dict, channels: int) -> None:
    _WORKER.update(params=FeatureParams(**params), channels=channels)


def _extract_chunk(job: tuple[str, list[tuple[int, str, str]]]) -> tuple[int, tuple[str, str] | None, list[str]]:
    """(clips done, the first error as (name, message) or None, warnings)."""
    out_path, items = job
    p: FeatureParams = _WORKER["params"]
    out = np.load(out_path, mmap_mode="r+")
    done, warnings = 0, []
    for index, name, path in items:
        try:
            x, _ = load(path, p.sample_rate, channels=_WORKER["channels"], resampler=p.resampler)
            out[index] = compute_features(fit_length(x, p.n_samples()), p)
        except AudioError as exc:
            return done, (name, str(exc)), warnings
        except Exception as exc:  # a decoder or maths failure on this clip: name it
            return done, (name, f"{path}: {type(exc).__name__}: {exc}"), warnings
        warning = truncation(path)
        if warning:
            warnings.append(warning)
        done += 1
    # no msync here: the page cache is shared, and the parent fsyncs each file once before renaming it
    return done, None, warnings


def _allocate(path: Path, shape: tuple[int, ...], final: Path) -> None:
    """A zero-filled .npy of `shape` whose blocks are reserved now: a sparse file would let the
    workers run into a full disk halfway (SIGBUS inside the memory map) instead of failing here."""
    try:
        array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
        del array
        if hasattr(os, "posix_fallocate"):
            with open(path, "rb+") as f:
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    except OSError as exc:
        raise write_error(final, exc) from None


def _extract_splits(splits: dict[str, list[Clip]], directory: Path, params: FeatureParams, channels: int,
                    frames: int, workers: int, advance) -> None:
    """All splits through one worker pool; each split's array is renamed into place when complete."""
    tmp = {s: directory / f".{s}.npy.{os.getpid()}.partial" for s in splits}
    jobs = []
    try:
        for split, clips in splits.items():
            _allocate(tmp[split], (len(clips), channels, params.n_mels, frames), directory / f"{split}.npy")
            jobs += [(str(tmp[split]), [(i, clips[i].name, str(clips[i].path)) for i in r])
                     for r in chunks(len(clips), 4)]
        warnings = []
        for done, error, chunk_warnings in imap(_extract_chunk, jobs, min(workers, len(jobs)), _init_worker,
                                                (params.to_dict(), channels)):
            advance(done)
            warnings += chunk_warnings
            if error is not None:
                raise DatasetError(error[1])  # the message names the file
        for split, path in tmp.items():
            try:
                with open(path, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(path, directory / f"{split}.npy")
            except OSError as exc:
                raise write_error(directory / f"{split}.npy", exc) from None
        for warning in sorted(warnings):
            err.print(f"edgeasc: warning: {warning}", markup=False, soft_wrap=True)
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)
