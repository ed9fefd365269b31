"""Device impulse-response augmentation (--dir-folder, data/impulse.py): the convolution against
numpy's, which clips it touches (reference device only, probability p, seeded), the features
through the run's torch frontend, bad response folders in one line, and a tiny run on the TAU
2022 layout that records its settings."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import assert_one_line_error, make_dcase, run_cli_here, write_wav
from edgeasc.data.cache import extract_features
from edgeasc.data.dcase import DatasetError, open_dataset
from edgeasc.data.impulse import (
    ImpulseResponseFeatures,
    check_devices,
    convolve_ir,
    load_impulse_responses,
)
from edgeasc.runtime.features import FeatureParams, frontend_params
from edgeasc.train.frontend import frontend_module

FIR = np.array([0.5, -0.25, 0.125], dtype=np.float32)


def write_ir(path, samples, sr=32000, subtype="FLOAT"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(samples, dtype=np.float32), sr, subtype=subtype)
    return path


# ----------------------------------------------------------------------------- the convolution
def test_a_delta_response_leaves_the_clip_unchanged_and_a_delay_shifts_it():
    x = np.random.default_rng(0).standard_normal((2, 1000)).astype(np.float32)
    assert np.array_equal(convolve_ir(x, np.array([1.0], dtype=np.float32)), x)
    delayed = convolve_ir(x, np.array([0.0, 0.0, 1.0], dtype=np.float32))
    assert delayed.shape == x.shape and delayed.dtype == np.float32
    np.testing.assert_allclose(delayed, np.concatenate([np.zeros((2, 2), np.float32), x[:, :-2]], axis=1),
                               atol=1e-6)  # aligned to the clip's start, the tail cut


def test_a_known_fir_gives_numpys_convolution_cut_to_the_clip():
    assert convolve_ir(np.array([[1.0, 2.0, 3.0, 4.0]], np.float32), FIR).tolist() == [[0.5, 0.75, 1.125, 1.5]]
    x = np.random.default_rng(1).standard_normal((1, 777)).astype(np.float32)
    ir = np.random.default_rng(2).standard_normal(300).astype(np.float32)
    np.testing.assert_allclose(convolve_ir(x, ir)[0], np.convolve(x[0], ir)[:777], atol=2e-5)


# ----------------------------------------------------------------------------- the training items
@pytest.fixture(scope="module")
def tau22(tmp_path_factory):
    root = tmp_path_factory.mktemp("dir")
    data = make_dcase(root / "tau22", "tau2022-mobile", seconds=1.0)
    cache, _ = extract_features(open_dataset(data), frontend_params("perceptual", 1.0), workers=1,
                                root=root / "cache", progress=False)
    irs = root / "irs"
    write_ir(irs / "fir.wav", FIR, sr=22050)
    write_ir(irs / "sub" / "echo.wav", [1.0] + [0.0] * 99 + [0.7], sr=22050)
    return root, data, cache, irs


def items(cache, irs, p, seed=0, epoch=0):
    params = FeatureParams(**cache.manifest["params"])
    ds = ImpulseResponseFeatures(cache, frontend_module(params), load_impulse_responses(irs, params.sample_rate),
                                 p, roll=0, seed=seed)
    ds.set_epoch(epoch)
    return ds


def test_the_responses_are_read_sorted_at_the_run_rate(tau22):
    _, _, _, irs = tau22
    names = [n for n, _ in load_impulse_responses(irs, 22050)]
    assert names == ["fir.wav", "sub/echo.wav"]
    fir = load_impulse_responses(irs, 22050)[0][1]
    np.testing.assert_array_equal(fir, FIR)  # at its own rate: not resampled


def test_only_reference_device_clips_are_convolved(tau22):
    _, _, cache, irs = tau22
    devices = cache.devices("train")
    assert sorted(set(devices)) == ["a", "b", "s1"]  # the batch mixes devices
    plain, every = items(cache, irs, 0.0), items(cache, irs, 1.0)
    for i, device in enumerate(devices):
        x0, x1 = plain[i][0], every[i][0]
        if device == "a":
            k = every.choice(i)
            assert k is not None
            raw = plain.waveform(i)
            want = frontend_module(FeatureParams(**cache.manifest["params"]))(
                torch.from_numpy(convolve_ir(raw, every.responses[k][1]))[None])[0]
            assert torch.equal(x1, torch.from_numpy((want.detach().numpy() - cache.mean) / cache.std))
            assert not torch.equal(x0, x1)
        else:
            assert every.choice(i) is None and torch.equal(x0, x1)


def test_p_zero_changes_nothing_and_the_torch_path_matches_the_cache(tau22):
    _, _, cache, irs = tau22
    ds = items(cache, irs, 0.0)
    cached = cache.features("train")
    for i in range(len(ds)):
        assert ds.choice(i) is None
        assert np.array_equal(ds.waveform(i), plain_waveform(ds, i))
        np.testing.assert_allclose(ds[i][0].numpy(), (cached[i] - cache.mean) / cache.std, atol=2e-3)


def plain_waveform(ds, i):
    from edgeasc.runtime.audio import fit_length, load

    return fit_length(load(ds.paths[i], ds.sample_rate, channels=ds.channels, resampler=ds.resampler)[0],
                      ds.n_samples)


def test_choices_are_seeded_and_follow_p(tau22):
    _, _, cache, irs = tau22
    refs = [i for i, d in enumerate(cache.devices("train")) if d == "a"]

    def plan(p, seed):
        out, ds = [], items(cache, irs, p, seed=seed)
        for epoch in range(60):
            ds.set_epoch(epoch)
            out += [ds.choice(i) for i in refs]
        return out

    first = plan(0.5, 0)
    assert first == plan(0.5, 0)              # same seed, same choices
    assert first != plan(0.5, 1)
    hits = [k for k in first if k is not None]
    assert len(hits) == 61 and len(first) == 120  # pinned: about p of the reference clips
    assert set(hits) == {0, 1}                     # both responses are drawn
    assert all(k is None for k in plan(0.0, 0))
    assert all(k is not None for k in plan(1.0, 0))


# ----------------------------------------------------------------------------- bad folders
def test_bad_response_folders_are_one_line(tmp_path, monkeypatch):
    cases = {}
    cases["missing"] = (tmp_path / "nope", "no such folder")
    (tmp_path / "empty").mkdir()
    cases["empty"] = (tmp_path / "empty", "the folder is empty")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "readme.txt").write_text("MicIRP")
    cases["no audio"] = (tmp_path / "text", "no audio files")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "ir.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    cases["unreadable"] = (tmp_path / "junk", "cannot read audio")
    write_ir(tmp_path / "nan" / "ir.wav", [1.0, np.nan, 0.5])
    cases["non-finite"] = (tmp_path / "nan", "NaN or infinite")
    write_ir(tmp_path / "zero" / "ir.wav", [0.0] * 10)
    cases["silent"] = (tmp_path / "zero", "is silent")
    write_wav(tmp_path / "long" / "hours.wav", seconds=3.0, sr=8000, channels=1)
    cases["too long"] = (tmp_path / "long", "3 s long; an impulse response for --dir-folder is at most 2 s")
    import edgeasc.data.impulse as impulse

    real_load = impulse.load
    monkeypatch.setattr(impulse, "load", lambda p, *a, **k: (_ for _ in ()).throw(AssertionError(f"read {p}"))
                        if "hours" in str(p) else real_load(p, *a, **k))  # judged from the header alone
    for what, (folder, needle) in cases.items():
        with pytest.raises(DatasetError) as exc:
            load_impulse_responses(folder, 22050)
        assert needle in str(exc.value) and "\n" not in str(exc.value), (what, str(exc.value))


def test_a_training_set_without_devices_is_refused():
    with pytest.raises(DatasetError, match="has no device information"):
        check_devices([None, None], "/irs")
    with pytest.raises(DatasetError, match=r"no training clip of the reference device 'a' \(devices: b, s1\)"):
        check_devices(["b", "s1", None], "/irs")
    check_devices(["b", "a"], "/irs")


# ----------------------------------------------------------------------------- a run
TINY = ["--preset", "demo", "--width", "4", "--seconds", "1", "--batch-size", "4", "--feature-workers", "1",
        "--prune-ratio", "0", "--prune-epochs", "0", "--epochs", "1"]


def test_a_run_with_dir_records_it_and_a_bad_folder_is_one_line(tau22):
    root, data, _, irs = tau22
    out = root / "run"
    # in a DataLoader worker process: the dataset and its frontend travel there
    proc = run_cli_here("train", str(data), *TINY, "--cache-dir", str(root / "cache"), "--out", str(out),
                        "--dir-folder", str(irs), "--dir-p", "1", "--workers", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["dir_folder"] == str(irs) and config["train"]["dir_p"] == 1.0
    assert config["augmentation"]["dir"] == {"folder": str(irs), "reference_device": "a", "p": 1.0,
                                             "responses": ["fir.wav", "sub/echo.wav"]}
    summary = json.loads(proc.stdout)
    assert summary["augmentation"]["dir"]["responses"] == ["fir.wav", "sub/echo.wav"]
    # the same run with p = 0 trains on other inputs: the convolved clips reached the network
    off = run_cli_here("train", str(data), *TINY, "--cache-dir", str(root / "cache"), "--out", str(root / "off"),
                       "--dir-folder", str(irs), "--dir-p", "0", "--json")
    assert off.returncode == 0, off.stderr
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    history_off = [json.loads(line) for line in (root / "off" / "metrics.jsonl").read_text().splitlines()]
    assert history[0]["train_loss"] != history_off[0]["train_loss"]
    bad = run_cli_here("train", str(data), *TINY, "--cache-dir", str(root / "cache"), "--out", str(root / "bad"),
                       "--dir-folder", str(root / "missing"))
    assert_one_line_error(bad, 2, "missing: no such folder")
    assert not (root / "bad").exists()
    idle = run_cli_here("train", str(data), *TINY, "--out", str(root / "idle"), "--dir-p", "0.3")
    assert_one_line_error(idle, 2, "--dir-p does nothing without --dir-folder")


def test_toml_keys_and_bad_values(tmp_path, monkeypatch):
    from edgeasc.errors import ConfigError
    from edgeasc.train.config import resolve_train_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.toml").write_text('[train]\ndir-folder = "irs"\ndir_p = 0.25\n')
    cfg = resolve_train_config({"dataset": "/data/tau22"}, tmp_path / "run.toml")
    assert (cfg.dir_folder, cfg.dir_p) == (str(tmp_path / "irs"), 0.25)  # absolute: checkpoints keep it
    with pytest.raises(ConfigError, match=r"^--dir-p must be a finite number in \[0, 1\], got 1.5$"):
        resolve_train_config({"dataset": "/data/tau22", "dir_folder": "irs", "dir_p": 1.5})


# ----------------------------------------------------------------------------- round 4 mutants
def test_dir_items_keep_the_time_roll_the_targets_and_float32(tau22):
    """An item under DIR is an item of CachedFeatures: the same roll draw, label and teacher
    targets, float32 (a clip of device b: never convolved, so only the frontends differ)."""
    from edgeasc.data.loader import CachedFeatures

    _, _, cache, irs = tau22
    params = FeatureParams(**cache.manifest["params"])
    targets = np.arange(len(cache.devices("train")) * 3, dtype=np.float32).reshape(-1, 3)
    dir_items = ImpulseResponseFeatures(cache, frontend_module(params), load_impulse_responses(irs, 22050), 1.0,
                                        roll=5, seed=3, targets=targets)
    cached = CachedFeatures(cache, "train", train=True, roll=5, seed=3, targets=targets)
    i = cache.devices("train").index("b")
    for epoch in (0, 1, 2):
        dir_items.set_epoch(epoch)
        cached.set_epoch(epoch)
        (x, y, t), (cx, cy, ct) = dir_items[i], cached[i]
        assert x.dtype == torch.float32 and int(y) == int(cy) and torch.equal(t, ct) and t.tolist() == targets[i].tolist()
        np.testing.assert_allclose(x.numpy(), cx.numpy(), atol=2e-3)  # rolled by the same draw
    assert not np.allclose(dir_items[i][0].numpy(), cache.features("train")[i], atol=1e-1)  # it is rolled


def test_response_files_at_the_limits_and_in_stereo(tmp_path):
    write_ir(tmp_path / "ok" / "delta.wav", [1.0], sr=16000)                    # one sample: a delta
    write_ir(tmp_path / "ok" / "long.wav", [0.5] + [0.0] * 31_999, sr=16000)     # exactly 2 s: allowed
    stereo = np.stack([FIR, -FIR / 2], axis=1)
    sf.write(str(tmp_path / "ok" / "stereo.wav"), stereo, 32000, subtype="FLOAT")
    got = dict(load_impulse_responses(tmp_path / "ok", 32000))
    assert sorted(got) == ["delta.wav", "long.wav", "stereo.wav"]
    assert got["delta.wav"].shape == (2,)                      # resampled 16 kHz -> 32 kHz, one channel
    assert got["long.wav"].shape == (64_000,)
    np.testing.assert_allclose(got["stereo.wav"], FIR / 4, atol=1e-7)  # the channels' mean, at its own rate


def test_response_folder_messages_are_exact(tmp_path):
    def message(folder):
        with pytest.raises(DatasetError) as exc:
            load_impulse_responses(folder, 22050)
        return str(exc.value)

    (tmp_path / "file.wav").write_bytes(b"")
    assert message(tmp_path / "file.wav") == f"{tmp_path / 'file.wav'}: not a folder (--dir-folder)"
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    from edgeasc.runtime.audio import AUDIO_SUFFIXES

    suffixes = ".wav, .flac, .ogg, .mp3" if ".mp3" in AUDIO_SUFFIXES else ".wav, .flac, .ogg"
    assert message(tmp_path / "text") == f"{tmp_path / 'text'}: no audio files ({suffixes}) among its 1 file(s)"
    write_ir(tmp_path / "none" / "ir.wav", np.zeros(0, np.float32))
    assert message(tmp_path / "none") == f"{tmp_path / 'none' / 'ir.wav'}: holds no audio (an impulse response for --dir-folder)"
    with pytest.raises(DatasetError) as exc:
        check_devices([None], "/irs")
    assert str(exc.value).endswith("a DCASE Mobile layout or DCASE-style file names)")


def test_the_fft_is_long_enough_when_the_full_convolution_is_one_past_a_power_of_two():
    # 1,000 + 26 - 1 = 1,025 samples of full convolution: an FFT of 1,024 would wrap the last one
    # onto the first
    x = np.random.default_rng(3).standard_normal((1, 1000)).astype(np.float32)
    ir = np.random.default_rng(4).standard_normal(26).astype(np.float32)
    np.testing.assert_allclose(convolve_ir(x, ir)[0], np.convolve(x[0], ir)[:1000], atol=2e-5)


def test_dir_waveforms_are_read_at_the_run_rate_of_a_d24_cache(tau22, tmp_path):
    root, data, _, irs = tau22
    cache, _ = extract_features(open_dataset(data), frontend_params("d24", 1.0), workers=1, root=tmp_path,
                                progress=False)
    params = FeatureParams(**cache.manifest["params"])
    assert params.sample_rate == 32000 and params.resampler == "sinc"
    ds = ImpulseResponseFeatures(cache, frontend_module(params), load_impulse_responses(irs, 32000), 0.0, roll=0)
    x = ds.waveform(0)
    assert x.shape == (1, 32000) and np.array_equal(x, plain_waveform(ds, 0))
    from edgeasc.runtime.audio import fit_length, load  # as the cache was extracted: sinc, not soxr

    assert not np.array_equal(x, fit_length(load(ds.paths[0], 32000, channels=ds.channels)[0], 32000))
