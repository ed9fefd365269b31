"""Training-time data: normalisation, time roll and mixup, deterministic under a seed."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import make_dcase
from edgeasc.data.cache import extract_features
from edgeasc.data.dcase import open_dataset
from edgeasc.data.loader import CachedFeatures, mixup, mixup_cross_entropy
from edgeasc.runtime.features import FeatureParams


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    ds = open_dataset(make_dcase(root / "d", "dcase2018", ("airport", "bus", "park", "tram")))
    return extract_features(ds, FeatureParams(clip_seconds=2.0), workers=1, root=root / "c", progress=False)[0]


def test_items_are_normalised_features(cache):
    ds = CachedFeatures(cache, "evaluate", train=False)
    x, y = ds[3]
    raw = np.asarray(cache.features("evaluate")[3])
    assert torch.allclose(x, torch.from_numpy((raw - cache.mean) / cache.std))
    assert y == int(cache.labels("evaluate")[3]) and x.dtype == torch.float32


def test_roll_is_circular_bounded_and_seeded(cache):
    plain = CachedFeatures(cache, "train", train=False)
    rolled = CachedFeatures(cache, "train", train=True, seed=5)
    shifts = set()
    for i in range(len(plain)):
        a, b = plain[i][0].numpy(), rolled[i][0].numpy()
        shift = next(s for s in range(-50, 51) if np.array_equal(np.roll(a, s, axis=-1), b))
        shifts.add(shift)
    assert len(shifts) > 1
    again = CachedFeatures(cache, "train", train=True, seed=5)
    assert all(torch.equal(rolled[i][0], again[i][0]) for i in range(len(again)))
    again.set_epoch(1)
    assert any(not torch.equal(rolled[i][0], again[i][0]) for i in range(len(again)))


def test_dataloader_workers_do_not_change_the_data(cache):
    ds = CachedFeatures(cache, "train", train=True, seed=1)
    serial = [x for x, _ in DataLoader(ds, batch_size=3, num_workers=0)]
    parallel = [x for x, _ in DataLoader(ds, batch_size=3, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel, strict=True))


def test_mixup():
    x = torch.arange(6 * 4, dtype=torch.float32).view(6, 1, 2, 2)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    mixed, ya, yb, lam = mixup(x, y, np.random.default_rng(0), alpha=0.3)
    assert torch.all(lam >= 0.5) and torch.all(lam <= 1.0)
    assert torch.equal(ya, y)
    perm = [int((yb == yb[i]).nonzero()[0]) for i in range(6)]  # partner labels come from y
    assert all(int(yb[i]) in y.tolist() for i in perm)
    m2, _, yb2, lam2 = mixup(x, y, np.random.default_rng(0), alpha=0.3)
    assert torch.equal(mixed, m2) and torch.equal(yb, yb2) and torch.equal(lam, lam2)
    logits = torch.randn(6, 3)
    ce = torch.nn.functional.cross_entropy
    manual = torch.stack([lam[i] * ce(logits[i:i + 1], ya[i:i + 1]) + (1 - lam[i]) * ce(logits[i:i + 1], yb[i:i + 1])
                          for i in range(6)]).mean()
    assert torch.allclose(mixup_cross_entropy(logits, ya, yb, lam), manual)


# ----------------------------------------------------------------------------- Freq-MixStyle
def test_freq_mixstyle_mixes_per_band_statistics_without_their_gradient():
    from edgeasc.data.loader import freq_mixstyle

    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(6, 2, 8, 30, generator=gen) * torch.linspace(0.5, 3, 8).view(1, 1, 8, 1)
         + torch.arange(6.0).view(6, 1, 1, 1)).requires_grad_()
    rng = np.random.default_rng(7)
    out = freq_mixstyle(x, rng, p=1.0, alpha=0.3)
    # the same draws by hand: the coin, then λ, then the partner permutation
    twin = np.random.default_rng(7)
    assert twin.random() < 1.0
    lam = torch.tensor(twin.beta(0.3, 0.3, size=6), dtype=x.dtype).view(6, 1, 1, 1)
    perm = torch.from_numpy(twin.permutation(6))
    mu = x.detach().mean(dim=(1, 3), keepdim=True)
    sig = (x.detach().var(dim=(1, 3), keepdim=True) + 1e-6).sqrt()
    mu_mix, sig_mix = lam * mu + (1 - lam) * mu[perm], lam * sig + (1 - lam) * sig[perm]
    torch.testing.assert_close(out.detach().mean(dim=(1, 3), keepdim=True), mu_mix, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.detach().std(dim=(1, 3), keepdim=True), sig_mix, rtol=1e-3, atol=1e-4)
    out.sum().backward()  # statistics detached: d out / d x = sig_mix / sig, elementwise
    torch.testing.assert_close(x.grad, (sig_mix / sig).expand_as(x), rtol=1e-5, atol=1e-6)
    again = freq_mixstyle(x.detach(), np.random.default_rng(7), p=1.0, alpha=0.3)
    assert torch.equal(again, out.detach())  # deterministic under the seed
    assert freq_mixstyle(x, np.random.default_rng(7), p=0.0, alpha=0.3) is x


def test_freq_mixstyle_settings_are_checked():
    from edgeasc.data.loader import parse_freq_mixstyle
    from edgeasc.errors import ConfigError

    assert parse_freq_mixstyle("0.4,0.3") == (0.4, 0.3) and parse_freq_mixstyle(None) is None
    for bad in ("0.4", "1.5,0.3", "0.4,0", "nan,1", "a,b"):
        with pytest.raises(ConfigError, match="--freq-mixstyle"):
            parse_freq_mixstyle(bad)


def test_evaluation_reports_seen_and_unseen_devices_apart(tmp_path):
    """Per-device accuracy, marked seen (in the model's training data) or unseen, and the mean
    accuracy over each group, as DCASE 2022+ reports them."""
    from edgeasc.models import ModelConfig, build_model
    from edgeasc.train.evaluate import evaluate

    ds = open_dataset(make_dcase(tmp_path / "d", "tau2020-mobile"))
    cache = extract_features(ds, FeatureParams(clip_seconds=0.5), workers=1, root=tmp_path / "c", progress=False)[0]
    torch.manual_seed(0)
    model = build_model(ModelConfig(width=4, n_classes=3))
    default = evaluate(model, cache)
    train_devices = {d for d in cache.devices("train") if d}
    assert set(default.seen_devices) == set(default.per_device) & train_devices
    assert set(default.unseen_devices) == set(default.per_device) - train_devices
    r = evaluate(model, cache, seen_devices=["a"])
    assert r.seen_devices == ["a"] and sorted(r.unseen_devices) == sorted(set(r.per_device) - {"a"})
    assert r.seen_accuracy == r.per_device["a"]
    assert r.unseen_accuracy == pytest.approx(np.mean([r.per_device[d] for d in r.unseen_devices]))
    none_seen = evaluate(model, cache, seen_devices=[])
    assert none_seen.seen_accuracy is None and none_seen.unseen_accuracy is not None
    # by default "seen" means this cache's training split: a training set recorded on device a only
    train_split = {**cache.manifest["splits"]["train"], "devices": ["a"] * len(cache.clips("train"))}
    cache.manifest = {**cache.manifest, "splits": {**cache.manifest["splits"], "train": train_split}}
    only_a = evaluate(model, cache)
    assert only_a.seen_devices == ["a"] and only_a.unseen_devices and "a" not in only_a.unseen_devices
