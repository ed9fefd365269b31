"""The frontend module's corners that the parity tests do not pin (issue 25 item 7): the
parameter dicts and frontend names, the kind's filterbank and FFT precision, the STFT's exact
float32/float64 arithmetic and chunking, the per-thread frame buffers, and the refusals with
their messages. Small shapes throughout: the whole file runs in about a second."""

import threading
from dataclasses import replace

import librosa
import numpy as np
import pytest
import scipy.fft

from edgeasc.runtime import features as F
from edgeasc.runtime.features import D24_PARAMS, FeatureParams

pytestmark = pytest.mark.usefixtures("librosa_compiled")  # conftest: numba kernels compiled once

LEGACY = {"sample_rate": 22050, "n_fft": 2048, "hop_length": 512, "n_mels": 256, "fmin": 0.0, "fmax": 11025.0,
          "top_db": 80.0, "amin": 1e-10, "clip_seconds": 10.0}
D24_DICT = {"sample_rate": 32000, "n_fft": 4096, "hop_length": 500, "n_mels": 256, "fmin": 0.0, "fmax": 16000.0,
            "clip_seconds": 1.0, "kind": "logmel", "win_length": 3072, "mel_scale": "htk", "log_offset": 1e-5,
            "resampler": "sinc"}
# small frontends of both kinds: 0.5 s at 8 kHz is 63 frames, two chunks of 32 and a short one
SMALL_P = FeatureParams(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32, fmin=50.0, fmax=3800.0,
                        clip_seconds=0.5)
SMALL_L = replace(SMALL_P, kind="logmel", win_length=192, mel_scale="htk")


@pytest.fixture(scope="module")
def noise():
    return np.random.default_rng(0).standard_normal((2, 4000)).astype(np.float32)


def reference_power(x: np.ndarray, p: FeatureParams, dtype, numpy_fft: bool = False) -> np.ndarray:
    """|STFT|^2 written out frame by frame: padded, framed and windowed in `dtype`, one scipy FFT
    over all frames; float32 squares in float32, float64 squares in float64 and rounds once.
    `numpy_fft`: the fallback without scipy, the windowed frames transformed by numpy in float64."""
    half, win = p.n_fft // 2, p.window_length
    padded = np.pad(x.astype(dtype), ((0, 0), (half, half)), mode="reflect")
    n = 1 + (padded.shape[-1] - p.n_fft) // p.hop_length
    left = (p.n_fft - win) // 2
    frames = np.stack([padded[:, left + k * p.hop_length:left + k * p.hop_length + win] for k in range(n)], 1)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)).astype(dtype)
    if numpy_fft:
        spec = np.fft.rfft((frames * window).astype(np.float64), n=p.n_fft, axis=-1)
        return (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
    spec = scipy.fft.rfft(frames * window, n=p.n_fft, axis=-1)
    if dtype == np.float32:
        return spec.real * spec.real + spec.imag * spec.imag
    return (spec.real ** 2 + spec.imag ** 2).astype(np.float32)


# ----------------------------------------------------------------------------- parameters

def test_to_dict_keeps_only_its_own_kinds_fields_and_a_non_default_resampler():
    assert list(FeatureParams().to_dict().items()) == list(LEGACY.items())
    assert replace(FeatureParams(), resampler="sinc").to_dict() == {**LEGACY, "resampler": "sinc"}
    assert list(D24_PARAMS.to_dict().items()) == list(D24_DICT.items())
    soxr = dict(D24_DICT)
    del soxr["resampler"]
    assert replace(D24_PARAMS, resampler="soxr").to_dict() == soxr
    # the fields of the other kind are dropped even when they were changed
    assert FeatureParams(win_length=1024, mel_scale="htk", log_offset=1.0).to_dict() == LEGACY
    assert "top_db" not in replace(D24_PARAMS, top_db=60.0).to_dict()


def test_frontend_params_and_names():
    assert F.frontend_params("d24") is D24_PARAMS
    assert F.frontend_params("perceptual") == FeatureParams()
    ten = F.frontend_params("d24", 10)
    assert ten == replace(D24_PARAMS, clip_seconds=10.0) and type(ten.clip_seconds) is float
    assert F.frontend_params("perceptual", 2.5) == FeatureParams(clip_seconds=2.5)
    with pytest.raises(ValueError) as e:
        F.frontend_params("d25")
    assert str(e.value) == "unknown frontend 'd25': one of perceptual, d24"
    assert F.frontend_name(D24_PARAMS) == "d24"
    assert F.frontend_name(replace(D24_PARAMS, clip_seconds=10.0)) == "d24"
    assert F.frontend_name(FeatureParams()) == "perceptual"
    assert F.frontend_name(FeatureParams(clip_seconds=1.0)) == "perceptual"
    assert F.frontend_name(FeatureParams(n_mels=128)) is None
    assert F.frontend_name(replace(D24_PARAMS, resampler="soxr")) is None
    assert F.frontend_name(replace(FeatureParams(), resampler="sinc")) is None


# ----------------------------------------------------------------------------- the maths

def test_kind_filterbank_is_librosas_for_both_kinds():
    ref = dict(sr=8000, n_fft=256, n_mels=32, fmin=50.0, fmax=3800.0, dtype=np.float64)
    slaney = librosa.filters.mel(**ref, htk=False, norm="slaney")
    assert np.allclose(F.kind_filterbank(SMALL_P), slaney, rtol=0, atol=1e-15)
    # a perceptual frontend ignores mel_scale: always Slaney, area-normalised
    assert np.allclose(F.kind_filterbank(replace(SMALL_P, mel_scale="htk")), slaney, rtol=0, atol=1e-15)
    assert np.allclose(F.kind_filterbank(SMALL_L), librosa.filters.mel(**ref, htk=True, norm=None),
                       rtol=0, atol=1e-12)
    assert np.allclose(F.kind_filterbank(replace(SMALL_L, mel_scale="slaney")),
                       librosa.filters.mel(**ref, htk=False, norm=None), rtol=0, atol=1e-12)


def test_mel_scales_and_frequencies_compute_in_float64_whatever_the_input():
    hz = np.arange(0, 8001, 250, dtype=np.float32)
    for htk in (False, True):
        mel = F.hz_to_mel(hz, htk=htk)
        assert mel.dtype == np.float64
        assert np.allclose(mel, librosa.hz_to_mel(hz.astype(np.float64), htk=htk), rtol=1e-14, atol=0)
        m = np.arange(0, 60, 1.5, dtype=np.float32) * (50 if htk else 1)
        back = F.mel_to_hz(m, htk=htk)
        assert back.dtype == np.float64
        assert np.allclose(back, librosa.mel_to_hz(m.astype(np.float64), htk=htk), rtol=1e-14, atol=0)
    # an odd FFT length has 1 + n_fft // 2 bins
    odd = F.fft_frequencies(22050, 2047)
    assert odd.shape == (1024,) and np.allclose(odd, librosa.fft_frequencies(sr=22050, n_fft=2047), rtol=1e-15, atol=0)


def test_fft_dtype_per_kind():
    assert F.fft_dtype(FeatureParams()) is np.float32
    assert F.fft_dtype(SMALL_P) is np.float32
    assert F.fft_dtype(D24_PARAMS) is np.float64
    assert F.fft_dtype(SMALL_L) is np.float64


def test_frame_power_is_the_exact_float32_or_float64_stft(noise):
    perceptual = F.frame_power(noise, SMALL_P)
    assert perceptual.dtype == np.float32 and perceptual.shape == (2, 63, 129)
    assert np.array_equal(perceptual, reference_power(noise, SMALL_P, np.float32))
    assert not np.array_equal(perceptual, reference_power(noise, SMALL_P, np.float64))  # the test can tell
    logmel = F.frame_power(noise, SMALL_L)
    assert logmel.dtype == np.float32
    assert np.array_equal(logmel, reference_power(noise, SMALL_L, np.float64))
    assert not np.array_equal(logmel, reference_power(noise, SMALL_L, np.float32))


def test_the_numpy_fallback_is_the_same_float64_stft(noise, monkeypatch):
    monkeypatch.setattr(F, "_rfft", None)
    calls = []
    real = F._numpy_power_spectrum
    monkeypatch.setattr(F, "_numpy_power_spectrum", lambda frames, n: calls.append(frames.shape) or real(frames, n))
    power = F.frame_power(noise, SMALL_L)
    assert power.dtype == np.float32
    assert np.array_equal(power, reference_power(noise, SMALL_L, np.float64))
    assert calls == [(2, 32, 192), (2, 31, 192)]  # chunks of 32 frames, both channels at once
    # perceptual: windowed in float32 (each product rounded to float32), transformed in float64
    perceptual = F.frame_power(noise, SMALL_P)
    assert perceptual.dtype == np.float32
    assert np.array_equal(perceptual, reference_power(noise, SMALL_P, np.float32, numpy_fft=True))
    assert not np.array_equal(perceptual, reference_power(noise, SMALL_P, np.float64, numpy_fft=True))


def test_each_chunk_of_frames_is_transformed_once(noise, monkeypatch):
    calls = []
    real = F.transform_into
    monkeypatch.setattr(F, "transform_into", lambda buf, out: calls.append(buf.shape) or real(buf, out))
    F.frame_power(noise, SMALL_L)
    assert calls == [(32, 256), (31, 256)] * 2  # per channel, chunks of 32 frames


def test_win_length_bounds_and_messages(noise):
    for win in (0, -3, 257):
        with pytest.raises(ValueError) as e:
            F.frame_power(noise, replace(SMALL_L, win_length=win))
        assert str(e.value) == f"win_length {win} must be in 1..n_fft (256)"
    # one sample is a valid (if useless) window: a periodic Hann of 1 is [0]
    assert not F.frame_power(noise, replace(SMALL_L, win_length=1)).any()
    full = F.frame_power(noise, replace(SMALL_L, win_length=256))
    assert np.array_equal(full, F.frame_power(noise, replace(SMALL_L, win_length=None)))
    with pytest.raises(ValueError) as e:
        F.frame_power(noise[:, :100], SMALL_L)
    assert str(e.value) == "need more than 128 samples for reflect padding, got 100"
    F.frame_power(noise[:, :129], SMALL_L)  # 129 is enough


# ----------------------------------------------------------------------------- frame buffers

def in_a_fresh_thread(fn):
    """fn's result in a thread of its own, whose frame buffers start empty."""
    box = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            box["error"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def test_frame_buffers_are_per_thread_reused_and_the_oldest_evicted_after_four():
    def scenario():
        assert getattr(F._BUFFERS, "by_key", None) is None
        a = F.frame_buffer(64, 48, np.float32)
        assert a.shape == (32, 64) and a.dtype == np.float32 and not a.any()
        assert F.frame_buffer(64, 48, np.float32) is a
        assert F.frame_buffer(64, 48) is a  # float32 by default
        b = F.frame_buffer(64, 48, np.float64)
        assert b is not a and b.shape == (32, 64) and b.dtype == np.float64 and not b.any()
        c = F.frame_buffer(64, 32, np.float32)
        d = F.frame_buffer(128, 64, np.float32)
        assert d.shape == (32, 128) and d.dtype == np.float32
        assert list(F._BUFFERS.by_key) == [(64, 48, "<f4"), (64, 48, "<f8"), (64, 32, "<f4"), (128, 64, "<f4")]
        assert F.frame_buffer(64, 32, np.float32) is c
        F.frame_buffer(128, 128, np.float32)  # a fifth key: the oldest goes
        assert list(F._BUFFERS.by_key) == [(64, 48, "<f8"), (64, 32, "<f4"), (128, 64, "<f4"), (128, 128, "<f4")]
        assert F.frame_buffer(64, 48, np.float64) is b
        return a

    main = F.frame_buffer(64, 48, np.float32)
    assert in_a_fresh_thread(scenario) is not main


def test_features_in_a_fresh_thread_equal_this_threads(noise):
    for p in (SMALL_P, SMALL_L):
        assert np.array_equal(in_a_fresh_thread(lambda p=p: F.compute_features(noise, p)),
                              F.compute_features(noise, p))


# ----------------------------------------------------------------------------- dispatch and refusals

def test_log_mel_rounds_any_input_to_float32_first(noise):
    x64 = noise.astype(np.float64) * (1 + 2.0 ** -25)  # not float32 numbers, each rounds back to noise
    assert np.array_equal(x64.astype(np.float32), noise)
    ref = F.log_mel(noise, SMALL_L)
    # the test can tell: transformed unrounded, these samples give another power
    assert not np.array_equal(reference_power(x64, SMALL_L, np.float64), reference_power(noise, SMALL_L, np.float64))
    assert np.array_equal(F.log_mel(x64, SMALL_L), ref)
    assert np.array_equal(F.log_mel(x64.tolist(), SMALL_L), ref)
    assert F.log_mel(x64[0], SMALL_L).shape == (1, 32, 63)


def test_compute_features_uses_the_given_parameters(noise):
    p = F.compute_features(noise, SMALL_P)
    assert p.shape == (2, 32, 63) and np.array_equal(p, F.perceptual_mel(noise, SMALL_P))
    lm = F.compute_features(noise, SMALL_L)
    assert lm.shape == (2, 32, 63) and np.array_equal(lm, F.log_mel(noise, SMALL_L))
    with pytest.raises(ValueError) as e:
        F.compute_features(noise, replace(SMALL_P, kind="cqt"))
    assert str(e.value) == "unknown frontend kind 'cqt': one of perceptual, logmel"


def test_each_frontend_refuses_the_other_kind(noise):
    with pytest.raises(ValueError) as e:
        F.log_mel(noise, SMALL_P)
    assert str(e.value) == "log_mel computes the logmel frontend, these parameters are kind 'perceptual'"
    with pytest.raises(ValueError) as e:
        F.perceptual_mel(noise, SMALL_L)
    assert str(e.value) == "perceptual_mel computes the perceptual frontend, these parameters are kind 'logmel'"
