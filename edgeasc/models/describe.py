"""What a network costs, from its config alone: parameters, MACs, output shapes, receptive
field and bytes per layer, with no torch (the device install's `edgeasc info --preset`).

The numbers are those `models.complexity.analyse` measures by running the torch modules on
meta tensors (tested equal for every preset and variant, decomposed and channel-pruned
networks included); the layer list comes from `models.channels.conv_layers`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from edgeasc.errors import ConfigError
from edgeasc.models.channels import complexity, conv_layers, widths
from edgeasc.models.config import STAGE1_POOL_AFTER, ModelConfig
from edgeasc.models.cp_mobile_config import (
    CPMobileConfig,
    mobile_layers,
    mobile_output_shapes,
    mobile_receptive_field,
)
from edgeasc.models.receptive_field import output_shapes, receptive_field, receptive_field_authors
from edgeasc.runtime.features import FeatureParams

BYTES_PER_VALUE = {"float32": 4, "float16": 2, "int8": 1}


@dataclass
class LayerStats:
    name: str
    kind: str
    kernel: str
    output_shape: list[int]
    params: int
    nonzero_params: int
    macs: int
    channels: list[int] = field(default_factory=list)        # conv: [in, out]; BatchNorm: [channels]
    dense_channels: list[int] = field(default_factory=list)  # the same before channel pruning
    bn_params: int = 0  # a BatchNorm's parameters counted inside this conv's row (CP-Mobile's table)


@dataclass
class ModelStats:
    config: dict
    seconds: float
    input_shape: list[int]
    params: int
    nonzero_params: int
    bn_params: int
    macs: int
    receptive_field: list[int]
    output_shapes: dict[str, list[int]]
    bytes: dict[str, int]
    layers: list[LayerStats] = field(default_factory=list)
    dense_params: int = 0    # before channel pruning (equal to params for a dense network)
    dense_macs: int = 0
    channel_plan: dict[str, int] | None = None
    receptive_field_authors: list[int] = field(default_factory=list)  # as the authors' scripts print it
    bn_macs: int = 0   # of `macs`, BatchNorm's (CP-Mobile counts them, as the organisers; an ONNX graph
                       # with BatchNorm folded computes macs - bn_macs)

    @property
    def macs_per_second(self) -> float:
        return self.macs / self.seconds

    def to_dict(self) -> dict:
        d = asdict(self)
        d["macs_per_second"] = self.macs_per_second
        return d


def check_prune_target(target: int, params: int, bn_params: int) -> None:
    """A target counts all trainable parameters; BatchNorm is never pruned, so the target
    must leave at least one conv weight and cannot exceed the model."""
    if not isinstance(target, int) or isinstance(target, bool) or target <= bn_params or target > params:
        raise ConfigError(f"prune target must be an integer in ({bn_params:,}, {params:,}] for this model "
                          f"(all parameters, BatchNorm's {bn_params:,} included), got {target!r}")


def stored_bytes(n_values: int) -> dict[str, int]:
    return {dtype: n_values * size for dtype, size in BYTES_PER_VALUE.items()}


def _damped(config: ModelConfig, name: str, kernel: int) -> bool:
    """Which convs the builder makes DampedConv2d (models/cp_resnet._conv_factory, layers.conv2d)."""
    if not config.damping or kernel < 3:
        return False
    if name == "stem.0":
        return config.damp_stem and config.decomposition is None
    if config.decomposed:
        return name.endswith(".spatial")
    return config.decomposition is None


def describe_config(config: ModelConfig | CPMobileConfig, seconds: float = 10.0,
                    features: FeatureParams | None = None, prune_target: int | None = None) -> ModelStats:
    """`analyse` for a config, without torch: every conv, BatchNorm and max-pool in module order."""
    features = features or FeatureParams()
    if not seconds > 0:
        raise ConfigError(f"--seconds must be > 0, got {seconds!r}")
    n_frames = features.n_frames(seconds)
    if isinstance(config, CPMobileConfig):
        return describe_mobile(config, seconds, n_frames, prune_target)
    shapes = output_shapes(config, n_frames)  # validates the input length first
    w = widths(config)
    dense_w = widths(config.dense)
    layers: list[LayerStats] = []
    pools = {f"stage1.block{b}": f"stage1.pool{b}" for b in STAGE1_POOL_AFTER}
    convs = conv_layers(config, n_frames)
    for i, layer in enumerate(convs):
        cin = w[layer.in_group] if layer.in_group else config.in_channels
        cout = w[layer.out_group] if layer.out_group else config.n_classes
        dense_in = dense_w[layer.in_group] if layer.in_group else config.in_channels
        dense_out = dense_w[layer.out_group] if layer.out_group else config.n_classes
        k = layer.kernel
        params = cin * cout * k * k
        shape = [cout, *layer.out_hw]
        kind = "damped conv" if _damped(config, layer.name, k) else "conv"
        layers.append(LayerStats(layer.name, kind, f"{k}x{k}", shape, params, params,
                                 params * layer.out_hw[0] * layer.out_hw[1], [cin, cout], [dense_in, dense_out]))
        if layer.bn:
            layers.append(LayerStats(layer.bn, "batchnorm", "", shape, 2 * cout, 2 * cout, 0, [cout], [dense_out]))
        block = ".".join(layer.name.split(".")[:2]) if layer.name.startswith("stage") else None
        nxt = convs[i + 1].name if i + 1 < len(convs) else ""
        if block in pools and not nxt.startswith(block + "."):  # the block's last layer: its pool follows
            layers.append(LayerStats(pools[block], "maxpool", "2x2", [cout, shape[1] // 2, shape[2] // 2], 0, 0, 0))
    params = sum(x.params for x in layers)
    bn = sum(x.params for x in layers if x.kind == "batchnorm")
    nonzero = params
    if prune_target is not None:
        check_prune_target(prune_target, params, bn)
        nonzero = prune_target
    dense_params, dense_macs = complexity(config.dense, n_frames)
    rf = receptive_field(config)
    return ModelStats(
        config=config.to_dict(), seconds=seconds, input_shape=[config.in_channels, config.n_mels, n_frames],
        params=params, nonzero_params=nonzero, bn_params=bn, macs=sum(x.macs for x in layers),
        receptive_field=[rf, rf], output_shapes=shapes, bytes=stored_bytes(nonzero), layers=layers,
        dense_params=dense_params, dense_macs=dense_macs,
        channel_plan=dict(config.channels) if config.channels else None,
        receptive_field_authors=[receptive_field_authors(config)] * 2)


_MOBILE_KIND = {"conv": "conv+BN+ReLU", "pointwise": "pointwise+BN+ReLU", "depthwise": "depthwise+BN+ReLU",
                "batchnorm": "batchnorm", "pool": "avgpool"}


def describe_mobile(config: CPMobileConfig, seconds: float, n_frames: int,
                    prune_target: int | None = None, conv_nonzero: dict[str, int] | None = None) -> ModelStats:
    """A CP-Mobile network row by row as the organisers' table: a conv with its BatchNorm (and
    ReLU) is one row, and BatchNorm counts 2C MACs (models/cp_mobile_config.py). With
    `conv_nonzero` (conv module path -> its non-zero weights) the rows count a trained model's
    non-zeros."""
    layers: list[LayerStats] = []
    bn = 0
    dense_rows = mobile_layers(config.dense, n_frames)
    for row, dense_row in zip(mobile_layers(config, n_frames), dense_rows, strict=True):
        kind = _MOBILE_KIND[row.kind]
        if row.name.endswith(".block.2"):
            kind = "pointwise+BN"       # the projection: no ReLU before the shortcut's sum
        elif row.name == "feed_forward.0":
            kind = "conv"
        kernel = f"{row.kernel}x{row.kernel}" if row.kernel else ("global" if row.kind == "pool" else "")
        conv_name = row.name if row.name.startswith("feed_forward") else f"{row.name}.0"
        nonzero = row.params
        if conv_nonzero is not None and row.conv_params:
            nonzero = conv_nonzero[conv_name] + row.bn_params
        channels = [row.in_channels, row.out_channels] if row.conv_params else [row.out_channels]
        dense = [dense_row.in_channels, dense_row.out_channels] if row.conv_params else [dense_row.out_channels]
        layers.append(LayerStats(row.name, kind, kernel, list(row.out_shape), row.params, nonzero, row.macs,
                                 channels, dense, row.bn_params if row.kind != "batchnorm" else 0))
        bn += row.bn_params
    params = sum(x.params for x in layers)
    nonzero = sum(x.nonzero_params for x in layers)
    if prune_target is not None:
        check_prune_target(prune_target, params, bn)
        nonzero = prune_target
    macs = sum(x.macs for x in layers)
    dense_params, dense_macs = sum(r.params for r in dense_rows), sum(r.macs for r in dense_rows)
    return ModelStats(
        config=config.to_dict(), seconds=seconds, input_shape=[config.in_channels, config.n_mels, n_frames],
        params=params, nonzero_params=nonzero, bn_params=bn, macs=macs,
        receptive_field=list(mobile_receptive_field(config)), output_shapes=mobile_output_shapes(config, n_frames),
        bytes=stored_bytes(nonzero), layers=layers, dense_params=dense_params, dense_macs=dense_macs, bn_macs=bn,
        channel_plan=dict(config.channels) if config.channels else None)
