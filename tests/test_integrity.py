"""Integrity of exported models (issue 25, item 4): the onnx_proto reader against the onnx
package, the channel plan and input shape against the graph, a filterbank that cannot be
built, and the sparse pack's checksum. Real exports, loaded in process through load_model
(onnxruntime); tampering as test_hostile.py does it."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeasc.export.onnx import set_metadata
from edgeasc.export.pipeline import export_checkpoint
from edgeasc.models import ModelConfig, build_model
from edgeasc.runtime.deployed import ModelError, load_model
from edgeasc.runtime.features import FeatureParams, mel_filterbank
from edgeasc.runtime.metadata import MetadataError, empty_mel_band, parse_metadata
from edgeasc.runtime.onnx_proto import ProtoError, conv_widths, packed_digest, read_model
from edgeasc.train.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A width-8 CP-ResNet with a third of its conv weights zero (so the pack holds bitmasks)."""
    tmp = tmp_path_factory.mktemp("integrity")
    torch.manual_seed(0)
    model = build_model(ModelConfig(width=8, n_classes=3)).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight[m.weight.abs() < 0.05] = 0
    save_checkpoint(tmp / "m.pt", {"model_config": model.config.to_dict(), "labels": ["a", "b", "c"],
                                   "feature_params": FeatureParams(clip_seconds=1.0).to_dict(), "channels": 2,
                                   "normalization": {"mean": [0.0] * 256, "std": [1.0] * 256},
                                   "model": model.state_dict(), "epoch": 1, "kind": "final"})
    export_checkpoint(tmp / "m.pt", tmp / "model.onnx")
    return tmp / "model.onnx"


def rewrite(src, dst, meta=None, init=None):
    """A copy of the model with metadata entries replaced (None: removed) and initializers' raw bytes changed."""
    proto = onnx.load(src)
    props = {p.key: p.value for p in proto.metadata_props}
    for k, v in (meta or {}).items():
        if v is None:
            props.pop(f"edgeasc.{k}")
        else:
            props[f"edgeasc.{k}"] = v if isinstance(v, str) else json.dumps(v)
    del proto.metadata_props[:]
    for k, v in props.items():
        e = proto.metadata_props.add()
        e.key, e.value = k, v
    for t in proto.graph.initializer:
        if init and t.name in init:
            t.raw_data = init[t.name](t.raw_data)
    onnx.save(proto, dst)
    return dst


def flip(offset, bit=0):
    return lambda raw: raw[:offset] + bytes([raw[offset] ^ (1 << bit)]) + raw[offset + 1:]


# ----------------------------------------------------------------------------- the reader
def test_the_reader_agrees_with_the_onnx_package(exported):
    data = exported.read_bytes()
    m, p = read_model(data), onnx.load_from_string(data)
    assert [(n.op_type, n.name, n.inputs, n.outputs) for n in m.nodes] == [
        (n.op_type, n.name, list(n.input), list(n.output)) for n in p.graph.node]
    assert {k: (t.dims, t.data_type, bytes(t.raw)) for k, t in m.initializers.items()} == {
        t.name: (list(t.dims), t.data_type, t.raw_data) for t in p.graph.initializer}
    assert m.metadata == {e.key: e.value for e in p.metadata_props}
    dims = [[d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]
            for v in p.graph.input]
    assert [(v.name, v.shape) for v in m.inputs] == [("features", ["batch", 2, 256, "frames"])] and \
        [v.shape for v in m.inputs] == dims
    assert [v.shape for v in m.outputs] == [["batch", 3]]
    convs = conv_widths(m)
    assert [(cin, cout) for _, cin, cout in convs] == [(2, 8)] + [(8, 8)] * 8 + [(8, 16), (8, 16)] + \
        [(16, 16)] * 5 + [(16, 3)]
    names = sorted(t.name for t in p.graph.initializer if t.name.startswith("sp"))
    count, digest = packed_digest(m)
    assert count == len(names) == 22 and len(digest) == 64


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_malformed_bytes_only_ever_raise_proto_error(exported, data):
    real = exported.read_bytes()
    kind = data.draw(st.sampled_from(["random", "truncated", "mutated"]))
    if kind == "random":
        blob = data.draw(st.binary(max_size=400))
    elif kind == "truncated":
        blob = real[:data.draw(st.integers(0, len(real) - 1))]
    else:
        blob = bytearray(real)
        for _ in range(data.draw(st.integers(1, 8))):
            blob[data.draw(st.integers(0, len(real) - 1))] = data.draw(st.integers(0, 255))
        blob = bytes(blob)
    try:
        m = read_model(blob)
    except ProtoError as exc:
        assert "\n" not in str(exc)
        return
    conv_widths(m), packed_digest(m)  # what load_model does with a parsed file never raises either


@pytest.mark.parametrize("blob, message", [
    (b"", "not an ONNX model: the protobuf holds no graph"),
    (b"\x3a\x05ab", "malformed ONNX protobuf: a field at byte 0 claims 5 bytes, 2 are left (a truncated file?)"),
    (b"\x08" + b"\xff" * 10 + b"\x01", "malformed ONNX protobuf: a number at byte 1 is longer than 10 bytes"),
    (b"\x08\xff", "malformed ONNX protobuf: a number at byte 1 runs past the end"),
    (b"\x0b", "malformed ONNX protobuf: wire type 3 at byte 0 (not 0, 1, 2 or 5)"),
    (b"\x00", "malformed ONNX protobuf: field number 0 at byte 0"),
    (b"\x38\x01", "malformed ONNX protobuf: the field at byte 0 has wire type 0, ONNX says 2"),
    (b"\x09\x00", "malformed ONNX protobuf: a fixed-size field at byte 0 runs past the end"),
    (b"\x3a\x05\x0a\x03\x22\x01\xff", "malformed ONNX protobuf: the string at byte 6 is not UTF-8"),
])
def test_malformed_bytes_say_where(blob, message):
    with pytest.raises(ProtoError) as exc:
        read_model(blob)
    assert str(exc.value) == message


def test_the_runtime_never_imports_the_model_family():
    code = "import sys, edgeasc.runtime.deployed; print(sorted(m for m in sys.modules if m.startswith('edgeasc.models')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------- the sparse pack
@pytest.mark.parametrize("piece, offset", [("sp0.values", 5), ("sp0.bits", 3)])
def test_a_flipped_bit_in_the_pack_is_refused(exported, tmp_path, piece, offset):
    assert load_model(exported).metadata["sparse"]["packed_tensors"] == 7
    bad = rewrite(exported, tmp_path / "bad.onnx", init={piece: flip(offset)})
    with pytest.raises(ModelError) as exc:
        load_model(bad)
    want = json.loads(read_model(exported.read_bytes()).metadata["edgeasc.sparse"])["sha256"]
    got = packed_digest(read_model(bad.read_bytes()))[1]
    assert str(exc.value) == (f"{bad}: the sparse pack is damaged: its 22 initializers hash to sha256 {got[:12]}…, "
                              f"the metadata says {want[:12]}… (the file changed after export)")
    assert exc.value.exit_code == 2


def test_a_pack_without_its_checksum_is_refused(exported, tmp_path):
    bad = rewrite(exported, tmp_path / "bad.onnx", meta={"sparse": {"mode": "auto", "packed_tensors": 7}})
    with pytest.raises(ModelError, match=r"bad.onnx: metadata edgeasc.sparse packs 7 tensors but carries no "
                                         r"sha256 of them$"):
        load_model(bad)
    removed = rewrite(exported, tmp_path / "removed.onnx", meta={"sparse": None})
    with pytest.raises(ModelError) as exc:
        load_model(removed)
    assert str(exc.value) == (f"{removed}: the graph holds 22 sparse-pack initializers but the metadata has no "
                              "edgeasc.sparse with their sha256 (the file changed after export)")


# ----------------------------------------------------------------------------- the channel plan
def test_the_conv_plan_is_written_and_matches_the_graph(exported):
    meta = load_model(exported).metadata
    plan = meta["conv_plan"]
    assert plan["groups"] == [["stem", 8], ["stage1.block1", 8], ["stage1.block2", 8], ["stage1.block3", 8],
                              ["stage1.block4", 8], ["stage2", 16], ["stage2.block1", 16], ["stage2.block2", 16],
                              ["stage2.block3", 16]]
    assert plan["convs"][0] == [-1, 0] and plan["convs"][-1] == [5, -1] and len(plan["convs"]) == 17


@pytest.mark.parametrize("change, message", [
    ({"model_config": "stem999"}, "metadata edgeasc.model_config: the channel plan keeps 999 channels in group "
                                  "'stem', the graph's convs 8"),
    ({"model_config": "unknown"}, "metadata edgeasc.model_config: the channel plan names group 'stage9', which "
                                  "no conv of the graph has"),
    ({"model_config": "short"}, "metadata edgeasc.model_config: the channel plan lacks group 'stage1.block1' "
                                "(8 channels in the graph)"),
    ({"conv_plan": "wider"}, "the graph does not follow the channel plan: edgeasc.conv_plan has 1 conv(s) "
                             "input -> stem of 2 -> 9 channels, the graph 0"),
    ({"conv_plan": "fewer"}, "the graph's conv 'node_Conv_19' (16 -> 3 channels) is not in the channel plan of "
                             "edgeasc.conv_plan"),
])
def test_a_plan_that_disagrees_with_the_graph_is_refused(exported, tmp_path, change, message):
    meta = read_model(exported.read_bytes()).metadata
    config, plan = json.loads(meta["edgeasc.model_config"]), json.loads(meta["edgeasc.conv_plan"])
    dense = dict(plan["groups"])
    what = next(iter(change.values()))
    new = {"stem999": {"model_config": {**config, "channels": {**dense, "stem": 999}}},
           "unknown": {"model_config": {**config, "channels": {**dense, "stage9": 4}}},
           "short": {"model_config": {**config, "channels": {"stem": 8}}},
           "wider": {"conv_plan": {**plan, "groups": [["stem", 9]] + plan["groups"][1:]}},
           "fewer": {"conv_plan": {**plan, "convs": plan["convs"][:-1]}}}[what]
    bad = rewrite(exported, tmp_path / "bad.onnx", meta=new)
    with pytest.raises(MetadataError) as exc:
        load_model(bad)
    assert str(exc.value) == f"{bad}: {message}"


def test_a_fixed_time_axis_must_take_one_clip(exported, tmp_path):
    proto = onnx.load(exported)
    proto.graph.input[0].type.tensor_type.shape.dim[3].dim_value = 7
    onnx.save(proto, tmp_path / "fixed.onnx")
    with pytest.raises(MetadataError) as exc:
        load_model(tmp_path / "fixed.onnx")
    assert str(exc.value) == f"{tmp_path / 'fixed.onnx'}: the graph's input axis 3 is 7, the metadata says 44"
    proto.graph.input[0].type.tensor_type.shape.dim[3].dim_value = 44  # 1 s at hop 512: it fits
    onnx.save(proto, tmp_path / "fits.onnx")
    assert load_model(tmp_path / "fits.onnx").metadata["clip_seconds"] == 1.0


# ----------------------------------------------------------------------------- the filterbank
def test_a_filterbank_with_an_empty_band_is_refused_at_load_and_at_export(exported, tmp_path):
    fp = {**FeatureParams(clip_seconds=1.0).to_dict(), "n_fft": 512, "hop_length": 128}
    message = ("metadata edgeasc.feature_params: mel band 0 of 256 (0.0-25.9 Hz) holds no FFT bin (bins are "
               "43.07 Hz apart): fewer mel bands or a longer n_fft")
    too_many = ("metadata edgeasc.feature_params: 256 mel bands from the 129 FFT bins of n_fft 256: fewer mel "
                "bands or a longer n_fft")
    bad = rewrite(exported, tmp_path / "bad.onnx", meta={"feature_params": fp})
    with pytest.raises(MetadataError) as exc:
        load_model(bad)
    assert str(exc.value) == f"{bad}: {message}"
    proto = onnx.load(exported)
    meta = {p.key[len("edgeasc."):]: p.value for p in proto.metadata_props}
    del proto.metadata_props[:]
    meta = {k: v if k in ("version", "variant", "precision") else json.loads(v) for k, v in meta.items()}
    for change, text in [({"n_fft": 512, "hop_length": 128}, message), ({"n_fft": 256, "hop_length": 128}, too_many),
                         ({"fmin": 5000.0, "fmax": 4000.0}, "metadata edgeasc.feature_params: needs fmin < fmax <= "
                                                            "sample_rate / 2, got 5000, 4000, 22050")]:
        with pytest.raises(MetadataError) as exc:
            set_metadata(proto, {**meta, "feature_params": {**meta["feature_params"], **change}})
        assert str(exc.value) == f"the exported model: {text}"
        assert len(proto.metadata_props) == 0  # nothing written


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([8000, 16000, 22050]), st.sampled_from([64, 128, 256, 512]), st.integers(1, 200),
       st.floats(0, 2000))
def test_the_empty_band_check_is_the_filterbank(sr, n_fft, n_mels, fmin):
    p = FeatureParams(sample_rate=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=sr / 2, hop_length=n_fft // 2)
    bank = mel_filterbank(sr, n_fft, n_mels, fmin, sr / 2)
    empty = np.flatnonzero(bank.max(axis=1) <= 0)
    found = empty_mel_band(p)
    assert (found is None) == (empty.size == 0)
    if found is not None:
        assert found[0] == empty[0]


def test_parse_metadata_names_the_first_empty_band():
    fp = {**FeatureParams().to_dict(), "n_fft": 512, "n_mels": 256, "fmin": 0.0}
    with pytest.raises(MetadataError) as exc:
        parse_metadata({"edgeasc.feature_params": json.dumps(fp)}, "m.onnx")
    assert str(exc.value) == ("m.onnx: metadata edgeasc.feature_params: mel band 0 of 256 (0.0-25.9 Hz) holds no "
                              "FFT bin (bins are 43.07 Hz apart): fewer mel bands or a longer n_fft")
    fp["n_mels"] = 128  # 1024-point FFT bins 21.5 Hz apart: every band holds one
    assert parse_metadata({"edgeasc.feature_params": json.dumps({**fp, "n_fft": 1024})})["feature_params"]["n_mels"] \
        == 128
