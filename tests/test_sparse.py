"""Sparse packing of pruned weights (export/sparse.py) on a small hand-built graph: each coding
chosen by its byte count, every rebuilt tensor equal to the original (read back through
onnxruntime), the bytes reported by their formula, and only the shared constants a coding
uses stored. The whole-network export tests cover the same code through `edgeasc export`;
this one runs in a fraction of a second, so mutation testing can afford it."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeasc.export.sparse import coding_bytes, pack_weights


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    # fp16-representable values (k/8, |k| <= 40, never 0), so a float16 store is exact
    values = lambda n: (rng.integers(1, 41, n) * rng.choice([-1, 1], n) / 8).astype(np.float32)  # noqa: E731
    w = {"dense": values(4 * 3 * 9).reshape(4, 3, 3, 3)}
    half = values(32 * 16 * 9)
    half[rng.permutation(half.size)[: half.size // 2]] = 0  # 50 % density: a bitmask is cheapest
    w["half"] = half.reshape(32, 16, 3, 3)
    sparse = np.zeros(32 * 16 * 9, np.float32)
    # very sparse: gaps, with fillers where a gap exceeds 255 (a gap of 255 itself needs none)
    sparse[[254, 509, 765, 766, 4000, 4607]] = values(6)
    w["sparse"] = sparse.reshape(32, 16, 3, 3)
    w["zeros"] = np.zeros((8, 4, 3, 3), np.float32)
    w["tiny"] = np.array([0.5, 0.0], np.float32).reshape(2, 1, 1, 1)  # packing costs more than 8 bytes
    even = np.zeros(100, np.float32)
    even[::5] = values(20)  # gaps: 20 x 5 + 300 = 400 bytes, exactly its dense size: not worth it
    w["even"] = even.reshape(20, 5, 1, 1)
    mel = np.zeros((600, 3), np.float32)
    mel[[1, 2, 599], [0, 1, 2]] = [0.25, 0.5, 0.75]
    w["mel"] = mel
    return w


def _very_sparse_int8() -> np.ndarray:
    q1 = np.zeros(16 * 16 * 9, np.int8)
    q1[[7, 1000, 2303]] = [9, -100, 127]  # int8 as gaps: the rebuilt zeros must be int8 too
    return q1.reshape(16, 16, 3, 3)


def _graph(w: dict[str, np.ndarray], q: np.ndarray) -> onnx.ModelProto:
    """A Conv per weight, a MatMul with a constant matrix, an int8 QDQ Conv; every weight is
    also a graph output, so onnxruntime hands back what the graph rebuilt."""
    node = helper.make_node
    inputs, nodes, outputs = [], [], []
    for name, arr in w.items():
        if name == "mel":
            inputs.append(helper.make_tensor_value_info("x_mel", TensorProto.FLOAT, [1, 600]))
            nodes.append(node("MatMul", ["x_mel", name], ["y_mel"]))
            outputs.append(helper.make_tensor_value_info("y_mel", TensorProto.FLOAT, [1, 3]))
        else:
            inputs.append(helper.make_tensor_value_info(f"x_{name}", TensorProto.FLOAT, [1, arr.shape[1], 5, 5]))
            bias = ["bias"] if name == "half" else []  # a float initializer with zeros that is no weight
            nodes.append(node("Conv", [f"x_{name}", name, *bias], [f"y_{name}"],
                              pads=[1, 1, 1, 1] if arr.shape[2] == 3 else [0] * 4))
            outputs.append(helper.make_tensor_value_info(f"y_{name}", TensorProto.FLOAT, [1, arr.shape[0], 5, 5]))
        nodes.append(node("Identity", [name], [f"{name}_out"]))
        outputs.append(helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, list(arr.shape)))
    quantized = {"q1": _very_sparse_int8(), "q": q, "q0": np.zeros((8, 16, 3, 3), np.int8)}  # q0: pruned away
    for name, arr in quantized.items():
        inputs.append(helper.make_tensor_value_info(f"x_{name}", TensorProto.FLOAT, [1, 16, 5, 5]))
        nodes += [node("DequantizeLinear", [name, "q_scale", "q_zero"], [f"{name}_w"]),
                  node("Conv", [f"x_{name}", f"{name}_w"], [f"y_{name}"], pads=[1, 1, 1, 1]),
                  node("Identity", [name], [f"{name}_out"])]
        outputs += [helper.make_tensor_value_info(f"y_{name}", TensorProto.FLOAT, [1, arr.shape[0], 5, 5]),
                    helper.make_tensor_value_info(f"{name}_out", TensorProto.INT8, list(arr.shape))]
    # an int8 matrix behind a DequantizeLinear that feeds no Conv: not a weight edgeasc packs
    qm = np.zeros((600, 3), np.int8)
    qm[[3, 300], [0, 2]] = [5, -7]
    inputs.append(helper.make_tensor_value_info("x_qm", TensorProto.FLOAT, [1, 600]))
    nodes += [node("DequantizeLinear", ["qm", "q_scale", "q_zero"], ["qm_w"]), node("MatMul", ["x_qm", "qm_w"], ["y_qm"]),
              node("Identity", ["qm"], ["qm_out"])]
    outputs += [helper.make_tensor_value_info("y_qm", TensorProto.FLOAT, [1, 3]),
                helper.make_tensor_value_info("qm_out", TensorProto.INT8, [600, 3])]
    # the int8 weights first (a gaps one, then a bitmask one: each coding's shared constants must
    # survive the other's); the last tensor packed (mel) is a gaps one after the float bitmasks
    inits = [numpy_helper.from_array(arr, name) for name, arr in quantized.items()] + [numpy_helper.from_array(qm, "qm")]
    inits += [numpy_helper.from_array(arr, name) for name, arr in w.items()]
    inits += [numpy_helper.from_array(np.array([0.0, 1.5] * 16, np.float32), "bias"),
              numpy_helper.from_array(np.array(0.05, np.float32), "q_scale"),
              numpy_helper.from_array(np.array(0, np.int8), "q_zero")]
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(proto: onnx.ModelProto, w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    feeds = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
             for i in proto.graph.input}
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))


@pytest.fixture(scope="module")
def case():
    w = _weights()
    q = np.random.default_rng(2).integers(-127, 128, (32, 16, 3, 3)).astype(np.int8)
    q[np.random.default_rng(3).random(q.shape) < 0.7] = 0  # 30 % density, int8: a bitmask
    return w, q, _run(_graph(w, q), w)


@pytest.mark.parametrize("mode, value_dtype", [("auto", np.float32), ("auto", np.float16), ("pack", np.float32)])
def test_every_packed_tensor_is_rebuilt_exactly_in_its_cheapest_coding(case, mode, value_dtype):
    w, q, reference = case
    proto = _graph(w, q)
    result = pack_weights(proto, mode, value_dtype=value_dtype)
    onnx.checker.check_model(proto, full_check=True)
    entries = {e["name"]: e for e in result["packed"]}
    expected = {"q1": "gaps", "q": "bitmask", "q0": "zeros", "half": "bitmask", "sparse": "gaps", "zeros": "zeros",
                "mel": "gaps"}
    if mode == "pack":  # packed although it costs at least its dense bytes
        expected.update(tiny="gaps", even="gaps")
    assert {name: e["coding"] for name, e in entries.items()} == expected
    assert result["mode"] == mode and [e["prefix"] for e in result["packed"]] == [f"sp{i}" for i in range(len(entries))]
    arrays = {**w, "q": q, "q0": np.zeros((8, 16, 3, 3), np.int8), "q1": _very_sparse_int8()}
    bytes_per_value = {name: 1 if name in ("q", "q0", "q1") else 4 if name == "mel" else np.dtype(value_dtype).itemsize
                       for name in entries}
    for name, e in entries.items():
        arr, per_value = arrays[name], bytes_per_value[name]
        nz = np.flatnonzero(arr.reshape(-1))
        overhead = {"bitmask": 450, "gaps": 300, "zeros": 120}[e["coding"]]
        assert (e["shape"], e["params"], e["nonzero"], e["dense_bytes"]) == (
            list(arr.shape), arr.size, nz.size, arr.size * per_value)
        assert e["packed_bytes"] == coding_bytes(arr.size, nz, per_value)[e["coding"]] - overhead
    stored = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    assert not set(entries) & set(stored)  # the packed tensors are gone, the others stay
    assert {"dense", "bias", "qm"} <= set(stored) and ("tiny" in stored) == ("even" in stored) == (mode == "auto")
    pieces = {"bitmask": {"shape", "bits", "n", "values"}, "gaps": {"shape", "gaps", "n", "values"}, "zeros": {"shape"}}
    for name, e in entries.items():  # what each coding stores, and no more
        assert {k.split(".", 1)[1] for k in stored if k.startswith(e["prefix"] + ".")} == pieces[e["coding"]], name
        if e["coding"] == "bitmask":
            assert stored[e["prefix"] + ".bits"].size == (e["params"] + 7) // 8
        if e["coding"] == "gaps":  # the bytes reported are the bytes stored: one gap and one value per entry
            assert stored[e["prefix"] + ".gaps"].size * (1 + bytes_per_value[name]) == e["packed_bytes"]
        if e["coding"] != "zeros":
            values = stored[f"{e['prefix']}.values"]
            want = np.int8 if name in ("q", "q1") else np.float32 if name == "mel" else value_dtype
            assert values.dtype == want, name
    # the pack nodes come first, each named after its tensor's prefix (short, unique names)
    names = [n.name for n in proto.graph.node]
    pack_nodes = [n for n in names if n.startswith("sp")]
    assert names[:len(pack_nodes)] == pack_nodes and len(set(pack_nodes)) == len(pack_nodes)
    assert {n.split(".")[0] for n in pack_nodes} == {e["prefix"] for e in entries.values()}
    shared = sorted(k for k in stored if k.startswith("sp."))
    assert shared == ["sp.axis0", "sp.axis1", "sp.flat", "sp.one", "sp.one64", "sp.shifts", "sp.zero"]
    rebuilt = _run(proto, w)
    for name in reference:  # every weight and every output, bit for bit
        assert rebuilt[name].dtype == reference[name].dtype and np.array_equal(rebuilt[name], reference[name]), name


def test_gap_fillers_and_the_bitmask_byte_counts():
    nz = np.array([0, 3, 300, 301, 1000])  # the gap 3 -> 300 needs one filler, 301 -> 1000 two
    assert coding_bytes(2000, nz, 4) == {"bitmask": 250 + 6 * 4 + 450, "gaps": (5 + 3) * 5 + 300}
    assert coding_bytes(2000, np.array([], dtype=np.int64), 4) == {"zeros": 120}
    assert coding_bytes(9, np.array([8]), 2) == {"bitmask": 2 + 2 * 2 + 450, "gaps": 1 * 3 + 300}
    # the first gap counts from -1: position 254 is a gap of 255, no filler; 255 needs one
    assert coding_bytes(1000, np.array([254]), 4)["gaps"] == 1 * 5 + 300
    assert coding_bytes(1000, np.array([255]), 4)["gaps"] == 2 * 5 + 300


def test_only_the_shared_constants_a_coding_uses_are_stored_and_none_is_a_no_op():
    w = {"sparse": _weights()["sparse"], "tiny": _weights()["tiny"]}
    q = np.ones((32, 16, 3, 3), np.int8)  # dense: left alone
    proto = _graph(w, q)
    before = proto.SerializeToString()
    assert pack_weights(proto, "none") == {"packed": [], "mode": "none"}
    assert proto.SerializeToString() == before
    result = pack_weights(proto)  # the default mode is auto: only where packing saves bytes
    assert result["mode"] == "auto" and [(e["name"], e["coding"]) for e in result["packed"]] == [
        ("q1", "gaps"), ("q0", "zeros"), ("sparse", "gaps")]
    assert sorted(i.name for i in proto.graph.initializer if i.name.startswith("sp.")) == [
        "sp.axis0", "sp.axis1", "sp.one64"]
    # a bitmask after gaps: both codings' constants are stored, and the graph runs
    mixed = {"sparse": _weights()["sparse"], "half": _weights()["half"]}
    mixed_proto = _graph(mixed, q)
    assert [e["coding"] for e in pack_weights(mixed_proto)["packed"]] == ["gaps", "zeros", "gaps", "bitmask"]
    mixed_reference = _run(_graph(mixed, q), mixed)
    assert all(np.array_equal(_run(mixed_proto, mixed)[k], mixed_reference[k]) for k in mixed_reference)
    reference = _run(_graph(w, q), w)
    rebuilt = _run(proto, w)
    assert all(np.array_equal(rebuilt[k], reference[k]) and rebuilt[k].dtype == reference[k].dtype for k in reference)
    dense = _graph({"dense": _weights()["dense"]}, q)
    # even in pack mode a tensor without a zero stays: only the sparse int8 weights go
    assert [e["name"] for e in pack_weights(dense, "pack")["packed"]] == ["q1", "q0"]
