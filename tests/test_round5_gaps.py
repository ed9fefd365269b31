"""Round 5's mutation survivors that were real gaps (docs/mutation.md), pinned on real code paths:
stream.py's silence check at its edges, a library caller's bad --silence-db, the silent and the
classified windows' index, start, latency and level, a window exactly at the threshold; io.py's
inputs-vs-output check with stdin and missing inputs before a clashing one, stdin vs a file
named "-", a symlink loop in `is_within`; audio.py's zero pad in the input's dtype, which the
DIR training items hand to the torch frontend."""

import io
import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from test_stream_props import fake_model

from conftest import make_dcase
from edgeasc.errors import ConfigError
from edgeasc.io import is_within, refuse_input_as_output
from edgeasc.runtime import stream
from edgeasc.runtime.audio import fit_length
from edgeasc.runtime.deployed import DeployedModel
from edgeasc.runtime.stream import StreamClassifier, check_silence_db, level_db


# ----------------------------------------------------------------------------- stream.py
def silence_message(value) -> str:
    return f"--silence-db must be a level in dBFS between -200 and 0, got {value}"


def test_silence_db_edges_and_message():
    """(-200, 0]: -200 is digital zero's level (every window would pass), 0 is full scale."""
    for ok in (None, 0, 0.0, -0.0, -1e-9, -50, -199.999):
        check_silence_db(ok)
    for bad in (-200, -200.0, -200.5, 1e-9, 0.5, 1, 1.0, 3, -math.inf, math.inf, math.nan):
        with pytest.raises(ConfigError) as e:
            check_silence_db(bad)
        assert str(e.value) == silence_message(bad)


def test_a_library_caller_gets_silence_db_checked_too():
    """StreamClassifier (and `listen`, which builds one) check it, not only the CLI."""
    for bad in (-200.0, 0.5, 3, math.nan):
        with pytest.raises(ConfigError) as e:
            StreamClassifier(fake_model(), silence_db=bad)
        assert str(e.value) == silence_message(bad)
        with pytest.raises(ConfigError) as e:
            next(stream.listen(fake_model(), SimpleNamespace(read=lambda n: b""), silence_db=bad))
        assert str(e.value) == silence_message(bad)
    assert StreamClassifier(fake_model(), silence_db=0).silence_db == 0
    assert StreamClassifier(fake_model(), silence_db=-199.5).silence_db == -199.5


def constant(levels: list[float], rate: int = 8000, channels: int = 2) -> np.ndarray:
    """One second per entry of a constant (DC) signal of that amplitude: RMS = the amplitude."""
    return np.concatenate([np.full((channels, rate), a, np.float32) for a in levels], axis=1)


def test_silent_and_classified_windows_carry_their_index_start_latency_and_level(monkeypatch):
    """Windows count on through silent ones; a silent window keeps its stream time, its level
    and the time spent on it (a clock that steps by known amounts: 500, 250, 125, 62.5 ms)."""
    ticks = iter([10.0, 10.5, 11.0, 11.25, 12.0, 12.125, 13.0, 13.0625])
    monkeypatch.setattr(stream, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    model = fake_model(channels=2, logits=[2.0, 0.0, 0.0])
    classifier = StreamClassifier(model, hop=1.0, smooth=4, silence_db=-60.0)
    # 0.5 (-6.02 dBFS), digital zero (-200), 2^-14 (-84.3 dBFS), 0.25 (-12.04 dBFS)
    windows = classifier.push(constant([0.5, 0.0, 2.0**-14, 0.25]))
    assert [w.index for w in windows] == [0, 1, 2, 3]
    assert [w.start for w in windows] == [0.0, 1.0, 2.0, 3.0]
    assert [w.silent for w in windows] == [False, True, True, False]
    assert [w.latency_ms for w in windows] == [500.0, 250.0, 125.0, 62.5]
    assert [w.level_db for w in windows] == pytest.approx(
        [20 * math.log10(0.5), -200.0, 20 * math.log10(2.0**-14), 20 * math.log10(0.25)], rel=1e-12, abs=0)
    assert windows[0].level_db == pytest.approx(-6.0205999, abs=1e-6)
    assert all(w.probabilities is None and w.smoothed is None for w in windows[1:3])
    p = np.exp([2.0, 0.0, 0.0]) / np.exp([2.0, 0.0, 0.0]).sum()
    for w in (windows[0], windows[3]):
        np.testing.assert_allclose(w.probabilities, p, rtol=1e-12)
        np.testing.assert_allclose(w.smoothed, p, rtol=1e-12)  # the silent windows are not in the mean
    assert len(model.session.seen) == 2  # the silent windows never reached the model
    assert classifier.count == 4 and classifier.finish() == []


def test_a_silent_stream_shorter_than_one_window_still_gets_its_window():
    classifier = StreamClassifier(fake_model(), silence_db=-60.0)
    assert classifier.push(np.zeros((1, 3000), np.float32)) == []
    (w,) = classifier.finish()
    assert (w.index, w.start, w.silent, w.level_db) == (0, 0.0, True, -200.0)
    assert 0 <= w.latency_ms < 1000 and classifier.finish() == []


def test_digital_zero_and_nothing_are_the_floor_without_a_numpy_warning():
    """`listen --silence-db` over digital silence: -200 dBFS, and no "divide by zero in log10"
    (or "mean of empty slice") RuntimeWarning on the listener's stderr."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert level_db(np.zeros((2, 8000), np.float32)) == -200.0
        assert level_db(np.zeros((1, 0), np.float32)) == -200.0
        assert level_db(np.full((1, 4), 1e-12, np.float32)) == -200.0  # below the floor: clamped
        assert level_db(np.full((1, 4), 1e-9, np.float32)) == pytest.approx(-180.0, abs=1e-6)


def test_a_window_exactly_at_the_threshold_is_classified():
    """Windows quieter than --silence-db are skipped; one exactly at it is classified."""
    for amplitude, threshold in ((1.0, 0.0), (0.5, 20 * math.log10(0.5))):
        model = fake_model(channels=2, logits=[0.0, 1.0, 0.0])
        assert level_db(constant([amplitude])) == threshold
        windows = StreamClassifier(model, silence_db=threshold).push(constant([amplitude, amplitude / 2]))
        assert [w.silent for w in windows] == [False, True]
        assert windows[0].level_db == threshold and len(model.session.seen) == 1
        assert [w.index for w in windows] == [0, 1]


class FeatureSession:
    """onnxruntime's interface for a features-in model: fixed logits, keeps every input."""

    def __init__(self):
        self.seen: list[np.ndarray] = []

    def get_inputs(self):
        return [SimpleNamespace(name="features")]

    def run(self, outputs, feeds):
        self.seen.append(feeds["features"][0].copy())
        return [np.float32([[0.0, 1.0, 2.0]])]


def test_listen_transforms_each_shared_stft_frame_once(monkeypatch):
    """8 kHz, n_fft 256, hop_length 64, 1-s windows every 0.2 s (25 STFT hops): the first window
    transforms its 126 frames, each later one only its 25 new interior frames and the 2 + 2 edge
    frames that read its own reflect padding; not 126 per window (what shared_frames=False does),
    with the same features."""
    params = {"sample_rate": 8000, "n_fft": 256, "hop_length": 64, "n_mels": 16, "fmax": 4000.0, "clip_seconds": 1.0}
    metadata = {"labels": ["a", "b", "c"], "feature_params": params, "input": {"name": "features"},
                "channels": 1, "clip_seconds": 1.0}
    made = []

    class Kept(StreamClassifier):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(stream, "StreamClassifier", Kept)
    x = (0.1 * np.random.default_rng(5).standard_normal(3 * 8000)).astype(np.float32)
    wav = io.BytesIO()
    sf.write(wav, x, 8000, subtype="FLOAT", format="WAV")
    runs = {}
    for shared in (True, False, None):  # None: listen's default
        model = DeployedModel(Path("fake.onnx"), FeatureSession(), metadata)
        kwargs = {} if shared is None else {"shared_frames": shared}
        windows = list(stream.listen(model, io.BytesIO(wav.getvalue()), hop=0.2, **kwargs))
        assert [w.start for w in windows] == pytest.approx([0.2 * k for k in range(11)], abs=1e-12)
        runs[shared] = (made[-1].frames, model.session.seen)
    assert runs[False][0] is None
    for shared in (True, None):
        frames, seen = runs[shared]
        assert frames.computed == 126 + 10 * (25 + 2 + 2)
        assert len(seen) == 11
        for a, b in zip(seen, runs[False][1], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- io.py
def test_a_clashing_input_after_stdin_or_a_missing_input_is_still_refused(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("results")
    (tmp_path / "link.csv").symlink_to(out)
    other = tmp_path / "other.wav"
    other.write_bytes(b"RIFF")
    missing = tmp_path / "missing.wav"
    for inputs in (["-", out], [missing, out], ["-", missing, other, tmp_path / "link.csv"],
                   [missing, "-", str(out)]):
        with pytest.raises(ConfigError) as e:
            refuse_input_as_output(out, inputs, "--csv")
        assert str(e.value) == f"--csv {out} is one of the inputs ({inputs[-1]}): choose another path"
    refuse_input_as_output(out, ["-", missing, other], "--csv")  # nothing clashes
    assert out.read_text() == "results"


def test_stdin_is_not_a_file_named_dash(tmp_path, monkeypatch):
    """`-` among the inputs is standard input: an output file literally named `-` (here, in the
    working folder) is not it. A file named `-` given as an input by another path still clashes."""
    monkeypatch.chdir(tmp_path)
    dash = tmp_path / "-"
    dash.write_text("an earlier output")
    refuse_input_as_output("-", ["-"], "-o")
    refuse_input_as_output(dash, ["-", tmp_path / "missing.wav"], "-o")
    with pytest.raises(ConfigError, match=r"is one of the inputs \(\./-\)"):
        refuse_input_as_output("-", ["-", "./-"], "-o")


def test_is_within_a_symlink_loop_is_false(tmp_path):
    os.symlink(tmp_path / "a", tmp_path / "b")
    os.symlink(tmp_path / "b", tmp_path / "a")
    (tmp_path / "real").mkdir()
    assert is_within(tmp_path / "real" / "x", tmp_path)  # what the loop would be without it
    for path, folder in ((tmp_path / "a", tmp_path), (tmp_path / "a" / "x", tmp_path), (tmp_path, tmp_path / "b"),
                         (tmp_path / "a", tmp_path / "a")):
        assert is_within(path, folder) is False


# ----------------------------------------------------------------------------- audio.py
def test_fit_length_pads_in_the_inputs_dtype():
    for dtype in (np.float32, np.float64, np.float16, np.int16):
        x = (np.arange(1, 7).reshape(2, 3) * 3).astype(dtype)
        padded = fit_length(x, 5)
        assert padded.dtype == dtype and padded.shape == (2, 5)
        assert padded.tolist() == [[3, 6, 9, 0, 0], [12, 15, 18, 0, 0]]
        assert fit_length(x, 2).dtype == dtype and fit_length(x, 2).tolist() == [[3, 6], [12, 15]]
        assert fit_length(x, 3) is x
    assert fit_length(np.ones(2, np.float32), 4).tolist() == [1, 1, 0, 0]


def test_a_short_clip_without_an_impulse_response_reaches_the_torch_frontend(tmp_path):
    """A training clip shorter than the cache's 1 s (here: each cut to its first 0.5 s after the
    cache was built) is zero-padded; with no response drawn (p = 0) it goes to the torch frontend
    as it is, and a float64 pad would make that fail (Double vs Float)."""
    import soundfile as sf

    from edgeasc.data.cache import extract_features
    from edgeasc.data.dcase import open_dataset
    from edgeasc.data.impulse import ImpulseResponseFeatures
    from edgeasc.runtime.features import FeatureParams, compute_features, frontend_params
    from edgeasc.train.frontend import frontend_module

    data = make_dcase(tmp_path / "tau22", "tau2022-mobile", seconds=1.0)
    cache, _ = extract_features(open_dataset(data), frontend_params("perceptual", 1.0), workers=1,
                                root=tmp_path / "cache", progress=False)
    params = FeatureParams(**cache.manifest["params"])
    ds = ImpulseResponseFeatures(cache, frontend_module(params), [("delta", np.ones(1, np.float32))], 0.0, roll=0)
    assert len(ds) >= 4
    for i, path in enumerate(ds.paths):
        x, sr = sf.read(path, dtype="float32")
        sf.write(path, x[:sr // 2], sr, subtype="FLOAT")
        assert ds.choice(i) is None
        w = ds.waveform(i)
        assert w.dtype == np.float32 and w.shape == (1, 22050)
        assert not w[:, 11025:].any() and w[:, :11025].any()  # half the clip, then the pad
        item = ds[i][0]
        assert item.dtype == torch.float32
        want = (compute_features(w, params) - cache.mean) / cache.std  # the numpy frontend on the same clip
        np.testing.assert_allclose(item.numpy(), want, atol=2e-3)
