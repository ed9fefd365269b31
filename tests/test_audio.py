"""Audio loading: formats, rates, channels, lengths, and bad files."""

import math

import librosa
import numpy as np
import pytest
import soundfile as sf

from conftest import write_wav
from edgeasc.runtime import audio
from edgeasc.runtime.audio import AudioError

pytestmark = pytest.mark.usefixtures("librosa_compiled")  # conftest: numba kernels compiled once


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


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_decode_and_resample_are_libsndfile_and_one_soxr_call_exactly(tmp_path, subtype):
    """decode reads 16-bit PCM as int16 and scales it itself; resample runs soxr per channel:
    both must give exactly the numbers of libsndfile's float decode and one soxr call on the
    interleaved frames (what they replace), full-scale samples included."""
    import soxr

    rng = np.random.default_rng(3)
    ints = rng.integers(-32768, 32768, size=(57_331, 2), dtype=np.int16)
    ints[:4] = [[-32768, 32767], [32767, -32768], [0, 1], [-1, 0]]
    path = tmp_path / f"clip-{subtype}.wav"
    sf.write(str(path), ints, 44100, subtype=subtype)
    ref, _ = sf.read(str(path), dtype="float32", always_2d=True)
    x, sr = audio.decode(str(path))
    assert sr == 44100 and x.dtype == np.float32 and x.flags.c_contiguous
    assert np.array_equal(x, ref.T)
    assert np.array_equal(audio.decode(str(path), frames=1000)[0], ref[:1000].T)
    y = audio.resample(x, sr, 22050)
    n_out = math.ceil(57_331 * 22050 / 44100)
    expected = audio.fit_length(soxr.resample(ref, 44100, 22050, quality="HQ").T, n_out)
    assert y.shape == (2, n_out) and y.dtype == np.float32 and np.array_equal(y, expected)
    assert np.array_equal(audio.resample(x[:1], sr, 32000)[0],
                          audio.fit_length(soxr.resample(ref[:, 0], 44100, 32000, quality="HQ"),
                                           math.ceil(57_331 * 32000 / 44100)))
