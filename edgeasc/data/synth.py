"""Built-in synthetic acoustic scenes, written in the exact DCASE'20 layout.

Each scene is a random mixture of procedurally generated sources (traffic rumble with
passing vehicles, babble, mechanical clatter, engine harmonics, electric whine, bird
chirps, wind, reverberant hall tone with chimes, footsteps, door beeps) whose presence
and gains are drawn per clip from scene-specific ranges; sources overlap between scenes,
so a classifier has to use spectro-temporal structure, not one tell-tale band. Every
recording location colours its clips (spectral tilt, a resonance, a noise floor) and
every device filters them, and the train/evaluate split is by location, as in DCASE.
Deterministic: clip i of a dataset depends only on (seed, i).
"""

from __future__ import annotations

import math
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from edgeasc.console import progress_bar
from edgeasc.data.synth_sources import SOURCES, band, rms_normalise
from edgeasc.data.workers import default_workers, imap
from edgeasc.errors import EdgeascError
from edgeasc.io import (
    atomic_write_text,
    make_folder,
    missing_folders,
    remove_empty_folders,
    write_error,
)

SAMPLE_RATE = 48_000
SCENES = ("airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
          "street_pedestrian", "street_traffic", "tram")
GROUPS = {"indoor": ("airport", "metro_station", "shopping_mall"),
          "outdoor": ("park", "public_square", "street_pedestrian", "street_traffic"),
          "transportation": ("bus", "metro", "tram")}
CITIES = ("barcelona", "helsinki", "lisbon", "london", "lyon", "milan", "paris", "prague", "stockholm", "vienna")
DEVICES = ("a", "a", "a", "b", "c")  # mostly the reference device, as in DCASE
SEGMENTS_PER_LOCATION = 4
EVALUATE_FRACTION = 0.3

# scene -> {source: (probability present, gain dB low, gain dB high)}
RECIPES: dict[str, dict[str, tuple[float, float, float]]] = {
    "airport": {"hall": (1.0, -4, 0), "babble": (0.9, -14, -5), "footsteps": (0.7, -20, -10),
                "chimes": (0.5, -16, -8), "rumble": (0.4, -24, -14)},
    "shopping_mall": {"hall": (1.0, -8, -2), "babble": (1.0, -10, -3), "footsteps": (0.8, -18, -8),
                      "music": (0.6, -18, -8)},
    "metro_station": {"hall": (1.0, -8, -2), "clatter": (0.7, -16, -6), "babble": (0.6, -20, -10),
                      "beeps": (0.6, -18, -8), "rumble": (0.6, -14, -6)},
    "park": {"wind": (0.9, -14, -4), "chirps": (0.9, -16, -4), "babble": (0.4, -26, -14),
             "rumble": (0.5, -30, -18)},
    "public_square": {"babble": (0.9, -12, -4), "footsteps": (0.6, -18, -8), "rumble": (0.8, -20, -10),
                      "chirps": (0.3, -24, -14), "wind": (0.4, -20, -10)},
    "street_pedestrian": {"footsteps": (0.9, -12, -4), "babble": (0.9, -12, -4), "rumble": (0.8, -16, -8),
                          "engine": (0.3, -24, -14)},
    "street_traffic": {"rumble": (1.0, -4, 0), "passing": (1.0, -6, 0), "engine": (0.6, -16, -6),
                       "wind": (0.3, -22, -12)},
    "bus": {"engine": (1.0, -4, 0), "rumble": (0.8, -14, -6), "babble": (0.6, -20, -8),
            "beeps": (0.5, -20, -10)},
    "metro": {"clatter": (1.0, -8, -2), "rumble": (1.0, -8, -2), "whine": (0.5, -18, -8),
              "beeps": (0.5, -20, -10), "babble": (0.4, -22, -12)},
    "tram": {"clatter": (0.9, -14, -6), "whine": (0.8, -14, -4), "rumble": (0.8, -12, -6),
             "beeps": (0.6, -16, -8), "babble": (0.4, -22, -12)},
}


class SynthError(EdgeascError):
    exit_code = 2


@dataclass(frozen=True)
class ClipSpec:
    index: int
    scene: str
    label: str
    city: str
    location: int
    segment: int
    device: str

    @property
    def identifier(self) -> str:
        return f"{self.city}-{self.location}"

    @property
    def filename(self) -> str:
        return f"audio/{self.scene}-{self.city}-{self.location}-{self.segment}-{self.device}.wav"


# ----------------------------------------------------------------------------- the plan
def plan_dataset(classes: int = 3, clips_per_class: int = 40, seed: int = 0) -> list[ClipSpec]:
    """Which clips exist: scenes, locations, segments and devices (no audio yet)."""
    if classes not in (3, 10):
        raise SynthError(f"--classes must be 3 (DCASE'20 task 1b) or 10 (DCASE'18), got {classes}")
    if clips_per_class < 2 * SEGMENTS_PER_LOCATION:
        raise SynthError(f"--clips-per-class must be at least {2 * SEGMENTS_PER_LOCATION} so that "
                         "both splits get a recording location")
    rng = np.random.default_rng([seed, 0xD5A5E])
    labels = {s: s for s in SCENES} if classes == 10 else {s: g for g, ss in GROUPS.items() for s in ss}
    specs: list[ClipSpec] = []
    for label in sorted(set(labels.values())):
        scenes = [s for s in SCENES if labels[s] == label]
        for k in range(clips_per_class):
            scene = scenes[k % len(scenes)]
            n_in_scene = k // len(scenes)
            loc_ordinal, segment = divmod(n_in_scene, SEGMENTS_PER_LOCATION)
            city = CITIES[(zlib.crc32(scene.encode()) + loc_ordinal) % len(CITIES)]
            device = DEVICES[int(rng.integers(len(DEVICES)))]
            specs.append(ClipSpec(len(specs), scene, label, city, loc_ordinal, segment, device))
    return specs


def split_by_location(specs: list[ClipSpec]) -> dict[str, list[ClipSpec]]:
    """~30 % of each class's recording locations evaluate (at least one); no location is in
    both splits."""
    evaluate: set[tuple[str, str]] = set()
    for label in sorted({s.label for s in specs}):
        locations = sorted({(s.scene, s.identifier) for s in specs if s.label == label},
                           key=lambda loc: zlib.crc32("/".join(loc).encode()))
        n_eval = max(1, round(EVALUATE_FRACTION * len(locations))) if len(locations) > 1 else 0
        evaluate.update(locations[:n_eval])
    return {"train": [s for s in specs if (s.scene, s.identifier) not in evaluate],
            "evaluate": [s for s in specs if (s.scene, s.identifier) in evaluate]}


# ----------------------------------------------------------------------------- scenes
def _location_filter(scene: str, identifier: str, seed: int):
    """Per-location colouring: spectral tilt, one resonance, and a noise-floor level."""
    rng = np.random.default_rng([seed, zlib.crc32(f"{scene}/{identifier}".encode())])
    tilt = rng.uniform(-3, 3)  # dB per octave around 1 kHz
    peak_f, peak_db, q = rng.uniform(200, 6000), rng.uniform(-6, 6), rng.uniform(0.5, 2)
    floor_db = rng.uniform(-45, -30)

    def gain(f):
        f = np.maximum(f, 20.0)
        db = tilt * np.log2(f / 1000.0) + peak_db * np.exp(-0.5 * (np.log2(f / peak_f) * q * 2) ** 2)
        return 10 ** (db / 20)

    return gain, floor_db


def _device_filter(device: str):
    if device == "b":  # a phone: no lows, soft highs
        return band(200, 8000, 1.0)
    if device == "c":  # a cheap recorder: dull, boxy
        return lambda f: band(60, 4500, 1.0)(f) * (1 + 1.5 * np.exp(-0.5 * ((f - 1200) / 400) ** 2))
    return lambda f: np.ones_like(f)


def mix_scene(rng: np.random.Generator, scene: str, n: int, sr: int, channels: int = 2) -> np.ndarray:
    """(channels, n): the scene's sources, each present with its probability at a random gain;
    in stereo each is panned, with up to 0.5 ms between the microphones."""
    mix = np.zeros((channels, n))
    for name, (p, lo_db, hi_db) in RECIPES[scene].items():
        if rng.random() >= p:
            continue
        source = rms_normalise(SOURCES[name](rng, n, sr)) * 10 ** (rng.uniform(lo_db, hi_db) / 20)
        if channels == 1:
            mix[0] += source
            continue
        pan = rng.uniform(0.2, 0.8)
        delay = int(rng.integers(0, 24))
        mix[0] += math.sqrt(1 - pan) * source
        mix[1] += math.sqrt(pan) * np.roll(source, delay)
    return mix


def synthesize_clip(spec: ClipSpec, seconds: float = 10.0, seed: int = 0) -> np.ndarray:
    """One stereo clip, (samples, 2) float32 at 48 kHz."""
    rng = np.random.default_rng([seed, spec.index])
    n = int(round(seconds * SAMPLE_RATE))
    mix = mix_scene(rng, spec.scene, n, SAMPLE_RATE)
    loc_gain, floor_db = _location_filter(spec.scene, spec.identifier, seed)
    dev_gain = _device_filter(spec.device)
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    shaped = np.fft.irfft(np.fft.rfft(mix, axis=1) * (loc_gain(f) * dev_gain(f)), n, axis=1)
    shaped += 10 ** (floor_db / 20) * rng.standard_normal((2, n)) * np.sqrt(np.mean(shaped ** 2) + 1e-12)
    level = 10 ** (rng.uniform(-30, -20) / 20)  # RMS dBFS
    shaped *= level / max(math.sqrt(float(np.mean(shaped ** 2))), 1e-12)
    return np.clip(shaped.T, -1.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- writing
_JOB: dict = {}


def _init_job(out: str, seconds: float, seed: int) -> None:
    _JOB.update(out=Path(out), seconds=seconds, seed=seed)


def _write_clip(spec: ClipSpec) -> int:
    write_audio(_JOB["out"] / spec.filename, synthesize_clip(spec, _JOB["seconds"], _JOB["seed"]), SAMPLE_RATE)
    return 1


def write_audio(path: Path, audio: np.ndarray, sr: int, subtype: str = "PCM_16") -> None:
    try:
        sf.write(str(path), audio, sr, subtype=subtype)
    except OSError as exc:
        raise write_error(path, exc) from None
    except RuntimeError as exc:  # libsndfile's own error type, which loses errno: a full disk reads "System error"
        full = shutil.disk_usage(path.parent).free < audio.nbytes
        reason = "no space left on the device" if full else str(exc).splitlines()[0][:120]
        raise SynthError(f"cannot write {path}: {reason}") from None


def check_out_dir(out_dir: Path, force: bool, seed: int) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise SynthError(f"--seed must be an integer >= 0, got {seed!r}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not force:
        raise SynthError(f"{out_dir} exists and is not empty (use --force to replace it)")


def write_folder(out_dir: Path, fill) -> None:
    """Run fill(tmp) on a sibling temp folder, then rename it to out_dir (replacing what was
    there): the dataset appears complete or not at all."""
    missing = missing_folders(out_dir.parent)
    make_folder(out_dir.parent)  # like mkdir -p; removed again if the dataset is not written
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        fill(tmp)
        if out_dir.exists() or out_dir.is_symlink():
            trash = out_dir.with_name(f".{out_dir.name}.old")
            _remove(trash)
            out_dir.rename(trash)  # a symlink is replaced itself: the folder it points to is not ours
            tmp.rename(out_dir)
            _remove(trash)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty_folders(missing)
        raise


def _remove(path: Path) -> None:
    """A replaced OUT_DIR: a folder is deleted, a symlink or a file (--force) only unlinked."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def write_table(path: Path, header: str, rows) -> None:
    atomic_write_text(path, "\n".join([header, *("\t".join(map(str, r)) for r in rows)]) + "\n")


def write_dataset(out_dir: str | Path, classes: int = 3, clips_per_class: int = 40, seconds: float = 10.0,
                  seed: int = 0, workers: int | None = None, force: bool = False,
                  progress: bool = True) -> dict:
    """Write a synthetic dataset in the DCASE'20 layout (48 kHz stereo 16-bit WAV)."""
    out_dir = Path(out_dir)
    if not seconds > 0 or seconds > 600:
        raise SynthError(f"--seconds must be in (0, 600], got {seconds}")
    check_out_dir(out_dir, force, seed)
    specs = plan_dataset(classes, clips_per_class, seed)
    splits = split_by_location(specs)

    def fill(tmp: Path) -> None:
        make_folder(tmp / "audio")
        make_folder(tmp / "evaluation_setup")
        n_workers = default_workers() if workers is None else max(1, workers)
        with progress_bar("synthesising scenes", len(specs), enabled=progress) as advance:
            for done in imap(_write_clip, specs, min(n_workers, len(specs)), _init_job, (str(tmp), seconds, seed)):
                advance(done)
        write_table(tmp / "meta.csv", "filename\tscene_label\tidentifier\tsource_label",
                    [(s.filename, s.label, s.identifier, s.device) for s in specs])
        for split, items in splits.items():
            write_table(tmp / "evaluation_setup" / f"fold1_{split}.csv", "filename\tscene_label",
                        [(s.filename, s.label) for s in items])

    write_folder(out_dir, fill)
    return {"path": str(out_dir), "classes": classes, "clips": len(specs),
            "train": len(splits["train"]), "evaluate": len(splits["evaluate"]),
            "seconds": seconds, "seed": seed, "labels": sorted({s.label for s in specs})}


DEFAULT_SYNTH = dict(classes=3, clips_per_class=60, seconds=10.0, seed=0)


def default_dataset(cache_root: Path, progress: bool = True) -> Path:
    """The built-in dataset `edgeasc train` uses when given none: generated once, then reused."""
    d = DEFAULT_SYNTH
    path = cache_root / "synthetic" / f"scenes-{d['classes']}c-{d['clips_per_class']}-s{d['seed']}"
    if not (path / "meta.csv").is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_dataset(path, force=True, progress=progress, **d)
    return path
