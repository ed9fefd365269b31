"""`edgeasc listen`'s reading in process, against the whole-file truth: any chunking of the same
bytes decodes to the same samples, the streaming resampler (its flush at the end included)
gives exactly soxr's whole-file resampling, and the classifier's windows are the slices of that
signal, on a stand-in model whose logits are fixed functions of its input. Hypothesis runs
derandomized (the same examples every run), a few dozen examples a property."""

import io
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st
from test_wav_bytes import EXTENSIBLE, FLOAT, PCM, chunk, fmt_chunk, s24, wav

from edgeasc.errors import ConfigError
from edgeasc.runtime import stream
from edgeasc.runtime.audio import AudioError
from edgeasc.runtime.deployed import DeployedModel, ModelError

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True, database=None)
LABELS = ["a", "b", "c"]


class Pipe:
    """A pipe that hands out the bytes in the pieces a writer wrote them: a read returns at most
    the rest of the current piece (short reads, as from a real pipe), b"" at the end."""

    def __init__(self, data: bytes, cuts: list[int]):
        edges = [0, *sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
        self.pieces = [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]

    def read(self, n: int) -> bytes:
        while self.pieces and not self.pieces[0]:
            self.pieces.pop(0)
        if not self.pieces:
            return b""
        head, self.pieces[0] = self.pieces[0][:n], self.pieces[0][n:]
        return head


class Session:
    """onnxruntime's interface for a waveform model: logits (sum, 10 · mean of the first
    channel, 0) of each input, or fixed ones; keeps every input and output."""

    def __init__(self, logits=None):
        self.seen: list[np.ndarray] = []
        self.out: list[np.ndarray] = []
        self.logits = logits

    def get_inputs(self):
        return [SimpleNamespace(name="waveform")]

    def run(self, outputs, feeds):
        x = feeds["waveform"]
        assert x.dtype == np.float32 and x.ndim == 3 and len(x) == 1  # what the graph takes
        self.seen.append(x[0].copy())
        if self.logits is not None:
            out = np.float32([self.logits])
        else:  # float32, as onnxruntime returns it
            out = np.stack([x.sum(axis=(1, 2)), 10 * x[:, 0].mean(axis=-1), np.zeros(len(x), np.float32)], axis=1)
        self.out.append(out[0])
        return [out]


def fake_model(rate: int = 8000, channels: int = 1, clip: float = 1.0, logits=None, **frontend) -> DeployedModel:
    params = {"sample_rate": rate, "n_fft": 256, "hop_length": 64, "n_mels": 16, "fmax": rate / 2,
              "clip_seconds": clip, **frontend}
    metadata = {"labels": LABELS, "feature_params": params, "input": {"name": "waveform"},
                "channels": channels, "clip_seconds": clip}
    return DeployedModel(Path("fake.onnx"), Session(logits), metadata)


class Recorder:
    """Stands in for StreamClassifier in `listen`: keeps what is pushed and when it finishes."""

    made: list["Recorder"] = []

    def __init__(self, model, window, hop, smooth, silence_db=None, shared_frames=True):
        self.pushed, self.finished = [], 0
        Recorder.made.append(self)

    def push(self, x):
        assert not self.finished and x.dtype == np.float32
        self.pushed.append(x)
        return []

    def finish(self):
        self.finished += 1
        return []

    def signal(self, channels: int) -> np.ndarray:
        return np.concatenate([np.zeros((channels, 0), np.float32), *self.pushed], axis=1)


def listened(model, data: bytes, raw=None, cuts=(), header=True) -> np.ndarray:
    """What `listen` pushes to its classifier for `data` read through a pipe cut at `cuts`."""
    Recorder.made.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stream, "StreamClassifier", Recorder)
        assert list(stream.listen(model, Pipe(data, list(cuts)), raw, header=header)) == []
    (rec,) = Recorder.made
    assert rec.finished == 1
    return rec.signal(model.channels)


# ----------------------------------------------------------------------------- any chunking
SAMPLE_TYPES = {  # name: (fmt tag, bits, pack, full scale)
    "s16": (PCM, 16, lambda v: struct.pack(f"<{len(v)}h", *v), 2.0**15),
    "s24": (PCM, 24, lambda v: s24(*v), 2.0**23),
    "s32": (PCM, 32, lambda v: struct.pack(f"<{len(v)}i", *v), 2.0**31),
    "f32": (FLOAT, 32, lambda v: struct.pack(f"<{len(v)}f", *v), 1.0),
}


@st.composite
def wav_streams(draw):
    """(bytes, want): a WAV stream of any accepted variant and its samples, decoded by hand."""
    kind = draw(st.sampled_from(sorted(SAMPLE_TYPES)))
    tag, bits, pack, scale = SAMPLE_TYPES[kind]
    channels = draw(st.sampled_from([1, 2]))
    frames = draw(st.integers(0, 40))
    if kind == "f32":
        values = draw(st.lists(st.floats(-4, 4, width=32), min_size=frames * channels, max_size=frames * channels))
    else:
        top = 2 ** (bits - 1)
        values = draw(st.lists(st.integers(-top, top - 1), min_size=frames * channels, max_size=frames * channels))
    extensible = draw(st.booleans())
    fmt = fmt_chunk(EXTENSIBLE, channels, 16000, bits, sub=tag) if extensible else fmt_chunk(tag, channels, 16000, bits)
    extras = draw(st.lists(st.binary(max_size=5), max_size=3))
    junk = [chunk(b"junk", body) for body in extras]
    where = draw(st.integers(0, len(junk)))
    data = wav(*junk[:where], fmt, *junk[where:], data=pack(values) + draw(st.binary(max_size=channels * bits // 8 - 1)))
    # float32 holds every 16- and 24-bit value; for 32-bit ones numpy's rounding is the reference
    want = (np.float32(np.array(values, np.float64).astype(np.float32)) / np.float32(scale))
    return data, want.reshape(-1, channels).T


@PROPERTY
@given(wav_streams(), st.lists(st.integers(0, 400), max_size=12), st.integers(1, 17))
def test_any_chunking_of_a_wav_stream_decodes_to_the_same_samples(case, cuts, block_frames):
    data, want = case
    fmt, body = stream.open_stream(Pipe(data, cuts), None, "pipe")
    blocks = list(stream.read_blocks(body, fmt, block_frames))
    assert all(b.shape[1] == block_frames for b in blocks[:-1]) and all(0 < b.shape[1] <= block_frames for b in blocks)
    got = np.concatenate(blocks, axis=1) if blocks else np.zeros((fmt.channels, 0), np.float32)
    assert got.shape == want.shape and np.array_equal(got, want)


@PROPERTY
@given(st.sampled_from(sorted(stream.RAW_FORMATS)), st.sampled_from([1, 2]), st.binary(max_size=120),
       st.lists(st.integers(0, 120), max_size=8), st.integers(1, 9))
def test_any_chunking_of_raw_pcm_decodes_to_numpys_reading(name, channels, data, cuts, block_frames):
    fmt = stream.raw_format(8000, channels, name)
    dtype, scale = stream.RAW_FORMATS[name]
    whole = np.frombuffer(data[:len(data) - len(data) % fmt.frame_bytes], dtype=dtype)
    if not np.isfinite(whole.astype(np.float32)).all():  # random bytes can spell NaN: refused
        with pytest.raises(AudioError, match="^the stream holds NaN or infinite samples$"):
            list(stream.read_blocks(stream.open_stream(Pipe(data, cuts), fmt)[1], fmt, block_frames))
        return
    want = (whole.astype(np.float32) / np.float32(scale)).reshape(-1, channels).T
    got = list(stream.read_blocks(stream.open_stream(Pipe(data, cuts), fmt)[1], fmt, block_frames))
    assert all(b.shape[1] == block_frames for b in got[:-1]) and all(0 < b.shape[1] <= block_frames for b in got)
    got = np.concatenate(got, axis=1) if got else np.zeros((channels, 0), np.float32)
    assert np.array_equal(got, want)


# ----------------------------------------------------------------------------- resampling
@PROPERTY
@given(st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000]), st.sampled_from([8000, 22050]),
       st.sampled_from([(1, 1), (2, 2), (2, 1), (1, 2)]), st.integers(0, 6000), st.integers(0, 2**32 - 1),
       st.lists(st.integers(0, 30000), max_size=6), st.sampled_from([0.1, 0.013, 0.25]))
def test_the_streaming_resampler_gives_the_whole_file_resampling(rate, model_rate, channels, n, seed, cuts,
                                                                  block_seconds):
    """Every block through soxr's streaming resampler, then its flush: exactly soxr.resample of
    the whole signal (the stream's channels made the model's first, as `listen` does)."""
    have, need = channels
    x = (0.3 * np.random.default_rng(seed).standard_normal((n, have))).astype("<f4")
    model = fake_model(model_rate, need)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stream, "BLOCK_SECONDS", block_seconds)
        got = listened(model, x.tobytes(), stream.raw_format(rate, have, "F32_LE"), cuts, header=False)
    mixed = x if have == need else (np.repeat(x, 2, axis=1) if need == 2 else x.mean(axis=1, keepdims=True))
    if rate == model_rate or n == 0:
        want = mixed.T
    else:
        want = soxr.resample(mixed, rate, model_rate, quality="HQ").T
    assert got.shape == want.shape and np.array_equal(got, want)


def test_the_flush_delivers_the_resamplers_last_samples():
    """Pinned on one case: without the flush the last ~1.5 ms (soxr's delay) would be lost."""
    x = (0.1 * np.sin(np.arange(4000) / 7)).astype("<f4")
    got = listened(fake_model(8000), x.tobytes(), stream.raw_format(16000, 1, "F32_LE"))
    assert got.shape == (1, 2000)
    assert np.array_equal(got[0], soxr.resample(x, 16000, 8000, quality="HQ"))
    # a WAV stream as arecord writes it, read through a header, and a native-rate one
    header = wav(fmt_chunk(FLOAT, 1, 16000, 32), data=x.tobytes())
    assert np.array_equal(listened(fake_model(8000), header, cuts=[3, 50, 51]), got)
    assert np.array_equal(listened(fake_model(16000), header, cuts=[44, 45])[0], x)
    assert np.array_equal(listened(fake_model(16000), x.tobytes(), stream.raw_format(16000, 1, "F32_LE")), x[None])


def test_a_raw_stream_that_starts_with_riff_is_read_as_wav_unless_told_it_has_no_header():
    data = b"RIFF" + struct.pack("<3f", 0.5, 0.25, -0.5)
    raw = stream.raw_format(8000, 1, "F32_LE")
    assert listened(fake_model(8000), data, raw, header=False)[0].tolist() == [
        np.frombuffer(b"RIFF", "<f4")[0].item(), 0.5, 0.25, -0.5]
    with pytest.raises(AudioError, match="^stdin: not a WAV stream"):
        listened(fake_model(8000), data, raw)
    with pytest.raises(AudioError, match="^stdin: not a WAV stream"):
        listened(fake_model(8000), struct.pack("<3f", 0.5, 0.25, -0.5), None, header=False)


# ----------------------------------------------------------------------------- windows
def test_windows_are_slices_of_the_resampled_stream_every_hop():
    x = (0.2 * np.sin(np.arange(19000) / 5)).astype("<f4")
    model = fake_model(8000)
    signal = soxr.resample(x, 16000, 8000, quality="HQ")  # 9500 samples at the model's rate
    out = list(stream.listen(model, Pipe(x.tobytes(), [7, 1000]), stream.raw_format(16000, 1, "F32_LE"),
                             window=0.5, hop=0.25, smooth=2))
    assert [(w.index, w.start) for w in out] == [(0, 0.0), (1, 0.25), (2, 0.5)]  # 4000 every 2000
    seen = model.session.seen
    assert len(seen) == 3 and all(np.array_equal(s, signal[None, k * 2000:k * 2000 + 4000])
                                   for k, s in enumerate(seen))
    for k, w in enumerate(out):  # the softmax of the model's output, in float64; then the last two's mean
        z = np.float64(model.session.out[k])
        assert w.probabilities.dtype == np.float64 and model.session.out[k].dtype == np.float32
        assert np.array_equal(w.probabilities, np.exp(z - z.max()) / np.exp(z - z.max()).sum())
        assert np.array_equal(w.smoothed, np.mean([v.probabilities for v in out[max(0, k - 1):k + 1]], axis=0))
    assert len(set(map(tuple, model.session.out))) == 3 and out[1].smoothed.tolist() != out[1].probabilities.tolist()


def test_a_stream_shorter_than_a_window_gets_one_zero_padded_window():
    model = fake_model(8000, channels=2)
    x = np.float32([[0.5, -0.5]] * 700)  # 700 stereo frames at the model's rate
    out = list(stream.listen(model, io.BytesIO(x.tobytes()), stream.raw_format(8000, 2, "F32_LE")))
    assert [(w.index, w.start) for w in out] == [(0, 0.0)]
    (seen,) = model.session.seen
    assert seen.shape == (2, 8000) and np.array_equal(seen[:, :700], x.T) and not seen[:, 700:].any()
    assert list(stream.listen(model, io.BytesIO(b""), stream.raw_format(8000, 2, "F32_LE"))) == []
    # exactly one window long: that window, and no padded one after it
    model = fake_model(8000)
    out = list(stream.listen(model, io.BytesIO(bytes(32000)), stream.raw_format(8000, 1, "F32_LE")))
    assert [w.index for w in out] == [0] and len(model.session.seen) == 1


def test_the_classifier_pushes_and_finishes(monkeypatch):
    model = fake_model(8000)
    clf = stream.StreamClassifier(model, window=0.02, hop=0.02, smooth=3)  # 160 samples a window
    assert (clf.n_window, clf.n_hop, clf.recent.maxlen) == (160, 160, 3)
    assert clf.finish() == []  # nothing pushed: no window
    ticks = iter([10.0, 10.25, 20.0, 20.5, 30.0, 30.125])
    monkeypatch.setattr(stream, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    x = np.arange(500, dtype=np.float32)[None] / 1000
    assert clf.push(x[:, :159]) == []
    got = clf.push(x[:, 159:500])
    assert [(w.index, w.start, w.latency_ms) for w in got] == [(0, 0.0, 250.0), (1, 0.02, 500.0),
                                                               (2, 0.04, 125.0)]
    assert all(np.array_equal(s, x[:, 160 * k:160 * k + 160]) for k, s in enumerate(model.session.seen))
    assert clf.buffer.shape == (1, 20) and clf.consumed == 480 and clf.samples == 500
    assert np.array_equal(clf.buffer, x[:, 480:])
    assert clf.finish() == []  # windows were made: the rest is not padded into another
    assert np.array_equal(got[2].smoothed, np.mean([w.probabilities for w in got], axis=0))


def test_the_classifier_refuses_what_it_cannot_do():
    model = fake_model(8000)  # one FFT: 129 samples (16.1 ms); one frame: 64 samples (8 ms)

    def message(**kwargs):
        with pytest.raises(ConfigError) as info:
            stream.StreamClassifier(model, **kwargs)
        return str(info.value)

    for smooth in (0, 10_001):
        assert message(smooth=smooth) == f"--smooth must be between 1 and 10000 windows, got {smooth}"
    assert stream.StreamClassifier(model, smooth=10_000).recent.maxlen == 10_000
    for window in (129 / 8000, 600.001, float("nan"), float("inf")):
        assert message(window=window, hop=0.01) == \
            f"--window must be at most 600 s and longer than one FFT, got {window}"
    assert stream.StreamClassifier(model, window=600, hop=0.01).n_window == 4_800_000
    assert stream.StreamClassifier(model, window=130 / 8000, hop=0.008).n_window == 130
    for hop in (0.0079, 1.01, float("nan")):
        assert message(hop=hop) == f"--hop must be between one feature frame (0.0080 s) and the window (1 s), got {hop}"
    assert message(window=0.5, hop=0.6).endswith("and the window (0.5 s), got 0.6")
    assert stream.StreamClassifier(model, hop=0.008).n_hop == 64
    assert stream.StreamClassifier(model).n_hop == 8000
    bare = fake_model(8000)
    del bare.metadata["input"]
    with pytest.raises(ModelError, match=r"fake.onnx: not an edgeasc export \(listen needs the metadata"):
        stream.StreamClassifier(bare)


def test_a_model_that_outputs_nan_is_stopped_with_the_streams_time():
    model = fake_model(8000, logits=[0.0, float("nan"), 1.0])
    clf = stream.StreamClassifier(model, hop=0.25)
    clf.consumed = 2000
    with pytest.raises(AudioError) as info:
        clf.push(np.zeros((1, 8000), np.float32))
    assert str(info.value) == "fake.onnx: the model output a non-finite value (NaN or inf) at 0.25 s"
    model = fake_model(8000, logits=[0.0, float("inf"), 1.0])
    with pytest.raises(AudioError, match=r"non-finite value \(NaN or inf\) at 0.00 s$"):
        stream.StreamClassifier(model).push(np.zeros((1, 8000), np.float32))


def test_listens_defaults_one_window_smoothing_a_probed_header_and_blocks_of_a_tenth_of_a_second():
    x = (0.2 * np.sin(np.arange(20000) / 3) * np.linspace(0, 1, 20000)).astype("<f4")
    raw = stream.raw_format(8000, 1, "F32_LE")
    out = list(stream.listen(fake_model(8000), io.BytesIO(x.tobytes()), raw))
    assert len(out) == 2 and out[0].probabilities.tolist() != out[1].probabilities.tolist()
    assert all(np.array_equal(w.smoothed, w.probabilities) for w in out)  # smooth=1
    assert stream.StreamClassifier(fake_model(8000)).recent.maxlen == 1
    # raw PCM given, header not declined: a WAV header on the stream is still read (and wins)
    header = wav(fmt_chunk(FLOAT, 1, 8000, 32), data=x.tobytes())
    (first, _) = stream.listen(fake_model(8000), io.BytesIO(header), stream.raw_format(8000, 1, "S16_LE"))
    assert np.array_equal(first.probabilities, out[0].probabilities)
    with pytest.raises(AudioError, match="^mic.raw: not a WAV stream"):
        list(stream.listen(fake_model(8000), io.BytesIO(b"noise" * 9), name="mic.raw"))
    Recorder.made.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stream, "StreamClassifier", Recorder)
        list(stream.listen(fake_model(8000), io.BytesIO(x[:2500].tobytes()), raw))
    assert [p.shape for p in Recorder.made[0].pushed] == [(1, 800), (1, 800), (1, 800), (1, 100)]


def test_one_sample_still_gets_its_padded_window():
    model = fake_model(8000)
    clf = stream.StreamClassifier(model)
    assert clf.push(np.float32([[0.5]])) == []
    (w,) = clf.finish()
    assert (w.index, w.start) == (0, 0.0) and model.session.seen[0][0, 0] == 0.5 and not model.session.seen[0][0, 1:].any()


def test_the_classifiers_limits_follow_the_frontend():
    odd = fake_model(8000, n_fft=255)  # one FFT: 255 // 2 + 1 = 128 samples
    assert stream.StreamClassifier(odd, window=128.5 / 8000, hop=0.008).n_window == 129
    fine = fake_model(8000, hop_length=1)  # one frame: one sample
    assert stream.StreamClassifier(fine, hop=1 / 8000).n_hop == 1
