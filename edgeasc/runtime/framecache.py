"""Shared STFT frames for overlapping stream windows (`edgeasc listen --hop` shorter than the window).

Consecutive windows overlap by window - hop samples, and a centred STFT frame whose n_fft samples
lie inside both windows is the same numbers in both: only its position in the window differs. When
the hop is a whole number of STFT hops, every window's frames sit on one grid of the stream (frame
k of the window starting at sample s is the stream's frame s / hop_length + k), so such an interior
frame is computed once and kept, keyed by its stream frame index, until it leaves the window.

What stays per window, exactly as `compute_features` does it on the window alone:
- the frames within n_fft / 2 of the window's edges, which read the window's reflect padding;
- perceptual: the whole-window steps after the power spectrum: the top_db floor relative to the
  window's loudest bin, the log, the mel filterbank and the A-weighting (the floor moves with the
  window's maximum, so only the power spectra are shared);
- logmel: nothing else: mel and log act frame by frame, so the finished log-mel frames are shared.

Memory: at most one window of frames (the interior ones of the current window).

Not used (the caller recomputes whole windows, `compute_features`) when the hop in samples is not
a multiple of hop_length (22,050 Hz with hop_length 512: a 1-s or 0.25-s hop is not; 10 frames,
5,120 samples, is), or when a window has no interior frame. torch-free.
"""

from __future__ import annotations

import numpy as np

from edgeasc.runtime import features as F
from edgeasc.runtime.features import FeatureParams


def shares_frames(params: FeatureParams, n_window: int, n_hop: int) -> bool:
    """Whether windows of n_window samples every n_hop samples can share STFT frames."""
    half = params.n_fft // 2
    first, last = -(-half // params.hop_length), (n_window - half) // params.hop_length
    return (params.kind in F.KINDS and n_hop % params.hop_length == 0 and n_hop < n_window
            and n_window > params.n_fft and first <= last)


def _frames(x: np.ndarray, params: FeatureParams, offset: int, count: int) -> np.ndarray:
    """A view (channels, count, win_length): frame j is the win_length samples from x[:, offset +
    j*hop_length + (n_fft - win_length) // 2], the samples `frame_power` reads for such a frame."""
    win = params.window_length
    start = offset + (params.n_fft - win) // 2
    if start < 0 or start + (count - 1) * params.hop_length + win > x.shape[-1]:
        raise ValueError("frames outside the samples")
    c, s = x.strides
    return np.lib.stride_tricks.as_strided(x[:, start:], (x.shape[0], count, win), (c, params.hop_length * s, s),
                                           writeable=False)


def frames_power(frames: np.ndarray, params: FeatureParams) -> np.ndarray:
    """|FFT|^2 (channels, frames, bins) float32 of (channels, frames, win_length) frames, windowed and
    transformed with n_fft points exactly as `frame_power` does (a periodic Hann of win_length)."""
    win, count = params.window_length, frames.shape[1]
    window = F.window_of(win, F.fft_dtype(params))
    power = np.empty((frames.shape[0], count, params.n_fft // 2 + 1), dtype=np.float32)
    if F._rfft is None:
        for i in range(0, count, F._FRAME_CHUNK):
            j = min(i + F._FRAME_CHUNK, count)
            power[:, i:j] = F._numpy_power_spectrum(frames[:, i:j] * window, params.n_fft)
        return power
    buf = F.frame_buffer(params.n_fft, win, F.fft_dtype(params))
    for c in range(frames.shape[0]):
        for i in range(0, count, F._FRAME_CHUNK):
            j = min(i + F._FRAME_CHUNK, count)
            np.multiply(frames[c, i:j], window, out=buf[:j - i, :win])
            F.transform_into(buf[:j - i], power[c, i:j])
    return power


class SharedFrames:
    """The frontend's features of each window of a stream, sharing interior STFT frames between
    windows; `features(piece, start)` equals `compute_features(piece, params)` to float32 rounding.
    Only for geometries where `shares_frames` holds."""

    def __init__(self, params: FeatureParams, n_window: int, n_hop: int):
        if not shares_frames(params, n_window, n_hop):
            raise ValueError("these windows cannot share STFT frames: the hop is not a multiple of the STFT hop")
        self.params = params
        self.n_window = n_window
        hop, half = params.hop_length, params.n_fft // 2
        self.n_frames = 1 + n_window // hop
        self.first = -(-half // hop)              # the window's first frame clear of its left padding
        self.last = (n_window - half) // hop      # ... and its last one clear of the right padding
        self.cached: np.ndarray | None = None     # (channels, frames, width): interior frames
        self.cached_from = 0                       # stream frame index of cached[:, 0]
        self.mel = F._banded_mel(params)
        self.computed = 0                          # frames transformed (FFT), for the benchmark
        self._buf: np.ndarray | None = None        # (frames, n_fft) in fft_dtype: the batch's windowed frames

    def _power(self, views: tuple[np.ndarray, ...]) -> np.ndarray:
        """`frames_power` of the views' frames one after another, windowed straight into one
        zero-padded buffer and transformed in one call (scipy), else through `frames_power`."""
        p, win = self.params, self.params.window_length
        if F._rfft is None:
            return frames_power(np.concatenate(views, axis=1), p)
        total = sum(v.shape[1] for v in views)
        channels = views[0].shape[0]
        dtype = F.fft_dtype(p)
        if self._buf is None or self._buf.shape[0] < total:
            self._buf = np.zeros((total, p.n_fft), dtype=dtype)  # columns from win on stay zero
        window = F.window_of(win, dtype)
        power = np.empty((channels, total, p.n_fft // 2 + 1), dtype=np.float32)
        for c in range(channels):
            row = 0
            for v in views:
                np.multiply(v[c], window, out=self._buf[row:row + v.shape[1], :win])
                row += v.shape[1]
            F.transform_into(self._buf[:total], power[c])
        return power

    def _finish(self, power: np.ndarray) -> np.ndarray:
        """logmel: power frames -> finished log-mel frames (C, T, n_mels); perceptual: unchanged."""
        if self.params.kind == "perceptual":
            return power
        c, t, _ = power.shape
        out = F._apply_mel(power, self.mel)
        out += np.float32(self.params.log_offset)
        np.log(out, out=out)
        return out.reshape(c, t, self.mel.n_mels)

    def features(self, piece: np.ndarray, start: int) -> np.ndarray:
        """(channels, n_mels, frames) float32 of the window piece (channels, n_window), whose first
        sample is the stream's sample `start` (a multiple of hop_length)."""
        p = self.params
        hop, half = p.hop_length, p.n_fft // 2
        if piece.shape[-1] != self.n_window or start % hop:
            raise ValueError("a window off the shared frame grid")
        x = np.ascontiguousarray(piece, dtype=F.fft_dtype(p))  # cast once, as frame_power does
        n = self.n_window
        base = start // hop  # the stream frame index of the window's frame 0
        # interior frames: the ones kept from earlier windows, then the new ones
        lo = base + self.first
        keep = None
        if self.cached is not None and self.cached_from <= lo < self.cached_from + self.cached.shape[1]:
            keep = self.cached[:, lo - self.cached_from:]
        have = 0 if keep is None else keep.shape[1]
        new_first = self.first + have
        count = self.last + 1 - new_first  # at least one: the hop is at least one STFT hop
        # the edge frames read the window's own reflect padding (one side each)
        m = min(n, max(half + 1, (self.first - 1) * hop + half + 1))
        head = np.concatenate([x[:, half:0:-1], x[:, :m]], axis=1)  # np.pad's "reflect", without its overhead
        t0 = max(0, min((self.last + 1) * hop - half, n - half - 1))
        tail = np.concatenate([x[:, t0:], x[:, n - 2:n - 2 - half:-1]], axis=1)
        n_tail = self.n_frames - self.last - 1
        # one batch through the FFT (and the mel): per-call overheads would eat the saving
        views = (_frames(head, p, 0, self.first), _frames(x, p, new_first * hop - half, count),
                 _frames(tail, p, (self.last + 1) * hop - half - t0, n_tail))
        done = self._finish(self._power(views))
        self.computed += self.first + count + n_tail
        fresh = done[:, self.first:self.first + count]
        interior = fresh if keep is None else np.concatenate([keep, fresh], axis=1)
        self.cached, self.cached_from = interior, lo
        frames = np.concatenate([done[:, :self.first], interior, done[:, self.first + count:]], axis=1)
        if p.kind == "logmel":
            return np.ascontiguousarray(frames.transpose(0, 2, 1))
        return _perceptual_from_power(frames, p, self.mel)


def _perceptual_from_power(power: np.ndarray, p: FeatureParams, mel) -> np.ndarray:
    """The steps of `perceptual_mel` after `frame_power`; overwrites `power` (the window's own copy)."""
    peak_db = 10.0 * np.log10(np.maximum(power.max(axis=(1, 2)).astype(np.float64), p.amin))
    floor = 10.0 ** (np.maximum(peak_db - p.top_db, 10.0 * np.log10(p.amin)) / 10.0)
    db = np.maximum(power, floor.astype(np.float32)[:, None, None], out=power)
    np.log10(db, out=db)
    db *= np.float32(10.0)
    out = F._apply_mel(db, mel)
    out += mel.a_weight_mel
    return np.ascontiguousarray(out.reshape(power.shape[0], -1, mel.n_mels).transpose(0, 2, 1))
