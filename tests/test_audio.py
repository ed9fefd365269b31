"""Audio loading: formats, rates, channels, lengths, and bad files."""

import math

import librosa
import numpy as np
import pytest
import soundfile as sf

from conftest import write_wav
from edgeasc.runtime import audio
from edgeasc.runtime.audio import AudioError


@pytest.mark.parametrize("sr, subtype, ext", [
    (48000, "PCM_16", "wav"), (48000, "PCM_24", "wav"), (44100, "FLOAT", "wav"),
    (16000, "PCM_16", "wav"), (48000, "PCM_24", "flac"), (44100, "VORBIS", "ogg"), (22050, "PCM_16", "wav"),
])
def test_load_matches_librosa(tmp_path, sr, subtype, ext):
    path = write_wav(tmp_path / f"clip.{ext}", seconds=1.3, sr=sr, subtype=subtype)
    x, rate = audio.load(path)
    assert rate == 22050 and x.dtype == np.float32
    n_in = sf.info(str(path)).frames
    assert x.shape == (2, math.ceil(n_in * 22050 / sr))
    ref, _ = librosa.load(str(path), sr=22050, mono=False)  # soxr_hq, as docs/method.md §1
    n = min(ref.shape[-1], x.shape[-1])
    assert np.abs(ref[:, :n] - x[:, :n]).max() < 1e-6


def test_channel_policy(tmp_path):
    mono = write_wav(tmp_path / "mono.wav", channels=1)
    stereo = write_wav(tmp_path / "stereo.wav", channels=2)
    assert audio.load(mono)[0].shape[0] == 1
    dup = audio.load(mono, channels=2)[0]
    assert dup.shape[0] == 2 and np.array_equal(dup[0], dup[1])
    both = audio.load(stereo)[0]
    down = audio.load(stereo, channels=1)[0]
    assert down.shape[0] == 1 and np.allclose(down[0], both.mean(axis=0), atol=1e-7)
    many = write_wav(tmp_path / "surround.wav", channels=4)
    with pytest.raises(AudioError, match="4 channels"):
        audio.load(many)


def test_fit_length_pads_and_crops():
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    assert audio.fit_length(x, 5) is x
    assert np.array_equal(audio.fit_length(x, 3), x[:, :3])
    padded = audio.fit_length(x, 7)
    assert padded.shape == (2, 7) and np.all(padded[:, 5:] == 0) and np.array_equal(padded[:, :5], x)


def test_bad_audio(tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    with pytest.raises(AudioError, match="notes.wav: cannot read audio"):
        audio.load(text)
    good = write_wav(tmp_path / "good.wav", seconds=1.0)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:30])  # header cut in half
    with pytest.raises(AudioError, match="truncated.wav"):
        audio.load(truncated)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros((0, 2), np.float32), 48000)
    with pytest.raises(AudioError, match="no samples"):
        audio.load(empty)
    nan = tmp_path / "nan.wav"
    sf.write(str(nan), np.full((4800, 2), np.nan, np.float32), 48000, subtype="FLOAT")
    with pytest.raises(AudioError, match="all samples are NaN"):
        audio.load(nan)
    some = np.zeros((4800, 2), np.float32)
    some[10, 1] = np.inf
    sf.write(str(tmp_path / "inf.wav"), some, 48000, subtype="FLOAT")
    with pytest.raises(AudioError, match="1 samples are NaN or infinite"):
        audio.load(tmp_path / "inf.wav")
    with pytest.raises(AudioError, match="missing.wav: no such file"):
        audio.load(tmp_path / "missing.wav")
