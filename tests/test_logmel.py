"""The DCASE 2024/25 organisers' log-mel (kind "logmel", `--frontend d24`): numpy and torch
against librosa 0.11 (<= 1e-4 in the log domain), its parameters travelling in checkpoints and
ONNX metadata, and a d24 run trained, exported (features-in and waveform-in) and predicted
from 44.1 kHz audio by the torch-free runtime, equal to the checkpoint's own torch path."""

import json

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import assert_one_line_error, run_cli_here, synthetic_scenes
from edgeasc.data.synth import mix_scene
from edgeasc.errors import ConfigError
from edgeasc.runtime import audio
from edgeasc.runtime.features import (
    D24_PARAMS,
    FeatureParams,
    compute_features,
    frontend_name,
    frontend_params,
    hz_to_mel,
    log_mel,
    mel_filterbank,
    mel_to_hz,
    perceptual_mel,
)
from edgeasc.runtime.metadata import MetadataError, parse_metadata
from edgeasc.train.frontend import LogMel, PerceptualMel, features_torch, frontend_module

pytestmark = pytest.mark.usefixtures("librosa_compiled")  # conftest: numba kernels compiled once

LEGACY = {"sample_rate": 22050, "n_fft": 2048, "hop_length": 512, "n_mels": 256, "fmin": 0.0, "fmax": 11025.0,
          "top_db": 80.0, "amin": 1e-10, "clip_seconds": 10.0}  # what edgeasc wrote before frontend kinds


def librosa_log_mel(y: np.ndarray) -> np.ndarray:
    """The organisers' frontend with librosa's equivalent settings, one channel at a time."""
    return np.stack([np.log(librosa.feature.melspectrogram(
        y=ch, sr=32000, n_fft=4096, hop_length=500, win_length=3072, window="hann", center=True,
        pad_mode="reflect", power=2.0, n_mels=256, fmin=0.0, fmax=16000.0, htk=True, norm=None) + 1e-5)
        for ch in y])


@pytest.fixture(scope="module")
def wav_32k(tmp_path_factory):
    """1 s of a synthetic street scene, 32 kHz stereo, written as real 24-bit WAV bytes."""
    path = tmp_path_factory.mktemp("logmel") / "street.wav"
    x = mix_scene(np.random.default_rng(7), "street_traffic", 32000, 32000, channels=2)
    sf.write(str(path), (0.5 * x / np.abs(x).max()).T, 32000, subtype="PCM_24")
    return path


def test_the_filterbank_and_mel_scale_are_librosas():
    ours = mel_filterbank.__wrapped__(32000, 4096, 256, 0.0, 16000.0, htk=True, norm=False)
    ref = librosa.filters.mel(sr=32000, n_fft=4096, n_mels=256, fmin=0.0, fmax=16000.0, htk=True, norm=None,
                              dtype=np.float64)
    assert ours.shape == (256, 2049) and np.allclose(ours, ref, rtol=0, atol=1e-12)
    assert ours.max() == pytest.approx(1.0, abs=0.02)  # peaks of 1: no area normalisation
    hz = np.linspace(0, 16000, 1001)
    assert np.allclose(hz_to_mel(hz, htk=True), librosa.hz_to_mel(hz, htk=True), rtol=1e-12, atol=0)
    assert np.allclose(mel_to_hz(hz_to_mel(hz, htk=True), htk=True), hz, rtol=1e-12, atol=1e-9)


def test_numpy_and_torch_match_librosa_on_a_32k_wav(wav_32k):
    x, sr = audio.load(wav_32k, 32000)
    assert sr == 32000 and x.shape == (2, 32000)
    ref = librosa_log_mel(x)
    ours = log_mel(x, D24_PARAMS)
    assert ours.shape == ref.shape == (2, 256, 65) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() <= 1e-5
    with torch.no_grad():
        theirs = features_torch(torch.from_numpy(x), D24_PARAMS).numpy()
    assert theirs.shape == (2, 256, 65)
    assert np.abs(theirs - ref).max() <= 1e-5
    # the dispatchers pick the kind: the same numbers by name, the perceptual frontend unchanged
    assert np.array_equal(compute_features(x, D24_PARAMS), ours)
    assert isinstance(frontend_module(D24_PARAMS), LogMel) and isinstance(frontend_module(), PerceptualMel)
    assert np.array_equal(compute_features(x, FeatureParams(clip_seconds=1.0)),
                          perceptual_mel(x, FeatureParams(clip_seconds=1.0)))


def test_without_scipy_numpys_fft_gives_the_same_features(wav_32k, monkeypatch):
    from edgeasc.runtime import features

    x, _ = audio.load(wav_32k, 32000)
    with_scipy = log_mel(x)
    monkeypatch.setattr(features, "_rfft", None)
    assert np.abs(log_mel(x) - with_scipy).max() <= 1e-5 and np.abs(log_mel(x) - librosa_log_mel(x)).max() <= 1e-5


def test_near_silent_bands_are_exact_too(tmp_path):
    """Noise falling 10x per 2 kHz: its bands sweep from 4e3 down to the log offset (1e-5). Both
    paths transform in float64 and round only the power (a float32 FFT, as torchaudio's, puts its
    rounding noise into the bands at the offset: 3.5e-4 here, up to ~1e-3): within 1e-5 of librosa
    everywhere, the silent bands included."""
    rng = np.random.default_rng(5)
    shaped = np.fft.irfft(np.fft.rfft(rng.standard_normal(32000)) * 10 ** (-np.fft.rfftfreq(32000, 1 / 32000) / 2000))
    sf.write(str(tmp_path / "dark.wav"), 0.5 * shaped / np.abs(shaped).max(), 32000, subtype="PCM_24")
    x, _ = audio.load(tmp_path / "dark.wav", 32000)
    ref = librosa_log_mel(x)
    assert np.exp(ref).min() < 1.01e-5 and np.exp(ref).max() > 1e3  # loud bands and silent ones
    with torch.no_grad():
        theirs = features_torch(torch.from_numpy(x), D24_PARAMS).numpy()
    for ours in (log_mel(x), theirs):
        assert np.abs(ours - ref).max() <= 1e-5


def test_one_second_is_65_frames_and_the_window_is_the_short_one():
    assert D24_PARAMS.n_samples() == 32000 and D24_PARAMS.n_frames() == 65 and D24_PARAMS.window_length == 3072
    x = np.random.default_rng(1).standard_normal(32000).astype(np.float32)
    # with a full 4096 window the spectra differ: the 3072 one is in use
    full = log_mel(x, FeatureParams(**{**D24_PARAMS.to_dict(), "win_length": None}))
    assert np.abs(full - log_mel(x)).max() > 0.1
    assert log_mel(np.zeros(32000, np.float32)).max() == pytest.approx(np.log(1e-5))  # silence: log(offset)


def test_parameters_travel_and_old_metadata_is_perceptual():
    assert FeatureParams().to_dict() == LEGACY  # a perceptual dict is exactly what edgeasc wrote before
    old = parse_metadata({"edgeasc.feature_params": json.dumps(LEGACY)})["feature_params"]
    assert FeatureParams(**old) == FeatureParams() and FeatureParams(**old).kind == "perceptual"
    d24 = D24_PARAMS.to_dict()
    assert d24["kind"] == "logmel" and d24["win_length"] == 3072 and d24["mel_scale"] == "htk"
    assert d24["resampler"] == "sinc" and "resampler" not in LEGACY  # soxr, the default, is left out
    assert "top_db" not in d24 and "amin" not in d24
    # a d24 file from before the resampler travelled was resampled by soxr, and still is
    older = parse_metadata({"edgeasc.feature_params": json.dumps({k: v for k, v in d24.items() if k != "resampler"})})
    assert FeatureParams(**older["feature_params"]).resampler == "soxr"
    with pytest.raises(MetadataError, match="resampler"):
        parse_metadata({"edgeasc.feature_params": json.dumps({**d24, "resampler": "sox"})})
    back = FeatureParams(**parse_metadata({"edgeasc.feature_params": json.dumps(d24)})["feature_params"])
    assert back == D24_PARAMS
    assert frontend_params("d24", 10.0).n_frames() == 641 and frontend_name(frontend_params("d24", 10.0)) == "d24"
    assert frontend_name(FeatureParams(clip_seconds=1.0)) == "perceptual"
    assert frontend_name(FeatureParams(**{**d24, "hop_length": 512})) is None
    with pytest.raises(ValueError, match="unknown frontend 'd25'"):
        frontend_params("d25")


@pytest.mark.parametrize("change, needle", [
    ({"fmin": 16000.0}, "needs fmin < fmax <= sample_rate / 2, got 16000, 16000, 32000"),
    ({"fmax": 16001.0}, "needs fmin < fmax <= sample_rate / 2, got 0, 16001, 32000"),
    ({"n_fft": 256, "win_length": 256, "hop_length": 128}, "256 mel bands from the 129 FFT bins of n_fft 256"),
    ({"win_length": 4097}, "win_length 4097 is longer than n_fft 4096"),
    ({"kind": "mfcc"}, "kind must be one of perceptual, logmel, got 'mfcc'"),
    ({"mel_scale": "bark"}, "mel_scale must be one of slaney, htk, got 'bark'"),
    ({"log_offset": 0}, "log_offset must be a finite number in (0, 1], got 0"),
    ({"kind": "perceptual"}, "win_length 3072 is a setting of kind logmel, not of kind perceptual"),
    ({"n_mels": 1024, "fmax": 2000.0}, "mel band 0 of 1024 (0.0-1.8 Hz) holds no FFT bin"),
])
def test_unbuildable_frontends_are_refused_in_one_line(change, needle):
    with pytest.raises(MetadataError) as info:
        parse_metadata({"edgeasc.feature_params": json.dumps({**D24_PARAMS.to_dict(), **change})}, "m.onnx")
    message = str(info.value)
    assert "\n" not in message and message.startswith("m.onnx: metadata edgeasc.feature_params: ")
    assert needle in message, message


# ----------------------------------------------------------------------------- a d24 run end to end
TINY = ["--preset", "demo", "--width", "4", "--seconds", "1", "--batch-size", "4", "--feature-workers", "1",
        "--lr", "3e-3", "--epochs", "2", "--prune-ratio", "0", "--frontend", "d24"]


@pytest.fixture(scope="module")
def d24_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("d24run")
    synthetic_scenes(tmp_path_factory, root / "scenes", seed=6)
    run = root / "run"
    proc = run_cli_here("train", str(root / "scenes"), *TINY, "--cache-dir", str(root / "cache"), "--out", str(run),
                        "--json")
    assert proc.returncode == 0, proc.stderr
    from edgeasc.export.pipeline import export_checkpoint

    export_checkpoint(run / "model-final.pt", root / "features.onnx")
    export_checkpoint(run / "model-final.pt", root / "waveform.onnx", with_frontend=True)
    return root


def test_the_run_stores_the_d24_frontend(d24_run):
    from edgeasc.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(d24_run / "run" / "model-final.pt")
    assert ckpt["feature_params"] == D24_PARAMS.to_dict() and ckpt["train_config"]["frontend"] == "d24"
    assert len(ckpt["normalization"]["mean"]) == 256
    cache = json.loads(next((d24_run / "cache" / "features").glob("*/manifest.json")).read_text())
    assert cache["frames"] == 65 and cache["params"] == D24_PARAMS.to_dict()
    for name, kind in (("features.onnx", "features"), ("waveform.onnx", "waveform")):
        from edgeasc.export.onnx import read_metadata

        meta = read_metadata(str(d24_run / name))
        assert meta["feature_params"] == D24_PARAMS.to_dict() and meta["input"]["name"] == kind
    proc = run_cli_here("info", str(d24_run / "waveform.onnx"))
    assert proc.returncode == 0, proc.stderr
    assert "logmel, 32000 Hz, n_fft 4096 (window 3072), hop 500, 256 mels" in " ".join(proc.stdout.split())


def test_predict_on_44k_audio_equals_the_checkpoint(d24_run, tmp_path):
    """The torch-free runtime (torchaudio's sinc filter to 32 kHz, as the d24 frontend names it;
    the numpy log-mel or the graph's) against the checkpoint's torch path (the same decoding and
    resampling, the torch log-mel, the network): <= 1e-4. Through soxr the answer would differ."""
    from edgeasc.runtime.sinc import resample_sinc
    from edgeasc.train.checkpoint import load_checkpoint, model_from_checkpoint

    wav = tmp_path / "scene-44k.wav"
    x = mix_scene(np.random.default_rng(11), "street_traffic", 44100, 44100, channels=2)
    sf.write(str(wav), (0.4 * x / np.abs(x).max()).T, 44100, subtype="PCM_16")
    ckpt = load_checkpoint(d24_run / "run" / "model-final.pt")
    assert ckpt["feature_params"]["resampler"] == "sinc"
    model = model_from_checkpoint(ckpt).eval()
    y, sr = audio.load(wav, 32000, channels=ckpt["channels"], resampler="sinc")
    decoded, _ = audio.decode(str(wav))
    assert np.array_equal(y, resample_sinc(decoded, 44100, 32000))  # 44,100 samples: torchaudio's length
    assert sr == 32000 and y.shape == (ckpt["channels"], 32000)
    mean, std = (np.asarray(ckpt["normalization"][k], np.float32)[:, None] for k in ("mean", "std"))

    def probabilities(samples):
        with torch.no_grad():
            feats = (features_torch(torch.from_numpy(audio.fit_length(samples, 32000)), D24_PARAMS).numpy()
                     - mean) / std
            return torch.softmax(model(torch.from_numpy(feats[None].astype(np.float32))), -1).numpy()[0]

    want = probabilities(y)
    # what predict classifies, whole file and streamed, is torchaudio's filter's output, not soxr's
    from edgeasc.runtime.deployed import load_model
    from edgeasc.runtime.recording import recording_windows, stream_windows

    deployed = load_model(d24_run / "features.onnx")
    whole = recording_windows(deployed, wav)[0]
    streamed = np.concatenate(list(stream_windows(deployed, wav).windows()), axis=1)
    assert np.array_equal(whole, audio.fit_length(y, whole.shape[-1])) and np.array_equal(streamed, whole)
    assert np.abs(audio.load(wav, 32000, channels=ckpt["channels"])[0] - y).max() > 1e-3  # soxr's differs
    for name in ("features.onnx", "waveform.onnx"):
        proc = run_cli_here("predict", str(d24_run / name), str(wav), "--json")
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)[0]["probabilities"]
        assert np.abs(np.array([got[label] for label in ckpt["labels"]]) - want).max() <= 1e-4, name


def test_frontend_flag_toml_and_resume_refusals(d24_run, tmp_path):
    from edgeasc.train.config import resolve_train_config

    toml = tmp_path / "d24.toml"
    toml.write_text('frontend = "d24"\n')
    assert resolve_train_config({}, toml).frontend == "d24"
    assert resolve_train_config({}).frontend == "perceptual"
    with pytest.raises(ConfigError, match="--frontend must be one of perceptual, d24, got 'd25'"):
        resolve_train_config({"frontend": "d25"})
    proc = run_cli_here("train", "--frontend", "mfcc", "--out", str(tmp_path / "x"))
    assert_one_line_error(proc, 2, "--frontend must be one of perceptual, d24, got 'mfcc'")
    # a d24 run resumed without --frontend d24 would train on other features: refused
    args = [a for a in TINY if a not in ("--frontend", "d24")]
    proc = run_cli_here("train", str(d24_run / "scenes"), *args, "--epochs", "3", "--cache-dir",
                        str(d24_run / "cache"), "--out", str(d24_run / "run"), "--resume")
    assert_one_line_error(proc, 2, "was trained with the d24 frontend: resume it with --frontend d24")
