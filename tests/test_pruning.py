"""Magnitude pruning to an exact target (docs/method.md §3)."""

import math

import pytest
import torch

from edgeasc.compress.pruning import Pruner, ramp
from edgeasc.errors import ConfigError
from edgeasc.models import ModelConfig, build_model, get_preset
from edgeasc.models.complexity import count_nonzero, count_params
from edgeasc.models.layers import Conv2d


def _dense(config):
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()  # no fixup zeros: every weight is a candidate
    return model


def test_ramps():
    assert ramp("exp", 0, 100) == 0.0 and ramp("exp", 100, 100) == 1.0 and ramp("exp", 250, 100) == 1.0
    assert ramp("exp", 50, 100) == pytest.approx((1 - math.exp(-2.5)) / (1 - math.exp(-5)))
    assert ramp("exp", 10, 100) > ramp("linear", 10, 100)  # front-loaded
    assert ramp("linear", 25, 50) == 0.5
    assert ramp("cubic", 25, 50) == pytest.approx(1 - 0.5 ** 3)
    with pytest.raises(ConfigError, match="schedule"):
        ramp("sqrt", 1, 10)


def test_paper_example_d20_restricted_to_250k():
    model = _dense(get_preset("d20-damped-restricted").config)
    pruner = Pruner(model, target=250_000)
    assert (pruner.total, pruner.n_conv, pruner.k_final) == (268_678, 265_728, 18_678)
    assert pruner.ratio == pytest.approx(0.0702899, abs=1e-7)
    assert pruner.k_at(0) == 0 and pruner.k_at(100) == 18_678
    for epoch in (0, 1, 7, 30, 99, 100, 300):
        k = pruner.update(epoch)
        assert k == pruner.k_at(epoch)
        assert count_nonzero(model) == 268_678 - k
    pruner.finalize()
    assert count_nonzero(model) == 250_000
    assert all(m.weight_mask is None for m in model.modules() if isinstance(m, Conv2d))


def test_global_threshold_on_raw_weights_not_damped():
    model = _dense(ModelConfig(rho=7, width=4, n_classes=3))
    pruner = Pruner(model, ratio=0.5, epochs=0)
    pruner.update(0)
    kept = torch.cat([m.weight[m.weight_mask.bool()].abs() for _, m in pruner.convs])
    gone = torch.cat([m.weight[~m.weight_mask.bool()].abs() for _, m in pruner.convs])
    assert gone.max() <= kept.min()  # one threshold over every conv, raw |W|


def test_ties_and_zeros_still_prune_exactly_k():
    model = build_model(ModelConfig(width=4, n_classes=3))
    with torch.no_grad():
        for _, w in model.prunable_weights():
            w.fill_(0.5)
        next(iter(model.prunable_weights()))[1].zero_()
    pruner = Pruner(model, target=count_params(model) - 1234, epochs=0)
    assert pruner.update(0) == 1234
    masked = sum(int((m.weight_mask == 0).sum()) for _, m in pruner.convs)
    assert masked == 1234
    first = pruner.convs[0][1]  # ties broken by flat index: the zeroed stem goes first
    assert int((first.weight_mask == 0).sum()) == min(1234, first.weight.numel())


def test_masked_weights_can_come_back_unless_monotone():
    for monotone, expect_revival in ((False, True), (True, False)):
        model = _dense(ModelConfig(width=4, n_classes=3))
        pruner = Pruner(model, ratio=0.3, schedule="linear", epochs=2, monotone=monotone)
        pruner.update(1)
        stem = pruner.convs[0][1]
        before = stem.weight_mask.clone()
        with torch.no_grad():  # a pruned weight grows large: revivable masks let it back in
            idx = (before.view(-1) == 0).nonzero()[0]
            stem.weight.view(-1)[idx] = 100.0
        pruner.update(2)
        assert bool(stem.weight_mask.view(-1)[idx] == 1) == expect_revival
        assert pruner.k_current == pruner.k_final


def test_masked_weights_still_learn_so_a_zero_initialised_layer_can_come_back():
    # fixup starts the head and every second conv at zero: they are the first to be pruned. With
    # no gradient under the mask they could never grow back and the network would output a
    # constant (the demo network pruned to 5,000 trained to chance). The forward uses W * M
    # exactly; the raw W gets the dense gradient.
    model = build_model(ModelConfig(width=4, n_classes=3))
    head = model.head[0]
    assert not head.weight.any()
    pruner = Pruner(model, ratio=0.5, schedule="linear", epochs=1)
    pruner.update(1)
    assert not head.weight_mask.any()  # pruned away entirely
    with torch.no_grad():
        head.weight.normal_()  # raw values under a zero mask: the forward must not see them
    assert torch.equal(head.masked_weight(), torch.zeros_like(head.weight))
    x = torch.randn(2, 2, 256, 40)
    out = model.eval()(x)  # eval: BatchNorm on running statistics, a fixed affine map
    assert torch.unique(out, dim=0).shape[0] == 1  # a pruned-away head: the same logits for every input
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1])).backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0  # yet it learns


@pytest.mark.parametrize("overrides", [dict(damping=False), dict(damping=True),
                                       dict(decomposition=4), dict(damping=True, decomposition=2)])
def test_every_variant_prunes_to_target(overrides):
    model = _dense(ModelConfig(width=8, n_classes=3, **overrides))
    target = count_params(model) // 2
    pruner = Pruner(model, target=target, epochs=3)
    x = torch.randn(2, 2, 256, 40)
    for e in range(4):
        pruner.update(e)
        masked_out = model(x)
    pruner.finalize()
    assert count_nonzero(model) == target
    assert torch.allclose(model(x), masked_out, atol=1e-5)  # folding changes nothing


def test_mask_state_round_trips():
    model = _dense(ModelConfig(width=4, n_classes=3))
    pruner = Pruner(model, ratio=0.4, epochs=0)
    pruner.update(0)
    state = pruner.state_dict()
    other = _dense(ModelConfig(width=4, n_classes=3))
    p2 = Pruner(other, ratio=0.4, epochs=0)
    p2.load_state_dict(state)
    assert p2.k_current == pruner.k_current
    assert all(torch.equal(a.weight_mask, b.weight_mask) for (_, a), (_, b) in zip(pruner.convs, p2.convs, strict=True))


# width 4, 3 classes: 1,566 parameters, 190 of them outside the convs (BatchNorm)
RANGE = "prune target must be an integer in (190, 1,566] for this model (all parameters, BatchNorm's 190 included), got "


@pytest.mark.parametrize("kwargs, message", [
    (dict(target=10**9), RANGE + "1000000000"), (dict(target=190), RANGE + "190"), (dict(target=-5), RANGE + "-5"),
    (dict(target=True), RANGE + "True"), (dict(target=500.0), RANGE + "500.0"),
    (dict(ratio=1.0), "prune ratio must be in [0, 1), got 1.0"), (dict(ratio=-0.1), "prune ratio must be in [0, 1), got -0.1"),
    (dict(), "give exactly one of a prune target or a prune ratio"),
    (dict(target=5000, ratio=0.1), "give exactly one of a prune target or a prune ratio"),
    (dict(target=5000, schedule="log"), "unknown prune schedule 'log'; choose one of exp, linear, cubic"),
    (dict(target=500, epochs=-1), "--prune-epochs must be an integer >= 0, got -1"),
    (dict(target=500, epochs=2.0), "--prune-epochs must be an integer >= 0, got 2.0"),
])
def test_bad_targets(kwargs, message):
    with pytest.raises(ConfigError) as refused:
        Pruner(build_model(ModelConfig(width=4, n_classes=3)), **kwargs)
    assert str(refused.value) == message


@pytest.mark.parametrize("extra", ["plain", "only"])
def test_a_model_without_edgeasc_convs_is_refused(extra):
    model = build_model(ModelConfig(width=4, n_classes=3))
    model = torch.nn.Sequential(model, torch.nn.Conv2d(3, 3, 1)) if extra == "plain" else torch.nn.Linear(3, 3)
    with pytest.raises(ConfigError) as refused:
        Pruner(model, ratio=0.5)
    assert str(refused.value) == "pruning needs an edgeasc model (its convs carry the masks)"


def test_target_bounds_defaults_and_a_delayed_ramp():
    model = _dense(ModelConfig(width=4, n_classes=3))
    whole = Pruner(model, target=1566)  # the upper bound itself: nothing to prune
    assert (whole.k_final, whole.target, whole.monotone, whole.epochs, whole.start) == (0, 1566, False, 100, 0)
    assert whole.state_dict() == {"k_current": 0, "masks": {}}
    assert Pruner(model, target=191).k_final == 1566 - 191  # one above the BatchNorm count
    assert Pruner(model, ratio=0.0).k_final == 0
    assert ramp("linear", 0, 0) == 1.0 and ramp("linear", 4, 4) == 1.0 and ramp("linear", 3, 4) == 0.75
    delayed = Pruner(model, target=1000, schedule="linear", epochs=4, start=2)
    assert (delayed.target, delayed.k_final) == (1000, 566)
    assert [delayed.k_at(e) for e in range(8)] == [0, 0, 0, 142, 283, 424, 566, 566]
    delayed.update(3)
    for _, conv in delayed.convs:  # masks in the weights' dtype, so W ⊙ M stays float
        assert conv.weight_mask.dtype == conv.weight.dtype
    state = delayed.state_dict()
    other = Pruner(_dense(ModelConfig(width=4, n_classes=3)).double(), target=1000)
    other.load_state_dict(state)
    assert all(conv.weight_mask.dtype == torch.float64 for _, conv in other.convs)


# ----------------------------------------------------------------------------- gate pruning (the released winner)
def test_gate_pruning_hits_the_target_exactly_with_zeros_only_in_1x1_weights():
    from edgeasc.compress.gate import GatePruner

    model = _dense(ModelConfig(rho=4, width=16, depth_restriction=(0, 2, 4), n_classes=3, damp_stem=False))
    total = count_params(model)
    one_by_one = {n: m for n, m in model.named_modules()
                  if isinstance(m, Conv2d) and n.startswith("stage") and m.kernel_size == (1, 1)}
    prunable = sum(m.weight.numel() for m in one_by_one.values())
    assert prunable and any(isinstance(m, Conv2d) and m.kernel_size != (1, 1) for m in model.modules())
    target = total - prunable // 2
    pruner = GatePruner(model, target, schedule="linear", epochs=4)
    assert count_params(model) == total  # the scores are not parameters of the network
    assert not any("gate" in k for k in model.state_dict())
    assert (pruner.k_at(0), pruner.k_at(4), pruner.k_at(7)) == (0, total - target, total - target)
    for epoch in (0, 2, 4):
        assert pruner.update(epoch) == pruner.k_at(epoch)
        assert count_nonzero(model) == total - pruner.k_at(epoch)  # exact at every step of the ramp
    assert count_nonzero(model) == target
    # training moves the scores: the gate's backward is the sigmoid's derivative times dL/d(W ⊙ gate) ⊙ W
    x = torch.randn(2, 2, 256, 24)
    model(x).sum().backward()
    name, conv = next(iter(one_by_one.items()))
    s = pruner.scores[name]
    assert s.grad is not None and s.grad.abs().sum() > 0
    pruner.finalize()
    assert [n for n, _ in pruner.convs] == list(one_by_one)
    for n, m in model.named_modules():
        if isinstance(m, Conv2d) and n not in one_by_one:
            assert int((m.weight == 0).sum()) == 0, n  # dense: stem, kxk convs, head
    assert count_nonzero(model) == target and conv.gate_scores is None


def test_gate_pruning_refuses_a_target_the_1x1_convs_cannot_reach():
    from edgeasc.compress.gate import GatePruner

    model = _dense(ModelConfig(rho=4, width=16, depth_restriction=(0, 2, 4), n_classes=3))
    with pytest.raises(ConfigError, match="only the 1x1 convs"):
        GatePruner(model, 1000)
