"""torchaudio's default sinc resampler, ported to numpy. torch-free.

The DCASE 2024/25 organisers' baseline brings its 44.1 kHz audio to 32 kHz with
`torchaudio.transforms.Resample(44100, 32000)` at its defaults (resampling_method
"sinc_interp_hann", lowpass_filter_width 6, rolloff 0.99) before its log-mel; models trained in
that pipeline learned from that filter's output. soxr (edgeasc.runtime.audio.resample) is a
different filter: it changed 2.75 % of a trained cp-mobile-d24's top-1 decisions (see
benchmarks/RESULTS.md, section resampler). This module computes the same numbers as torchaudio's
transform, to within float32 rounding, without torch; `audio.resample`/`audio.stream_resampler`
use it for the frontends whose `resampler` is "sinc" (the d24 one):

* the rates are reduced by their gcd to `orig` and `new` (44100 -> 32000 is 441 -> 320);
* the low-pass cut-off is `base = min(orig, new) * rolloff` and the filter has
  `width = ceil(lowpass_filter_width * orig / base)` taps of history on either side;
* `new` kernels (one per output phase) of `2 * width + orig` taps each: a sinc at `base`,
  times a Hann window (cos(pi t / (2 lowpass_filter_width)) ** 2, t clamped to +-width zero
  crossings), times `base / orig`. They are built in float64 and rounded to float32, as the
  transform caches them (its phase offsets `-i / new` are float32 quotients, as in torch, where
  an int64 arange divided by an int is a float32 tensor);
* the signal is zero-padded by `width` on the left and `width + orig` on the right, and frame `j`
  (`2 * width + orig` samples from `j * orig`) times the kernels gives output samples
  `j * new ... j * new + new - 1` (torch's strided conv1d; here float32 matmuls of a strided
  view of the padded signal, skipping each phase's exactly-zero taps: 96 % of 441 -> 320's);
* the output is cut to `ceil(float32(new * n / orig))` samples: torch rounds that quotient to a
  float32 tensor before its ceil, which drops one sample from the exact ceiling for some lengths
  over 2 ** 16 outputs (90569 samples at 44.1 kHz give 65719, not 65720). Ported as is.

`resample_sinc(x, orig, new)` resamples a whole signal (..., samples); `SincResampler` takes it
block by block and returns exactly the same samples (bit for bit): frames are multiplied in
chunks of `chunk_frames` on one grid counted from the signal's start, the same matrices in both
forms, so no BLAS blocking differs. The stream holds at most a chunk of frames plus the filter's
history; its delay is at most `chunk_frames * orig + 2 * width + orig` input samples (0.75 s
at 44.1 -> 32 kHz). Kernels are cached per rate pair and filter.

Measured (benchmarks/RESULTS.md, section resampler): bit-identical to torchaudio 2.9's output on
10-s clips at 44.1, 48 and 22.05 -> 32 kHz, and faster than soxr HQ and torchaudio at 1 thread.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

LOWPASS_FILTER_WIDTH = 6  # torchaudio's defaults
ROLLOFF = 0.99
CHUNK_SAMPLES = 32768  # input samples per matmul (whole frames): larger is faster, and the stream's delay


@dataclass(frozen=True)
class Plan:
    """One rate pair's filter: reduced rates, history width, kernels (float32) and their bands."""

    orig: int  # reduced by the gcd
    new: int
    width: int
    kernel: np.ndarray  # (new, 2 * width + orig): torchaudio's kernel, one row per output phase
    bands: tuple  # (first tap, last tap + 1, first phase, last phase + 1, kernel block transposed)
    chunk_frames: int

    @property
    def taps(self) -> int:
        return 2 * self.width + self.orig

    def n_out(self, n: int) -> int:
        """Output length for `n` input samples, as torchaudio computes it (float32 ceil)."""
        return int(np.ceil(np.float32(self.new * n / self.orig)))

    def frames(self, padded: np.ndarray, count: int) -> np.ndarray:
        """The first `count` frames of `padded` (channels, samples; zero-padded signal from a
        frame's first sample) through the kernels: (channels, count * new) float32. Each phase's
        kernel is zero outside a band of ~2 lowpass_filter_width / rolloff taps (exactly zero in
        float32: the Hann window's clamped ends); phases are taken in groups whose bands' union
        is one matmul, so the zeros (96 % of 441 -> 320's taps) are skipped."""
        c = padded.shape[0]
        if padded.ndim != 2 or (count - 1) * self.orig + self.taps > padded.shape[1]:
            raise RuntimeError(f"sinc resampling: {count} frames need more than {padded.shape} samples")
        view = np.lib.stride_tricks.as_strided(
            padded, shape=(c * count, self.taps) if c == 1 else (c, count, self.taps),
            strides=((self.orig * padded.strides[1], padded.strides[1]) if c == 1 else
                     (padded.strides[0], self.orig * padded.strides[1], padded.strides[1])),
            writeable=False)
        out = np.empty((c * count, self.new), dtype=np.float32)
        for lo, hi, p0, p1, block in self.bands:
            rows = np.ascontiguousarray(view[..., lo:hi]).reshape(c * count, hi - lo)
            out[:, p0:p1] = rows @ block
        return out.reshape(c, count * self.new)


def _bands(k: np.ndarray, orig: int, new: int) -> tuple:
    """Groups of consecutive phases whose nonzero taps span about twice one phase's band."""
    nonzero = [np.flatnonzero(row) for row in k]
    band = max(int(z[-1] - z[0] + 1) for z in nonzero if z.size)
    group = max(1, math.ceil(band * new / orig))
    out = []
    for p0 in range(0, new, group):
        p1 = min(new, p0 + group)
        spans = [z for z in nonzero[p0:p1] if z.size]
        lo = min(int(z[0]) for z in spans) if spans else 0
        hi = max(int(z[-1]) for z in spans) + 1 if spans else 1
        block = np.ascontiguousarray(k[p0:p1, lo:hi].T)
        block.flags.writeable = False
        out.append((lo, hi, p0, p1, block))
    return tuple(out)


def _rate(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"sinc resampling: the {name} rate must be a positive whole number of Hz, not {value!r}")
    if isinstance(value, numbers.Integral):
        rate = int(value)
    elif math.isfinite(value) and float(value).is_integer():
        rate = int(value)
    else:
        raise ValueError(f"sinc resampling: the {name} rate must be a positive whole number of Hz, not {value!r}")
    if rate <= 0:
        raise ValueError(f"sinc resampling: the {name} rate must be a positive whole number of Hz, not {value!r}")
    return rate


def _filter(lowpass_filter_width, rolloff) -> tuple[int, float]:
    if isinstance(lowpass_filter_width, bool) or not isinstance(lowpass_filter_width, numbers.Integral) \
            or lowpass_filter_width <= 0:
        raise ValueError(f"sinc resampling: lowpass_filter_width must be a positive integer, not {lowpass_filter_width!r}")
    if isinstance(rolloff, bool) or not isinstance(rolloff, numbers.Real) or not 0 < rolloff <= 1:
        raise ValueError(f"sinc resampling: rolloff must be in (0, 1], not {rolloff!r}")
    return int(lowpass_filter_width), float(rolloff)


def kernel(orig: int, new: int, lowpass_filter_width: int = LOWPASS_FILTER_WIDTH,
           rolloff: float = ROLLOFF) -> tuple[np.ndarray, int]:
    """torchaudio's sinc kernels for already gcd-reduced rates: (new, 2 * width + orig) float32,
    and width. Built in float64 and rounded once, as transforms.Resample (dtype None) does."""
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    idx = np.arange(-width, width + orig, dtype=np.float64) / orig
    # torch: arange(0, -new, -1) is int64, and int64 / int is a float32 tensor
    phase = np.arange(0, -new, -1, dtype=np.int64).astype(np.float32) / np.float32(new)
    t = phase.astype(np.float64)[:, None] + idx[None, :]
    t *= base
    np.clip(t, -lowpass_filter_width, lowpass_filter_width, out=t)
    window = np.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t *= math.pi
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where(t == 0, 1.0, np.sin(t) / t)
    k *= window * (base / orig)
    return k.astype(np.float32), width


@lru_cache(maxsize=16)
def plan(orig: int, new: int, lowpass_filter_width: int = LOWPASS_FILTER_WIDTH,
         rolloff: float = ROLLOFF) -> Plan:
    """The cached filter for a rate pair (the full rates, positive integers, orig != new)."""
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    k, width = kernel(o, n, lowpass_filter_width, rolloff)
    k.flags.writeable = False
    return Plan(o, n, width, k, _bands(k, o, n), max(1, CHUNK_SAMPLES // o))


def _samples(x) -> np.ndarray:
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"sinc resampling: expected float samples, got {a.dtype}")
    if a.ndim == 0:
        raise ValueError("sinc resampling: expected an array of samples (..., samples), got a scalar")
    return a.astype(np.float32, copy=False)


def resample_sinc(x, orig: int, new: int, *, lowpass_filter_width: int = LOWPASS_FILTER_WIDTH,
                  rolloff: float = ROLLOFF) -> np.ndarray:
    """`torchaudio.transforms.Resample(orig, new)(x)` without torch: (..., samples) float ->
    float32 (..., ceil(new * samples / orig)), to within float32 rounding of torchaudio's numbers.
    Equal rates return the samples as float32 (torchaudio returns its input)."""
    orig, new = _rate(orig, "original"), _rate(new, "new")
    lowpass_filter_width, rolloff = _filter(lowpass_filter_width, rolloff)
    a = _samples(x)
    if a.shape[-1] == 0 or a.size == 0:
        raise ValueError(f"sinc resampling: empty signal (shape {a.shape})")
    if orig == new:
        return a
    p = plan(orig, new, lowpass_filter_width, rolloff)
    lead, length = a.shape[:-1], a.shape[-1]
    a = a.reshape(-1, length)
    n_out = p.n_out(length)
    count = -(-n_out // p.new)  # frames needed
    padded = np.zeros((a.shape[0], length + 2 * p.width + p.orig), dtype=np.float32)
    padded[:, p.width:p.width + length] = a
    out = np.empty((a.shape[0], count * p.new), dtype=np.float32)
    for first in range(0, count, p.chunk_frames):
        m = min(p.chunk_frames, count - first)
        out[:, first * p.new:(first + m) * p.new] = p.frames(padded[:, first * p.orig:], m)
    return out[:, :n_out].reshape(*lead, n_out)


class SincResampler:
    """`resample_sinc` block by block: `push(block)` returns the samples that are ready (maybe
    none), `finish()` the rest; together exactly resample_sinc(whole signal). Blocks are
    (channels, samples) float. Holds at most a chunk of frames plus the filter's history."""

    def __init__(self, orig: int, new: int, channels: int, *,
                 lowpass_filter_width: int = LOWPASS_FILTER_WIDTH, rolloff: float = ROLLOFF):
        orig, new = _rate(orig, "original"), _rate(new, "new")
        lowpass_filter_width, rolloff = _filter(lowpass_filter_width, rolloff)
        if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or channels <= 0:
            raise ValueError(f"sinc resampling: channels must be a positive integer, not {channels!r}")
        self.channels = int(channels)
        self.same = orig == new
        self.plan = None if self.same else plan(orig, new, lowpass_filter_width, rolloff)
        width = 0 if self.same else self.plan.width
        self.buffer = np.zeros((self.channels, width), dtype=np.float32)  # padded from frame `next`
        self.next = 0  # the first frame not yet computed (a multiple of chunk_frames until finish)
        self.length = 0  # input samples pushed
        self.finished = False

    def _block(self, block) -> np.ndarray:
        if self.finished:
            raise ValueError("sinc resampling: push after finish()")
        a = _samples(block)
        if a.ndim != 2 or a.shape[0] != self.channels:
            raise ValueError(f"sinc resampling: expected blocks of shape ({self.channels}, samples), got {a.shape}")
        return a

    def push(self, block) -> np.ndarray:
        a = self._block(block)
        self.length += a.shape[1]
        if self.same:
            return a.copy()
        p = self.plan
        self.buffer = np.concatenate([self.buffer, a], axis=1)
        # frame j is complete once padded samples up to j * orig + taps are in (width + length)
        ready = (p.width + self.length - p.taps) // p.orig + 1 if p.width + self.length >= p.taps else 0
        chunks = max(0, ready - self.next) // p.chunk_frames
        return self._run(chunks * p.chunk_frames)

    def finish(self) -> np.ndarray:
        """The remaining samples (zero padding at the end, the output cut to torchaudio's
        length). The stream takes no more blocks after it."""
        if self.finished:
            raise ValueError("sinc resampling: finish() called twice")
        self.finished = True
        if self.same or self.length == 0:
            return np.zeros((self.channels, 0), dtype=np.float32)
        p = self.plan
        self.buffer = np.concatenate(
            [self.buffer, np.zeros((self.channels, p.width + p.orig), dtype=np.float32)], axis=1)
        left = p.n_out(self.length) - self.next * p.new
        return self._run(-(-left // p.new))[:, :left]

    def _run(self, count: int) -> np.ndarray:
        p = self.plan
        out = np.empty((self.channels, count * p.new), dtype=np.float32)
        for first in range(0, count, p.chunk_frames):
            m = min(p.chunk_frames, count - first)
            out[:, first * p.new:(first + m) * p.new] = p.frames(self.buffer[:, first * p.orig:], m)
        self.next += count
        self.buffer = self.buffer[:, count * p.orig:].copy()
        return out
