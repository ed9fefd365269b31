"""The synthetic TAU Urban Acoustic Scenes 2022 Mobile profile (`edgeasc synth --profile dcase2022`).

Made the way the real set was made: 10-s scene recordings cut into 1-s pieces, each
recording heard through several devices at once. Ten scenes; 44.1 kHz mono 24-bit WAV.
Nine devices, each a fixed transfer function (band limits, a resonance, a tilt, its own
self-noise, and for some soft clipping): a, b, c and s1-s3 are seen in training (a in two
thirds of it), s4-s6 only in evaluate, and every evaluate recording is heard through one seen
and one unseen device, so both groups are measured on the same content. No recording location is in both splits
and two cities are evaluate-only. Written in the official layout: meta.csv,
evaluation_setup/fold1_{train,evaluate,test}.csv and split_setup/split{5,10,25,50,100}.csv
(nested subsets of the training recordings) plus test.csv.
Deterministic: a recording depends only on (seed, its index).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeasc.console import progress_bar
from edgeasc.data.dcase import TRAIN_SUBSETS
from edgeasc.data.synth import (
    CITIES,
    RECIPES,
    SCENES,
    SynthError,
    _location_filter,
    check_out_dir,
    mix_scene,
    write_audio,
    write_folder,
    write_table,
)
from edgeasc.data.synth_sources import SOURCES, band, rms_normalise, shaped_noise
from edgeasc.data.workers import default_workers, imap
from edgeasc.io import make_folder

SAMPLE_RATE = 44_100
SUBSEGMENTS = 10               # 1-s pieces per 10-s recording
SEGMENTS_PER_LOCATION = 2
EVALUATE_FRACTION = 0.3        # of each scene's recording locations
TRAIN_CITIES = CITIES[:8]
EVALUATE_CITIES = CITIES[6:]   # paris and prague in both splits; stockholm and vienna evaluate-only
BORROW = 0.5                   # chance that a recording also carries a source of another scene
DEFAULT_CLIPS_PER_CLASS = 500


@dataclass(frozen=True)
class Device:
    """A recording device as a linear filter plus self-noise and an optional soft clip."""
    name: str
    highpass: float   # Hz, 2nd-order
    lowpass: float    # Hz, 2nd-order
    peak_hz: float    # a resonance (or a dip, peak_db < 0), one octave wide
    peak_db: float
    tilt: float       # dB per octave around 1 kHz
    snr_db: float     # self-noise below the signal
    drive: float = 0.0  # soft clipping: tanh(drive·x)/drive at unit RMS; 0 = linear

    def gain(self, f: np.ndarray) -> np.ndarray:
        f = np.maximum(f, 20.0)
        db = self.tilt * np.log2(f / 1000.0) + self.peak_db * np.exp(-0.5 * (np.log2(f / self.peak_hz) * 2) ** 2)
        return band(self.highpass, self.lowpass, 1.0)(f) * 10 ** (db / 20)


DEVICES = (
    Device("a", 20, 20000, 1000, 0.0, 0.0, 65),        # the reference binaural microphone
    Device("b", 150, 9000, 2500, 3.0, -1.0, 42),       # phone
    Device("c", 100, 11000, 4000, -4.0, 1.0, 45),      # phone
    Device("s1", 250, 7000, 1500, 5.0, 0.0, 40),       # simulated devices, as in TAU 2020/2022
    Device("s2", 80, 6000, 800, -5.0, -2.0, 38),
    Device("s3", 300, 12000, 3000, 6.0, 2.0, 44),
    Device("s4", 400, 5000, 1800, 8.0, -3.0, 36),      # unseen in training
    Device("s5", 60, 4000, 600, 6.0, -4.0, 38, drive=0.6),
    Device("s6", 500, 10000, 5000, -8.0, 3.0, 35, drive=0.4),
)
SEEN = ("a", "b", "c", "s1", "s2", "s3")
UNSEEN = ("s4", "s5", "s6")
_BY_NAME = {d.name: d for d in DEVICES}


@dataclass(frozen=True)
class Recording:
    """One 10-s recording: where, and the devices that heard it."""
    index: int
    scene: str
    city: str
    location: int      # unique over the dataset, as TAU's location ids
    segment: int       # unique over the dataset
    split: str
    devices: tuple[str, ...]

    @property
    def identifier(self) -> str:
        return f"{self.city}-{self.location}"

    def filename(self, sub: int, device: str) -> str:
        return f"audio/{self.scene}-{self.city}-{self.location}-{self.segment}-{sub}-{device}.wav"

    def clips(self) -> list[tuple[str, str]]:
        """(filename, device) of its 1-s pieces."""
        return [(self.filename(sub, d), d) for d in self.devices for sub in range(SUBSEGMENTS)]


def plan_recordings(clips_per_class: int = DEFAULT_CLIPS_PER_CLASS, seed: int = 0) -> list[Recording]:
    """Which recordings exist (no audio yet). A training recording is heard by one device: a
    for two in three (the reference device dominates training, as in TAU 2022), else b, c,
    s1, s2, s3 in rotation. An evaluate recording is heard by one seen and one unseen device
    (in rotation), so both groups are measured on the same content. Locations: about
    clips_per_class clips per scene, at least 4 so that both splits get some."""
    if clips_per_class < 1:
        raise SynthError(f"--clips-per-class must be positive, got {clips_per_class}")
    per_location = SEGMENTS_PER_LOCATION * SUBSEGMENTS * (1 - EVALUATE_FRACTION + 2 * EVALUATE_FRACTION)
    n_locations = max(4, round(clips_per_class / per_location))
    rng = np.random.default_rng([seed, 2022])
    recordings: list[Recording] = []
    location, segment, n_train, n_eval = 1000, 10000, 0, 0
    for scene_index, scene in enumerate(SCENES):
        n_eval_locations = max(1, round(EVALUATE_FRACTION * n_locations))
        evaluate = set(rng.permutation(n_locations)[:n_eval_locations].tolist())
        for ordinal in range(n_locations):
            split = "evaluate" if ordinal in evaluate else "train"
            cities = EVALUATE_CITIES if split == "evaluate" else TRAIN_CITIES
            city = cities[(scene_index + ordinal) % len(cities)]
            for _ in range(SEGMENTS_PER_LOCATION):
                if split == "train":
                    devices = ("a",) if n_train % 3 != 2 else (SEEN[1 + (n_train // 3) % (len(SEEN) - 1)],)
                    n_train += 1
                else:
                    devices = (SEEN[n_eval % len(SEEN)], UNSEEN[(n_eval + n_eval // len(SEEN)) % len(UNSEEN)])
                    n_eval += 1
                recordings.append(Recording(len(recordings), scene, city, location, segment, split, devices))
                segment += 1
            location += 1
    return recordings


def train_subsets(recordings: list[Recording], seed: int = 0) -> dict[int, list[Recording]]:
    """split_setup/split{N}.csv: nested subsets (5 ⊂ 10 ⊂ ... ⊂ 100) of the training recordings,
    whole recordings at a time, every scene in each (ceil of N % of its recordings)."""
    rng = np.random.default_rng([seed, 2024])
    order: dict[str, list[Recording]] = {}
    for scene in SCENES:
        own = [r for r in recordings if r.split == "train" and r.scene == scene]
        order[scene] = [own[i] for i in rng.permutation(len(own))]
    return {p: sorted((r for own in order.values() for r in own[:max(1, math.ceil(p * len(own) / 100))]),
                      key=lambda r: r.index) for p in TRAIN_SUBSETS}


# ----------------------------------------------------------------------------- audio
def _borrowed(rng: np.random.Generator, scene: str, n: int, sr: int) -> np.ndarray:
    """A source typical of another scene: what makes 1-s scenes confusable, as in real data."""
    other = SCENES[(SCENES.index(scene) + 1 + int(rng.integers(len(SCENES) - 1))) % len(SCENES)]
    names = sorted(RECIPES[other])
    name = names[int(rng.integers(len(names)))]
    return rms_normalise(SOURCES[name](rng, n, sr)) * 10 ** (rng.uniform(-14, -4) / 20)


def hear(device: Device, signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The device's version of a recording: its filter, its self-noise, its clipping, its level."""
    n = len(signal)
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    y = rms_normalise(np.fft.irfft(np.fft.rfft(signal) * device.gain(f), n))
    hiss = rms_normalise(shaped_noise(rng, n, SAMPLE_RATE, band(device.highpass, device.lowpass, 1.0)))
    y = y + 10 ** (-device.snr_db / 20) * hiss
    if device.drive > 0:
        y = np.tanh(device.drive * 3 * y) / (device.drive * 3)
    level = 10 ** (rng.uniform(-32, -20) / 20)  # RMS dBFS
    return np.clip(rms_normalise(y) * level, -1.0, 1.0)


def synthesize_recording(rec: Recording, seed: int = 0) -> dict[str, np.ndarray]:
    """{device: (SUBSEGMENTS * 44100,) float32}: the recording as each of its devices heard it."""
    rng = np.random.default_rng([seed, 2022, rec.index])
    n = SUBSEGMENTS * SAMPLE_RATE
    mix = mix_scene(rng, rec.scene, n, SAMPLE_RATE, channels=1)[0]
    if rng.random() < BORROW:
        mix = mix + _borrowed(rng, rec.scene, n, SAMPLE_RATE)
    loc_gain, floor_db = _location_filter(rec.scene, rec.identifier, seed)
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    scene = np.fft.irfft(np.fft.rfft(mix) * loc_gain(f), n)
    scene = rms_normalise(scene) + 10 ** (floor_db / 20) * rng.standard_normal(n)
    heard = {}
    for name in rec.devices:
        device_rng = np.random.default_rng([seed, 2022, rec.index, zlib.crc32(name.encode())])
        heard[name] = hear(_BY_NAME[name], scene, device_rng).astype(np.float32)
    return heard


_JOB: dict = {}


def _init_job(out: str, seed: int) -> None:
    _JOB.update(out=Path(out), seed=seed)


def _write_recording(rec: Recording) -> int:
    for device, audio in synthesize_recording(rec, _JOB["seed"]).items():
        for sub in range(SUBSEGMENTS):
            piece = audio[sub * SAMPLE_RATE:(sub + 1) * SAMPLE_RATE]
            write_audio(_JOB["out"] / rec.filename(sub, device), piece, SAMPLE_RATE, subtype="PCM_24")
    return len(rec.devices) * SUBSEGMENTS


def write_dataset_2022(out_dir: str | Path, clips_per_class: int = DEFAULT_CLIPS_PER_CLASS, seed: int = 0,
                       workers: int | None = None, force: bool = False, progress: bool = True) -> dict:
    """Write the synthetic TAU 2022 Mobile development set (module docstring)."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir, force, seed)
    recordings = plan_recordings(clips_per_class, seed)
    subsets = train_subsets(recordings, seed)
    n_clips = sum(len(r.devices) * SUBSEGMENTS for r in recordings)

    def rows(split: str):
        return [(name, r.scene) for r in recordings if r.split == split for name, _ in r.clips()]

    def fill(tmp: Path) -> None:
        make_folder(tmp / "audio")
        n_workers = default_workers() if workers is None else max(1, workers)
        with progress_bar("synthesising TAU 2022-style scenes", n_clips, enabled=progress) as advance:
            for done in imap(_write_recording, recordings, min(n_workers, len(recordings)), _init_job,
                             (str(tmp), seed)):
                advance(done)
        write_table(tmp / "meta.csv", "filename\tscene_label\tidentifier\tsource_label",
                    [(name, r.scene, r.identifier, d) for r in recordings for name, d in r.clips()])
        make_folder(tmp / "evaluation_setup")
        make_folder(tmp / "split_setup")
        for split in ("train", "evaluate"):
            write_table(tmp / "evaluation_setup" / f"fold1_{split}.csv", "filename\tscene_label", rows(split))
        test = [(name,) for name, _ in rows("evaluate")]
        write_table(tmp / "evaluation_setup" / "fold1_test.csv", "filename", test)
        write_table(tmp / "split_setup" / "test.csv", "filename", test)
        for percent, subset in subsets.items():
            write_table(tmp / "split_setup" / f"split{percent}.csv", "filename\tscene_label",
                        [(name, r.scene) for r in subset for name, _ in r.clips()])

    write_folder(out_dir, fill)
    clips = {s: sum(len(r.devices) * SUBSEGMENTS for r in recordings if r.split == s) for s in ("train", "evaluate")}
    return {"path": str(out_dir), "profile": "dcase2022", "classes": len(SCENES), "clips": n_clips,
            "train": clips["train"], "evaluate": clips["evaluate"], "seconds": 1.0, "sample_rate": SAMPLE_RATE,
            "seed": seed, "labels": sorted(SCENES), "seen_devices": list(SEEN), "unseen_devices": list(UNSEEN),
            "splits": {p: sum(len(r.devices) * SUBSEGMENTS for r in s) for p, s in subsets.items()}}
