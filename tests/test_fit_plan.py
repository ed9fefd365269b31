"""The budget fit's boundaries, pinned exactly: a network whose smallest channel plan lands
exactly on a limit meets it ("at most"), one parameter or MAC more is refused with its exact
message; among the candidates the widest reachable one within the headroom is chosen, a
candidate exactly at the headroom included; and reachability is required of both limits."""

import pytest

import edgeasc.compress.fit as fit
from edgeasc.errors import ConfigError
from edgeasc.models.config import ModelConfig

GIVEN = ModelConfig(rho=3, width=64, n_classes=3, in_channels=2)  # smallest plan: 13,398 parameters, 128,572,224 MACs
TABLE_MINIMUM = (13_124, 11_332_080)  # every candidate's smallest plan (widths of 16: all alike), mono, 10 classes, 44 frames
TAIL = "(a smaller --width or --rho, a smaller --channel-multiple, or leave the network to --fit)"


def _seconds(macs_limit: int) -> float:
    """Clip seconds whose dcase2024 MAC limit per clip (floor of 30 M x seconds) is `macs_limit`."""
    return (macs_limit + 0.5) / 30e6


def test_a_given_network_exactly_at_the_mac_limit_meets_it_one_mac_more_does_not():
    assert fit.FIT_CHANNEL_MULTIPLE == 16
    at = fit.plan_fit("dcase2024", 431, _seconds(128_572_224), 3, 2, network=GIVEN)
    assert at.minimum == (13_398, 128_572_224) and at.macs_limit == 128_572_224 and at.start_name == "the given network"
    with pytest.raises(ConfigError) as refused:
        fit.plan_fit("dcase2024", 431, _seconds(128_572_223), 3, 2, network=GIVEN)
    assert str(refused.value) == ("--fit dcase2024: the given network cannot meet the rules: even at its smallest "
                                  f"channel plan (widths of 16) it has 30.00 M MACs per second > 30 M {TAIL}")


def test_a_given_network_exactly_at_the_parameter_limit_meets_it_one_more_does_not(monkeypatch):
    monkeypatch.setattr(fit, "rules_limits", lambda rules, seconds: (13_398, 10 ** 12))
    assert fit.plan_fit("dcase2024", 431, 10.0, 3, 2, network=GIVEN).params_limit == 13_398
    monkeypatch.setattr(fit, "rules_limits", lambda rules, seconds: (13_397, 10 ** 12))
    with pytest.raises(ConfigError) as refused:
        fit.plan_fit("dcase2024", 431, 10.0, 3, 2, network=GIVEN)
    assert str(refused.value) == ("--fit dcase2024: the given network cannot meet the rules: even at its smallest "
                                  f"channel plan (widths of 16) it has 13,398 parameters > 13,397 {TAIL}")


def test_a_candidate_must_reach_both_limits_exactly_at_them_included(monkeypatch):
    """With the headroom out of the way (every ratio within it), reachability alone decides:
    the widest candidate whose smallest plan meets both limits."""
    monkeypatch.setattr(fit, "START_HEADROOM", 1e9)
    at = fit.plan_fit("dcase2024", 44, _seconds(TABLE_MINIMUM[1]), 10, 1)
    assert at.minimum == TABLE_MINIMUM and at.start.width == 128 and at.macs_limit == 11_332_080
    with pytest.raises(ConfigError) as refused:  # one MAC short: no candidate, though the parameters fit
        fit.plan_fit("dcase2024", 44, _seconds(TABLE_MINIMUM[1] - 1), 10, 1)
    assert str(refused.value) == ("--fit dcase2024: no candidate network meets the rules for 0.377736-s clips of 44 "
                                  "frames (limits 128,000 parameters, 11,332,079 MACs per clip)")
    monkeypatch.setattr(fit, "rules_limits", lambda rules, seconds: (TABLE_MINIMUM[0], 10 ** 12))
    assert fit.plan_fit("dcase2024", 44, 1.0, 10, 1).start.width == 128
    monkeypatch.setattr(fit, "rules_limits", lambda rules, seconds: (TABLE_MINIMUM[0] - 1, 10 ** 12))
    with pytest.raises(ConfigError) as refused:  # one parameter short: none, though the MACs fit
        fit.plan_fit("dcase2024", 44, 1.0, 10, 1)
    assert str(refused.value) == ("--fit dcase2024: no candidate network meets the rules for 1-s clips of 44 frames "
                                  "(limits 13,123 parameters, 1,000,000,000,000 MACs per clip)")


def test_a_candidate_exactly_at_the_headroom_is_chosen(monkeypatch):
    # width 40 on mono 1-s clips, 10 classes: 67,635,000 MACs = 2.2545 x the limit (its binding cost)
    ratio = max(106_060 / 128_000, 67_635_000 / 30_000_000)
    monkeypatch.setattr(fit, "START_HEADROOM", ratio)
    plan = fit.plan_fit("dcase2024", 44, 1.0, 10, 1)
    assert plan.start.width == 40 and plan.dense == (106_060, 67_635_000)
    monkeypatch.setattr(fit, "START_HEADROOM", ratio * (1 - 1e-12))
    assert fit.plan_fit("dcase2024", 44, 1.0, 10, 1).start.width == 32
