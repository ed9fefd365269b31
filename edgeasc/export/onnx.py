"""ONNX export with the dynamo exporter, made reproducible and self-describing, then verified
with onnxruntime against the PyTorch model."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import warnings
from contextlib import contextmanager

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from edgeasc.console import verbose
from edgeasc.errors import ConfigError, EdgeascError
from edgeasc.runtime.deployed import quiet_options
from edgeasc.runtime.metadata import PREFIX as METADATA_PREFIX
from edgeasc.runtime.metadata import (
    MetadataError,
    check_against_graph,
    check_conv_plan,
    parse_metadata,
)
from edgeasc.runtime.onnx_proto import conv_widths, packed_digest, read_model

OPSET = 18
INPUT, OUTPUT, WAVEFORM_INPUT = "features", "logits", "waveform"


def export_proto(model: torch.nn.Module, in_channels: int, n_mels: int, frames: int,
                 waveform_samples: int | None = None) -> onnx.ModelProto:
    """Dynamic batch and time axes, named input/output, debug metadata stripped, simplified.
    With `waveform_samples` the model takes (batch, channels, samples) audio instead."""
    if waveform_samples:
        x = torch.randn(2, in_channels, waveform_samples)
        time_axis = torch.export.Dim("samples", min=4096, max=100_000_000)
        dynamic = ({0: torch.export.Dim("batch", min=1, max=4096), 2: time_axis},)
        input_name = WAVEFORM_INPUT
    else:
        x = torch.randn(2, in_channels, n_mels, frames)
        time_axis = torch.export.Dim("frames", min=24, max=1_000_000)
        dynamic = ({0: torch.export.Dim("batch", min=1, max=4096), 3: time_axis},)
        input_name = INPUT
    with exporter_output(), torchlib_registry_built_once():
        program = torch.onnx.export(model.eval(), (x,), dynamo=True, opset_version=OPSET,
                                    input_names=[input_name], output_names=[OUTPUT], dynamic_shapes=dynamic,
                                    external_data=False, verbose=None if verbose() else False)
        proto = strip_debug_info(program.model_proto)
        import onnxslim

        proto = onnxslim.slim(proto)
    return strip_debug_info(proto)


_REGISTRIES: dict[tuple, object] = {}
REGISTRY_BUILDS = {"count": 0}  # how often the registry was built in this process (tested)


@contextmanager
def torchlib_registry_built_once():
    """The dynamo exporter rebuilds its table of ONNX translations on every call, parsing the
    source of each of torchlib's functions (a median 0.45 CPU-s a call); a command that exports
    several networks (per-device models, fp32 then int8, a budget fit) builds it once per process.
    The table is only read during an export (torch.onnx registers nothing into it unless given a
    custom translation table, which edgeasc never passes), and the graph is the same byte for byte
    (tested). A torch whose exporter lacks this internal exports exactly as before."""
    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:
        yield
        return
    registry_class = _registration.ONNXRegistry
    original = registry_class.__dict__.get("from_torchlib")
    if not isinstance(original, classmethod):
        yield
        return

    def from_torchlib(cls, *args, **kwargs):
        key = (cls, args, tuple(sorted(kwargs.items())))
        if key not in _REGISTRIES:
            REGISTRY_BUILDS["count"] += 1
            _REGISTRIES[key] = original.__func__(cls, *args, **kwargs)
        return _REGISTRIES[key]

    registry_class.from_torchlib = classmethod(from_torchlib)
    try:
        yield
    finally:
        registry_class.from_torchlib = original


@contextmanager
def exporter_output():
    """The exporter's and onnxslim's own output: hidden (its log lines about torchvision ops we never
    use, its FutureWarnings), or with --verbose sent to stderr, where it cannot mix into --json."""
    if verbose():
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    torch_onnx_log = logging.getLogger("torch.onnx")
    level = torch_onnx_log.level
    torch_onnx_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        torch_onnx_log.setLevel(level)


def strip_debug_info(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop what the exporter records about the machine it ran on: per-node stack traces and
    module paths (absolute local source paths), value_info and doc strings. The same
    checkpoint then exports to the same bytes anywhere."""
    proto.doc_string = ""
    proto.graph.doc_string = ""
    del proto.graph.value_info[:]
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for func in proto.functions:
        for node in func.node:
            del node.metadata_props[:]
            node.doc_string = ""
    kept = [p for p in proto.metadata_props if p.key.startswith(METADATA_PREFIX)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.producer_name, proto.producer_version = "edgeasc", ""
    return proto


FLOAT16_MAX = float(np.finfo(np.float16).max)


def to_float16_weights(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Store float32 initializers as float16 with a Cast back to float32 in the graph: half the
    bytes at float32 compute speed (onnxruntime folds the Casts when the session starts;
    its float16 CPU kernels would be slower, especially on ARM)."""
    graph = proto.graph
    conv_inputs = {name for n in graph.node if n.op_type == "Conv" for name in n.input[1:]}
    casts, keep = [], []
    for init in graph.initializer:  # conv weights and biases only: the frontend's constants stay exact
        if init.data_type != TensorProto.FLOAT or init.name not in conv_inputs:
            keep.append(init)
            continue
        weights = numpy_helper.to_array(init)
        largest = float(np.abs(weights).max()) if weights.size else 0.0
        if largest > FLOAT16_MAX:  # would be stored as inf
            raise EdgeascError(f"weight {init.name} holds {largest:.3g}, beyond float16's range (±{FLOAT16_MAX:g}): "
                               "export it as --precision fp32")
        half = numpy_helper.from_array(weights.astype(np.float16), f"{init.name}__fp16")
        keep.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=f"{init.name}__cast"))
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return proto


def conv_plan(model_config: dict) -> dict:
    """The metadata's `conv_plan` of a network (CP-ResNet or CP-Mobile): every channel group with its width under the
    plan, and every conv as the [in, out] indices of its groups (-1: the network's input, its
    logits). Convs are listed by their groups, not by name: the runtime compares the multiset
    of (in, out) widths with the graph's (see runtime/onnx_proto.py for why not names)."""
    from edgeasc.models.channels import conv_layers, widths
    from edgeasc.models.cp_mobile_config import CPMobileConfig, mobile_conv_groups
    from edgeasc.models.family import config_from_dict

    config = config_from_dict(model_config)
    if isinstance(config, CPMobileConfig):  # a depthwise conv lists as bN -> bN: the graph's in is weight x group
        w, pairs = mobile_conv_groups(config)
        convs = [(gin, gout) for _, gin, gout in pairs]
    else:
        w = widths(config)
        convs = [(c.in_group, c.out_group) for c in conv_layers(config, 100)]
    index = {name: i for i, name in enumerate(w)}
    return {"groups": [[name, width] for name, width in w.items()],
            "convs": [[index.get(gin, -1), index.get(gout, -1)] for gin, gout in convs]}


def set_metadata(proto: onnx.ModelProto, metadata: dict, where: str = "the exported model") -> onnx.ModelProto:
    """Write `metadata` as the file's `edgeasc.*` entries, with what the exporter knows of the
    graph added (the conv_plan of a model_config, the sparse pack's SHA-256), and check it as
    the runtime will (parse_metadata, the graph's input and output, its convs): an export
    never writes a file the device refuses. Raises MetadataError, one line."""
    graph = read_model(proto.SerializeToString())
    metadata = dict(metadata)
    if isinstance(metadata.get("model_config"), dict) and "conv_plan" not in metadata:
        try:
            metadata["conv_plan"] = conv_plan(metadata["model_config"])
        except (ConfigError, TypeError, ValueError) as exc:
            raise MetadataError(f"{where}: metadata {METADATA_PREFIX}model_config: "
                                f"{str(exc).splitlines()[0][:160]}") from None
    if isinstance(metadata.get("sparse"), dict):
        metadata["sparse"] = {**metadata["sparse"], "sha256": packed_digest(graph)[1]}
    encoded = {METADATA_PREFIX + key: value if isinstance(value, str) else json.dumps(value, sort_keys=True)
               for key, value in metadata.items()}
    meta = parse_metadata(encoded, where)
    check_against_graph(meta, graph.inputs, graph.outputs, where)
    check_conv_plan(meta, conv_widths(graph), where)
    for key, value in encoded.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto


def read_metadata(proto_or_path) -> dict:
    proto = onnx.load(proto_or_path, load_external_data=False) if not isinstance(proto_or_path, onnx.ModelProto) \
        else proto_or_path
    return parse_metadata({p.key: p.value for p in proto.metadata_props})


def verify(onnx_bytes: bytes, reference: torch.nn.Module, in_channels: int, n_mels: int,
           frames: tuple[int, ...] = (431, 100), seed: int = 0, inputs: list[np.ndarray] | None = None,
           frontend=None) -> dict:
    """Logits of the ONNX file under onnxruntime vs the PyTorch model: max |difference| and top-1
    agreement, on random inputs of several lengths (and real clips when given). With
    `frontend` (waveform -> normalised features, numpy) the file takes audio: `frames` are
    then sample counts, and the reference is the numpy frontend followed by the model."""
    import onnxruntime as ort

    opts = quiet_options(ort.SessionOptions())
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    shape = (3, in_channels) if frontend else (3, in_channels, n_mels)
    scale = 0.1 if frontend else 1.0
    batches = [(scale * rng.standard_normal((*shape, t))).astype(np.float32) for t in frames]
    batches += list(inputs or [])
    worst, agree, total, finite = 0.0, 0, 0, True
    reference = reference.eval()
    for x in batches:
        got = session.run([OUTPUT], {WAVEFORM_INPUT if frontend else INPUT: x})[0]
        features = np.stack([frontend(clip) for clip in x]) if frontend else x
        with torch.no_grad():
            want = reference(torch.from_numpy(features)).numpy()
        # NaN compares false with everything: without this, an all-NaN network "agrees" with max |Δ| 0
        finite = finite and bool(np.isfinite(got).all() and np.isfinite(want).all())
        worst = max(worst, float(np.abs(got - want).max()))
        agree += int((got.argmax(1) == want.argmax(1)).sum())
        total += len(x)
    return {"finite": finite, "max_abs_logit_difference": worst if finite else float("nan"), "top1_agreement": agree / total, "clips": total,
            "real_clips": sum(len(x) for x in inputs or []), "frames": list(frames)}
