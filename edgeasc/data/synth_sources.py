"""Procedural sound sources for the synthetic scenes: each `source(rng, n, sr)` returns n
samples at sr Hz, drawn from rng alone (so a clip depends only on its seed)."""

from __future__ import annotations

import math

import numpy as np


def shaped_noise(rng: np.random.Generator, n: int, sr: int, gain_fn) -> np.ndarray:
    """White noise shaped by a magnitude response |H(f)| in the frequency domain."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    return np.fft.irfft(spec * gain_fn(f), n)


def band(lo: float, hi: float, order: float = 2.0):
    def gain(f):
        f = np.maximum(f, 1.0)
        return 1.0 / (1.0 + (lo / f) ** (2 * order)) / (1.0 + (f / hi) ** (2 * order))
    return gain


def rms_normalise(x: np.ndarray) -> np.ndarray:
    rms = math.sqrt(float(np.mean(x * x)))
    return x / rms if rms > 0 else x


def _events(rng, n: int, sr: int, rate_hz: float, jitter: float = 0.3) -> np.ndarray:
    """Event onsets (samples): a jittered periodic train at `rate_hz`."""
    period = sr / rate_hz
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


def _decaying_tone(rng, sr: int, freq: float, dur: float, decay: float, harmonics: int = 1) -> np.ndarray:
    t = np.arange(int(dur * sr)) / sr
    tone = sum(np.sin(2 * np.pi * freq * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, harmonics + 1))
    return tone * np.exp(-t / decay)


# ----------------------------------------------------------------------------- sources
def _rumble(rng, n, sr):
    cutoff = rng.uniform(60, 160)
    return shaped_noise(rng, n, sr, lambda f: 1.0 / (1.0 + (np.maximum(f, 1) / cutoff) ** 1.5))


def _passing(rng, n, sr):
    """Vehicles passing by: band noise under Gaussian envelopes with a falling centre frequency."""
    t = np.arange(n) / sr
    y = np.zeros(n)
    for centre in rng.uniform(0, n / sr, size=rng.integers(2, 6)):
        width = rng.uniform(0.6, 1.8)
        env = np.exp(-0.5 * ((t - centre) / width) ** 2)
        lo = rng.uniform(150, 400)
        noise = shaped_noise(rng, n, sr, band(lo, lo * rng.uniform(4, 10), 1.0))
        y += env * noise * rng.uniform(0.5, 1.0)
    return y


def _babble(rng, n, sr):
    t = np.arange(n) / sr
    y = np.zeros(n)
    for _ in range(rng.integers(3, 8)):
        syllables = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 2 * np.pi))
        phrase = (np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * t + rng.uniform(0, 2 * np.pi)) > -0.3)
        f0 = rng.uniform(100, 240) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
        voiced = sum(np.sin(2 * np.pi * np.cumsum(f0 * k) / sr) / k for k in range(1, 8))
        y += syllables ** 2 * phrase * (0.6 * voiced + shaped_noise(rng, n, sr, band(300, 3500)))
    return y


def _clatter(rng, n, sr):
    """Rail joints / wheels: periodic decaying metallic bursts, often in pairs."""
    rate = rng.uniform(1.2, 3.5)
    res = rng.uniform(600, 2500, size=3)

    def burst():
        return sum(_decaying_tone(rng, sr, f * rng.uniform(0.95, 1.05), 0.25, rng.uniform(0.02, 0.06)) for f in res)

    onsets = _events(rng, n, sr, rate, 0.1)
    pairs = np.concatenate([onsets, onsets + int(rng.uniform(0.08, 0.2) * sr)])
    return _place(n, np.sort(pairs[pairs < n]), burst) + 0.3 * shaped_noise(rng, n, sr, band(200, 2000))


def _engine(rng, n, sr):
    t = np.arange(n) / sr
    f0 = rng.uniform(25, 60) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k ** 0.8 for k in range(1, 14))
    return y + 0.5 * shaped_noise(rng, n, sr, band(40, 600))


def _whine(rng, n, sr):
    """Electric traction: a tone sweeping up and down with harmonics."""
    t = np.arange(n) / sr
    f = rng.uniform(300, 700) + rng.uniform(200, 800) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.03, 0.1) * t))
    phase = 2 * np.pi * np.cumsum(f) / sr
    return np.sin(phase) + 0.4 * np.sin(2 * phase) + 0.2 * np.sin(3 * phase)


def _chirps(rng, n, sr):
    def chirp():
        dur = rng.uniform(0.05, 0.2)
        t = np.arange(int(dur * sr)) / sr
        f_start, f_end = rng.uniform(2500, 7000, size=2)
        f = f_start + (f_end - f_start) * t / dur + 300 * np.sin(2 * np.pi * rng.uniform(20, 60) * t)
        return np.sin(2 * np.pi * np.cumsum(f) / sr) * np.hanning(len(t))

    songs = [b + _events(rng, int(rng.uniform(0.5, 1.5) * sr), sr, rng.uniform(5, 12))
             for b in _events(rng, n, sr, rng.uniform(0.2, 0.6), 0.6)]
    onsets = np.concatenate(songs) if songs else np.zeros(0, dtype=np.int64)
    return _place(n, onsets[onsets < n], chirp)


def _wind(rng, n, sr):
    t = np.arange(n) / sr
    gusts = 0.4 + 0.6 * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.08, 0.4) * t + rng.uniform(0, 6)))
    cutoff = rng.uniform(250, 600)
    return gusts * shaped_noise(rng, n, sr, lambda f: 1.0 / (1.0 + (np.maximum(f, 1) / cutoff) ** 2))


def _hall(rng, n, sr):
    """A reverberant hall: diffuse noise plus its own reverb tail (an exponential IR)."""
    rt = rng.uniform(0.8, 2.0)
    ir_n = int(rt * sr)
    ir = rng.standard_normal(ir_n) * np.exp(-6.9 * np.arange(ir_n) / ir_n)
    dry = shaped_noise(rng, n, sr, band(80, 4000, 1.0))
    size = 1 << math.ceil(math.log2(n + ir_n))
    wet = np.fft.irfft(np.fft.rfft(dry, size) * np.fft.rfft(ir, size), size)[:n]
    return dry + 0.5 * rms_normalise(wet)


def _chimes(rng, n, sr):
    base = rng.uniform(400, 900)
    notes = base * np.array([1.0, 1.26, 1.5, 2.0])[rng.permutation(4)[:3]]

    def chime():
        return np.concatenate([_decaying_tone(rng, sr, f, 0.7, 0.5, harmonics=3) for f in notes])

    return _place(n, _events(rng, n, sr, rng.uniform(0.1, 0.25), 0.5), chime)


def _music(rng, n, sr):
    beat = rng.uniform(1.5, 2.5)
    root = rng.uniform(110, 220)

    def chord():
        ratios = [1.0, 1.26, 1.5] if rng.random() < 0.5 else [1.0, 1.19, 1.5]
        return sum(_decaying_tone(rng, sr, root * r * rng.choice([1, 2]), 0.6, 0.3, harmonics=4) for r in ratios)

    return _place(n, _events(rng, n, sr, beat, 0.02), chord)


def _footsteps(rng, n, sr):
    def step():
        m = int(0.06 * sr)
        return rng.standard_normal(m) * np.exp(-np.arange(m) / (0.012 * sr))

    y = _place(n, _events(rng, n, sr, rng.uniform(1.6, 2.3), 0.1), step)
    return np.fft.irfft(np.fft.rfft(y) * band(100, 3000)(np.fft.rfftfreq(n, 1 / sr)), n)


def _beeps(rng, n, sr):
    f = rng.uniform(900, 2200)

    def beep():
        on = _decaying_tone(rng, sr, f, 0.15, 10.0)
        return np.concatenate([on, np.zeros(int(0.1 * sr))] * int(rng.integers(3, 7)))

    return _place(n, _events(rng, n, sr, rng.uniform(0.1, 0.3), 0.5), beep)


SOURCES = {"rumble": _rumble, "passing": _passing, "babble": _babble, "clatter": _clatter,
           "engine": _engine, "whine": _whine, "chirps": _chirps, "wind": _wind, "hall": _hall,
           "chimes": _chimes, "music": _music, "footsteps": _footsteps, "beeps": _beeps}
