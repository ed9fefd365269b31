"""The frontend is exactly docs/method.md §1: librosa 0.11 is the oracle (<= 1e-3)."""

import warnings

import librosa
import numpy as np
import pytest
import scipy.signal
import torch

from edgeasc.data.synth import plan_dataset, synthesize_clip
from edgeasc.runtime import audio, features
from edgeasc.runtime.features import (
    FeatureParams,
    a_weighting,
    fft_frequencies,
    hz_to_mel,
    mel_filterbank,
    mel_to_hz,
    perceptual_mel,
    periodic_hann,
)
from edgeasc.train.frontend import PerceptualMel, perceptual_mel_torch

pytestmark = pytest.mark.usefixtures("librosa_compiled")  # conftest: numba kernels compiled once


def librosa_reference(y: np.ndarray) -> np.ndarray:
    """The authors' pipeline with librosa 0.11, one channel at a time."""
    out = []
    freqs = librosa.fft_frequencies(sr=22050, n_fft=2048)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # log10(0) at bin 0 inside A_weighting
        for ch in y:
            s = np.abs(librosa.stft(ch, n_fft=2048, hop_length=512, window="hann", center=True,
                                    pad_mode="reflect")) ** 2
            pw = librosa.perceptual_weighting(s, freqs, ref=1.0, amin=1e-10, top_db=80)
            out.append(librosa.feature.melspectrogram(S=pw, sr=22050, n_fft=2048, n_mels=256, fmin=0, fmax=11025))
    return np.stack(out)


@pytest.fixture(scope="module")
def scene_48k(tmp_path_factory):
    """A real-shaped clip: 10 s, 48 kHz stereo, 24-bit, from the synthetic scene generator."""
    import soundfile as sf

    path = tmp_path_factory.mktemp("parity") / "street_traffic-lyon-0-0-a.wav"
    spec = next(s for s in plan_dataset(10, 8, seed=3) if s.scene == "street_traffic")
    sf.write(str(path), synthesize_clip(spec, 10.0, seed=3), 48000, subtype="PCM_24")
    return path


def test_constants_match_librosa():
    # computed afresh (__wrapped__: past the cache), so a cached value cannot stand in for the maths
    assert np.array_equal(mel_filterbank.__wrapped__(), librosa.filters.mel(
        sr=22050, n_fft=2048, n_mels=256, fmin=0.0, fmax=11025.0, dtype=np.float64))
    assert np.array_equal(fft_frequencies(22050, 2048), librosa.fft_frequencies(sr=22050, n_fft=2048))
    hz = np.concatenate([np.linspace(0, 11025, 997), [999.0, 1000.0, 1001.0]])
    assert np.allclose(hz_to_mel(hz), librosa.hz_to_mel(hz, htk=False), rtol=1e-12, atol=0)
    mel = np.linspace(0, 60, 601)
    assert np.allclose(mel_to_hz(mel), librosa.mel_to_hz(mel, htk=False), rtol=1e-12, atol=0)
    assert np.array_equal(a_weighting.__wrapped__(), a_weighting())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = librosa.A_weighting(librosa.fft_frequencies(sr=22050, n_fft=2048), min_db=-80)
    assert np.allclose(a_weighting(), ref, atol=1e-10, rtol=0)
    assert a_weighting()[0] == -80.0
    assert np.allclose(periodic_hann(2048), scipy.signal.get_window("hann", 2048), atol=1e-12)
    assert np.allclose(periodic_hann(2048), torch.hann_window(2048, dtype=torch.float64).numpy(), atol=1e-12)
    assert not np.allclose(periodic_hann(2048), np.hanning(2048))  # the symmetric one is wrong


def test_parity_with_librosa_on_a_real_shaped_clip(scene_48k):
    x, _ = audio.load(scene_48k)
    assert x.shape == (2, 220500)
    ours = perceptual_mel(x)
    assert ours.shape == (2, 256, 431) and ours.dtype == np.float32
    ref = librosa_reference(x)
    assert np.abs(ours - ref).max() <= 1e-3
    # the whole chain, librosa doing the decoding and resampling too
    y, _ = librosa.load(str(scene_48k), sr=22050, mono=False)
    assert np.abs(ours - librosa_reference(y)).max() <= 1e-3


def test_top_db_clip_is_per_channel():
    rng = np.random.default_rng(0)
    loud = rng.standard_normal(22050).astype(np.float32)
    x = np.stack([30 * loud, 3e-3 * loud])  # -80 dB: the quiet channel keeps its own 80 dB range
    ours = perceptual_mel(x)
    assert np.abs(ours - librosa_reference(x)).max() <= 1e-3
    # each channel is clipped at its own max - 80 dB, so a -80 dB copy is the same features
    # shifted by -80 dB through the (area-normalised) mel weights
    shift = -80.0 * mel_filterbank().sum(axis=1)[:, None]
    assert np.abs(ours[1] - (ours[0] + shift)).max() <= 1e-3


def test_numpy_fallback_without_scipy(monkeypatch, scene_48k):
    x, _ = audio.load(scene_48k)
    fast = perceptual_mel(x)
    monkeypatch.setattr(features, "_rfft", None)
    slow = perceptual_mel(x)
    assert np.abs(fast - slow).max() <= 1e-3
    assert np.abs(slow - librosa_reference(x)).max() <= 1e-3


def test_torch_matches_numpy(scene_48k):
    x, _ = audio.load(scene_48k)
    batch = np.stack([x, 0.1 * x[:, ::-1]])
    got = perceptual_mel_torch(torch.from_numpy(np.ascontiguousarray(batch))).numpy()
    assert got.shape == (2, 2, 256, 431)
    for b in range(2):
        assert np.abs(got[b] - perceptual_mel(batch[b])).max() <= 1e-3
    module = PerceptualMel()
    assert not list(module.parameters()) and not module.state_dict()  # constants only, rebuilt


def test_silence_is_the_floor_librosa_gives():
    """All zeros: every power is amin, so every dB value is -100 (the floor, not peak - top_db)."""
    x = np.zeros((1, 22050), np.float32)
    assert np.abs(perceptual_mel(x) - librosa_reference(x)).max() <= 1e-3


def test_shapes_and_short_input():
    p = FeatureParams()
    assert perceptual_mel(np.zeros(22050, np.float32) + 0.1).shape == (1, 256, p.n_frames(1.0))
    assert p.n_frames(10.0) == 431 and p.n_samples(10.0) == 220500 and p.n_samples() == 220500
    # samples round up, after float noise below 1e-6 of a sample is rounded away
    assert p.n_samples(1e-4) == 3 and p.n_samples(0.1 + 2e-11) == 2205
    with pytest.raises(ValueError) as short:
        features.frame_power(np.zeros((1, 1024), np.float32), p)  # reflect padding needs more than n_fft/2
    assert str(short.value) == "need more than 1024 samples for reflect padding, got 1024"
    assert features.frame_power(np.zeros((1, 1025), np.float32), p).shape == (1, 3, 1025)
    with pytest.raises(ValueError, match="samples"):
        perceptual_mel(np.zeros((2, 500), np.float32))
    with pytest.raises(ValueError, match="channels, samples"):
        perceptual_mel(np.zeros((1, 2, 3000), np.float32))


def test_the_frontend_computes_in_float32_whatever_the_input_dtype(scene_48k):
    """The same samples as float32, float64 or a Python list give bit-identical features:
    callers (a WAV decoder, a microphone, a user's array) cannot change the numbers."""
    x = audio.load(scene_48k)[0][:, : 22050 * 2]
    ref = perceptual_mel(x)
    assert ref.dtype == np.float32
    assert np.array_equal(perceptual_mel(x.astype(np.float64)), ref)
    assert np.array_equal(perceptual_mel(x.tolist()), ref)
