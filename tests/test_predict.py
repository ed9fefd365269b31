"""`predict`'s windowing and aggregation in this process, on a hand-built waveform-in ONNX
model whose logits are known in closed form (mean, -mean, log of the mean square of each
window): which windows are cut, how windows of consecutive files share batches, the linear
mean per file, top-k, the JSON record, the errors that do not stop the run, and the refusals.
The CLI tests (test_runtime.py, test_listen.py) run the same code through `edgeasc predict`."""

import json

import numpy as np
import onnx
import pytest
import soundfile as sf
from onnx import TensorProto, helper, numpy_helper

from edgeasc.errors import ConfigError
from edgeasc.runtime.deployed import load_model
from edgeasc.runtime.predict import (
    Prediction,
    default_batch,
    expand_inputs,
    plan_windows,
    predict_files,
    softmax,
)

RATE, CLIP = 8000, 0.5  # 4000-sample windows, no resampling
PARAMS = {"sample_rate": RATE, "n_fft": 256, "hop_length": 64, "n_mels": 32, "fmin": 0.0, "fmax": 4000.0,
          "top_db": 80.0, "amin": 1e-10, "clip_seconds": CLIP}
LABELS = ["up", "down", "loud"]


def write_model(path, macs=None, labels=None):
    node = helper.make_node
    consts = [numpy_helper.from_array(np.array([1, 2], np.int64), "axes"),
              numpy_helper.from_array(np.array([1], np.int64), "one"),
              numpy_helper.from_array(np.array(10.0, np.float32), "ten")]
    nodes = [node("ReduceMean", ["waveform", "axes"], ["m"], keepdims=0),
             node("Mul", ["waveform", "waveform"], ["sq"]),
             node("ReduceMean", ["sq", "axes"], ["e"], keepdims=0),
             node("Log", ["e"], ["l"]), node("Mul", ["m", "ten"], ["m10"]), node("Neg", ["m10"], ["n10"]),
             node("Unsqueeze", ["m10", "one"], ["c0"]), node("Unsqueeze", ["n10", "one"], ["c1"]),
             node("Unsqueeze", ["l", "one"], ["c2"]), node("Concat", ["c0", "c1", "c2"], ["logits"], axis=1)]
    graph = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("waveform", TensorProto.FLOAT,
                                                                             ["batch", 1, "samples"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], consts)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    meta = {"labels": labels or LABELS, "feature_params": PARAMS, "channels": 1, "clip_seconds": CLIP,
            "input": {"name": "waveform", "sample_rate": RATE}, "precision": "fp32"}
    if macs is not None:
        meta["macs_per_clip"] = macs
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"edgeasc.{key}", value if isinstance(value, str) else json.dumps(value)
    onnx.save(proto, path)
    return path


def write_features_model(path):
    """Features in (the numpy frontend's, normalised): logits = (mean, -mean, max) of the input."""
    node = helper.make_node
    consts = [numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"),
              numpy_helper.from_array(np.array([1], np.int64), "one")]
    nodes = [node("ReduceMean", ["features", "axes"], ["m"], keepdims=0), node("Neg", ["m"], ["n"]),
             node("ReduceMax", ["features", "axes"], ["x"], keepdims=0),
             node("Unsqueeze", ["m", "one"], ["c0"]), node("Unsqueeze", ["n", "one"], ["c1"]),
             node("Unsqueeze", ["x", "one"], ["c2"]), node("Concat", ["c0", "c1", "c2"], ["logits"], axis=1)]
    graph = helper.make_graph(nodes, "toyf", [helper.make_tensor_value_info("features", TensorProto.FLOAT,
                                                                              ["batch", 1, 32, "frames"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], consts)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    meta = {"labels": LABELS, "feature_params": PARAMS, "channels": 1, "clip_seconds": CLIP,
            "input": {"name": "features"}, "precision": "fp32", "normalization": NORM}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"edgeasc.{key}", value if isinstance(value, str) else json.dumps(value)
    onnx.save(proto, path)
    return path


NORM = {"mean": [float(v) for v in np.linspace(-60, -40, 32)], "std": [float(v) for v in np.linspace(5, 9, 32)]}


def expected_logits(piece: np.ndarray) -> np.ndarray:
    x = piece.astype(np.float64)
    return np.array([10 * x.mean(), -10 * x.mean(), np.log((x * x).mean())])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(write_model(tmp_path_factory.mktemp("toy") / "toy.onnx"))


def wav(path, seconds, offset=0.0, seed=0):
    rng = np.random.default_rng(seed)
    x = (offset + 0.1 * rng.standard_normal(int(round(seconds * RATE)))).astype(np.float32)
    sf.write(str(path), x, RATE, subtype="FLOAT")
    return x


def test_windows_batches_and_the_linear_mean_per_file(model, tmp_path):
    a = wav(tmp_path / "a.wav", 1.300375, offset=0.2)  # windows at 0, 0.5 and 0.800375 (ending at the end)
    b = wav(tmp_path / "b.wav", 0.3, offset=-0.1)      # shorter than a window: one, zero-padded
    (tmp_path / "c.wav").write_text("not audio")       # unreadable: reported, the run goes on
    sf.write(str(tmp_path / "d.wav"), np.zeros(RATE // 2, np.float32), RATE, subtype="FLOAT")  # log 0: not finite
    e = wav(tmp_path / "e.wav", 0.5, offset=0.05, seed=1)
    paths = [tmp_path / n for n in ("a.wav", "b.wav", "c.wav", "d.wav", "e.wav")]
    calls = []
    real_run = model.run
    model.run = lambda x: calls.append(len(x)) or real_run(x)
    try:
        got = list(predict_files(model, paths, batch_size=2, progress=None))
    finally:
        model.run = real_run
    assert [p.path for p in got] == [str(p) for p in paths]  # input order, errors included
    assert calls == [2, 2, 2]  # 3 + 1 + 1 + 1 windows (c has none): files share batches
    pa, pb, pc, pd, pe = got
    assert pa.starts == [0.0, 0.5, 0.800375] and pa.seconds == 1.300375 and pa.window_seconds == CLIP
    want = softmax(np.stack([expected_logits(a[s:s + 4000]) for s in (0, 4000, 6403)]))
    assert np.allclose(pa.window_probabilities, want, rtol=1e-5, atol=1e-7)
    assert np.allclose(pa.probabilities, want.mean(axis=0), rtol=1e-5, atol=1e-7)
    padded = np.concatenate([b, np.zeros(4000 - b.size, np.float32)])
    assert pb.starts == [0.0] and np.allclose(pb.window_probabilities, softmax(expected_logits(padded)[None]),
                                              rtol=1e-5, atol=1e-7)
    assert pc.error.startswith(f"{paths[2]}: cannot read audio (") and "Format not recognised" in pc.error
    assert "\n" not in pc.error and pc.window_probabilities is None
    assert pd.error == f"{paths[3]}: the model output a non-finite value (NaN or inf)"
    assert np.allclose(pe.probabilities, softmax(expected_logits(e)[None])[0], rtol=1e-5, atol=1e-7)
    assert len(pa.to_dict()["top"]) == 1 and len(pa.top()) == 1
    record = pa.to_dict(top_k=2)
    assert record["file"] == str(paths[0]) and record["seconds"] == 1.3  # milliseconds in the record
    top = pa.top(2)
    assert [t["label"] for t in record["top"]] == [label for label, _ in top] == ["up", "down"]
    assert record["top"][0]["probability"] == top[0][1] == float(pa.probabilities.max())
    assert record["probabilities"] == {label: float(p) for label, p in zip(LABELS, pa.probabilities, strict=True)}
    assert [(w["start"], w["end"]) for w in record["windows"]] == [(0.0, 0.5), (0.5, 1.0), (0.8, 1.3)]
    assert json.loads(json.dumps(record)) == record  # plain JSON types only
    assert [w["label"] for w in record["windows"]] == [LABELS[i] for i in want.argmax(axis=1)]
    assert [w["probability"] for w in record["windows"]] == [float(p) for p in pa.window_probabilities.max(axis=1)]
    assert record["windows"][1]["probabilities"] == [float(v) for v in pa.window_probabilities[1]]
    assert pc.to_dict() == {"file": str(paths[2]), "error": pc.error}


def test_stdin_resampling_missing_files_and_the_default_batch(model, tmp_path, monkeypatch):
    """A 16-kHz file streamed block by block (resampled) gives what the same bytes on stdin give
    (decoded whole); missing paths and folders are errors of their own; without --batch the
    batch follows the model's MACs."""
    import io
    import sys

    rng = np.random.default_rng(5)
    x = (0.2 + 0.1 * rng.standard_normal(int(2.3 * 16000))).astype(np.float32)
    sf.write(str(tmp_path / "hi.wav"), x, 16000, subtype="FLOAT")
    streamed = next(predict_files(model, [tmp_path / "hi.wav"], batch_size=8))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((tmp_path / "hi.wav").read_bytes())))
    piped = next(predict_files(model, ["-"], batch_size=8))
    assert streamed.starts == piped.starts == [0.0, 0.5, 1.0, 1.5, 1.8] and piped.seconds == pytest.approx(2.3)
    assert np.allclose(streamed.window_probabilities, piped.window_probabilities, rtol=1e-5, atol=1e-6)
    assert np.isclose(piped.probabilities[0], softmax(np.array([[2.0, -2.0, np.log(0.05)]]))[0, 0], rtol=0.05)
    (tmp_path / "folder.wav").mkdir()
    missing, folder = predict_files(model, [tmp_path / "nope.wav", tmp_path / "folder.wav"], batch_size=1)
    assert missing.error == f"{tmp_path / 'nope.wav'}: no such file"
    assert folder.error == f"{tmp_path / 'folder.wav'}: not a file"
    heavy = load_model(write_model(tmp_path / "heavy.onnx", macs=5 * 10**8))  # 4 windows per call by default
    calls = []
    real_run = heavy.run
    heavy.run = lambda batch: calls.append(len(batch)) or real_run(batch)
    list(predict_files(heavy, [tmp_path / "hi.wav"]))
    assert calls == [4, 1]
    calls.clear()
    list(predict_files(heavy, [tmp_path / "hi.wav"], window=1.0))  # 1e9 MACs per window: 2 per call
    assert calls == [2, 1]
    for size in (1, 4096):  # the bounds themselves are allowed
        assert next(predict_files(model, [tmp_path / "hi.wav"], batch_size=size)).error is None
    short = next(predict_files(model, [tmp_path / "hi.wav"], window=0.3, batch_size=8))
    assert short.window_seconds == 0.3 and short.to_dict()["windows"][0]["end"] == 0.3


def test_a_features_model_gets_the_normalised_numpy_frontend(tmp_path):
    from edgeasc.runtime.features import FeatureParams, perceptual_mel

    model = load_model(write_features_model(tmp_path / "f.onnx"))
    x = wav(tmp_path / "a.wav", 0.5, offset=0.0, seed=3)
    p = next(predict_files(model, [tmp_path / "a.wav"], batch_size=1))
    feats = perceptual_mel(x[None], FeatureParams(**PARAMS))
    norm = (feats - np.array(NORM["mean"])[:, None]) / np.array(NORM["std"])[:, None]
    want = softmax(np.array([[norm.mean(), -norm.mean(), norm.max()]]))
    assert np.allclose(p.window_probabilities, want, rtol=1e-4, atol=1e-6)


def test_long_files_stream_block_by_block_like_the_whole_file(model, tmp_path, monkeypatch):
    """Files longer than one read block (65,536 frames), at the model's rate and resampled,
    stereo into a mono model: the streamed windows are the whole-file path's; a bad sample in a
    later block, an empty file, one sample and three channels each get their own line."""
    import io
    import sys

    rng = np.random.default_rng(7)
    cases = {"same.wav": (8000, 1), "resampled.wav": (16000, 2)}
    for name, (rate, channels) in cases.items():
        x = (0.1 * rng.standard_normal((int(20.3 * rate), channels)) + 0.05).astype(np.float32)
        sf.write(str(tmp_path / name), x, rate, subtype="FLOAT")
    progressed = []
    streamed = list(predict_files(model, [tmp_path / n for n in cases], window=0.45, hop=0.35, batch_size=16,
                                  progress=progressed.append))
    assert progressed == [1, 1]
    for name, p in zip(cases, streamed, strict=True):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((tmp_path / name).read_bytes())))
        whole = next(predict_files(model, ["-"], window=0.45, hop=0.35, batch_size=16))
        assert p.error is None and p.starts == whole.starts and len(p.starts) == 58
        if name == "same.wav":  # no resampling on either path: the very same samples
            assert np.array_equal(p.window_probabilities, whole.window_probabilities)
        else:  # soxr streaming against soxr on the whole file
            assert np.allclose(p.window_probabilities, whole.window_probabilities, rtol=1e-5, atol=1e-7), name
    bad = np.full(100_000, 0.1, np.float32)
    bad[90_000] = np.nan  # in the second block
    sf.write(str(tmp_path / "nan.wav"), bad, RATE, subtype="FLOAT")
    sf.write(str(tmp_path / "one.wav"), np.full(1, 0.5, np.float32), RATE, subtype="FLOAT")
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, np.float32), RATE, subtype="FLOAT")
    sf.write(str(tmp_path / "three.wav"), np.full((100, 3), 0.1, np.float32), RATE, subtype="FLOAT")
    sf.write(str(tmp_path / "two.wav"), np.full((4000, 2), 0.1, np.float32), RATE, subtype="FLOAT")
    nan, one, empty, three, two = predict_files(model, [tmp_path / n for n in (
        "nan.wav", "one.wav", "empty.wav", "three.wav", "two.wav")], batch_size=1)
    assert nan.error == f"{tmp_path / 'nan.wav'}: 1 samples are NaN or infinite"
    assert one.error is None and one.starts == [0.0]
    assert empty.error == f"{tmp_path / 'empty.wav'}: the clip has no samples"
    assert three.error == f"{tmp_path / 'three.wav'}: 3 channels; edgeasc takes mono or stereo audio"
    assert two.error is None


def test_a_model_without_edgeasc_metadata_cannot_predict(tmp_path):
    path = write_model(tmp_path / "bare.onnx")
    proto = onnx.load(path)
    del proto.metadata_props[:]
    onnx.save(proto, path)
    from edgeasc.runtime.deployed import ModelError

    with pytest.raises(ModelError) as refused:
        next(predict_files(load_model(path), [tmp_path / "x.wav"]))
    assert str(refused.value) == (f"{path}: not an edgeasc export (predict needs the metadata edgeasc.labels, "
                                  "edgeasc.feature_params, edgeasc.input, edgeasc.channels; `edgeasc export` writes it)")


def test_a_hop_shorter_than_the_window(model, tmp_path):
    wav(tmp_path / "over.wav", 8010 / RATE)  # 10 samples past the second window: less than one STFT hop
    assert next(predict_files(model, [tmp_path / "over.wav"], batch_size=4)).starts == [0.0, 0.5]
    a = wav(tmp_path / "a.wav", 1.0, offset=0.3)
    p = next(predict_files(model, [tmp_path / "a.wav"], hop=0.2, batch_size=4))
    assert p.starts == [0.0, 0.2, 0.4, 0.5]  # 0.6 would run past the end: the last one ends at 1.0 instead
    want = softmax(np.stack([expected_logits(a[s:s + 4000]) for s in (0, 1600, 3200, 4000)]))
    assert np.allclose(p.window_probabilities, want, rtol=1e-5, atol=1e-7)


def test_top_k_breaks_ties_by_label_order():
    p = Prediction("f.wav", ["a", "b", "c"], 1.0, [0.0], 1.0, np.array([[0.2, 0.4, 0.4]]))
    assert p.top(3) == [("b", pytest.approx(0.4)), ("c", pytest.approx(0.4)), ("a", pytest.approx(0.2))]
    assert [t["label"] for t in p.to_dict(top_k=1)["top"]] == ["b"]
    many = [f"c{i:02d}" for i in range(60)]  # where numpy's default (quick)sort reorders ties
    tied = np.tile([0.1, 0.3, 0.2], 20)[None] / 12
    order = [label for label, _ in Prediction("f.wav", many, 1.0, [0.0], 1.0, tied).top(60)]
    assert order == many[1::3] + many[2::3] + many[0::3]


def test_softmax_is_stable_and_exact():
    logits = np.array([[1000.0, 1000.0, 999.0], [0.0, np.log(3.0), -np.inf]])
    p = softmax(logits)
    e = np.exp(-1.0)
    assert np.allclose(p[0], [1 / (2 + e), 1 / (2 + e), e / (2 + e)], rtol=1e-12)
    assert np.allclose(p[1], [0.25, 0.75, 0.0], rtol=1e-12)


def test_default_batch_follows_the_macs(tmp_path):
    def batch(macs, window=None):
        return default_batch(load_model(write_model(tmp_path / f"m{macs}.onnx", macs)), window)

    assert batch(None) == 1  # unknown cost: one window at a time
    assert batch(10**6) == 8 and batch(5 * 10**8) == 4 and batch(5 * 10**8, window=1.0) == 2
    assert batch(3 * 10**9) == 1  # never zero


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=0), "--batch must be between 1 and 4096, got 0"),
    (dict(batch_size=4097), "--batch must be between 1 and 4096, got 4097"),
    (dict(window=0.01), "--window must be between 0.016 s and 3600 s, got 0.01"),
    (dict(window=3601.0), "--window must be between 0.016 s and 3600 s, got 3601.0"),
    (dict(hop=0.6), "--hop must be between one feature frame (0.0080 s) and the window, got 0.6"),
    (dict(hop=0.001), "--hop must be between one feature frame (0.0080 s) and the window, got 0.001"),
    (dict(window=0.3, hop=0.4), "--hop must be between one feature frame (0.0080 s) and the window, got 0.4"),
])
def test_bad_windows_and_batches_are_refused_before_any_file_is_read(model, tmp_path, kwargs, message):
    with pytest.raises(ConfigError) as refused:
        next(predict_files(model, [tmp_path / "never-read.wav"], **kwargs))
    assert str(refused.value) == message


def test_the_window_and_hop_bounds_themselves_are_allowed(model, tmp_path):
    for kwargs in (dict(window=130 / RATE), dict(window=3600.0), dict(hop=64 / RATE), dict(hop=CLIP),
                   dict(window=0.3, hop=0.3)):
        assert next(predict_files(model, [tmp_path / "nope.wav"], **kwargs)).error.endswith("no such file")
    with pytest.raises(ConfigError):
        next(predict_files(model, [tmp_path / "nope.wav"], window=129 / RATE))  # n_fft / 2 + 1 samples: too short


def test_too_many_windows_is_that_files_error_on_either_path(model, tmp_path, monkeypatch):
    import io
    import sys

    n = 100_000 * 64 + 4000 + 64  # planned from the header: the file is never decoded
    sf.write(str(tmp_path / "long.wav"), np.zeros(n, np.float32), RATE, subtype="PCM_U8")
    message = "--hop 0.008 s cuts this 801-s recording into more than 100,000 windows; use a longer hop"
    p = next(predict_files(model, [tmp_path / "long.wav"], hop=0.008))
    assert p.error == f"{tmp_path / 'long.wav'}: {message}"
    # piped: read to its end for the length (its first 100,000 windows are classified on the way)
    sf.write(str(tmp_path / "long16.wav"), np.zeros(n, np.float32), RATE, subtype="PCM_16")  # 8-bit: not streamed
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((tmp_path / "long16.wav").read_bytes())))
    assert next(predict_files(model, ["-"], hop=0.008, batch_size=4096)).error == f"-: {message}"


def test_a_hop_that_cuts_too_many_windows_is_refused(model):
    n = 100_000 * 64 + 4000 + 64  # one more window than MAX_WINDOWS at the shortest hop
    with pytest.raises(ConfigError) as refused:
        plan_windows(model, "long.wav", n, hop=0.008)
    assert str(refused.value) == ("long.wav: --hop 0.008 s cuts this 801-s recording into more than 100,000 "
                                  "windows; use a longer hop")
    assert len(plan_windows(model, "ok.wav", n - 64, hop=0.008)[0]) == 100_001


def test_folders_expand_recursively_sorted_without_hidden_files(tmp_path):
    for name in ("b/2.wav", "a.flac", "b/1.WAV", ".hidden/x.wav", "b/.y.wav", "notes.txt"):
        (tmp_path / "d" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "d" / name).write_bytes(b"")
    found = expand_inputs([tmp_path / "first.wav", tmp_path / "d", "-", tmp_path / "single.wav"])
    assert [str(p) for p in found] == [str(tmp_path / "first.wav")] + [
        str(tmp_path / "d" / n) for n in ("a.flac", "b/1.WAV", "b/2.wav")] + [
        "-", str(tmp_path / "single.wav")]  # a named file is taken as given: reading it tells
    with pytest.raises(ConfigError, match=r"^'-' \(stdin\) can be given once$"):
        expand_inputs(["-", "-"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as refused:
        expand_inputs([tmp_path / "empty"])
    from edgeasc.data.dcase import AUDIO_SUFFIXES

    assert str(refused.value) == f"{tmp_path / 'empty'}: a folder with no audio files ({', '.join(AUDIO_SUFFIXES)})"


def test_a_folder_of_mp3_files_is_read_or_each_file_skipped_with_a_line(model, tmp_path, monkeypatch):
    """libsndfile >= 1.1 decodes MP3 (the wheels bundle 1.2): a folder's .mp3 files are classified
    like its WAVs. With an older library each .mp3 is named once on the skip line, never an error."""
    from edgeasc.runtime import audio as audio_module

    folder = tmp_path / "mixed"
    folder.mkdir()
    x = wav(folder / "a.wav", 0.5, offset=0.1)
    sf.write(str(folder / "b.mp3"), x, RATE, format="MP3", subtype="MPEG_LAYER_III")
    assert audio_module.MP3 and ".mp3" in audio_module.AUDIO_SUFFIXES
    lines = []
    found = expand_inputs([folder], skipped=lines.append)
    assert [p.name for p in found] == ["a.wav", "b.mp3"] and lines == []
    a, b = predict_files(model, found, progress=None)
    assert a.error is None and b.error is None
    assert b.top()[0][0] == a.top()[0][0]  # lossy, the same recording: the same decision
    decoded, _ = audio_module.load(folder / "b.mp3", RATE)
    assert decoded.shape[0] == 1 and abs(decoded.shape[1] - x.size) < 2 * 1152  # an MP3 frame of padding
    monkeypatch.setattr(audio_module, "MP3", False)
    monkeypatch.setattr(audio_module, "AUDIO_SUFFIXES", (".wav", ".flac", ".ogg"))
    assert expand_inputs([folder], skipped=lines.append) == [folder / "a.wav"]
    version = audio_module.sf.__libsndfile_version__
    assert lines == [f"{folder / 'b.mp3'}: skipped: libsndfile {version} cannot decode MP3 (1.1 or newer can)"]
