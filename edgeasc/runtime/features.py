"""The frontends, numpy: the perceptual mel of the paper (docs/method.md §1) and the plain log-mel
of the DCASE 2024/25 organisers' baselines (kind "logmel", the `d24` parameters). Which one a
model was trained with travels in its FeatureParams; `compute_features` picks it.

This module is part of the torch-free device runtime.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

KINDS = ("perceptual", "logmel")
MEL_SCALES = ("slaney", "htk")
# How audio at another rate reaches sample_rate: "soxr" (HQ; librosa's default, the 2020 system's)
# or "sinc" (torchaudio's default Resample, runtime/sinc.py: the DCASE 2024/25 baselines').
RESAMPLERS = ("soxr", "sinc")
# the fields that only one kind reads: a dict holds its own kind's (to_dict), so a perceptual
# dict is exactly what edgeasc wrote before kinds existed (cache keys, metadata, teacher checks)
LOGMEL_ONLY = ("kind", "win_length", "mel_scale", "log_offset")
PERCEPTUAL_ONLY = ("top_db", "amin")


@dataclass(frozen=True)
class FeatureParams:
    """Every number of the frontend; travels inside checkpoints and ONNX metadata. Defaults: the
    perceptual frontend, so metadata without `kind` (every file written before it) loads as one."""

    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 256
    fmin: float = 0.0
    fmax: float = 11025.0
    top_db: float = 80.0
    amin: float = 1e-10
    clip_seconds: float = 10.0
    kind: str = "perceptual"       # or "logmel": log(mel(|STFT|^2) + log_offset)
    win_length: int | None = None  # periodic Hann of this length, centred in n_fft (torch.stft); None: n_fft
    mel_scale: str = "slaney"      # logmel: "htk" (2595 log10(1 + f/700)) or "slaney"
    log_offset: float = 1e-5
    resampler: str = "soxr"        # one of RESAMPLERS; files without it were resampled by soxr

    @property
    def window_length(self) -> int:
        return self.n_fft if self.win_length is None else self.win_length

    def n_samples(self, seconds: float | None = None) -> int:
        seconds = self.clip_seconds if seconds is None else seconds
        return int(math.ceil(round(seconds * self.sample_rate, 6)))

    def n_frames(self, seconds: float | None = None) -> int:
        """Frames of a centred STFT: 431 for 10 s at 22 050 Hz, hop 512."""
        return 1 + self.n_samples(seconds) // self.hop_length

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in (LOGMEL_ONLY if self.kind == "perceptual" else PERCEPTUAL_ONLY):
            del d[key]
        if self.resampler == "soxr":  # the default is left out: the dict of every earlier file
            del d["resampler"]
        return d


# The DCASE 2024/25 task 1 baselines' frontend (CPJKU/dcase2024_task1_baseline: torchaudio's
# MelSpectrogram, then log(x + 1e-5)): 32 kHz, a 3072-sample window in a 4096 FFT, hop 500,
# 256 HTK mel bands without normalisation from 0 Hz to Nyquist. 65 frames per 1-s clip. Other
# rates reach 32 kHz through torchaudio's sinc resampler, as in the baselines.
D24_PARAMS = FeatureParams(sample_rate=32000, n_fft=4096, hop_length=500, n_mels=256, fmin=0.0, fmax=16000.0,
                           clip_seconds=1.0, kind="logmel", win_length=3072, mel_scale="htk", log_offset=1e-5,
                           resampler="sinc")
# `edgeasc train --frontend NAME`
FRONTENDS = {"perceptual": FeatureParams(), "d24": D24_PARAMS}


def frontend_params(name: str, clip_seconds: float | None = None) -> FeatureParams:
    """The named frontend's parameters, for clips of `clip_seconds` (None: the frontend's own)."""
    if name not in FRONTENDS:
        raise ValueError(f"unknown frontend {name!r}: one of {', '.join(FRONTENDS)}")
    params = FRONTENDS[name]
    return params if clip_seconds is None else replace(params, clip_seconds=float(clip_seconds))


def frontend_name(params: FeatureParams) -> str | None:
    """The name in FRONTENDS whose parameters these are (any clip length), else None."""
    for name, named in FRONTENDS.items():
        if replace(named, clip_seconds=params.clip_seconds).to_dict() == params.to_dict():
            return name
    return None


# ----------------------------------------------------------------------------- the maths
# One definition, float64, cached; both implementations (numpy here, torch in
# features_torch.py) take their constants from these functions.

import functools  # noqa: E402
import threading  # noqa: E402

import numpy as np  # noqa: E402


def fft_frequencies(sample_rate: int, n_fft: int) -> np.ndarray:
    return np.arange(1 + n_fft // 2, dtype=np.float64) * sample_rate / n_fft


def hz_to_mel(f: np.ndarray | float, htk: bool = False) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa htk=False); with `htk`
    2595 log10(1 + f / 700) (librosa htk=True, torchaudio's default)."""
    f = np.asarray(f, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    with np.errstate(divide="ignore"):
        log_part = min_log_mel + np.log(np.maximum(f, 1e-300) / min_log_hz) / logstep
    return np.where(f >= min_log_hz, log_part, f / f_sp)


def mel_to_hz(m: np.ndarray | float, htk: bool = False) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@functools.lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int = 22050, n_fft: int = 2048, n_mels: int = 256,
                   fmin: float = 0.0, fmax: float = 11025.0, htk: bool = False, norm: bool = True) -> np.ndarray:
    """Triangular filters, shape (n_mels, 1 + n_fft // 2), on the Slaney (or `htk`) mel scale;
    `norm`: Slaney's area normalisation (librosa norm="slaney"), else peaks of 1 (norm=None)."""
    freqs = fft_frequencies(sample_rate, n_fft)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2), htk)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if norm:
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
except ImportError:  # pragma: no cover - exercised via the no-scipy parity test
    _rfft = None

_MEL_GROUP = 16  # filters per dense band block: 16 keeps the blocks narrow (~1.05x the bins)


def _numpy_power_spectrum(frames: np.ndarray, n: int) -> np.ndarray:
    # numpy's float32 rfft is slower than its float64 one; the power is cast back.
    spec = np.fft.rfft(frames.astype(np.float64), n=n, axis=-1)
    return (spec.real ** 2 + spec.imag ** 2).astype(np.float32)


@dataclass(frozen=True)
class _BandedMel:
    """The mel matrix as dense blocks of consecutive filters over the FFT bins they touch:
    > 99 % of the full 256 x 1025 matrix is zeros, the blocks hold 1.05x the bins."""

    blocks: tuple  # (first filter, end filter, first bin, end bin, weights (bins, filters))
    n_mels: int
    a_weight_mel: np.ndarray | None  # perceptual: mel(A-weighting), the per-bin dB offset after the mel step


def kind_filterbank(params: FeatureParams) -> np.ndarray:
    """The kind's mel matrix (float64): perceptual = Slaney, area-normalised; logmel = the
    params' mel scale, peaks of 1 (torchaudio's norm=None)."""
    if params.kind == "perceptual":
        return mel_filterbank(params.sample_rate, params.n_fft, params.n_mels, params.fmin, params.fmax)
    return mel_filterbank(params.sample_rate, params.n_fft, params.n_mels, params.fmin, params.fmax,
                          htk=params.mel_scale == "htk", norm=False)


@functools.lru_cache(maxsize=8)
def _banded_mel(params: FeatureParams) -> _BandedMel:
    fb = kind_filterbank(params)
    if not fb.any(axis=1).all():
        raise ValueError("a mel filter covers no FFT bin: use fewer mel bands or a longer n_fft")
    blocks = []
    for m0 in range(0, params.n_mels, _MEL_GROUP):
        rows = fb[m0:m0 + _MEL_GROUP]
        nz = np.flatnonzero(rows.any(axis=0))
        lo, hi = int(nz[0]), int(nz[-1]) + 1
        blocks.append((m0, m0 + rows.shape[0], lo, hi, np.ascontiguousarray(rows[:, lo:hi].T, dtype=np.float32)))
    aw = None
    if params.kind == "perceptual":
        # mel is linear, so mel(dB + A) = mel(dB) + mel(A): the A-weighting costs one add per mel bin.
        aw = (fb @ a_weighting(params.sample_rate, params.n_fft)).astype(np.float32)
    return _BandedMel(tuple(blocks), params.n_mels, aw)


_FRAME_CHUNK = 32  # frames per FFT call: the working set stays in cache (3x faster than one call)


def fft_dtype(params: FeatureParams) -> type:
    """The precision the kind's FFT runs in. perceptual: float32 (its dB floor sits 80 dB below each
    clip's peak, far above float32's rounding noise). logmel: float64, the power rounded to float32
    once: log(P + 1e-5) reads bands down at the offset, where a float32 FFT's rounding noise beside
    loud bands moves the log by up to ~1e-3; in float64 it stays within 1e-6 of librosa, at ~1.5x
    the float32 FFT's time (benchmarks/RESULTS.md)."""
    return np.float64 if params.kind == "logmel" else np.float32


def transform_into(buf: np.ndarray, out: np.ndarray) -> None:
    """out (float32) = |rfft(buf)|^2 over the last axis; a float64 buf is squared in float64 and
    rounded once."""
    spec = _rfft(buf, axis=-1)
    if spec.dtype == np.complex128:  # squared in place (the spectrum is ours), summed into float32
        pairs = spec.view(np.float64).reshape(*spec.shape, 2)
        np.square(pairs, out=pairs)
        np.add(pairs[..., 0], pairs[..., 1], out=out)
        return
    np.multiply(spec.real, spec.real, out=out)
    out += np.square(spec.imag)


def frame_power(waveform: np.ndarray, params: FeatureParams) -> np.ndarray:
    """|STFT|^2 of a centred, reflect-padded, periodic-Hann STFT: (channels, frames, bins) float32.
    A window shorter than n_fft sits zero-padded in the middle of each frame (as in torch.stft and
    librosa); only its samples are read and transformed with n_fft points from its first sample:
    a circular shift, which leaves |FFT|^2 unchanged. Windowed and transformed in `fft_dtype`."""
    half, win = params.n_fft // 2, params.window_length
    if not 0 < win <= params.n_fft:
        raise ValueError(f"win_length {win} must be in 1..n_fft ({params.n_fft})")
    if waveform.shape[-1] <= half:
        raise ValueError(f"need more than {half} samples for reflect padding, got {waveform.shape[-1]}")
    dtype = fft_dtype(params)
    # cast once, before framing: a mixed-precision multiply per frame costs more than the copy
    padded = np.pad(waveform.astype(dtype, copy=False), ((0, 0), (half, half)), mode="reflect")
    n_frames = 1 + (padded.shape[-1] - params.n_fft) // params.hop_length
    left = (params.n_fft - win) // 2
    frames = np.lib.stride_tricks.sliding_window_view(padded[:, left:], win, axis=-1)[:, ::params.hop_length]
    window = window_of(win, dtype)
    power = np.empty((waveform.shape[0], n_frames, params.n_fft // 2 + 1), dtype=np.float32)
    if _rfft is None:
        for i in range(0, n_frames, _FRAME_CHUNK):
            j = min(i + _FRAME_CHUNK, n_frames)
            power[:, i:j] = _numpy_power_spectrum(frames[:, i:j] * window, params.n_fft)
        return power
    buf = frame_buffer(params.n_fft, win, dtype)
    for c in range(waveform.shape[0]):
        for i in range(0, n_frames, _FRAME_CHUNK):
            j = min(i + _FRAME_CHUNK, n_frames)
            np.multiply(frames[c, i:j], window, out=buf[:j - i, :win])
            transform_into(buf[:j - i], power[c, i:j])
    return power


@functools.lru_cache(maxsize=8)
def window_of(n: int, dtype: type) -> np.ndarray:
    """The periodic Hann of n samples in `dtype`, read-only, cached."""
    window = periodic_hann(n).astype(dtype)
    window.setflags(write=False)
    return window


_BUFFERS = threading.local()


def frame_buffer(n_fft: int, win: int, dtype: type = np.float32) -> np.ndarray:
    """This thread's (chunk, n_fft) frame buffer of `dtype`; columns from `win` on stay zero (the
    window's padding to n_fft). Reused: a fresh buffer and its pages each clip cost more than
    the multiply that fills it."""
    buffers = getattr(_BUFFERS, "by_key", None)
    if buffers is None:
        buffers = _BUFFERS.by_key = {}
    key = (n_fft, win, np.dtype(dtype).str)
    buf = buffers.get(key)
    if buf is None:
        if len(buffers) >= 4:  # a handful of frontends per process: keep the newest few
            buffers.pop(next(iter(buffers)))
        buf = buffers[key] = np.zeros((_FRAME_CHUNK, n_fft), dtype=dtype)
    return buf


def _channels_first(waveform) -> np.ndarray:
    x = np.asarray(waveform, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"waveform must be (channels, samples), got shape {x.shape}")
    return x


def _apply_mel(spec: np.ndarray, mel: _BandedMel) -> np.ndarray:
    """(C, T, F) -> (C*T, n_mels) through the banded blocks."""
    c, t, f = spec.shape
    flat = spec.reshape(c * t, f)
    out = np.empty((c * t, mel.n_mels), dtype=np.float32)
    for m0, m1, lo, hi, w in mel.blocks:
        np.matmul(flat[:, lo:hi], w, out=out[:, m0:m1])
    return out


def perceptual_mel(waveform: np.ndarray, params: FeatureParams | None = None) -> np.ndarray:
    """Un-normalised perceptual mel features, exactly docs/method.md §1.

    waveform: (channels, samples) at params.sample_rate -> float32 (channels, n_mels, frames).
    Per channel: dB = 10 log10(max(P, amin)) clipped at (channel max - top_db), plus the
    A-weighting per FFT bin, then the Slaney mel filterbank applied to the dB values.
    """
    p = params or FeatureParams()
    if p.kind != "perceptual":
        raise ValueError(f"perceptual_mel computes the perceptual frontend, these parameters are kind {p.kind!r}")
    x = _channels_first(waveform)
    power = frame_power(x, p)  # (C, T, F)
    # power_to_db's top_db clip folded into the power floor: one log pass instead of two.
    peak_db = 10.0 * np.log10(np.maximum(power.max(axis=(1, 2)).astype(np.float64), p.amin))
    floor = 10.0 ** (np.maximum(peak_db - p.top_db, 10.0 * np.log10(p.amin)) / 10.0)
    db = np.maximum(power, floor.astype(np.float32)[:, None, None], out=power)
    np.log10(db, out=db)
    db *= np.float32(10.0)
    mel = _banded_mel(p)
    out = _apply_mel(db, mel)
    out += mel.a_weight_mel
    return np.ascontiguousarray(out.reshape(x.shape[0], -1, mel.n_mels).transpose(0, 2, 1))


def log_mel(waveform: np.ndarray, params: FeatureParams = D24_PARAMS) -> np.ndarray:
    """The organisers' log-mel (kind "logmel"): log(mel(|STFT|^2) + log_offset).

    waveform: (channels, samples) at params.sample_rate -> float32 (channels, n_mels, frames);
    (1, 256, 65) for 1 s of mono at 32 kHz with D24_PARAMS.
    """
    if params.kind != "logmel":
        raise ValueError(f"log_mel computes the logmel frontend, these parameters are kind {params.kind!r}")
    x = _channels_first(waveform)
    mel = _banded_mel(params)
    out = _apply_mel(frame_power(x, params), mel)
    out += np.float32(params.log_offset)
    np.log(out, out=out)
    return np.ascontiguousarray(out.reshape(x.shape[0], -1, mel.n_mels).transpose(0, 2, 1))


def compute_features(waveform: np.ndarray, params: FeatureParams | None = None) -> np.ndarray:
    """The frontend `params` name (its kind), un-normalised: (channels, n_mels, frames) float32."""
    p = params or FeatureParams()
    if p.kind == "perceptual":
        return perceptual_mel(waveform, p)
    if p.kind == "logmel":
        return log_mel(waveform, p)
    raise ValueError(f"unknown frontend kind {p.kind!r}: one of {', '.join(KINDS)}")
