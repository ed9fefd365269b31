"""edgeasc.runtime.sinc against torchaudio's Resample, without torchaudio: its numbers were
computed once in a venv with torch 2.9.1 + torchaudio 2.9.1 (`transforms.Resample(orig, new)`,
defaults, on the signals `signal()` below) and pinned here: output length, sum, sum of squares
and a few samples; the filter's width and some kernel taps exactly. The streaming form gives
bit for bit the whole-signal samples for any block split (hypothesis, derandomized)."""

import contextlib
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeasc.runtime import sinc
from edgeasc.runtime.sinc import SincResampler, resample_sinc

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True, database=None)


def signal(channels: int, n: int = 1000, seed: int = 7) -> np.ndarray:
    """The golden signals: seeded noise plus a tone per channel, float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 1000
    x = 0.4 * rng.standard_normal((channels, n)) + 0.5 * np.sin(2 * np.pi * 37 * t * np.arange(1, channels + 1)[:, None])
    return x.astype(np.float32)


IDX = (0, 1, 5, 17, 100, 333, -1)  # into the output flattened (channel-major)
# torchaudio 2.9.1: (orig, new, channels, length, sum, sum of squares, samples at IDX)
GOLDEN = [
    (44100, 32000, 1, 726, -20.980545591999544, 155.2243843263149, (0.04556049033999443, 0.19400787353515625, 0.9374960660934448, -0.2502531111240387, 0.14126056432724, -0.44589778780937195, -0.25838345289230347)),
    (44100, 32000, 2, 726, -23.22640356484044, 341.2154156438626, (0.04556048661470413, 0.19400787353515625, 0.9374960660934448, -0.2502531409263611, 0.14126057922840118, -0.44589778780937195, -0.5068281292915344)),
    (48000, 32000, 1, 667, -19.258642539498396, 137.263703894137, (0.06268716603517532, 0.1575002819299698, 0.7009456753730774, -0.7876542210578918, -0.36463162302970886, -0.1378222107887268, -0.2738662362098694)),
    (22050, 32000, 2, 1452, -46.48398742933932, 793.0385483905019, (0.0011164945317432284, 0.16712424159049988, 0.09309955686330795, 0.30636510252952576, -0.5680369138717651, -0.025746645405888557, -0.05165523290634155)),
]
# torchaudio's filter width (taps of history each side) per rate pair, and its kernel's shape
WIDTHS = [(44100, 32000, 9, (320, 459)), (48000, 32000, 10, (2, 23)), (22050, 32000, 7, (640, 455)),
          (16000, 32000, 7, (2, 15)), (32000, 16000, 13, (1, 28)), (8000, 44100, 7, (441, 94)),
          (44100, 48000, 7, (160, 161))]
# kernel taps of 44100 -> 32000 where torchaudio's float32 phase offsets (-i / 320 as a float32
# tensor) give another float32 than float64 offsets would (4237 of the 146880 taps differ)
KERNEL_TAPS = [((1, 4), 0.006353090051561594), ((1, 5), -0.006930774077773094),
               ((1, 6), -0.014788586646318436), ((1, 8), -0.08632028102874756)]


@pytest.mark.parametrize(("orig", "new", "channels", "length", "total", "energy", "samples"), GOLDEN)
def test_matches_torchaudio(orig, new, channels, length, total, energy, samples):
    y = resample_sinc(signal(channels), orig, new)
    assert y.dtype == np.float32 and y.shape == (channels, length)
    flat = y.reshape(-1).astype(np.float64)
    assert flat.sum() == pytest.approx(total, abs=1e-5)
    assert (flat ** 2).sum() == pytest.approx(energy, abs=1e-5)
    np.testing.assert_allclose(flat[list(IDX)], samples, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("orig", "new", "width", "shape"), WIDTHS)
def test_filter_width_as_torchaudio(orig, new, width, shape):
    p = sinc.plan(orig, new)
    assert p.width == width and p.kernel.shape == shape and p.kernel.dtype == np.float32


def test_kernel_taps_exact():
    k = sinc.plan(44100, 32000).kernel
    for (i, j), value in KERNEL_TAPS:
        assert k[i, j] == np.float32(value), (i, j)


def test_kernel_shape_of_its_rows():
    """Phase 0 of a 2:1 downsampler is centred on tap `width`: 1 there (times base / orig), zero
    at the sinc's zero crossings, symmetric, and every row sums to about 1 (unit DC gain)."""
    p = sinc.plan(32000, 16000)
    row = p.kernel[0].astype(np.float64)
    assert row[p.width] == pytest.approx(0.99 / 2, abs=1e-7)
    np.testing.assert_allclose(row[:2 * p.width + 1], row[2 * p.width::-1], atol=1e-7)
    k = sinc.plan(44100, 32000).kernel.astype(np.float64)
    np.testing.assert_allclose(k.sum(axis=1), 1.0, atol=5e-3)


@pytest.mark.parametrize(("n", "want"), [(1, 1), (2, 2), (440, 320), (441, 320), (442, 321), (441000, 320000),
                                         (90569, 65719), (91010, 66039)])
def test_length_as_torchaudio(n, want):
    """ceil(new * n / orig), but of the float32 quotient, as torch computes it: 90569 samples at
    44.1 kHz give 65719 (the exact ceiling is 65720)."""
    assert resample_sinc(np.zeros(n, np.float32), 44100, 32000).shape == (want,)


def test_tone_stays_a_tone():
    t = np.arange(44100) / 44100
    y = resample_sinc(np.sin(2 * np.pi * 1000 * t).astype(np.float32)[None], 44100, 32000)[0]
    want = np.sin(2 * np.pi * 1000 * np.arange(y.size) / 32000)
    assert np.abs(y - want)[1000:-1000].max() < 1e-3


def test_shapes_and_dtypes():
    x = signal(2)
    y = resample_sinc(x, 44100, 32000)
    np.testing.assert_array_equal(resample_sinc(x[0], 44100, 32000), y[0])
    np.testing.assert_array_equal(resample_sinc(np.stack([x, x]), 44100, 32000), np.stack([y, y]))
    np.testing.assert_array_equal(resample_sinc(x.astype(np.float64), 44100.0, 32000), y)
    np.testing.assert_array_equal(resample_sinc(x, 88200, 64000), y)  # the gcd-reduced filter
    assert sinc.plan(44100, 32000) is sinc.plan(44100, 32000)
    same = resample_sinc(x, 32000, 32000)
    assert same.dtype == np.float32
    np.testing.assert_array_equal(same, x)


@pytest.mark.parametrize("rate", [0, -44100, 44100.5, float("nan"), float("inf"), "44100", None, True])
def test_bad_rates(rate):
    for args in ((rate, 32000), (32000, rate)):
        with pytest.raises(ValueError, match="rate must be a positive whole number of Hz") as e:
            resample_sinc(signal(1), *args)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="rate must be a positive whole number"):
        SincResampler(rate, 32000, 1)


@pytest.mark.parametrize("x", [np.zeros(0, np.float32), np.zeros((2, 0), np.float32), np.zeros((0, 5), np.float32)])
def test_empty_signal(x):
    with pytest.raises(ValueError, match="empty signal"):
        resample_sinc(x, 44100, 32000)


def test_bad_samples_and_filters():
    with pytest.raises(ValueError, match="expected float samples"):
        resample_sinc(np.zeros((1, 10), np.int16), 44100, 32000)
    with pytest.raises(ValueError, match="scalar"):
        resample_sinc(np.float32(1), 44100, 32000)
    with pytest.raises(ValueError, match="lowpass_filter_width"):
        resample_sinc(signal(1), 44100, 32000, lowpass_filter_width=0)
    with pytest.raises(ValueError, match="rolloff"):
        resample_sinc(signal(1), 44100, 32000, rolloff=1.5)
    s = SincResampler(44100, 32000, 2)
    with pytest.raises(ValueError, match=r"expected blocks of shape \(2, samples\)"):
        s.push(np.zeros((1, 10), np.float32))
    with pytest.raises(ValueError, match="channels must be a positive integer"):
        SincResampler(44100, 32000, 0)
    s.finish()
    with pytest.raises(ValueError, match="push after finish"):
        s.push(np.zeros((2, 10), np.float32))
    with pytest.raises(ValueError, match="finish\\(\\) called twice"):
        s.finish()


def _streamed(x: np.ndarray, orig: int, new: int, cuts: list[int]) -> np.ndarray:
    s = SincResampler(orig, new, x.shape[0])
    edges = [0, *sorted(c for c in cuts if 0 < c < x.shape[1]), x.shape[1]]
    parts = [s.push(x[:, a:b]) for a, b in zip(edges, edges[1:], strict=False)]
    parts.append(s.finish())
    assert all(p.dtype == np.float32 and p.shape[0] == x.shape[0] for p in parts)
    return np.concatenate(parts, axis=1)


@contextlib.contextmanager
def small_chunks():
    """Chunks of a few frames, so that short signals cross many chunk boundaries."""
    old = sinc.CHUNK_SAMPLES
    sinc.CHUNK_SAMPLES = 1000
    sinc.plan.cache_clear()
    try:
        yield
    finally:
        sinc.CHUNK_SAMPLES = old
        sinc.plan.cache_clear()


RATES = st.sampled_from([(44100, 32000), (48000, 32000), (22050, 32000), (32000, 16000), (3, 7), (5, 2)])


@PROPERTY
@given(rates=RATES, channels=st.integers(1, 2), n=st.integers(1, 12000), seed=st.integers(0, 2 ** 16),
       cuts=st.lists(st.integers(0, 12000), max_size=12))
def test_stream_equals_whole(rates, channels, n, seed, cuts):
    x = np.random.default_rng(seed).standard_normal((channels, n)).astype(np.float32)
    with small_chunks():
        assert sinc.plan(*rates).chunk_frames < 1000
        np.testing.assert_array_equal(_streamed(x, *rates, cuts), resample_sinc(x, *rates))


def test_stream_default_chunks_long_signal():
    """At the default chunk (74 frames at 44.1 kHz): 3 s in blocks of 0.1 s and of odd sizes."""
    x = signal(2, n=3 * 44100, seed=3)
    whole = resample_sinc(x, 44100, 32000)
    np.testing.assert_array_equal(_streamed(x, 44100, 32000, list(range(4410, x.shape[1], 4410))), whole)
    np.testing.assert_array_equal(_streamed(x, 44100, 32000, list(np.cumsum([1, 7, 30000, 2, 50001]))), whole)


def test_stream_latency_bounded():
    """Output appears within a chunk of frames plus the filter's reach of the input."""
    p = sinc.plan(44100, 32000)
    s = SincResampler(44100, 32000, 1)
    pushed = emitted = 0
    for _ in range(200):
        emitted += s.push(np.ones((1, 441), np.float32)).shape[1]
        pushed += 441
        assert pushed - emitted * 441 / 320 <= p.chunk_frames * p.orig + p.taps
    assert emitted + s.finish().shape[1] == 64000


def test_stream_equal_rates_and_nothing_pushed():
    s = SincResampler(32000, 32000, 2)
    x = signal(2)
    np.testing.assert_array_equal(s.push(x), x)
    assert s.finish().shape == (2, 0)
    assert SincResampler(44100, 32000, 1).finish().shape == (1, 0)


def test_gcd_reduction_of_the_plan():
    p = sinc.plan(44100, 32000)
    assert (p.orig, p.new) == (441, 320) and math.gcd(p.orig, p.new) == 1
    assert p.n_out(441000) == 320000
