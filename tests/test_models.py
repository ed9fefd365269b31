"""The CP-ResNet family reproduces docs/method.md §2 and §4 exactly."""

import math

import pytest
import torch
from torch import nn

from edgeasc.errors import ConfigError
from edgeasc.models import PRESETS, ModelConfig, build_model, config_from_dict
from edgeasc.models.complexity import analyse, count_nonzero, count_params
from edgeasc.models.config import kernel_sizes
from edgeasc.models.cp_resnet import BasicBlock
from edgeasc.models.layers import Conv2d, DampedConv2d, DecomposedConv2d, damping_matrix
from edgeasc.models.receptive_field import output_shapes, receptive_field
from edgeasc.runtime.features import FeatureParams

D18 = dict(rho=7, width=128, n_classes=10, in_channels=1)
D20 = dict(rho=3, width=128, n_classes=3, in_channels=2)

# docs/method.md §4: (config, params, MACs per 10 s clip)
TABLE = {
    "D18 CP-ResNet / Damp": (dict(D18), 1_715_604, 7_774_698_624),
    "D18 stereo": (dict(D18, in_channels=2), 1_718_804, 7_862_074_624),
    "D18 Damp-Restricted": (dict(D18, width=64), 431_828, 1_965_768_256),
    "D18 32 channels": (dict(D18, width=32), 109_428, 502_488_864),
    "D18 full baseline": (dict(D18, depth_restriction=(0, 0, 0)), 3_956_628, 8_644_704_384),
    "D18 Damp-Decomp": (dict(D18, decomposition=4), 417_172, 1_271_471_232),
    "D20 CP-ResNet / Damp": (dict(D20), 1_061_638, 7_113_085_696),
    "D20 Damp-Restricted": (dict(D20, width=64), 268_678, 1_822_034_304),
    "D20 Damp-Decomp": (dict(D20, decomposition=4), 361_222, 1_304_990_464),
    "D20 at rho 4": (dict(D20, rho=4), 1_192_710, 7_328_436_992),
}


@pytest.mark.parametrize("row", TABLE)
@pytest.mark.parametrize("damping", [True, False])
def test_table_params_and_macs(row, damping):
    kwargs, params, macs = TABLE[row]
    stats = analyse(ModelConfig(damping=damping, **kwargs))
    assert stats.params == params
    assert stats.macs == macs
    assert stats.nonzero_params == params  # a config is dense


@pytest.mark.parametrize("row", ["D18 Damp-Restricted", "D20 Damp-Decomp", "D18 32 channels"])
def test_real_modules_count_the_same(row):
    kwargs, params, _ = TABLE[row]
    model = build_model(ModelConfig(**kwargs))
    assert count_params(model) == params
    stats = analyse(model)
    assert stats.params == params


def test_d20_restricted_bn_and_conv_split():
    # docs/method.md §3 example: 268,678 = 265,728 conv weights + 2,950 BatchNorm.
    model = build_model(ModelConfig(**dict(D20, width=64)))
    conv = sum(p.numel() for _, p in model.prunable_weights())
    assert conv == 265_728
    assert count_params(model) - conv == 2_950
    assert analyse(model.config).bn_params == 2_950


def test_prunable_weights_are_exactly_the_conv_weights():
    model = build_model(ModelConfig(**dict(D20, width=16, decomposition=4)))
    names = [n for n, _ in model.prunable_weights()]
    assert names[0] == "stem.0.weight" and names[-1] == "head.0.weight"
    assert "stage1.block1.conv1.spatial.weight" in names
    assert "stage2.block1.shortcut.0.reduce.weight" in names
    assert all(p.dim() == 4 for _, p in model.prunable_weights())
    bn = sum(m.weight.numel() + m.bias.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert sum(p.numel() for _, p in model.prunable_weights()) + bn == count_params(model)


RF = [23, 31, 39, 55, 71, 87, 103, 135, 167, 199, 231, 263, 295]


@pytest.mark.parametrize("rho", range(13))
def test_receptive_field(rho):
    assert receptive_field(ModelConfig(rho=rho)) == RF[rho]
    assert analyse(ModelConfig(rho=rho, width=8)).receptive_field == [RF[rho], RF[rho]]


def test_kernel_sizes_rho3_and_rho7():
    assert kernel_sizes(3) == ([[3, 3, 3, 1], [1, 1, 1, 1], [1, 1, 1, 1]],
                               [[1, 3, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])
    assert kernel_sizes(7) == ([[3, 3, 3, 3], [3, 1, 1, 1], [1, 1, 1, 1]],
                               [[1, 3, 3, 3], [1, 1, 1, 1], [1, 1, 1, 1]])


def test_stage_shapes_for_10_seconds():
    frames = FeatureParams().n_frames(10.0)
    assert frames == 431
    for w in (128, 64):
        shapes = output_shapes(ModelConfig(**dict(D20, width=w)), frames)
        assert shapes == {"stem": [w, 127, 215], "stage1": [w, 15, 26], "stage2": [2 * w, 15, 26],
                          "logits": [3]}
    full = output_shapes(ModelConfig(**dict(D18, depth_restriction=(0, 0, 0))), frames)
    assert full["stage3"] == [512, 15, 26]
    # the analytic shapes agree with the real forward pass
    model = build_model(ModelConfig(**dict(D20, width=8)))
    x = torch.zeros(1, 2, 256, 431)
    assert list(model.stage1(model.stem(x)).shape[1:]) == [8, 15, 26]


def test_three_stage1_blocks_pool_only_twice():
    shapes = output_shapes(ModelConfig(width=8, depth_restriction=(1, 1, 4)), 431)
    assert shapes["stage1"] == [8, 31, 53]


def test_empty_stage_is_skipped_and_head_takes_last_channels():
    model = build_model(ModelConfig(width=8, depth_restriction=(0, 4, 2), n_classes=5))
    assert model.stage_names == ["stage1", "stage3"]
    assert model.stage3.block1.conv1.in_channels == 8
    assert model.head[0].in_channels == 32
    assert model(torch.randn(2, 2, 256, 100)).shape == (2, 5)


@pytest.mark.parametrize("floor, k, rows", [
    (0.1, 3, [0.1, 1.0, 0.1]),
    (0.1, 5, [0.1, 0.55, 1.0, 0.55, 0.1]),
    (0.01, 3, [0.01, 1.0, 0.01]),
    (0.01, 5, [0.01, 0.505, 1.0, 0.505, 0.01]),
])
def test_damping_matrix(floor, k, rows):
    c = damping_matrix(k, k, floor)
    expected = torch.tensor(rows).unsqueeze(1).expand(k, k)
    assert torch.allclose(c, expected, atol=1e-7)
    assert torch.equal(damping_matrix(1, 1, floor), torch.ones(1, 1))


def test_damped_conv_multiplies_constant_into_weight():
    conv = DampedConv2d(2, 4, 3, padding=1, bias=False, damping_floor=0.1)
    assert "damping" not in dict(conv.named_parameters())
    assert "damping" not in conv.state_dict()  # rebuilt from the config, never stored
    x = torch.randn(1, 2, 9, 7)
    expected = torch.nn.functional.conv2d(x, conv.weight * damping_matrix(3, 3, 0.1), padding=1)
    assert torch.allclose(conv(x), expected, atol=1e-6)
    conv = conv.to(torch.float64)
    assert conv.damping.dtype == torch.float64
    assert conv(x.double()).dtype == torch.float64


def test_damping_in_each_variant():
    damped = build_model(ModelConfig(rho=7, width=8))
    assert isinstance(damped.stem[0], DampedConv2d)  # stem damped too (5x5 -> 0.1, 0.55, 1, ...)
    assert torch.allclose(damped.stem[0].damping[0, 0, :, 0], torch.tensor([0.1, 0.55, 1, 0.55, 0.1]))
    assert not isinstance(damped.head[0], DampedConv2d)  # 1x1: nothing to damp
    plain = build_model(ModelConfig(rho=7, width=8, damping=False))
    assert not any(isinstance(m, DampedConv2d) for m in plain.modules())
    dd = build_model(ModelConfig(rho=7, width=8, decomposition=4))
    assert not isinstance(dd.stem[0], DampedConv2d)
    damped_mods = [n for n, m in dd.named_modules() if isinstance(m, DampedConv2d)]
    assert damped_mods and all(n.endswith(".spatial") for n in damped_mods)
    floor = build_model(ModelConfig(rho=7, width=8, damping_floor=0.01))
    assert floor.stage1.block1.conv1.damping[0, 0, 0, 0].item() == pytest.approx(0.01)


def test_decomposed_conv_matches_paper_example():
    conv = DecomposedConv2d(128, 128, 3, padding=1, factor=4)
    assert sum(p.numel() for p in conv.parameters()) == 17_408
    assert [tuple(c.weight.shape) for c in (conv.reduce, conv.spatial, conv.expand)] == \
        [(32, 128, 1, 1), (32, 32, 3, 3), (128, 32, 1, 1)]


def test_decomposition_covers_1x1_and_shortcuts_but_not_stem_or_head():
    m = build_model(ModelConfig(width=8, decomposition=4))
    assert isinstance(m.stage1.block1.conv2, DecomposedConv2d)  # a 1x1 conv, still decomposed
    assert isinstance(m.stage2.block1.shortcut[0], DecomposedConv2d)
    assert type(m.stem[0]) is Conv2d and type(m.head[0]) is Conv2d  # plain: not damped, not decomposed


def test_fixup_init():
    torch.manual_seed(0)
    config = ModelConfig(**dict(D20, width=64))
    model = build_model(config)
    n_blocks = 7
    assert config.n_blocks == n_blocks
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == n_blocks
    for b in blocks:
        assert torch.count_nonzero(b.conv2.weight) == 0
        w = b.conv1.weight
        k, c_out = w.shape[-1], w.shape[0]
        expected = math.sqrt(2 / (k * k * c_out)) / math.sqrt(n_blocks)
        assert w.std().item() == pytest.approx(expected, rel=0.1)
    assert torch.count_nonzero(model.head[0].weight) == 0
    sc = model.stage2.block1.shortcut[0].weight
    assert sc.std().item() == pytest.approx(math.sqrt(2 / sc.shape[0]), rel=0.1)
    stem = model.stem[0].weight
    assert stem.std().item() == pytest.approx(math.sqrt(2 / (2 * 25)), rel=0.1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    # a fresh fixup network has zeros where conv2/head start; BatchNorm always counts
    zeros = sum(b.conv2.weight.numel() for b in blocks) + model.head[0].weight.numel()
    assert count_nonzero(model) == count_params(model) - zeros


def test_decomposed_init_is_kaiming_fan_out_everywhere():
    torch.manual_seed(0)
    model = build_model(ModelConfig(**dict(D20, width=64, decomposition=4)))
    for name, w in model.prunable_weights():
        assert torch.count_nonzero(w) == w.numel(), name
    w = model.stage1.block1.conv1.spatial.weight  # 16 -> 16, 3x3
    assert w.std().item() == pytest.approx(math.sqrt(2 / (9 * 16)), rel=0.1)
    head = model.head[0].weight
    assert head.std().item() == pytest.approx(math.sqrt(2 / 3), rel=0.5)


VARIANT_CONFIGS = {
    "cp-resnet": dict(damping=False),
    "damped": dict(damping=True),
    "decomposed": dict(damping=False, decomposition=4),
    "damped-decomposed": dict(damping=True, decomposition=4),
}


@pytest.mark.parametrize("variant", VARIANT_CONFIGS)
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("frames", [431, 44, 23])  # 10 s, 1 s, 0.5 s
def test_forward_backward(variant, channels, frames):
    torch.manual_seed(0)
    config = ModelConfig(rho=5, width=8, n_classes=3, in_channels=channels, **VARIANT_CONFIGS[variant])
    assert config.variant == variant
    model = build_model(config)
    x = torch.randn(2, channels, 256, frames)
    logits = model(x)
    assert logits.shape == (2, 3)
    loss = nn.functional.cross_entropy(logits, torch.tensor([0, 2]))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # something upstream of the zero-initialised head must receive gradient
    assert model.head[0].weight.grad.abs().sum() > 0


def test_model_moves_with_dtype_and_keeps_damping_buffers():
    model = build_model(ModelConfig(width=8)).to(torch.float64)
    buffers = [m.damping for m in model.modules() if isinstance(m, DampedConv2d)]
    assert buffers and all(b.dtype == torch.float64 for b in buffers)
    assert model(torch.randn(1, 2, 256, 50, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("kwargs, message", [
    (dict(rho=-1), "rho"),
    (dict(width=0), "width"),
    (dict(width=30, decomposition=4), "not divisible"),
    (dict(depth_restriction=(0, 1)), "three integers"),
    (dict(depth_restriction=(0, 5, 0)), "three integers"),
    (dict(depth_restriction="a,b,c"), "three integers"),
    (dict(damping_floor=1.5), "damping floor"),
    (dict(decomposition=0), "decomposition"),
    (dict(n_classes=0), "n_classes"),
])
def test_impossible_configs(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**kwargs)


def test_too_short_input_is_a_config_error():
    with pytest.raises(ConfigError, match="too short"):
        analyse(ModelConfig(width=8), seconds=0.1)


def test_config_round_trips_through_dict():
    for preset in PRESETS.values():
        assert config_from_dict(preset.config.to_dict()) == preset.config
    with pytest.raises(ConfigError, match="unknown model config keys"):
        ModelConfig.from_dict({"rho": 3, "colour": "red"})


def test_pruned_preset_reports_target():
    stats = analyse(PRESETS["d20-damped-pruned-250k"].config, prune_target=250_000)
    assert stats.nonzero_params == 250_000
    assert stats.bytes == {"float32": 1_000_000, "float16": 500_000, "int8": 250_000}
    with pytest.raises(ConfigError, match="prune target"):
        analyse(PRESETS["d20-damped"].config, prune_target=2_000_000)
    with pytest.raises(ConfigError, match="prune target"):
        analyse(PRESETS["d20-damped"].config, prune_target=0)


# ----------------------------------------------------------------------------- fidelity to the authors' code
def test_decomposition_factor_one_is_one_plain_conv():
    """The authors' code builds a single conv when Z = 1 (no 1x1 bottleneck): the same
    parameters and MACs as the plain network, and no reduce/spatial channel groups."""
    from edgeasc.models.channels import channel_groups, complexity

    plain = ModelConfig(rho=3, width=48, depth_restriction=(0, 1, 3), n_classes=3, damping=False)
    for damping in (False, True):
        z1 = plain.replace(decomposition=1, damping=damping)
        assert not z1.decomposed and z1.replace(decomposition=4).decomposed
        assert analyse(z1).params == analyse(plain).params == 227_526
        assert complexity(z1, 431) == complexity(plain, 431) == (227_526, 1_070_171_616)
        assert [g.name for g in channel_groups(z1)] == [g.name for g in channel_groups(plain)]
        model = build_model(z1)
        assert not any(isinstance(m, DecomposedConv2d) for m in model.modules())
        assert not any(isinstance(m, DampedConv2d) for m in model.modules())  # plain convs, as the authors'


def test_receptive_field_as_the_authors_scripts_print_it():
    from edgeasc.models.receptive_field import receptive_field, receptive_field_authors

    full = [ModelConfig(rho=rho, depth_restriction=(0, 0, 0)) for rho in range(12)]
    assert [receptive_field_authors(c) for c in full] == [9, 17, 33, 49, 65, 81, 113, 145, 177, 209, 241, 273]
    assert [receptive_field(c) for c in full] == [23, 31, 39, 55, 71, 87, 103, 135, 167, 199, 231, 263]
    stats = analyse(ModelConfig(rho=4, width=8, n_classes=3))
    assert stats.receptive_field == [71, 71] and stats.to_dict()["receptive_field_authors"] == [65, 65]


def test_a_plain_stem_in_a_damped_network_as_the_released_winner():
    from edgeasc.export.fold import fold_model, max_abs_difference

    damped = ModelConfig(rho=4, width=8, depth_restriction=(0, 2, 4), n_classes=3)
    plain_stem = damped.replace(damp_stem=False)
    assert PRESETS["d20-submission-2"].config.damp_stem is False
    a, b = build_model(damped), build_model(plain_stem)
    assert isinstance(a.stem[0], DampedConv2d) and not isinstance(b.stem[0], DampedConv2d)
    blocks = [m for name, m in b.named_modules() if name.startswith("stage") and isinstance(m, DampedConv2d)]
    assert blocks  # the blocks stay damped
    assert analyse(plain_stem).params == analyse(damped).params
    assert ModelConfig.from_dict({k: v for k, v in damped.to_dict().items() if k != "damp_stem"}) == damped
    b.eval()
    x = torch.randn(2, 2, 256, 40)
    assert max_abs_difference(b, fold_model(b, fold_damping=True, fold_bn=True), x) < 1e-4
    with pytest.raises(ConfigError, match="damp_stem"):
        damped.replace(damp_stem="no")


def test_torch_free_description_equals_the_modules_for_every_preset_variant_and_plan():
    import itertools

    from edgeasc.models.channels import channel_groups
    from edgeasc.models.complexity import analyse
    from edgeasc.models.describe import describe_config
    from edgeasc.models.presets import PRESETS

    configs = [p.config for p in PRESETS.values()]
    configs += [ModelConfig(rho=r, width=16, decomposition=z, damping=d, damp_stem=ds, depth_restriction=dr)
                for r, z, d, ds, dr in itertools.product((3, 7), (None, 1, 4), (True, False), (True, False),
                                                         ((0, 1, 4), (0, 0, 0), (0, 4, 4)))]
    for base in (PRESETS["d20-damped-decomp"].config, PRESETS["d20-submission-2"].config):  # channel-pruned
        configs.append(base.replace(channels={g.name: max(1, g.dense_width // 3) for g in channel_groups(base)}))
    for i, config in enumerate(configs):
        # the clip length on the presets and the pruned plans; the 72 variants at 1 s (a 10-s
        # analysis of each costs a forward pass ten times as long and tests the same frame count)
        for seconds in (1.0, 10.0) if i < len(PRESETS) or i >= len(configs) - 2 else (1.0,):
            assert describe_config(config, seconds).to_dict() == analyse(config, seconds).to_dict(), config
