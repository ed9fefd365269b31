"""The perceptual log-mel frontend (docs/method.md §1).

This module is part of the torch-free device runtime.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class FeatureParams:
    """Every number of the frontend; travels inside checkpoints and ONNX metadata."""

    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 256
    fmin: float = 0.0
    fmax: float = 11025.0
    top_db: float = 80.0
    amin: float = 1e-10
    clip_seconds: float = 10.0

    def n_samples(self, seconds: float | None = None) -> int:
        seconds = self.clip_seconds if seconds is None else seconds
        return int(math.ceil(round(seconds * self.sample_rate, 6)))

    def n_frames(self, seconds: float | None = None) -> int:
        """Frames of a centred STFT: 431 for 10 s at 22 050 Hz, hop 512."""
        return 1 + self.n_samples(seconds) // self.hop_length

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- the maths
# One definition, float64, cached; both implementations (numpy here, torch in
# features_torch.py) take their constants from these functions.

import functools  # noqa: E402

import numpy as np  # noqa: E402


def fft_frequencies(sample_rate: int, n_fft: int) -> np.ndarray:
    return np.arange(1 + n_fft // 2, dtype=np.float64) * sample_rate / n_fft


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa htk=False)."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    with np.errstate(divide="ignore"):
        log_part = min_log_mel + np.log(np.maximum(f, 1e-300) / min_log_hz) / logstep
    return np.where(f >= min_log_hz, log_part, f / f_sp)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@functools.lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int = 22050, n_fft: int = 2048, n_mels: int = 256,
                   fmin: float = 0.0, fmax: float = 11025.0) -> np.ndarray:
    """Slaney-style, area-normalised triangular filters, shape (n_mels, 1 + n_fft // 2)."""
    freqs = fft_frequencies(sample_rate, n_fft)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    weights.setflags(write=False)
    return weights


@functools.lru_cache(maxsize=8)
def a_weighting(sample_rate: int = 22050, n_fft: int = 2048, min_db: float = -80.0) -> np.ndarray:
    """A-weighting in dB per FFT bin, floored at `min_db` (bin 0 gets the floor)."""
    f_sq = fft_frequencies(sample_rate, n_fft) ** 2
    c = np.array([12194.217, 20.598997, 107.65265, 737.86223]) ** 2
    with np.errstate(divide="ignore"):
        w = 2.0 + 20.0 * (np.log10(c[0]) + 2 * np.log10(f_sq) - np.log10(f_sq + c[0])
                          - np.log10(f_sq + c[1]) - 0.5 * np.log10(f_sq + c[2])
                          - 0.5 * np.log10(f_sq + c[3]))
    w = np.maximum(min_db, w)
    w.setflags(write=False)
    return w


def periodic_hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


try:  # scipy's pocketfft vectorises across frames, faster than numpy's rfft. Same maths, optional.
    from scipy.fft import rfft as _rfft

    def _power_spectrum(frames: np.ndarray) -> np.ndarray:
        spec = _rfft(frames, axis=-1, overwrite_x=True)
        return spec.real ** 2 + spec.imag ** 2
except ImportError:  # pragma: no cover - exercised via the no-scipy parity test
    _rfft = None
    _power_spectrum = None

_MEL_GROUP = 16  # filters per dense band block: 16 keeps the blocks narrow (~1.05x the bins)


def _numpy_power_spectrum(frames: np.ndarray) -> np.ndarray:
    # numpy's float32 rfft is slower than its float64 one; the power is cast back.
    spec = np.fft.rfft(frames.astype(np.float64), axis=-1)
    return (spec.real ** 2 + spec.imag ** 2).astype(np.float32)


@dataclass(frozen=True)
class _BandedMel:
    """The mel matrix as dense blocks of consecutive filters over the FFT bins they touch:
    > 99 % of the full 256 x 1025 matrix is zeros, the blocks hold 1.05x the bins."""

    blocks: tuple  # (first filter, end filter, first bin, end bin, weights (bins, filters))
    n_mels: int
    a_weight_mel: np.ndarray  # mel(A-weighting): the per-bin dB offset after the mel step


@functools.lru_cache(maxsize=8)
def _banded_mel(params: FeatureParams) -> _BandedMel:
    fb = mel_filterbank(params.sample_rate, params.n_fft, params.n_mels, params.fmin, params.fmax)
    if not fb.any(axis=1).all():
        raise ValueError("a mel filter covers no FFT bin: use fewer mel bands or a longer n_fft")
    blocks = []
    for m0 in range(0, params.n_mels, _MEL_GROUP):
        rows = fb[m0:m0 + _MEL_GROUP]
        nz = np.flatnonzero(rows.any(axis=0))
        lo, hi = int(nz[0]), int(nz[-1]) + 1
        blocks.append((m0, m0 + rows.shape[0], lo, hi, np.ascontiguousarray(rows[:, lo:hi].T, dtype=np.float32)))
    # mel is linear, so mel(dB + A) = mel(dB) + mel(A): the A-weighting costs one add per mel bin.
    aw = (fb @ a_weighting(params.sample_rate, params.n_fft)).astype(np.float32)
    return _BandedMel(tuple(blocks), params.n_mels, aw)


_FRAME_CHUNK = 32  # frames per FFT call: the working set stays in cache (3x faster than one call)


def frame_power(waveform: np.ndarray, params: FeatureParams) -> np.ndarray:
    """|STFT|^2 of a centred, reflect-padded, periodic-Hann STFT: (channels, frames, bins)."""
    half = params.n_fft // 2
    if waveform.shape[-1] <= half:
        raise ValueError(f"need more than {half} samples for reflect padding, got {waveform.shape[-1]}")
    padded = np.pad(waveform, ((0, 0), (half, half)), mode="reflect")
    n_frames = 1 + (padded.shape[-1] - params.n_fft) // params.hop_length
    frames = np.lib.stride_tricks.sliding_window_view(padded, params.n_fft, axis=-1)[:, ::params.hop_length]
    window = periodic_hann(params.n_fft).astype(np.float32)
    power = np.empty((waveform.shape[0], n_frames, params.n_fft // 2 + 1), dtype=np.float32)
    spectrum = _power_spectrum if _rfft is not None else _numpy_power_spectrum
    for i in range(0, n_frames, _FRAME_CHUNK):
        j = min(i + _FRAME_CHUNK, n_frames)
        power[:, i:j] = spectrum(frames[:, i:j] * window)
    return power


def perceptual_mel(waveform: np.ndarray, params: FeatureParams | None = None) -> np.ndarray:
    """Un-normalised perceptual mel features, exactly docs/method.md §1.

    waveform: (channels, samples) at params.sample_rate -> float32 (channels, n_mels, frames).
    Per channel: dB = 10 log10(max(P, amin)) clipped at (channel max - top_db), plus the
    A-weighting per FFT bin, then the Slaney mel filterbank applied to the dB values.
    """
    p = params or FeatureParams()
    x = np.asarray(waveform, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"waveform must be (channels, samples), got shape {x.shape}")
    power = frame_power(x, p)  # (C, T, F)
    # power_to_db's top_db clip folded into the power floor: one log pass instead of two.
    peak_db = 10.0 * np.log10(np.maximum(power.max(axis=(1, 2)).astype(np.float64), p.amin))
    floor = 10.0 ** (np.maximum(peak_db - p.top_db, 10.0 * np.log10(p.amin)) / 10.0)
    db = np.maximum(power, floor.astype(np.float32)[:, None, None], out=power)
    np.log10(db, out=db)
    db *= np.float32(10.0)
    mel = _banded_mel(p)
    c, t, f = db.shape
    flat = db.reshape(c * t, f)
    out = np.empty((c * t, mel.n_mels), dtype=np.float32)
    for m0, m1, lo, hi, w in mel.blocks:
        np.matmul(flat[:, lo:hi], w, out=out[:, m0:m1])
    out += mel.a_weight_mel
    return np.ascontiguousarray(out.reshape(c, t, mel.n_mels).transpose(0, 2, 1))
