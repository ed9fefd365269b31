"""Device impulse-response augmentation (DIR), as the CPJKU DCASE 2023-25 systems use it: a
training clip recorded by the reference device ("a" in TAU 2020/2022 Mobile: the simulated
devices s1..s6 were made from its recordings) is, with probability p, convolved with an impulse
response drawn at random from a folder (the MicIRP set of microphone responses in those
systems), so the network sees the reference recordings through many other microphones.

Design (why the loader decodes audio when DIR is on). The feature cache holds features, and DIR
acts on the waveform before the frontend. With --dir-folder every training clip, augmented or
not, is decoded and resampled exactly as the cache's extraction does it (runtime/audio.load,
fit_length), then goes through the run's torch frontend (train/frontend.frontend_module of the
cache's parameters, passed in: data/ does not import train/) and the cache's normalisation. The
un-augmented clips do not take their cached features: the numpy and torch frontends agree only
to float tolerance, and a clip's features must not depend on whether a coin came up. Evaluation
still reads the cache (no augmentation there). Without --dir-folder nothing of this runs and
training reads the cache as before.

The convolution is the reference's `convolve(x, ir, 'full')[:, :n]`, computed by FFT: the same
length out, aligned to the clip's start (a delay in the response delays the clip). Choices
derive from (seed, epoch, index), as every augmentation in data/loader.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from edgeasc.data.cache import FeatureCache
from edgeasc.data.dcase import DatasetError
from edgeasc.data.loader import CachedFeatures
from edgeasc.runtime.audio import AUDIO_SUFFIXES, AudioError, fit_length, load
from edgeasc.runtime.features import FeatureParams

REFERENCE_DEVICE = "a"
MAX_IR_SECONDS = 2.0
DEFAULT_DIR_P = 0.6  # the CPJKU DCASE 2023 submissions' dir_prob
DIR_STREAM = 3  # the last entry of the (seed, epoch, index, .) key: its own random stream


def load_impulse_responses(folder: str | Path, sample_rate: int) -> list[tuple[str, np.ndarray]]:
    """(file name, mono float32 response at `sample_rate`) of every audio file in `folder` and
    below, sorted by path. Refused in one line: a missing or empty folder, no audio files, an
    unreadable file, a response over MAX_IR_SECONDS (judged from the header, never read whole),
    non-finite or all-zero samples."""
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder (--dir-folder: a folder of impulse-response audio files)"
                           if not root.exists() else f"{root}: not a folder (--dir-folder)")
    try:
        entries = sorted(p for p in root.rglob("*") if p.is_file())
    except OSError as exc:
        raise DatasetError(f"{root}: cannot list the folder ({exc.strerror})") from None
    if not entries:
        raise DatasetError(f"{root}: the folder is empty (--dir-folder needs impulse-response audio files)")
    files = [p for p in entries if p.suffix.lower() in AUDIO_SUFFIXES]
    if not files:
        raise DatasetError(f"{root}: no audio files ({', '.join(AUDIO_SUFFIXES)}) among its {len(entries)} file(s)")
    responses = []
    for path in files:
        try:
            info = sf.info(str(path))
        except Exception:
            raise DatasetError(f"{path}: cannot read audio (an impulse response for --dir-folder)") from None
        if info.samplerate <= 0 or info.frames <= 0:
            raise DatasetError(f"{path}: holds no audio (an impulse response for --dir-folder)")
        seconds = info.frames / info.samplerate
        if seconds > MAX_IR_SECONDS:
            raise DatasetError(f"{path}: {seconds:g} s long; an impulse response for --dir-folder is at most "
                               f"{MAX_IR_SECONDS:g} s")
        try:
            ir, _ = load(path, sample_rate, channels=1)
        except AudioError as exc:
            raise DatasetError(f"{exc} (an impulse response for --dir-folder)") from None
        ir = ir[0]  # finite: load() refuses NaN and infinities, and resampling keeps them out
        if not ir.any():
            raise DatasetError(f"{path}: is silent (an impulse response for --dir-folder)")
        responses.append((str(path.relative_to(root)), ir))
    return responses


def convolve_ir(x: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """Each channel of x (channels, n) convolved with ir (k,), first n samples of the full
    convolution (scipy's convolve(x, ir, 'full')[:, :n]), by FFT in float64; float32 out."""
    n = x.shape[-1]
    size = 1 << int(np.ceil(np.log2(max(n + len(ir) - 1, 1))))
    spectrum = np.fft.rfft(x.astype(np.float64), size, axis=-1) * np.fft.rfft(ir.astype(np.float64), size)
    return np.fft.irfft(spectrum, size, axis=-1)[..., :n].astype(np.float32)


def check_devices(devices: list[str | None], folder: str | Path) -> None:
    """DIR acts on the reference device's clips: a training set without device information, or
    without a single reference clip, would train as if no --dir-folder had been given."""
    if not any(devices):
        raise DatasetError(f"--dir-folder {folder}: the training set has no device information (DIR convolves the "
                           f"clips of the reference device {REFERENCE_DEVICE!r}: a DCASE Mobile layout or "
                           "DCASE-style file names)")
    if REFERENCE_DEVICE not in devices:
        seen = ", ".join(sorted({d for d in devices if d}))
        raise DatasetError(f"--dir-folder {folder}: no training clip of the reference device {REFERENCE_DEVICE!r} "
                           f"(devices: {seen})")


class ImpulseResponseFeatures(CachedFeatures):
    """Training items from the audio: decoded, DIR-augmented (reference-device clips, probability
    p), the run's torch frontend, the cache's normalisation, then the same time roll and targets
    as CachedFeatures. `frontend`: (1, channels, samples) -> (1, channels, mels, frames)."""

    def __init__(self, cache: FeatureCache, frontend: Callable[[torch.Tensor], torch.Tensor],
                 responses: list[tuple[str, np.ndarray]], p: float, roll: int, seed: int = 0,
                 targets: np.ndarray | None = None) -> None:
        super().__init__(cache, "train", train=True, roll=roll, seed=seed, targets=targets)
        if not responses:
            raise ValueError("no impulse responses")
        root = Path(cache.manifest["root"])
        self.paths = [str(root / name) for name in cache.clips("train")]
        self.devices = list(cache.devices("train"))
        self.frontend, self.responses, self.p = frontend, responses, float(p)
        params = FeatureParams(**cache.manifest["params"])
        self.sample_rate, self.channels = params.sample_rate, int(cache.manifest["channels"])
        self.resampler = params.resampler  # as the cache was extracted
        self.n_samples = params.n_samples()  # as the cache's extraction cuts and pads

    def choice(self, index: int) -> int | None:
        """The response convolved into clip `index` this epoch, or None."""
        if self.devices[index] != REFERENCE_DEVICE:
            return None
        rng = np.random.default_rng([self.seed, self.epoch, index, DIR_STREAM])
        if rng.random() >= self.p:
            return None
        return int(rng.integers(len(self.responses)))

    def waveform(self, index: int) -> np.ndarray:
        """(channels, samples) at the run's rate and length, augmented per `choice`."""
        x, _ = load(self.paths[index], self.sample_rate, channels=self.channels, resampler=self.resampler)
        x = fit_length(x, self.n_samples)
        k = self.choice(index)
        return x if k is None else convolve_ir(x, self.responses[k][1])

    def features(self, index: int) -> np.ndarray:
        with torch.no_grad():
            x = self.frontend(torch.from_numpy(self.waveform(index))[None])[0].numpy()
        return (x - self.mean) / self.std

    def __getitem__(self, index: int) -> tuple:
        return self._item(self.features(index).astype(np.float32), index)

    def describe(self) -> dict:
        return {"reference_device": REFERENCE_DEVICE, "p": self.p, "responses": [n for n, _ in self.responses]}
