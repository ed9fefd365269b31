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

from edgeasc.errors import EdgeascError
from edgeasc.io import (
    atomic_write_text,
    make_folder,
    missing_folders,
    remove_empty_folders,
    write_error,
)
from edgeasc.parallel import default_workers, imap, progress_bar

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


# ----------------------------------------------------------------------------- signal helpers
def _shaped_noise(rng: np.random.Generator, n: int, gain_fn) -> np.ndarray:
    """White noise shaped by a magnitude response |H(f)| in the frequency domain."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    return np.fft.irfft(spec * gain_fn(f), n)


def _band(lo: float, hi: float, order: float = 2.0):
    def gain(f):
        f = np.maximum(f, 1.0)
        return 1.0 / (1.0 + (lo / f) ** (2 * order)) / (1.0 + (f / hi) ** (2 * order))
    return gain


def _rms_normalise(x: np.ndarray) -> np.ndarray:
    rms = math.sqrt(float(np.mean(x * x)))
    return x / rms if rms > 0 else x


def _events(rng, n: int, rate_hz: float, jitter: float = 0.3) -> np.ndarray:
    """Event onsets (samples): a jittered periodic train at `rate_hz`."""
    period = SAMPLE_RATE / rate_hz
    t = rng.uniform(0, period)
    out = []
    while t < n:
        out.append(int(t))
        t += period * (1 + rng.uniform(-jitter, jitter))
    return np.asarray(out, dtype=np.int64)


def _place(n: int, onsets: np.ndarray, burst_fn) -> np.ndarray:
    y = np.zeros(n)
    for t in onsets:
        b = burst_fn()
        end = min(n, t + len(b))
        y[t:end] += b[:end - t]
    return y


def _decaying_tone(rng, freq: float, dur: float, decay: float, harmonics: int = 1) -> np.ndarray:
    t = np.arange(int(dur * SAMPLE_RATE)) / SAMPLE_RATE
    tone = sum(np.sin(2 * np.pi * freq * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, harmonics + 1))
    return tone * np.exp(-t / decay)


# ----------------------------------------------------------------------------- sources
def _rumble(rng, n):
    cutoff = rng.uniform(60, 160)
    return _shaped_noise(rng, n, lambda f: 1.0 / (1.0 + (np.maximum(f, 1) / cutoff) ** 1.5))


def _passing(rng, n):
    """Vehicles passing by: band noise under Gaussian envelopes with a falling centre frequency."""
    t = np.arange(n) / SAMPLE_RATE
    y = np.zeros(n)
    for centre in rng.uniform(0, n / SAMPLE_RATE, size=rng.integers(2, 6)):
        width = rng.uniform(0.6, 1.8)
        env = np.exp(-0.5 * ((t - centre) / width) ** 2)
        lo = rng.uniform(150, 400)
        noise = _shaped_noise(rng, n, _band(lo, lo * rng.uniform(4, 10), 1.0))
        y += env * noise * rng.uniform(0.5, 1.0)
    return y


def _babble(rng, n):
    t = np.arange(n) / SAMPLE_RATE
    y = np.zeros(n)
    for _ in range(rng.integers(3, 8)):
        syllables = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 2 * np.pi))
        phrase = (np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * t + rng.uniform(0, 2 * np.pi)) > -0.3)
        f0 = rng.uniform(100, 240) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
        voiced = sum(np.sin(2 * np.pi * np.cumsum(f0 * k) / SAMPLE_RATE) / k for k in range(1, 8))
        y += syllables ** 2 * phrase * (0.6 * voiced + _shaped_noise(rng, n, _band(300, 3500)))
    return y


def _clatter(rng, n):
    """Rail joints / wheels: periodic decaying metallic bursts, often in pairs."""
    rate = rng.uniform(1.2, 3.5)
    res = rng.uniform(600, 2500, size=3)

    def burst():
        return sum(_decaying_tone(rng, f * rng.uniform(0.95, 1.05), 0.25, rng.uniform(0.02, 0.06)) for f in res)

    onsets = _events(rng, n, rate, 0.1)
    pairs = np.concatenate([onsets, onsets + int(rng.uniform(0.08, 0.2) * SAMPLE_RATE)])
    return _place(n, np.sort(pairs[pairs < n]), burst) + 0.3 * _shaped_noise(rng, n, _band(200, 2000))


def _engine(rng, n):
    t = np.arange(n) / SAMPLE_RATE
    f0 = rng.uniform(25, 60) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    y = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k ** 0.8 for k in range(1, 14))
    return y + 0.5 * _shaped_noise(rng, n, _band(40, 600))


def _whine(rng, n):
    """Electric traction: a tone sweeping up and down with harmonics."""
    t = np.arange(n) / SAMPLE_RATE
    f = rng.uniform(300, 700) + rng.uniform(200, 800) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.03, 0.1) * t))
    phase = 2 * np.pi * np.cumsum(f) / SAMPLE_RATE
    return np.sin(phase) + 0.4 * np.sin(2 * phase) + 0.2 * np.sin(3 * phase)


def _chirps(rng, n):
    def chirp():
        dur = rng.uniform(0.05, 0.2)
        t = np.arange(int(dur * SAMPLE_RATE)) / SAMPLE_RATE
        f_start, f_end = rng.uniform(2500, 7000, size=2)
        f = f_start + (f_end - f_start) * t / dur + 300 * np.sin(2 * np.pi * rng.uniform(20, 60) * t)
        return np.sin(2 * np.pi * np.cumsum(f) / SAMPLE_RATE) * np.hanning(len(t))

    songs = [b + _events(rng, int(rng.uniform(0.5, 1.5) * SAMPLE_RATE), rng.uniform(5, 12))
             for b in _events(rng, n, rng.uniform(0.2, 0.6), 0.6)]
    onsets = np.concatenate(songs) if songs else np.zeros(0, dtype=np.int64)
    return _place(n, onsets[onsets < n], chirp)


def _wind(rng, n):
    t = np.arange(n) / SAMPLE_RATE
    gusts = 0.4 + 0.6 * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.08, 0.4) * t + rng.uniform(0, 6)))
    cutoff = rng.uniform(250, 600)
    return gusts * _shaped_noise(rng, n, lambda f: 1.0 / (1.0 + (np.maximum(f, 1) / cutoff) ** 2))


def _hall(rng, n):
    """A reverberant hall: diffuse noise plus its own reverb tail (an exponential IR)."""
    rt = rng.uniform(0.8, 2.0)
    ir_n = int(rt * SAMPLE_RATE)
    ir = rng.standard_normal(ir_n) * np.exp(-6.9 * np.arange(ir_n) / ir_n)
    dry = _shaped_noise(rng, n, _band(80, 4000, 1.0))
    size = 1 << math.ceil(math.log2(n + ir_n))
    wet = np.fft.irfft(np.fft.rfft(dry, size) * np.fft.rfft(ir, size), size)[:n]
    return dry + 0.5 * _rms_normalise(wet)


def _chimes(rng, n):
    base = rng.uniform(400, 900)
    notes = base * np.array([1.0, 1.26, 1.5, 2.0])[rng.permutation(4)[:3]]

    def chime():
        return np.concatenate([_decaying_tone(rng, f, 0.7, 0.5, harmonics=3) for f in notes])

    return _place(n, _events(rng, n, rng.uniform(0.1, 0.25), 0.5), chime)


def _music(rng, n):
    beat = rng.uniform(1.5, 2.5)
    root = rng.uniform(110, 220)

    def chord():
        ratios = [1.0, 1.26, 1.5] if rng.random() < 0.5 else [1.0, 1.19, 1.5]
        return sum(_decaying_tone(rng, root * r * rng.choice([1, 2]), 0.6, 0.3, harmonics=4) for r in ratios)

    return _place(n, _events(rng, n, beat, 0.02), chord)


def _footsteps(rng, n):
    def step():
        m = int(0.06 * SAMPLE_RATE)
        return rng.standard_normal(m) * np.exp(-np.arange(m) / (0.012 * SAMPLE_RATE))

    y = _place(n, _events(rng, n, rng.uniform(1.6, 2.3), 0.1), step)
    return np.fft.irfft(np.fft.rfft(y) * _band(100, 3000)(np.fft.rfftfreq(n, 1 / SAMPLE_RATE)), n)


def _beeps(rng, n):
    f = rng.uniform(900, 2200)

    def beep():
        on = _decaying_tone(rng, f, 0.15, 10.0)
        return np.concatenate([on, np.zeros(int(0.1 * SAMPLE_RATE))] * int(rng.integers(3, 7)))

    return _place(n, _events(rng, n, rng.uniform(0.1, 0.3), 0.5), beep)


SOURCES = {"rumble": _rumble, "passing": _passing, "babble": _babble, "clatter": _clatter,
           "engine": _engine, "whine": _whine, "chirps": _chirps, "wind": _wind, "hall": _hall,
           "chimes": _chimes, "music": _music, "footsteps": _footsteps, "beeps": _beeps}


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
        return _band(200, 8000, 1.0)
    if device == "c":  # a cheap recorder: dull, boxy
        return lambda f: _band(60, 4500, 1.0)(f) * (1 + 1.5 * np.exp(-0.5 * ((f - 1200) / 400) ** 2))
    return lambda f: np.ones_like(f)


def synthesize_clip(spec: ClipSpec, seconds: float = 10.0, seed: int = 0) -> np.ndarray:
    """One stereo clip, (samples, 2) float32 at 48 kHz."""
    rng = np.random.default_rng([seed, spec.index])
    n = int(round(seconds * SAMPLE_RATE))
    mix = np.zeros((2, n))
    for name, (p, lo_db, hi_db) in RECIPES[spec.scene].items():
        if rng.random() >= p:
            continue
        source = _rms_normalise(SOURCES[name](rng, n)) * 10 ** (rng.uniform(lo_db, hi_db) / 20)
        pan = rng.uniform(0.2, 0.8)
        delay = int(rng.integers(0, 24))  # up to 0.5 ms between the microphones
        mix[0] += math.sqrt(1 - pan) * source
        mix[1] += math.sqrt(pan) * np.roll(source, delay)
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
    audio = synthesize_clip(spec, _JOB["seconds"], _JOB["seed"])
    path = _JOB["out"] / spec.filename
    try:
        sf.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16")
    except OSError as exc:
        raise write_error(path, exc) from None
    except RuntimeError as exc:  # libsndfile's own error type, which loses errno: a full disk reads "System error"
        full = shutil.disk_usage(path.parent).free < audio.nbytes
        reason = "no space left on the device" if full else str(exc).splitlines()[0][:120]
        raise SynthError(f"cannot write {path}: {reason}") from None
    return 1


def write_dataset(out_dir: str | Path, classes: int = 3, clips_per_class: int = 40, seconds: float = 10.0,
                  seed: int = 0, workers: int | None = None, force: bool = False,
                  progress: bool = True) -> dict:
    """Write a synthetic dataset in the DCASE'20 layout. The folder appears complete or not
    at all: everything is written to a sibling temp folder that is renamed at the end."""
    out_dir = Path(out_dir)
    if not seconds > 0 or seconds > 600:
        raise SynthError(f"--seconds must be in (0, 600], got {seconds}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not force:
        raise SynthError(f"{out_dir} exists and is not empty (use --force to replace it)")
    specs = plan_dataset(classes, clips_per_class, seed)
    splits = split_by_location(specs)
    missing = missing_folders(out_dir.parent)
    make_folder(out_dir.parent)  # like mkdir -p; removed again if the dataset is not written
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        make_folder(tmp / "audio")
        make_folder(tmp / "evaluation_setup")
        workers = default_workers() if workers is None else max(1, workers)
        with progress_bar("synthesising scenes", len(specs), enabled=progress) as advance:
            for done in imap(_write_clip, specs, min(workers, len(specs)), _init_job,
                             (str(tmp), seconds, seed)):
                advance(done)
        meta = ["filename\tscene_label\tidentifier\tsource_label"]
        meta += [f"{s.filename}\t{s.label}\t{s.identifier}\t{s.device}" for s in specs]
        atomic_write_text(tmp / "meta.csv", "\n".join(meta) + "\n")
        for split, items in splits.items():
            rows = ["filename\tscene_label"] + [f"{s.filename}\t{s.label}" for s in items]
            atomic_write_text(tmp / "evaluation_setup" / f"fold1_{split}.csv", "\n".join(rows) + "\n")
        if out_dir.exists():
            trash = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(trash, ignore_errors=True)
            out_dir.rename(trash)
            tmp.rename(out_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty_folders(missing)
        raise
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
