"""Channel pruning: coupling groups (against Torch-Pruning), exact torch-free counts, channel
selection to a budget, the physical rebuild (same logits as the masked network), optimiser
state, targets and bad input."""

import random

import pytest
import torch

from edgeasc.compress.structured import (
    ChannelPruner,
    allowed_widths,
    importance,
    module_groups,
    parse_macs_target,
    rebuild,
    resolve_budget,
    select_channels,
    zero_channels,
)
from edgeasc.errors import ConfigError
from edgeasc.models import ModelConfig, build_model, get_preset
from edgeasc.models.channels import CostModel, channel_groups, complexity, widths
from edgeasc.models.complexity import analyse
from edgeasc.runtime.features import FeatureParams

SMALL = ModelConfig(rho=3, width=8, n_classes=3, in_channels=2)
FRAMES_1S = FeatureParams().n_frames(1.0)  # 44


def trained_like(config, seed=0):
    """Weights and BatchNorm statistics of a trained network (no fixup zeros, no unit variances)."""
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.dim() == 4 else 1.0))
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.2, 3.0)
            elif name.endswith("running_mean"):
                b.normal_()
    return model.eval()


# ----------------------------------------------------------------------------- groups and counts
def test_groups_of_the_small_network_are_pinned():
    groups = [(g.name, g.kind, g.dense_width) for g in channel_groups(SMALL)]
    assert groups == [("stem", "stream", 8), ("stage1.block1", "block", 8), ("stage1.block2", "block", 8),
                      ("stage1.block3", "block", 8), ("stage1.block4", "block", 8), ("stage2", "stream", 16),
                      ("stage2.block1", "block", 16), ("stage2.block2", "block", 16), ("stage2.block3", "block", 16)]
    decomposed = [g.name for g in channel_groups(SMALL.replace(decomposition=4)) if g.kind == "decomposed"]
    assert len(decomposed) == 2 * (7 * 2 + 1)  # reduce + spatial of conv1, conv2 in 7 blocks and one shortcut
    assert "stage2.block1.shortcut.0.reduce" in decomposed


def _plans(config, n=3):
    rng = random.Random(1)
    return [{g.name: rng.randint(1, g.dense_width) for g in channel_groups(config)} for _ in range(n)]


@pytest.mark.parametrize("config", [
    SMALL, SMALL.replace(damping=False), SMALL.replace(decomposition=4), SMALL.replace(decomposition=2, damping=False),
    SMALL.replace(depth_restriction=(0, 0, 0)), SMALL.replace(depth_restriction=(4, 1, 2)),
    SMALL.replace(depth_restriction=(0, 4, 2)), ModelConfig(rho=4, width=16, depth_restriction=(0, 2, 4), n_classes=3),
])
def test_torch_free_counts_equal_the_modules_for_any_plan(config):
    for plan in [None, *_plans(config)]:
        c = config.replace(channels=plan)
        stats = analyse(c, seconds=1.0)
        assert complexity(c, FRAMES_1S) == (stats.params, stats.macs)
        model = build_model(c)
        assert sum(p.numel() for p in model.parameters()) == stats.params
        assert model(torch.randn(1, 2, 256, FRAMES_1S)).shape == (1, 3)


@pytest.mark.parametrize("config", [SMALL, SMALL.replace(decomposition=4), SMALL.replace(depth_restriction=(4, 0, 2))])
def test_saving_of_one_channel_is_the_cost_difference(config):
    cost = CostModel(config, FRAMES_1S)
    for plan in _plans(config, 2):
        p, m = cost.cost(plan)
        assert (p, m) == complexity(config.replace(channels=plan), FRAMES_1S)
        for group, width in plan.items():
            if width > 1:
                smaller = cost.cost({**plan, group: width - 1})
                assert cost.saving(plan, group) == (p - smaller[0], m - smaller[1]), group


def test_paper_network_counts_unchanged_by_the_plan_machinery():
    config = get_preset("d20-damped").config
    assert complexity(config, FeatureParams().n_frames(10.0)) == (1_061_638, 7_113_085_696)
    full = {g.name: g.dense_width for g in channel_groups(config)}
    assert complexity(config.replace(channels=full), FeatureParams().n_frames(10.0)) == (1_061_638, 7_113_085_696)


def test_coupling_matches_torch_pruning_dependency_groups():
    """Our groups, written from the architecture, against DepGraph's on the plain CP-ResNet and
    the decomposed one: the same (layer, in/out) members for every group."""
    import torch_pruning as tp  # the dev extra installs it: this test must run, never skip
    for config in (SMALL.replace(damping=False), SMALL.replace(damping=False, decomposition=4),
                   SMALL.replace(damping=False, depth_restriction=(4, 1, 3))):
        model = build_model(config).eval()
        names = {m: n for n, m in model.named_modules()}
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 2, 256, 44))
        ours: dict[str, set] = {}
        for module, (g_out, g_in) in module_groups(config).items():
            for group, role in ((g_out, "out"), (g_in, "in")):
                if group is not None:
                    ours.setdefault(group, set()).add((module, role))
        producers = {next(m for m, r in sorted(members) if r == "out"): g for g, members in ours.items()}
        modules = dict(model.named_modules())
        for producer, group in producers.items():
            layer = modules[producer]
            fn = tp.prune_conv_out_channels if isinstance(layer, torch.nn.Conv2d) else tp.prune_batchnorm_out_channels
            theirs = set()
            for item in graph.get_pruning_group(layer, fn, idxs=[0]):
                target = item.dep.target.module
                if target in names and isinstance(target, torch.nn.Conv2d | torch.nn.BatchNorm2d):
                    role = "in" if item.dep.handler.__name__.endswith("in_channels") else "out"
                    theirs.add((names[target], role))
            assert theirs == ours[group], group


# ----------------------------------------------------------------------------- selection and rebuild
def test_exact_plan_and_counts_at_a_quarter_of_the_macs():
    model = trained_like(SMALL)
    budget = resolve_budget(SMALL, FRAMES_1S, macs_target="25%")
    assert budget.dense == (4_918, 3_666_000) and budget.macs == 916_500
    assert budget.minimum == (138, 173_520)
    keep = select_channels(SMALL, importance(model), FRAMES_1S, macs=budget.macs)
    plan = {g: int(k.numel()) for g, k in keep.items()}
    assert plan == {"stem": 3, "stage1.block1": 4, "stage1.block2": 4, "stage1.block3": 6, "stage1.block4": 5,
                    "stage2": 14, "stage2.block1": 11, "stage2.block2": 11, "stage2.block3": 12}
    small, _, diff = rebuild(model, keep)
    assert complexity(small.config, FRAMES_1S) == (1_865, 916_170)
    assert analyse(small, seconds=1.0).macs == 916_170 <= budget.macs
    assert small.config.channels == tuple(plan.items())


@pytest.mark.parametrize("multiple", [8, 16])
def test_widths_stay_multiples_of_the_conv_block(multiple):
    config = ModelConfig(rho=3, width=48, n_classes=3, decomposition=None)
    model = trained_like(config)
    budget = resolve_budget(config, FRAMES_1S, macs_target="30%", multiple=multiple)
    keep = select_channels(config, importance(model), FRAMES_1S, macs=budget.macs, multiple=multiple)
    plan = {g: int(k.numel()) for g, k in keep.items()}
    assert all(w % multiple == 0 for w in plan.values()), plan
    assert complexity(config.replace(channels=plan), FRAMES_1S)[1] <= budget.macs
    dense = {g.name: g.dense_width for g in channel_groups(config)}
    for group, width in plan.items():  # not one block more fits: the budget is used, not undershot
        if width < dense[group]:
            assert complexity(config.replace(channels={**plan, group: width + multiple}), FRAMES_1S)[1] > budget.macs
    assert allowed_widths(24, 16) == [16, 24] and allowed_widths(8, 16) == [8] and allowed_widths(48, 16) == [16, 32, 48]
    # the smallest network keeps one block per group (or the dense width where that is smaller)
    assert budget.minimum == complexity(config.replace(channels={g.name: min(multiple, g.dense_width)
                                                                 for g in channel_groups(config)}), FRAMES_1S)


def test_least_important_channels_go_first():
    model = trained_like(SMALL)
    scores = importance(model)
    keep = select_channels(SMALL, scores, FRAMES_1S, macs=resolve_budget(SMALL, FRAMES_1S, "50%").macs)
    for group, kept in keep.items():
        dropped = sorted(set(range(len(scores[group]))) - set(kept.tolist()))
        if dropped:
            assert scores[group][dropped].max() <= scores[group][kept].min()


@pytest.mark.parametrize("config", [SMALL, SMALL.replace(damping=False), SMALL.replace(decomposition=4),
                                    SMALL.replace(depth_restriction=(4, 0, 2)),
                                    ModelConfig(rho=4, width=16, depth_restriction=(0, 2, 4), n_classes=3)])
def test_rebuilt_network_gives_the_masked_networks_logits(config):
    model = trained_like(config)
    keep = select_channels(config, importance(model), FRAMES_1S,
                           macs=resolve_budget(config, FRAMES_1S, "30%").macs)
    x = torch.randn(3, 2, 256, FRAMES_1S)
    small, _, diff = rebuild(model, keep, check=x)
    masked = zero_channels(model, keep).eval()
    with torch.no_grad():
        expected, got, original = masked(x), small.eval()(x), model(x)
    assert got.shape == (3, 3)
    assert torch.allclose(got, expected, atol=1e-5 * max(1.0, float(expected.abs().max())), rtol=0)
    assert diff <= 1e-5 * max(1.0, float(expected.abs().max()))
    assert not torch.allclose(original, expected, atol=1e-3)  # the masked network did change: a real test
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def test_a_wrong_rebuild_is_refused(monkeypatch):
    import edgeasc.compress.structured as structured

    model = trained_like(SMALL)
    keep = select_channels(SMALL, importance(model), FRAMES_1S, macs=resolve_budget(SMALL, FRAMES_1S, "40%").macs)
    real = structured._slice

    def off_by_one(t, groups, keep):  # a slicing bug: the stem stream keeps the wrong channels
        if groups[0] == "stem":
            keep = {**keep, "stem": (keep["stem"] + 1) % 8}
        return real(t, groups, keep)

    monkeypatch.setattr(structured, "_slice", off_by_one)
    with pytest.raises(ConfigError, match="rebuild was refused"):
        rebuild(model, keep)


def test_optimizer_moments_follow_the_surviving_channels():
    model = trained_like(SMALL).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 2, 256, FRAMES_1S)).sum().backward()
    opt.step()
    keep = select_channels(SMALL, importance(model), FRAMES_1S, macs=resolve_budget(SMALL, FRAMES_1S, "50%").macs)
    small, new_opt, _ = rebuild(model, keep, opt)
    old = dict(model.named_parameters())
    new = dict(small.named_parameters())
    conv = "stage1.block1.conv1.weight"
    expected = opt.state[old[conv]]["exp_avg"][keep["stage1.block1"]][:, keep["stem"]]
    assert torch.equal(new_opt.state[new[conv]]["exp_avg"], expected)
    assert torch.equal(new_opt.state[new["stem.1.bias"]]["exp_avg_sq"], opt.state[old["stem.1.bias"]]["exp_avg_sq"][keep["stem"]])
    assert new_opt.param_groups[0]["lr"] == 1e-3
    small(torch.randn(4, 2, 256, FRAMES_1S)).sum().backward()
    new_opt.step()  # the sliced state fits the new parameters


def test_ramp_cuts_step_by_step_to_the_final_budget():
    model = trained_like(SMALL).train()
    pruner = ChannelPruner(SMALL, FRAMES_1S, macs_target="25%", params_target=2_000, schedule="linear", epochs=4,
                           multiple=1)
    macs_seen = []
    for epoch in range(6):
        model, _, removed, _ = pruner.step(model, epoch)
        p, m = complexity(model.config, FRAMES_1S)
        budget_p, budget_m = pruner.budget_at(epoch)
        assert p <= budget_p and m <= budget_m
        macs_seen.append(m)
        assert (removed == 0) == (epoch in (0, 5))
    assert macs_seen == sorted(macs_seen, reverse=True) and macs_seen[0] == 3_666_000
    assert pruner.done(model.config)
    p, m = complexity(model.config, FRAMES_1S)
    assert p <= 2_000 and m <= 916_500  # both budgets: the tighter one wins


def test_bn_importance_is_the_gamma_sum():
    model = trained_like(SMALL)
    scores = importance(model, "bn")
    gammas = [model.stem[1].weight.abs()] + [getattr(model.stage1, f"block{b}").bn2.weight.abs() for b in range(1, 5)]
    assert torch.allclose(scores["stem"], torch.stack(gammas).sum(0).detach())
    assert torch.allclose(scores["stage1.block1"], model.stage1.block1.bn1.weight.abs().detach())


# ----------------------------------------------------------------------------- targets and bad input
def test_macs_target_figures():
    assert parse_macs_target("25%") == ("share", 0.25)
    assert parse_macs_target("12.5%") == ("share", 0.125)
    assert parse_macs_target("460M") == ("macs", 460e6)
    assert parse_macs_target("1.5G") == ("macs", 1.5e9)
    assert parse_macs_target("900k") == ("macs", 900e3)


@pytest.mark.parametrize("text", ["25", "-3M", "1e99G", "25 percent", "M", "", "0%", "101%", "3m"])
def test_malformed_macs_targets(text):
    with pytest.raises(ConfigError, match="macs-target"):
        parse_macs_target(text)


@pytest.mark.parametrize("kwargs, message", [
    (dict(macs_target="1k"), "173,520 .one channel per group. to 3,666,000 .dense."),
    (dict(macs_target="9M"), "outside what channel pruning can reach"),
    (dict(params_target=100), "138 .one channel per group. to 4,918 parameters"),
    (dict(params_target=10**6), "outside"), (dict(params_target=True), "outside"),
    (dict(), "needs --macs-target or --params-target"),
])
def test_targets_outside_the_feasible_range(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        resolve_budget(SMALL, FRAMES_1S, **kwargs)


def test_channel_plan_must_fit_the_network():
    full = {g.name: g.dense_width for g in channel_groups(SMALL)}
    with pytest.raises(ConfigError, match="missing groups stage2"):
        SMALL.replace(channels={k: v for k, v in full.items() if k != "stage2"})
    with pytest.raises(ConfigError, match="unknown groups stage3"):
        SMALL.replace(channels={**full, "stage3": 4})
    with pytest.raises(ConfigError, match="must keep 1..16"):
        SMALL.replace(channels={**full, "stage2": 17})
    with pytest.raises(ConfigError, match="must keep 1..8"):
        SMALL.replace(channels={**full, "stem": 0})
    round_trip = ModelConfig.from_dict(SMALL.replace(channels={**full, "stem": 3}).to_dict())
    assert round_trip.stem_channels == 3 and round_trip.dense == SMALL


# ----------------------------------------------------------------------------- exact messages and boundaries
def test_macs_target_messages_and_share_bounds():
    with pytest.raises(ConfigError) as refused:
        parse_macs_target("25")
    assert str(refused.value) == ("malformed --macs-target '25': give a share of the dense network's MACs like 25% "
                                  "or MACs per clip with a k/M/G suffix like 460M")
    with pytest.raises(ConfigError) as refused:
        parse_macs_target("101%")
    assert str(refused.value) == "--macs-target '101%': a share must be in (0, 100] %"
    assert parse_macs_target("100%") == ("share", 1.0) and parse_macs_target("0.5%") == ("share", 0.005)


def test_budget_bounds_are_inclusive_and_the_messages_exact():
    # the smallest (one channel per group) and the dense network are both reachable targets
    low = resolve_budget(SMALL, FRAMES_1S, macs_target="173.52k", params_target=138)
    high = resolve_budget(SMALL, FRAMES_1S, macs_target="100%", params_target=4_918)
    assert (low.macs, low.params, high.macs, high.params) == (173_520, 138, 3_666_000, 4_918)
    assert low.dense == (4_918, 3_666_000) and low.minimum == (138, 173_520)
    for kwargs in (dict(macs_target="173.519k"), dict(params_target=137), dict(params_target=4_919),
                   dict(macs_target="3.666001M")):
        with pytest.raises(ConfigError):
            resolve_budget(SMALL, FRAMES_1S, **kwargs)
    with pytest.raises(ConfigError) as refused:
        resolve_budget(SMALL, FRAMES_1S, params_target=10, multiple=4)
    minimum = resolve_budget(SMALL, FRAMES_1S, params_target=4_918, multiple=4).minimum
    assert str(refused.value) == (f"--params-target 10 is outside what channel pruning can reach for this network: "
                                  f"{minimum[0]:,} (widths of 4 channels) to 4,918 parameters (dense)")
    for multiple in (0, True, 2.0):
        with pytest.raises(ConfigError) as refused:
            resolve_budget(SMALL, FRAMES_1S, params_target=4_918, multiple=multiple)
        assert str(refused.value) == f"--channel-multiple must be an integer >= 1, got {multiple!r}"
    with pytest.raises(ConfigError) as refused:
        resolve_budget(SMALL, FRAMES_1S)
    assert str(refused.value) == "channel pruning needs --macs-target or --params-target"
    assert allowed_widths(5) == [1, 2, 3, 4, 5] and allowed_widths(8, 3) == [3, 6, 8]


def test_channel_pruner_defaults_budgets_and_done_at_the_exact_budget():
    pruner = ChannelPruner(SMALL, FRAMES_1S, params_target=4_918)
    minimum = resolve_budget(SMALL, FRAMES_1S, params_target=4_918, multiple=16).minimum
    assert pruner.describe() == {
        "macs_target": None, "params_target": 4_918, "macs_budget": None, "params_budget": 4_918,
        "dense_params": 4_918, "dense_macs": 3_666_000, "min_params": minimum[0], "min_macs": minimum[1],
        "schedule": "exp", "epochs": 100, "importance": "l2", "channel_multiple": 16}
    assert minimum[0] != minimum[1]
    described = ChannelPruner(SMALL, FRAMES_1S, macs_target="50%", multiple=1).describe()
    assert (described["macs_target"], described["macs_budget"], described["params_budget"]) == ("50%", 1_833_000, None)
    with pytest.raises(ConfigError, match="--params-target 2000.0 is outside"):
        resolve_budget(SMALL, FRAMES_1S, params_target=2000.0)  # a whole number, but not an integer
    with pytest.raises(ConfigError) as refused:
        ChannelPruner(SMALL, FRAMES_1S, params_target=4_918, importance="taylor")
    assert str(refused.value) == "unknown channel importance 'taylor'; choose one of l2, bn"
    four = ChannelPruner(SMALL, FRAMES_1S, params_target=4_918, multiple=4)
    assert four.budget.minimum == resolve_budget(SMALL, FRAMES_1S, params_target=4_918, multiple=4).minimum
    only_params = ChannelPruner(SMALL, FRAMES_1S, params_target=2_000, schedule="linear", epochs=4, multiple=1)
    assert [only_params.budget_at(e) for e in (0, 2, 4)] == [(4_918, None), (3_459, None), (2_000, None)]
    only_macs = ChannelPruner(SMALL, FRAMES_1S, macs_target="1M", schedule="linear", epochs=4, multiple=1)
    assert [only_macs.budget_at(e) for e in (0, 1, 4)] == [(None, 3_666_000), (None, 2_999_500), (None, 1_000_000)]
    plan = SMALL.replace(channels={g.name: max(1, g.dense_width // 2) for g in channel_groups(SMALL)})
    p, m = CostModel(plan, FRAMES_1S).cost({g.name: max(1, g.dense_width // 2) for g in channel_groups(SMALL)})
    at = ChannelPruner(SMALL, FRAMES_1S, params_target=p, macs_target=f"{m / 1000}k", multiple=1)
    assert at.done(plan)  # exactly at both budgets is within them
    assert not ChannelPruner(SMALL, FRAMES_1S, params_target=p - 1, multiple=1).done(plan)
    assert not ChannelPruner(SMALL, FRAMES_1S, macs_target=f"{(m - 1) / 1000}k", multiple=1).done(plan)
    assert not ChannelPruner(SMALL, FRAMES_1S, params_target=p, macs_target=f"{(m - 1) / 1000}k", multiple=1).done(plan)


def test_a_step_hands_its_optimizer_and_check_batch_to_the_rebuild(monkeypatch):
    import edgeasc.compress.structured as structured

    model = trained_like(SMALL).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    pruner = ChannelPruner(SMALL, FRAMES_1S, params_target=2_000, schedule="linear", epochs=2, multiple=1)
    check = torch.randn(3, 2, 256, 44)
    assert pruner.step(model, 0, optimizer, check) == (model, optimizer, 0, 0.0)  # epoch 0: the dense budget
    by_macs = ChannelPruner(SMALL, FRAMES_1S, macs_target="1M", schedule="linear", epochs=2, multiple=1)
    assert by_macs.step(model, 0, optimizer, check) == (model, optimizer, 0, 0.0)  # at the dense MACs exactly
    seen = {}
    real = structured.rebuild
    monkeypatch.setattr(structured, "rebuild", lambda m, keep, opt, chk: seen.update(opt=opt, check=chk) or real(
        m, keep, opt, chk))
    small, new_opt, removed, diff = pruner.step(model, 2, optimizer, check)
    assert seen["opt"] is optimizer and seen["check"] is check
    before, after = widths(SMALL), widths(small.config)
    assert removed == sum(before.values()) - sum(after.values()) > 0
    assert new_opt is not optimizer and {id(p) for p in new_opt.param_groups[0]["params"]} == {
        id(p) for p in small.parameters()}
    assert 0.0 <= diff <= 1e-5 * 100 and complexity(small.config, FRAMES_1S)[0] <= 2_000


def test_selection_is_scale_free_keeps_all_at_the_dense_budget_and_names_an_impossible_one():
    model = trained_like(SMALL)
    scores = importance(model, "l2")
    plan = select_channels(SMALL, scores, FRAMES_1S, macs=1_500_000, multiple=1)
    tiny = {g: s * 1e-4 for g, s in scores.items()}  # importance relative to the group: the scale cancels
    assert all(torch.equal(plan[g], k) for g, k in select_channels(SMALL, tiny, FRAMES_1S, macs=1_500_000).items())
    dense = select_channels(SMALL, scores, FRAMES_1S, macs=3_666_000, params=4_918)
    assert all(torch.equal(k, torch.arange(w)) for (g, k), w in zip(dense.items(), widths(SMALL).values(), strict=True))
    assert all(k.dtype == torch.long for k in dense.values())
    with pytest.raises(ConfigError) as refused:
        select_channels(SMALL, scores, FRAMES_1S, params=100)
    assert str(refused.value) == "the channel budget cannot be met by the widths channel pruning may leave"


def test_a_step_ranks_by_its_importance_and_keeps_its_multiple(monkeypatch):
    import edgeasc.compress.structured as structured

    methods = []
    real = structured.importance
    monkeypatch.setattr(structured, "importance", lambda m, method="l2": methods.append(method) or real(m, method))
    pruner = ChannelPruner(SMALL, FRAMES_1S, macs_target="50%", schedule="linear", epochs=1, importance="bn",
                           multiple=4)
    small, _, removed, _ = pruner.step(trained_like(SMALL), 1)
    assert methods == ["bn"] and removed > 0
    dense = {g.name: g.dense_width for g in channel_groups(SMALL)}
    assert all(w % 4 == 0 or w == dense[g] for g, w in widths(small.config).items())
