"""The feature cache: exact contents, reuse, invalidation, atomicity, and kill-and-restart."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import make_dcase, write_wav
from edgeasc.data.cache import extract_features, normalization_stats
from edgeasc.data.dcase import DatasetError, open_dataset
from edgeasc.runtime import audio
from edgeasc.runtime.features import FeatureParams, perceptual_mel


@pytest.fixture
def dataset(tmp_path):
    return open_dataset(make_dcase(tmp_path / "d", "dcase2020-1b", ("airport", "bus", "park")))


def test_cache_holds_exact_features_and_stats(dataset, tmp_path):
    params = FeatureParams(clip_seconds=1.0)
    cache, extracted = extract_features(dataset, params, workers=1, root=tmp_path / "c", progress=False)
    assert extracted
    train = cache.features("train")
    assert isinstance(train, np.memmap) and train.shape == (6, 2, 256, params.n_frames())
    clip = dataset.splits["train"][3]
    x, _ = audio.load(clip.path)
    expected = perceptual_mel(audio.fit_length(x, params.n_samples()), params)  # 0.5 s clip zero-padded to 1 s
    assert np.array_equal(train[3], expected)
    assert cache.labels("train").tolist() == [c.label for c in dataset.splits["train"]]
    assert cache.label_names == ["indoor", "outdoor", "transportation"]
    data = np.asarray(train, dtype=np.float64)
    assert np.allclose(cache.mean[0, :, 0], data.mean(axis=(0, 1, 3)), atol=1e-4)
    assert np.allclose(cache.std[0, :, 0], data.std(axis=(0, 1, 3)), atol=1e-4)
    assert cache.mean.shape == (1, 256, 1)
    assert cache.devices("evaluate") == ["a"] * 6


def test_parallel_equals_serial_and_second_run_is_a_noop(dataset, tmp_path):
    params = FeatureParams(clip_seconds=0.5)
    serial, _ = extract_features(dataset, params, workers=1, root=tmp_path / "s", progress=False)
    parallel, _ = extract_features(dataset, params, workers=2, root=tmp_path / "p", progress=False)
    for split in ("train", "evaluate"):
        assert np.array_equal(serial.features(split), parallel.features(split))
    stamp = (parallel.directory / "train.npy").stat().st_mtime_ns
    again, extracted = extract_features(dataset, params, workers=2, root=tmp_path / "p", progress=False)
    assert not extracted and again.directory == parallel.directory
    assert (again.directory / "train.npy").stat().st_mtime_ns == stamp


def test_by_default_one_worker_per_64_clips_up_to_the_cores(dataset, tmp_path, monkeypatch):
    from edgeasc.data import cache

    monkeypatch.setattr(cache, "default_workers", lambda: 8)
    assert [cache.extraction_workers(n) for n in (0, 1, 64, 65, 128, 129, 512, 513, 100_000)] == [1, 1, 1, 2, 2, 3,
                                                                                                    8, 8, 8]
    monkeypatch.setattr(cache, "default_workers", lambda: 2)
    assert cache.extraction_workers(100_000) == 2
    few, _ = extract_features(dataset, FeatureParams(clip_seconds=0.5), root=tmp_path / "c", progress=False)
    assert few.manifest["extraction"]["workers"] == 1  # a dozen clips: extracted in this process


def test_key_changes_with_parameters_and_files(dataset, tmp_path):
    root = tmp_path / "c"
    a, _ = extract_features(dataset, FeatureParams(clip_seconds=0.5), workers=1, root=root, progress=False)
    b, _ = extract_features(dataset, FeatureParams(clip_seconds=0.5, n_mels=128), workers=1, root=root, progress=False)
    c, _ = extract_features(dataset, FeatureParams(clip_seconds=0.5), channels=1, workers=1, root=root, progress=False)
    assert len({a.directory, b.directory, c.directory}) == 3
    assert b.features("train").shape[2] == 128 and c.features("train").shape[1] == 1
    write_wav(dataset.splits["train"][0].path, seconds=0.5, seed=99)  # the audio changed on disk
    d, extracted = extract_features(open_dataset(dataset.root), FeatureParams(clip_seconds=0.5), workers=1,
                                    root=root, progress=False)
    assert extracted and d.directory != a.directory


def test_a_kinds_revision_keys_its_caches_anew_and_only_its_own(dataset, monkeypatch):
    """The log-mel's numbers changed (float64 FFT) while its parameters did not: its caches are
    keyed anew, and perceptual caches keep the keys of version 1, computed here by hand."""
    import hashlib

    from edgeasc.data import cache
    from edgeasc.runtime.features import D24_PARAMS

    def version_1_key(params):
        h = hashlib.sha256(json.dumps({"v": 1, "params": params.to_dict(), "channels": 2,
                                       "labels": dataset.labels}, sort_keys=True).encode())
        for split in cache.SPLITS:
            for clip in dataset.splits[split]:
                st = clip.path.stat()
                h.update(f"{split}\0{clip.name}\0{clip.label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]

    perceptual = FeatureParams(clip_seconds=0.5)
    assert cache.cache_key(dataset, perceptual, 2) == version_1_key(perceptual)
    before = cache.cache_key(dataset, D24_PARAMS, 2)
    assert before != version_1_key(D24_PARAMS)  # a float32-era log-mel cache is not reused
    monkeypatch.setitem(cache.KIND_REVISION, "logmel", 3)
    assert cache.cache_key(dataset, D24_PARAMS, 2) != before
    assert cache.cache_key(dataset, perceptual, 2) == version_1_key(perceptual)


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_clip_names_the_file_and_leaves_no_cache(dataset, tmp_path, workers):
    bad = dataset.splits["evaluate"][2].path
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    root = tmp_path / "c"
    with pytest.raises(DatasetError, match=bad.name):
        extract_features(dataset, FeatureParams(clip_seconds=0.5), workers=workers, root=root, progress=False)
    leftovers = [p.name for p in root.rglob("*") if p.is_file()]
    assert "manifest.json" not in leftovers and not [n for n in leftovers if "partial" in n]


def test_all_nan_clip_is_refused(dataset, tmp_path):
    import soundfile as sf

    path = dataset.splits["train"][1].path
    sf.write(str(path), np.full((24000, 2), np.nan, np.float32), 48000, subtype="FLOAT")
    with pytest.raises(DatasetError, match="NaN"):
        extract_features(open_dataset(dataset.root), FeatureParams(clip_seconds=0.5), workers=1,
                         root=tmp_path / "c", progress=False)


def test_killed_extraction_restarts_cleanly(tmp_path):
    root = tmp_path / "big"
    for i in range(40):
        label = ("indoor", "outdoor")[i % 2]
        write_wav(root / label / f"{i}.wav", seconds=10.0, sr=48000, seed=i)
    cache_root = tmp_path / "cache"
    cmd = [sys.executable, "-m", "edgeasc", "features", str(root), "--cache-dir", str(cache_root),
           "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(cache_root.rglob("*.partial")):
        time.sleep(0.005)
    caught = bool(list(cache_root.rglob("*.partial")))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert caught, "extraction finished before it could be killed"
    assert not list(cache_root.rglob("manifest.json"))  # incomplete caches are never published
    done = subprocess.run([*cmd, "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["extracted"] and summary["splits"] == {"train": 32, "evaluate": 8}
    assert not list(cache_root.rglob("*.partial"))
    fresh, _ = extract_features(open_dataset(root), workers=1, root=tmp_path / "fresh", progress=False)
    restarted = np.load(f"{summary['cache']}/train.npy", mmap_mode="r")
    assert np.array_equal(restarted, fresh.features("train"))


def test_normalization_stats_pool_channels_and_frames():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(5, 2, 4, 50)).astype(np.float32)
    mean, std = normalization_stats(x, chunk=2)
    assert np.allclose(mean, x.astype(np.float64).mean(axis=(0, 1, 3)))
    assert np.allclose(std, x.astype(np.float64).std(axis=(0, 1, 3)))
