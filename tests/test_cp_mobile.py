"""CP-Mobile, the DCASE 2024 task-1 baseline: exact to the organisers' published numbers
(CPJKU/dcase2024_task1_baseline README, 'Baseline Complexity') and to torchinfo, their counter."""

import json

import pytest
import torch
import torchinfo

from conftest import HIDE_TORCH, assert_one_line_error, run_cli, run_cli_here
from edgeasc.errors import ConfigError
from edgeasc.models import PRESETS, CPMobileConfig, ModelConfig, build_model, config_from_dict
from edgeasc.models.complexity import analyse
from edgeasc.models.cp_mobile_config import make_divisible, mobile_complexity, mobile_layers
from edgeasc.models.describe import describe_config

# The organisers' table, row by row: module, params, MACs (BatchNorm counted in both), at 1x1x256x65.
D24_TABLE = [
    ("in_c.0", 88, 304_144),
    ("in_c.1", 2_368, 2_506_816),
    ("stages.s1.b1.block.0", 2_176, 2_228_352),
    ("stages.s1.b1.block.1", 704, 626_816),
    ("stages.s1.b1.block.2", 2_112, 2_228_288),
    ("stages.s1.b2.block.0", 2_176, 2_228_352),
    ("stages.s1.b2.block.1", 704, 626_816),
    ("stages.s1.b2.block.2", 2_112, 2_228_288),
    ("stages.s1.b3.block.0", 2_176, 2_228_352),
    ("stages.s1.b3.block.1", 704, 331_904),
    ("stages.s1.b3.block.2", 2_112, 1_179_712),
    ("stages.s2.b4.block.0", 2_176, 1_179_776),
    ("stages.s2.b4.block.1", 704, 166_016),
    ("stages.s2.b4.block.2", 3_696, 1_032_304),
    ("stages.s2.b5.block.0", 6_960, 1_935_600),
    ("stages.s2.b5.block.1", 1_320, 311_280),
    ("stages.s2.b5.block.2", 6_832, 1_935_472),
    ("stages.s3.b6.block.0", 6_960, 1_935_600),
    ("stages.s3.b6.block.1", 1_320, 311_280),
    ("stages.s3.b6.block.2", 12_688, 3_594_448),
    ("feed_forward.0", 1_040, 299_520),
    ("feed_forward.1", 20, 20),
    ("feed_forward.2", 0, 0),
]
D24 = PRESETS["cp-mobile-d24"]


def test_the_preset_is_the_organisers_baseline_row_by_row():
    stats = describe_config(D24.config, seconds=1.0, features=D24.input_features)
    assert stats.input_shape == [1, 256, 65]
    assert [(x.name, x.params, x.macs) for x in stats.layers] == D24_TABLE
    assert (stats.params, stats.macs) == (61_148, 29_419_156)
    assert stats.bytes["float16"] == 122_296  # the README's 61,148 x 2 B, under the 128 kB limit
    assert stats.bn_params == 2_708
    assert stats.receptive_field == [71, 79]
    assert stats.output_shapes == {"stem": [32, 64, 17], "s1": [32, 64, 9], "s2": [56, 32, 9],
                                   "s3": [104, 32, 9], "logits": [10]}


def test_widths_follow_the_baseline_rounding():
    assert [make_divisible(v) for v in (57.6, 103.68, 67.2, 117.6, 73.6, 3.0, 20.0, 11.0)] == [56, 104, 64, 120, 72, 8, 24, 16]
    assert D24.config.stage_channels == [32, 32, 56, 104]
    assert [(b.name, b.stage, b.exp_channels, b.stride, b.shortcut) for b in D24.config.blocks()] == [
        ("b1", "s1", 64, (1, 1), "identity"), ("b2", "s1", 64, (1, 1), "identity"),
        ("b3", "s1", 64, (1, 2), "avgpool"), ("b4", "s2", 64, (2, 1), None),
        ("b5", "s2", 120, (1, 1), "identity"), ("b6", "s3", 120, (1, 1), None)]


@pytest.mark.parametrize("base", [24, 32, 48])
def test_counts_equal_torchinfo_and_the_modules(base):
    """The torch-free arithmetic against torchinfo's summary of the real network (the
    organisers' NeSsi counter), and each row against the module of the same path."""
    config = D24.config.replace(base_channels=base)
    model = build_model(config).eval()
    summary = torchinfo.summary(model, input_size=(1, 1, 256, 65), verbose=0)
    assert (summary.total_params, summary.total_mult_adds) == mobile_complexity(config, 65)
    modules = dict(model.named_modules())
    for row in mobile_layers(config, 65):
        assert sum(p.numel() for p in modules[row.name].parameters()) == row.params, row.name
    with torch.no_grad():
        assert model(torch.randn(2, 1, 256, 65)).shape == (2, 10)
    if base == 32:
        assert (summary.total_params, summary.total_mult_adds) == (61_148, 29_419_156)


def test_modules_keep_the_organisers_names_and_shortcuts():
    model = build_model(D24.config)
    keys = set(model.state_dict())
    assert {"in_c.0.0.weight", "in_c.1.1.running_var", "stages.s1.b3.block.1.0.weight",
            "stages.s3.b6.block.2.1.bias", "feed_forward.0.weight", "feed_forward.1.running_mean"} <= keys
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Conv2d))  # BatchNorm follows
    b3, b4 = model.stages.s1.b3, model.stages.s2.b4
    assert isinstance(b3.shortcut, torch.nn.AvgPool2d) and b3.use_shortcut and not b4.use_shortcut
    assert model.stages.s1.b3.block[1][0].groups == 64  # depthwise
    # a strided block of unchanged width adds the 3x3 average of its input (count_include_pad)
    x = torch.randn(1, 32, 64, 17)
    b3.eval()
    with torch.no_grad():
        want = torch.relu(b3.block(x) + torch.nn.functional.avg_pool2d(x, 3, (1, 2), 1))
        assert torch.allclose(b3(x), want)


def test_config_round_trips_with_its_family_and_refuses_nonsense():
    d = D24.config.to_dict()
    assert d["family"] == "cp-mobile" and d["strides"] == {"b2": [1, 1], "b3": [1, 2], "b4": [2, 1]}
    assert config_from_dict(json.loads(json.dumps(d))) == D24.config
    assert isinstance(config_from_dict(ModelConfig().to_dict()), ModelConfig)  # no family: CP-ResNet
    for bad, message in [
        (dict(base_channels=0), "base_channels must be an integer in 1..4096"),
        (dict(base_channels=10**9), "base_channels must be an integer in 1..4096"),
        (dict(channels_multiplier=float("nan")), "channels_multiplier must be a number"),
        (dict(expansion_rate=True), "expansion_rate must be a number"),
        (dict(n_blocks=(3, 0)), "n_blocks must be"),
        (dict(n_blocks="3,x"), "n_blocks must be integers"),
        (dict(strides={"b9": [1, 2]}), "strides name blocks this network lacks"),
        (dict(strides={"b2": [1, 0]}), "stride of block b2 must be two integers"),
        (dict(n_classes=1.5), "n_classes must be an integer"),
        (dict(strides="b2"), "strides must map block names"),
        (dict(channels={"stem": 8}), "channel plan does not fit this network \\(missing groups in_c.0"),
        (dict(channels={**CPMobileConfig().dense_groups(), "b1": 65}), "group 'b1' must keep 1..64 channels"),
    ]:
        with pytest.raises(ConfigError, match=message):
            CPMobileConfig(**bad)
    with pytest.raises(ConfigError, match="unknown model family 'mobilenet'"):
        config_from_dict({**d, "family": "mobilenet"})
    with pytest.raises(ConfigError, match="unknown model config keys: rho"):
        config_from_dict({**d, "rho": 3})


def test_a_trained_model_counts_its_nonzeros():
    model = build_model(D24.config.replace(base_channels=8))
    with torch.no_grad():
        model.feed_forward[0].weight.zero_()
    stats = analyse(model, seconds=1.0, features=D24.input_features)
    dense = describe_config(model.config, seconds=1.0, features=D24.input_features)
    assert stats.params == dense.params and stats.macs == dense.macs
    assert stats.nonzero_params == dense.params - model.feed_forward[0].weight.numel()


def test_info_prints_the_table_and_refuses_cp_resnet_flags():
    proc = run_cli_here("info", "--preset", "cp-mobile-d24", "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert (d["params"], d["macs"], d["variant"], d["seconds"]) == (61_148, 29_419_156, "cp-mobile", 1.0)
    assert [(x["name"], x["params"], x["macs"]) for x in d["layers"]] == D24_TABLE
    text = run_cli_here("info", "--preset", "cp-mobile-d24").stdout
    assert "stages.s1.b3.block.1" in text and "29,419,156" in text and "61,148" in text
    wide = json.loads(run_cli_here("info", "--preset", "cp-mobile-d24", "--width", "48", "--json").stdout)
    assert (wide["params"], wide["macs"]) == mobile_complexity(D24.config.replace(base_channels=48), 65)
    assert_one_line_error(run_cli_here("info", "--preset", "cp-mobile-d24", "--rho", "3"), 2,
                          "--rho", "CP-ResNet")
    listed = json.loads(run_cli_here("info", "--list-presets", "--json").stdout)
    assert listed["cp-mobile-d24"]["variant"] == "cp-mobile"


def test_info_on_the_preset_needs_no_torch():
    proc = run_cli("info", "--preset", "cp-mobile-d24", "--json", python_prelude=HIDE_TORCH)  # a device install
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert (d["params"], d["macs"]) == (61_148, 29_419_156)


def test_folding_batchnorm_keeps_the_function():
    from edgeasc.export.fold import fold_model, max_abs_difference

    torch.manual_seed(0)
    model = build_model(D24.config.replace(base_channels=8, n_classes=3))
    x = torch.randn(8, 1, 64, 30)
    for m in model.modules():  # BatchNorm statistics of real inputs, not the identity it starts as
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
            torch.nn.init.normal_(m.weight, 1.0, 0.3)
            torch.nn.init.normal_(m.bias, 0.0, 0.3)
    model.train()
    with torch.no_grad():
        model(x)
    folded = fold_model(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert folded.stages.s1.b1.block[1][0].groups == 16 and folded.stages.s1.b1.block[1][0].bias is not None
    with torch.no_grad():
        scale = float(model.eval()(x).abs().max())
    assert scale > 0.1 and max_abs_difference(model, folded, x) <= 1e-5 * max(1.0, scale)


def test_size_report_leaves_batchnorm_out_of_conv_rows_when_rules_say_so():
    from edgeasc.export.report import RULES, size_report

    stats = describe_config(D24.config, seconds=1.0, features=D24.input_features)
    counted = size_report(stats, "fp16", RULES["dcase2024"])
    assert counted["counted_bytes"] == 2 * 61_148 and counted["verdict"] == "PASS"
    without = size_report(stats, "fp16", RULES["dcase2020"])  # BatchNorm not counted
    assert without["counted_bytes"] == 2 * (61_148 - 2_708)
    rows = {x["name"]: x["counted_bytes"] for x in without["layers"]}
    assert rows["in_c.0"] == 2 * 72 and rows["feed_forward.1"] == 0


@pytest.mark.parametrize("config", [D24.config.replace(base_channels=8),
                                    D24.config.replace(base_channels=16, channels_multiplier=1.0,
                                                       n_blocks=(2, 2), strides={"b2": (2, 2)})])
def test_channel_groups_match_torch_pruning_dependency_groups(config):
    """Our groups, written from the architecture, against DepGraph's: the same (layer, in/out)
    members for every group. A depthwise conv's channels are its expansion's (one group); the
    residual stream runs through identity and average-pool shortcuts and ends where a block
    changes width."""
    import torch_pruning as tp  # the dev extra installs it: this test must run, never skip

    from edgeasc.compress.structured import module_groups

    model = build_model(config).eval()
    names = {m: n for n, m in model.named_modules()}
    modules = dict(model.named_modules())
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 1, 64, 20))
    ours: dict[str, set] = {}
    for module, (g_out, g_in) in module_groups(config).items():
        for group, role in ((g_out, "out"), (g_in, "in")):
            if group is not None:
                ours.setdefault(group, set()).add((module, role))
    assert {"in_c.0", "stem", "b1", "b2"} <= set(ours)
    for group, members in ours.items():
        producer = min(m for m, r in members if r == "out")
        theirs = set()
        for item in graph.get_pruning_group(modules[producer], tp.prune_conv_out_channels, idxs=[0]):
            target = item.dep.target.module
            if target in names and isinstance(target, torch.nn.Conv2d | torch.nn.BatchNorm2d):
                depthwise = isinstance(target, torch.nn.Conv2d) and target.groups > 1
                role = "in" if item.dep.handler.__name__.endswith("in_channels") and not depthwise else "out"
                theirs.add((names[target], role))
        assert theirs == members, group


def _trained_like(config):
    """Non-trivial weights and BatchNorm statistics of real inputs (kaiming init alone leaves
    every channel alike)."""
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.randn(8, config.in_channels, 64, 20))
    return model.eval()


def test_channel_pruning_rebuilds_a_smaller_cp_mobile_with_the_masked_logits():
    from edgeasc.compress.structured import (
        ChannelPruner,
        importance,
        rebuild,
        resolve_budget,
        select_channels,
        zero_channels,
    )

    config = D24.config.replace(base_channels=16, n_classes=3, n_mels=64)
    model = _trained_like(config)
    budget = resolve_budget(config, 20, macs_target="40%")
    assert budget.dense == mobile_complexity(config, 20)
    keep = select_channels(config, importance(model), 20, macs=budget.macs)
    plan = {g: int(k.numel()) for g, k in keep.items()}
    assert list(plan) == ["in_c.0", "stem", "b1", "b2", "b3", "b4", "s2", "b5", "b6", "s3"]
    x = torch.randn(3, 1, 64, 20)
    small, _, diff = rebuild(model, keep, check=x)
    assert small.config.channels == tuple(plan.items()) and small.config.dense == config
    params, macs = mobile_complexity(small.config, 20)
    assert macs <= budget.macs < mobile_complexity(config, 20)[1]
    assert params == sum(p.numel() for p in small.parameters())
    assert small.stages.s1.b1.block[1][0].groups == plan["b1"]  # the depthwise conv kept its expansion's channels
    with torch.no_grad():
        expected, got = zero_channels(model, keep)(x), small(x)
        assert not torch.allclose(model(x), expected, atol=1e-3)  # the removed channels mattered
    assert torch.allclose(got, expected, atol=1e-5 * max(1.0, float(expected.abs().max())), rtol=0)
    stats = describe_config(small.config, seconds=1.0, features=D24.input_features.__class__(
        sample_rate=32000, hop_length=500, n_mels=64, n_fft=4096, fmax=16000.0, clip_seconds=1.0))
    assert stats.channel_plan == plan and stats.dense_params == mobile_complexity(config, 65)[0]
    assert config_from_dict(small.config.to_dict()) == small.config
    pruner = ChannelPruner(config, 20, macs_target="40%", epochs=2, multiple=8)
    model, _, removed, _ = pruner.step(_trained_like(config), 2)
    assert removed > 0 and pruner.done(model.config)
    assert all(w % 8 == 0 or w == config.dense_groups()[g] for g, w in model.config.channels)


def test_the_preset_brings_its_frontend_unless_one_is_named():
    """cp-mobile-d24 was designed for the 2024 baselines' 32 kHz log-mel (256 x 65 per second):
    a run takes it by default; --frontend still wins; CP-ResNet presets keep the perceptual one."""
    from edgeasc.train.config import resolve_train_config

    data = {"dataset": "/data/tau22"}
    assert resolve_train_config({**data, "preset": "cp-mobile-d24"}).frontend == "d24"
    assert resolve_train_config({**data, "preset": "cp-mobile-d24", "frontend": "perceptual"}).frontend == "perceptual"
    assert resolve_train_config({**data, "preset": "d20-submission-2"}).frontend == "perceptual"
    assert resolve_train_config({**data, "recipe": "d24"}).frontend == "perceptual"  # the recipe is not the input
