"""Training-time data: normalisation, time roll and mixup, deterministic under a seed."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import make_dcase
from edgeasc.data.cache import extract_features
from edgeasc.data.dcase import open_dataset
from edgeasc.data.loader import CachedFeatures, mixup, mixup_cross_entropy
from edgeasc.features import FeatureParams


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
