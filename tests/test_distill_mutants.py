"""The distillation ensemble pinned to exact numbers: the mean (not the sum) of 2 and 3
teachers' logits, cached (the stored .npy files, and the teachers run when they are missing)
and online (on the student's own batch, through each teacher's own normalisation); the
teacher-logit cache's key, its refusals and the KD option checks, each with its exact message."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from edgeasc.data.cache import FeatureCache
from edgeasc.errors import ConfigError
from edgeasc.train.distill import (
    Teacher,
    cached_logits,
    check_kd_options,
    compute_logits,
    ensemble_logits,
    logits_key,
    online_logits,
    to_teacher_input,
)

# three teachers' logits for the two training clips, 3 classes; sums divisible by 2 and 3 so
# that every mean is exact in float32
LOGITS = (np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32),
          np.array([[3.0, 0.0, -3.0], [2.0, 2.0, 2.0]], np.float32),
          np.array([[-1.0, 4.0, 0.0], [0.0, -1.0, 4.0]], np.float32))


class Affine(torch.nn.Module):
    """A teacher whose logits are scale * (its input's first mel row, first 3 frames) + bias:
    known exactly for known features."""

    def __init__(self, scale: float, bias: list[float]):
        super().__init__()
        self.config = SimpleNamespace(n_classes=3)
        self.scale = torch.nn.Parameter(torch.tensor(scale))
        self.bias = torch.nn.Parameter(torch.tensor(bias, dtype=torch.float32))

    def forward(self, x):
        return x[:, 0, 0, :3] * self.scale + self.bias


def _teacher(name, scale=1.0, bias=(0.0, 0.0, 0.0), mean=0.0, std=1.0):
    return Teacher(f"/runs/{name}/model-final.pt", name * 64, Affine(scale, list(bias)),
                   torch.full((1, 2, 1), mean), torch.full((1, 2, 1), std), None)


def _cache(tmp_path, features):
    """A real feature cache folder: train.npy (clips, 1, 2 mels, 4 frames) and its manifest."""
    directory = tmp_path / "features" / "0123456789abcdef"
    directory.mkdir(parents=True)
    np.save(directory / "train.npy", np.asarray(features, np.float32))
    manifest = {"params": {"n_mels": 2, "sample_rate": 16000}, "channels": 1, "frames": 4, "labels": ["a", "b", "c"],
                "splits": {"train": {"clips": [f"audio/{i}.wav" for i in range(len(features))],
                                     "labels": [0] * len(features), "devices": [None] * len(features)}}}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return FeatureCache(directory, manifest)


def _features(rows):
    """Features whose first mel row starts with `rows[i]` for clip i."""
    x = np.zeros((len(rows), 1, 2, 4), np.float32)
    x[:, 0, 0, :3] = rows
    x[:, 0, 1, :] = 7.0  # the other mel row: the teachers ignore it
    return x


def _store(cache, teacher, logits):
    path = cache.directory / "teachers" / f"{logits_key(teacher, cache, 'train')}.npy"
    path.parent.mkdir(exist_ok=True)
    np.save(path, logits)
    return path


# ----------------------------------------------------------------------------- cached targets
@pytest.mark.parametrize("n", [2, 3])
def test_cached_ensemble_is_the_exact_mean_of_the_stored_logits(tmp_path, n):
    cache = _cache(tmp_path, _features([[0, 0, 0], [0, 0, 0]]))
    teachers = [_teacher(str(i)) for i in range(n)]
    for t, logits in zip(teachers, LOGITS, strict=False):
        _store(cache, t, logits)
    mean, ran = ensemble_logits(teachers, cache)
    want = {2: [[2.0, 1.0, 0.0], [3.0, 3.5, 4.0]], 3: [[1.0, 2.0, 0.0], [2.0, 2.0, 4.0]]}[n]
    assert mean.dtype == np.float32 and mean.tolist() == want
    assert ran == 0  # every teacher came from the cache


def test_cached_ensemble_runs_the_missing_teachers_and_counts_them(tmp_path):
    # clip 0's first mel row is (1, 2, 3), clip 1's (-1, 0, 2)
    cache = _cache(tmp_path, _features([[1, 2, 3], [-1, 0, 2]]))
    stored = _teacher("s")
    _store(cache, stored, LOGITS[0])
    doubled = _teacher("d", scale=2.0, bias=(1.0, 0.0, -1.0))  # [[3, 4, 5], [-1, 0, 3]]
    negated = _teacher("n", scale=-1.0, bias=(2.0, 1.0, 0.0))  # [[1, -1, -3], [3, 1, -2]]
    mean, ran = ensemble_logits([stored, doubled, negated], cache)
    assert ran == 2
    # (1 + 3 + 1, 2 + 4 - 1, 3 + 5 - 3) / 3 and (4 - 1 + 3, 5 + 0 + 1, 6 + 3 - 2) / 3, rounded once
    assert mean.tolist() == np.float32([[5 / 3, 5 / 3, 5 / 3], [2.0, 2.0, 7 / 3]]).tolist()
    # the two that ran are stored now: a second ensemble runs nobody and gives the same numbers
    again, ran_again = ensemble_logits([stored, doubled, negated], cache)
    assert ran_again == 0 and np.array_equal(again, mean)
    assert sorted(p.name for p in (cache.directory / "teachers").iterdir()) == sorted(
        f"{logits_key(t, cache, 'train')}.npy" for t in (stored, doubled, negated))


def test_compute_logits_normalises_with_the_teachers_statistics_in_batches(tmp_path):
    # the teacher's normalisation: (x - 1) / 2
    cache = _cache(tmp_path, _features([[1, 3, 5], [3, 1, -1], [9, 7, 5]]))
    t = _teacher("t", mean=1.0, std=2.0)
    want = [[0.0, 1.0, 2.0], [1.0, 0.0, -1.0], [4.0, 3.0, 2.0]]
    for batch in (1, 2, 3, 64):
        logits = compute_logits(t, cache, "train", batch_size=batch)
        assert logits.dtype == np.float32 and logits.tolist() == want
    empty = _cache(tmp_path / "empty", np.zeros((0, 1, 2, 4), np.float32))
    none = compute_logits(t, empty, "train")
    assert none.shape == (0, 3) and none.dtype == np.float32


def test_stored_logits_of_the_wrong_shape_type_or_values_are_computed_again(tmp_path):
    cache = _cache(tmp_path, _features([[1, 2, 3], [4, 5, 6]]))
    t = _teacher("t")
    path = cache.directory / "teachers" / f"{logits_key(t, cache, 'train')}.npy"
    right = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    for bad in (np.zeros((2, 4), np.float32), np.zeros((3, 3), np.float32), np.zeros((2, 3), np.float64),
                np.array([[np.nan, 0, 0], [0, 0, 0]], np.float32), np.array([[np.inf, 0, 0], [0, 0, 0]], np.float32)):
        _store(cache, t, bad)
        logits, hit = cached_logits(t, cache)
        assert hit is False and logits.tolist() == right.tolist()
        assert np.load(path).tolist() == right.tolist() and np.load(path).dtype == np.float32
    logits, hit = cached_logits(t, cache)
    assert hit is True and logits.tolist() == right.tolist()
    path.write_bytes(b"not an npy file")
    assert cached_logits(t, cache)[1] is False


@pytest.mark.parametrize("computed", [np.zeros((2, 4), np.float32), np.array([[0, np.nan, 0], [0, 0, 0]]),
                                      np.array([[0, 0, 0], [0, 0, -np.inf]])])
def test_a_teacher_whose_logits_are_unusable_is_refused_and_nothing_is_stored(tmp_path, computed):
    cache = _cache(tmp_path, _features([[1, 2, 3], [4, 5, 6]]))
    t = _teacher("t")
    with pytest.raises(ConfigError) as refused:
        cached_logits(t, cache, compute=lambda *a: computed)
    assert str(refused.value) == ("--teacher /runs/t/model-final.pt outputs non-finite logits on the training clips "
                                  "(did its training diverge?)")
    assert not (cache.directory / "teachers").exists()


def test_the_logits_key_names_version_teacher_split_clips_and_features(tmp_path):
    import hashlib

    cache = _cache(tmp_path, _features([[1, 2, 3]]))
    t = _teacher("t")
    ident = {"version": 1, "teacher": "t" * 64, "split": "train", "clips": ["audio/0.wav"],
             "feature_params": {"n_mels": 2, "sample_rate": 16000}, "channels": 1}
    want = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]
    assert logits_key(t, cache, "train") == want and len(want) == 20


# ----------------------------------------------------------------------------- online targets
def test_online_ensemble_is_the_exact_mean_on_the_students_batch():
    # the student's features are normalised with mean 1, std 2: raw = 2 * x + 1
    x = torch.zeros(2, 1, 2, 4)
    x[:, 0, 0, :3] = torch.tensor([[0.0, 0.5, 1.0], [-1.0, 0.0, 1.5]])  # raw (1, 2, 3) and (-1, 1, 4)
    s_mean, s_std = torch.full((1, 2, 1), 1.0), torch.full((1, 2, 1), 2.0)
    plain = _teacher("p")                                              # [[1, 2, 3], [-1, 1, 4]]
    own = _teacher("o", scale=2.0, bias=(0.0, 1.0, 2.0), mean=1.0, std=0.5)  # raw - 1 over 0.5, then
    #                                                     2x + bias: [[0, 5, 10], [-8, 1, 14]]
    shifted = _teacher("s", bias=(3.0, -2.0, -1.0), mean=-1.0)         # raw + 1 + bias: [[5, 1, 3], [3, 0, 4]]
    two = online_logits([plain, own], x, s_mean, s_std)
    assert two.dtype == torch.float32 and two.tolist() == [[0.5, 3.5, 6.5], [-4.5, 1.0, 9.0]]
    three = online_logits([plain, own, shifted], x, s_mean, s_std)
    assert three.tolist() == np.float32([[2.0, 8 / 3, 16 / 3], [-2.0, 2 / 3, 22 / 3]]).tolist()
    assert online_logits([own], x, s_mean, s_std).tolist() == [[0.0, 5.0, 10.0], [-8.0, 1.0, 14.0]]
    assert not three.requires_grad  # no graph through the teachers


def test_teacher_input_is_the_raw_feature_in_the_teachers_normalisation():
    x = torch.tensor([[[[0.0, 1.0], [2.0, -1.0]]]])  # (1 clip, 1 channel, 2 mels, 2 frames)
    s_mean = torch.tensor([1.0, -1.0]).view(1, 2, 1)
    s_std = torch.tensor([2.0, 4.0]).view(1, 2, 1)
    t = Teacher("t", "0" * 64, Affine(1.0, [0, 0, 0]), torch.tensor([0.0, 1.0]).view(1, 2, 1),
                torch.tensor([0.5, 2.0]).view(1, 2, 1), None)
    # raw = x * s_std + s_mean: mel 0 (1, 3), mel 1 (7, -5); then (raw - t.mean) / t.std
    assert to_teacher_input(x, s_mean, s_std, t).tolist() == [[[[2.0, 6.0], [3.0, -3.0]]]]


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize("teachers, weight, temperature, targets, message", [
    (["t"], 1.5, None, None, "--kd-weight must be a number in [0, 1] (the share of the distillation loss), got 1.5"),
    (["t"], -0.1, None, None, "--kd-weight must be a number in [0, 1] (the share of the distillation loss), got -0.1"),
    (["t"], True, None, None, "--kd-weight must be a number in [0, 1] (the share of the distillation loss), got True"),
    (["t"], "0.5", None, None,
     "--kd-weight must be a number in [0, 1] (the share of the distillation loss), got '0.5'"),
    (["t"], float("nan"), None, None,
     "--kd-weight must be a number in [0, 1] (the share of the distillation loss), got nan"),
    (["t"], None, 0, None, "--kd-temperature must be a finite number > 0, got 0"),
    (["t"], None, -2.0, None, "--kd-temperature must be a finite number > 0, got -2.0"),
    (["t"], None, float("inf"), None, "--kd-temperature must be a finite number > 0, got inf"),
    (["t"], None, False, None, "--kd-temperature must be a finite number > 0, got False"),
    (["t"], None, "2", None, "--kd-temperature must be a finite number > 0, got '2'"),
    (["t"], None, None, "live", "--kd-targets must be one of cached, online, got 'live'"),
    ([], 0.5, None, None, "--kd-weight without --teacher: name the run(s) to distil from"),
    ([], None, 2.0, "online",
     "--kd-temperature, --kd-targets without --teacher: name the run(s) to distil from"),
    ([], 0.0, 1.0, "cached",
     "--kd-weight, --kd-temperature, --kd-targets without --teacher: name the run(s) to distil from"),
])
def test_bad_kd_options_are_refused_with_their_exact_message(teachers, weight, temperature, targets, message):
    with pytest.raises(ConfigError) as refused:
        check_kd_options(teachers, weight, temperature, targets)
    assert str(refused.value) == message


@pytest.mark.parametrize("weight, temperature, targets", [
    (0, None, None), (1, None, None), (0.0, 1e-6, "cached"), (1.0, 20, "online"), (None, None, None)])
def test_good_kd_options_pass(weight, temperature, targets):
    assert check_kd_options(["t"], weight, temperature, targets) is None
    assert check_kd_options([], None, None, None) is None


def test_computed_logits_are_stored_as_float32_and_the_device_is_passed_on(tmp_path, monkeypatch):
    import edgeasc.train.distill as distill

    cache = _cache(tmp_path, _features([[1, 2, 3], [4, 5, 6]]))
    t, seen = _teacher("t"), []
    device = torch.device("cpu")

    def in_float64(teacher, c, split, dev):  # a compute that hands back float64
        seen.append(dev)
        return compute_logits(teacher, c, split, dev).astype(np.float64) / 4

    logits, hit = cached_logits(t, cache, "train", device, compute=in_float64)
    assert hit is False and logits.dtype == np.float32 and logits.tolist() == [[0.25, 0.5, 0.75], [1.0, 1.25, 1.5]]
    assert cached_logits(t, cache, "train", device, compute=in_float64) == (pytest.approx(logits), True)
    assert seen == [device]  # the second call read the float32 file
    # the ensemble hands its device to every teacher that has to run
    monkeypatch.setattr(distill, "compute_logits", in_float64)
    mean, ran = ensemble_logits([_teacher("u"), _teacher("v")], cache, "train", device)
    assert ran == 2 and seen == [device, device, device] and mean.tolist() == logits.tolist()


def test_soft_targets_and_kd_loss_name_the_class_dimension():
    """Over classes (dim 1), stated: torch's implicit softmax dimension is deprecated and warns."""
    import warnings

    from edgeasc.train.distill import kd_loss, soft_targets

    logits = torch.tensor([[0.0, 2.0 * np.log(3.0)], [2.0 * np.log(4.0), 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = soft_targets(logits, 2.0)
        assert p.flatten().tolist() == pytest.approx([0.25, 0.75, 0.8, 0.2], abs=1e-7)
        assert float(kd_loss(logits, p, 2.0)) == pytest.approx(0.0, abs=1e-6)
