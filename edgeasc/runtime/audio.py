"""Audio loading for the device runtime: soundfile decode, resampling (soxr, or torchaudio's sinc
filter for the frontends that name it), channel and length policy. torch-free.

Length policy (`fit_length`): a clip shorter than the configured length is zero-padded at
the end; a longer one is cropped to its first `n` samples. `predict` classifies long
recordings in sliding windows instead of cropping them.
"""

from __future__ import annotations

import io
import math
import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from edgeasc.errors import EdgeascError
from edgeasc.runtime import sinc

MAX_CHANNELS = 2
# libsndfile decodes MP3 from 1.1 on (the soundfile wheels bundle 1.2); an older system library
# does not, and its folders' .mp3 files are then skipped with a line each rather than failing
MP3 = "MP3" in sf.available_formats()
# the files a folder of recordings is searched for (predict, dataset layouts)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3") if MP3 else (".wav", ".flac", ".ogg")


class AudioError(EdgeascError):
    """Audio that cannot be used (unreadable, empty, non-finite, too many channels)."""

    exit_code = 2


def load(path: str | Path, sample_rate: int = 22050, channels: int | None = None, resampler: str = "soxr"
         ) -> tuple[np.ndarray, int]:
    """Decode `path` and resample it (`resampler`: "soxr" or "sinc", see `resample`): returns
    (float32 array (channels, samples), sample_rate).

    `path` "-" reads one recording from stdin. channels=None keeps the file's channels (mono stays 1, stereo 2); channels=2 duplicates
    a mono file; channels=1 averages a stereo file. More than two channels are refused.
    """
    path = Path(path)
    if str(path) == "-":  # one recording on stdin, read whole: the decoders need to seek
        source: str | io.BytesIO = io.BytesIO(sys.stdin.buffer.read())
        path = Path("stdin")
    elif not path.is_file():
        raise AudioError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    else:
        source = str(path)
    try:
        x, sr = decode(source)
    except Exception as exc:  # soundfile raises several types; all mean "unreadable"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioError(f"{path}: cannot read audio ({reason})") from None
    validate(x, path)
    return select_channels(resample(x, sr, sample_rate, resampler), channels, path), sample_rate


_PCM16_SCALE = np.float32(1 / 32768)


def decode(source: str | io.BytesIO, frames: int = -1) -> tuple[np.ndarray, int]:
    """The file's first `frames` frames (-1: all) as float32 (channels, samples), C-contiguous.

    16-bit PCM is read as int16 and scaled here: the same numbers as libsndfile's float
    conversion (k / 32768 is exact in float32), at a tenth of its time (benchmarks/RESULTS.md,
    end to end). Other formats are decoded to float32 by libsndfile."""
    with sf.SoundFile(source) as f:
        if f.subtype == "PCM_16":
            raw = f.read(frames, dtype="int16", always_2d=True)
            x = np.empty(raw.shape[::-1], dtype=np.float32)
            np.multiply(raw.T, _PCM16_SCALE, out=x)
        else:
            x = np.ascontiguousarray(f.read(frames, dtype="float32", always_2d=True).T)
        return x, f.samplerate


def validate(x: np.ndarray, path: str | Path = "<audio>") -> None:
    if x.shape[-1] == 0:
        raise AudioError(f"{path}: the clip has no samples")
    if x.shape[0] > MAX_CHANNELS:
        raise AudioError(f"{path}: {x.shape[0]} channels; edgeasc takes mono or stereo audio")
    finite = np.isfinite(x)
    if not finite.all():
        what = "all samples are" if not finite.any() else f"{int((~finite).sum())} samples are"
        raise AudioError(f"{path}: {what} NaN or infinite")


def select_channels(x: np.ndarray, channels: int | None, path: str | Path = "<audio>") -> np.ndarray:
    if channels is None or channels == x.shape[0]:
        return x
    if channels == 2 and x.shape[0] == 1:
        return np.repeat(x, 2, axis=0)
    if channels == 1 and x.shape[0] == 2:
        return x.mean(axis=0, keepdims=True)
    raise AudioError(f"{path}: cannot make {channels} channels from {x.shape[0]}")


def resample(x: np.ndarray, sr: int, target: int, method: str = "soxr") -> np.ndarray:
    """(channels, samples) -> float32 (channels, samples), exactly ceil(n * target / sr) samples.

    method "soxr": soxr 'HQ' (= librosa's default soxr_hq), one call per channel, each on a
    contiguous row (the same numbers as one call on interleaved frames, in three quarters of the
    time). "sinc": torchaudio's default Resample (runtime/sinc.py), the same samples as
    torchaudio's; its length is cut or padded to the exact ceiling, where torchaudio's float32
    arithmetic can give one sample fewer on signals over 2^16 output samples."""
    _check_method(method)
    if sr == target:
        return x.astype(np.float32, copy=False)
    n_out = math.ceil(x.shape[-1] * target / sr)
    if method == "sinc":
        return fit_length(sinc.resample_sinc(x, sr, target), n_out)
    out = np.zeros((x.shape[0], n_out), dtype=np.float32)
    for c in range(x.shape[0]):
        y = soxr.resample(np.ascontiguousarray(x[c]), sr, target, quality="HQ")
        out[c, :min(n_out, y.shape[0])] = y[:n_out]
    return out


def _check_method(method: str) -> str:
    if method not in ("soxr", "sinc"):  # features.RESAMPLERS; metadata refuses others at the boundary
        raise ValueError(f"unknown resampler {method!r}: soxr or sinc")
    return method


class _SincStream:
    """sinc.SincResampler behind soxr.ResampleStream's interface: (frames, channels) in and out."""

    def __init__(self, orig: int, new: int, channels: int):
        self.resampler = sinc.SincResampler(orig, new, channels)

    def resample_chunk(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        out = self.resampler.push(np.ascontiguousarray(x.T)) if len(x) else None
        if last:
            tail = self.resampler.finish()
            out = tail if out is None else np.concatenate([out, tail], axis=1)
        if out is None:
            return np.zeros((0, self.resampler.channels), dtype=np.float32)
        return np.ascontiguousarray(out.T)


def stream_resampler(orig: int, new: int, channels: int, method: str = "soxr"):
    """A streaming resampler with soxr.ResampleStream's `resample_chunk(frames x channels, last)`:
    the samples of `resample(..., method)` block by block (its exact length is the caller's cut)."""
    if _check_method(method) == "sinc":
        return _SincStream(orig, new, channels)
    return soxr.ResampleStream(orig, new, channels, dtype="float32", quality="HQ")


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Zero-pad at the end or crop to the first `n` samples (last axis)."""
    have = x.shape[-1]
    if have == n:
        return x
    if have > n:
        return np.ascontiguousarray(x[..., :n])
    pad = np.zeros((*x.shape[:-1], n - have), dtype=x.dtype)
    return np.concatenate([x, pad], axis=-1)


def truncation(path: str | Path) -> str | None:
    """A warning when a WAV file holds less audio than its header declares (a copy or a
    recording cut short); None otherwise. Decoders read what is there without a word, so the
    clip is silently shorter and zero-padded. Other formats carry no such declared length."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                chunk = f.read(8)
                declared = int.from_bytes(chunk[4:8], "little")
                if chunk[:4] == b"data":
                    available = size - pos - 8
                    if 0 < declared < 0xFFFFFFFF and declared > available:  # 0 / -1: written by a stream
                        # rounded down: a file missing its last few kB does not hold "100 %"
                        return (f"{path}: the file holds {100 * available // declared} % of the audio its header "
                                "declares (truncated?); the missing end is treated as silence")
                    return None
                pos += 8 + declared + (declared & 1)
    except OSError:
        return None
    return None
