"""The onnx_proto reader (runtime/onnx_proto.py) on protobuf encodings that the onnx package never
writes but a hostile or foreign file can hold: negative and 64-bit varints, fixed-size fields
(wire types 1 and 5), packed repeated dims, fields in any order and unknown ones, dims with
neither value nor name, attributes of every kind, and graphs that lead weight_shape astray. The
bytes are built by hand with the small encoder below and, where protobuf can parse them too,
compared with the onnx package (issue 25 item 7, mutation round 5's real gaps)."""

import array
import io
import struct
import warnings

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeasc.runtime.onnx_proto import (
    ProtoError,
    conv_widths,
    int64_values,
    packed_digest,
    read_model,
    weight_shape,
)

U64 = 1 << 64


# ----------------------------------------------------------------------------- a tiny encoder
def varint(n: int) -> bytes:
    """Base-128 varint of 0 <= n (any size: the reader must refuse what is too long)."""
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def vint(number: int, v: int) -> bytes:
    """A varint field; negatives as protobuf writes int64: two's complement, 10 bytes."""
    return key(number, 0) + varint(v % U64 if v < 0 else v)


def ld(number: int, *parts: bytes | str) -> bytes:
    """A length-delimited field: a string or the concatenated bytes of a sub-message."""
    body = b"".join(p.encode() if isinstance(p, str) else p for p in parts)
    return key(number, 2) + varint(len(body)) + body


def fixed64(number: int, value: float = 1.5) -> bytes:
    return key(number, 1) + struct.pack("<d", value)


def fixed32(number: int, value: float = 0.5) -> bytes:
    return key(number, 5) + struct.pack("<f", value)


def packed(number: int, values) -> bytes:
    return ld(number, b"".join(varint(v % U64) for v in values))


def graph(*parts: bytes) -> bytes:
    """A ModelProto holding one GraphProto of these fields (node 1, initializer 5, input 11, output 12)."""
    return ld(7, *parts)


def node(op, inputs=(), outputs=(), name="", *attrs: bytes) -> bytes:
    return ld(1, *[ld(1, i) for i in inputs], *[ld(2, o) for o in outputs], ld(3, name), ld(4, op), *attrs)


def attr_int(name: str, i: int) -> bytes:
    return ld(5, ld(1, name), vint(3, i), vint(20, 2))  # AttributeProto: name, i, type INT


def tensor(name: str, dims, data_type=1, raw=b"", packed_dims=False) -> bytes:
    dim_fields = packed(1, dims) if packed_dims else b"".join(vint(1, d) for d in dims)
    return ld(5, dim_fields, vint(2, data_type), ld(8, name), ld(9, raw))


def int64_tensor(name: str, values) -> bytes:
    return tensor(name, [len(values)], 7, struct.pack(f"<{len(values)}q", *values))


def value_info(number: int, name: str, *dims: bytes) -> bytes:
    """An input (11) or output (12): ValueInfoProto > TypeProto > tensor_type > shape > dims."""
    return ld(number, ld(1, name), ld(2, ld(1, vint(1, 1), ld(2, *[ld(1, d) for d in dims]))))


def onnx_view(data: bytes):
    """What the onnx package reads from the same bytes, in the reader's terms."""
    p = onnx.load_from_string(data)
    dims = [[d.dim_value if d.HasField("dim_value") else d.dim_param if d.HasField("dim_param") else None
             for d in v.type.tensor_type.shape.dim] for v in p.graph.input]
    return {"metadata": {e.key: e.value for e in p.metadata_props},
            "nodes": [(n.op_type, n.name, list(n.input), list(n.output),
                       {a.name: a.i for a in n.attribute if a.HasField("name") and a.HasField("i")})
                      for n in p.graph.node],
            "initializers": {t.name: (list(t.dims), t.data_type, t.raw_data) for t in p.graph.initializer},
            "inputs": [(v.name, d) for v, d in zip(p.graph.input, dims, strict=True)]}


def reader_view(data: bytes):
    m = read_model(data)
    return {"metadata": m.metadata,
            "nodes": [(n.op_type, n.name, n.inputs, n.outputs, n.ints) for n in m.nodes],
            "initializers": {k: (t.dims, t.data_type, bytes(t.raw)) for k, t in m.initializers.items()},
            "inputs": [(v.name, v.shape) for v in m.inputs]}


def proto_error(data: bytes) -> str:
    with pytest.raises(ProtoError) as exc:
        read_model(data)
    return str(exc.value)


# ----------------------------------------------------------------------------- varints
@pytest.mark.parametrize("value, signed", [(0, 0), (1, 1), ((1 << 63) - 1, (1 << 63) - 1), (1 << 63, -(1 << 63)),
                                           (U64 - 1, -1), (U64 - 5, -5)])
def test_int64_values_are_twos_complement_up_to_64_bits(value, signed):
    data = graph(tensor("w", [value]), value_info(11, "x", vint(1, value)), node("Conv", (), (), "n",
                                                                              attr_int("group", signed)))
    m = read_model(data)
    assert m.initializers["w"].dims == [signed] and m.inputs[0].shape == [signed]
    assert m.nodes[0].ints == {"group": signed}
    assert reader_view(data) == onnx_view(data)


def test_a_varint_of_64_bits_or_more_says_where():
    assert read_model(vint(1, U64 - 1) + graph()).nodes == []  # ten bytes, 64 bits: a valid int64 (-1)
    assert len(varint(U64 - 1)) == 10 and len(varint(U64)) == 10
    for value in (U64, U64 + 1, (1 << 70) - 1):
        assert proto_error(graph() + vint(1, value)) == "malformed ONNX protobuf: a number at byte 3 exceeds 64 bits"
    assert read_model(b"\x08" + b"\x80" * 9 + b"\x01" + graph()).nodes == []  # 2^63 in ten bytes: it fits
    assert proto_error(b"\x08" + b"\x80" * 9 + b"\x02" + graph()) == \
        "malformed ONNX protobuf: a number at byte 1 exceeds 64 bits"  # 2^64 in ten bytes: it does not


# ----------------------------------------------------------------------------- wire types 1 and 5
def test_fixed_size_fields_are_skipped_at_every_level():
    """A float attribute (wire 5), doubles and floats where the reader reads nothing (unknown
    fields of a newer ONNX): skipped by their size, and the fields after them still read."""
    data = (fixed64(99) + fixed32(98) + ld(14, fixed32(99), ld(1, "k"), fixed64(98), ld(2, "v")) +
            graph(fixed32(99), fixed64(98),
                  node("LeakyRelu", ["x"], ["y"], "lr", ld(5, ld(1, "alpha"), fixed32(2, 0.25), vint(20, 1)),
                       ld(5, fixed64(99), ld(1, "group"), fixed32(98), vint(3, 3), vint(20, 2))),
                  ld(5, fixed32(99), vint(1, 4), fixed64(98), vint(2, 7), ld(8, "t"), ld(9, b"\x01" * 8)),
                  ld(11, fixed64(99), ld(1, "x"))) + fixed32(97))  # a fixed field that ends the file exactly
    m = read_model(data)
    assert m.metadata == {"k": "v"} and m.nodes[0].ints == {"group": 3} and m.nodes[0].inputs == ["x"]
    assert m.initializers["t"].dims == [4] and m.initializers["t"].data_type == 7 and m.inputs[0].name == "x"
    assert reader_view(data) == onnx_view(data)


@pytest.mark.parametrize("field, message", [
    (key(98, 1) + b"\x00" * 7, "a fixed-size field at byte 13 runs past the end"),
    (key(98, 5) + b"\x00" * 3, "a fixed-size field at byte 13 runs past the end"),
    (key(98, 5) + b"\x00" * 4 + b"\x0c", "wire type 4 at byte 19 (not 0, 1, 2 or 5)"),
    (key(98, 1) + b"\x00" * 8 + b"\x0c", "wire type 4 at byte 23 (not 0, 1, 2 or 5)"),
])
def test_a_fixed_size_field_is_8_or_4_bytes_long(field, message):
    data = graph(node("Relu", name="r")) + field
    assert proto_error(data) == f"malformed ONNX protobuf: {message}"


# ----------------------------------------------------------------------------- packed dims
def test_packed_dims_read_as_the_onnx_package_reads_them():
    dims = [8, 0, -1, 1 << 40, (1 << 63) - 1, -(1 << 63)]
    data = graph(ld(5, packed(1, dims[:3]), vint(1, dims[3]), packed(1, dims[4:]), vint(2, 7), ld(8, "w")),
                 ld(5, packed(1, []), ld(8, "empty")))
    m = read_model(data)
    assert m.initializers["w"].dims == dims and m.initializers["empty"].dims == []
    assert reader_view(data) == onnx_view(data)


@pytest.mark.parametrize("dims, message", [
    (key(1, 5) + b"\x00" * 4, "the field at byte 4 has wire type 5, ONNX says 2"),
    (key(1, 2) + b"\x02\x80\x80", "a number at byte 6 runs past the end"),  # a varint cut by the packed run's end
])
def test_a_malformed_dims_field_says_where(dims, message):
    assert proto_error(graph(ld(5, dims))) == f"malformed ONNX protobuf: {message}"


# ----------------------------------------------------------------------------- order and absence
def test_fields_read_in_any_order_after_fields_not_read():
    """A TypeProto with its denotation first, a shape with an unknown field before its dims, a
    dim with its denotation first, and one with neither value nor name."""
    dims = [ld(3, "BATCH") + vint(1, 4), vint(99, 1) + ld(2, "frames"), ld(3, "CHANNEL"), b""]
    data = graph(ld(11, ld(2, ld(6, "IMAGE"), vint(99, 5), ld(1, vint(99, 1), vint(1, 1),
                                                            ld(2, vint(99, 2), *[ld(1, d) for d in dims]))),
                    vint(99, 1), ld(1, "x")),
                 ld(12, ld(1, "y"), ld(2, ld(4, b""), ld(1, ld(2, ld(1, vint(1, 3)))))))
    m = read_model(data)
    assert m.inputs[0].name == "x" and m.inputs[0].shape == [4, "frames", None, None]
    assert m.outputs[0].shape == [3]
    assert reader_view(data) == onnx_view(data)


def test_a_metadata_entry_may_lack_its_key_or_its_value():
    data = ld(14, ld(2, "only a value")) + ld(14, ld(1, "only a key")) + ld(14, vint(99, 1)) + graph()
    assert read_model(data).metadata == {"": "", "only a key": ""} == onnx_view(data)["metadata"]


def test_any_buffer_of_the_bytes_reads_as_the_bytes():
    """read_model takes bytes or a memoryview: one of 16-bit items or of two dimensions is read
    as the bytes it holds."""
    data = ld(14, ld(1, "k"), ld(2, "v")) + graph(node("Conv", ["x", "W"], ["y"], "c", attr_int("group", 2)), W)
    data += vint(99, 1) if len(data) % 2 else b""
    want = reader_view(data)
    assert want["nodes"][0][4] == {"group": 2} and want["metadata"] == {"k": "v"}
    for view in (memoryview(data), memoryview(array.array("H", data)),
                 memoryview(np.frombuffer(data, np.uint8).reshape(2, -1))):
        m = read_model(view)
        assert (m.metadata, conv_widths(m), m.initializers["W"].dims) == ({"k": "v"}, [("c", 8, 8)], [8, 4, 3, 3])


def test_a_file_without_a_graph_is_not_a_model():
    assert proto_error(ld(14, ld(1, "k"), ld(2, "v"))) == "not an ONNX model: the protobuf holds no graph"
    assert read_model(graph() + graph(node("Relu", name="second"))).nodes[0].name == "second"


# ----------------------------------------------------------------------------- node attributes
def test_only_named_integer_attributes_are_kept():
    attrs = [ld(5, ld(1, "alpha"), fixed32(2), vint(20, 1)),                   # a float
             ld(5, ld(1, "pads"), packed(8, [1, 1]), vint(20, 7)),             # a list of ints
             ld(5, ld(1, "mode"), ld(4, "constant"), vint(20, 3)),              # a string
             ld(5, vint(3, 9), vint(20, 2)),                                    # an int without a name
             ld(5, vint(20, 2), vint(3, -2), ld(1, "axis")),                    # name last
             ld(5, ld(1, "group"), vint(3, 4), vint(20, 2))]
    data = graph(node("Conv", ["x", "w"], ["y"], "c", *attrs))
    assert read_model(data).nodes[0].ints == {"axis": -2, "group": 4}
    assert reader_view(data) == onnx_view(data)


@pytest.fixture(scope="module")
def grouped():
    """CP-Mobile's depthwise 3x3 (groups = channels) and a grouped 1x1, exported by torch."""
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, groups=4, bias=False),
                                torch.nn.Conv2d(8, 6, 1, groups=2)).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 4, 8, 8),), buf, dynamo=False)
    return buf.getvalue()


def test_a_grouped_conv_counts_its_input_channels_times_the_groups(grouped):
    m, p = read_model(grouped), onnx.load_from_string(grouped)
    assert [n.ints["group"] for n in m.nodes] == [4, 2] == \
        [next(a.i for a in n.attribute if a.name == "group") for n in p.graph.node]
    assert [weight_shape(m, n.inputs[1]) for n in m.nodes] == [[8, 1, 3, 3], [6, 4, 1, 1]]
    assert [(cin, cout) for _, cin, cout in conv_widths(m)] == [(4, 8), (8, 6)]
    assert reader_view(grouped)["nodes"] == [(n.op_type, n.name, list(n.input), list(n.output),
                                              {a.name: a.i for a in n.attribute if a.type == a.INT})
                                             for n in p.graph.node]


# ----------------------------------------------------------------------------- weight_shape on hostile graphs
W = tensor("W", [8, 4, 3, 3])


def conv_of(*parts: bytes, weight="w", inputs=None) -> list:
    return conv_widths(read_model(graph(*parts, node("Conv", inputs or ["x", weight], ["y"], "conv"))))


def chain(n: int, op="Identity") -> list[bytes]:
    return [node(op, ["W" if i == 0 else f"t{i}"], [f"t{i + 1}"], f"n{i}") for i in range(n)]


def test_a_chain_of_17_same_shape_ops_is_followed_and_18_are_not():
    assert conv_of(W, *chain(17), weight="t17") == [("conv", 4, 8)]
    assert conv_of(W, *chain(18), weight="t18") == [("conv", None, None)]
    model = read_model(graph(W, *chain(18)))  # asked directly, without the producers map: the same limit
    assert weight_shape(model, "t17") == [8, 4, 3, 3] and weight_shape(model, "t18") is None
    assert weight_shape(model, "t2", depth=15) == [8, 4, 3, 3] and weight_shape(model, "t2", depth=16) is None
    assert conv_of(W, *chain(3, "Cast"), weight="t3") == [("conv", 4, 8)]


def test_a_cycle_of_same_shape_ops_ends_unreadable():
    assert conv_of(node("Identity", ["b"], ["a"], "i1"), node("Identity", ["a"], ["b"], "i2"), weight="a") == \
        [("conv", None, None)]
    assert conv_of(node("Cast", ["a"], ["a"], "self"), weight="a") == [("conv", None, None)]


def test_branching_muls_are_read_in_linear_time(monkeypatch):
    """Muls that each read the one before twice (one Mul reading itself, or 39 layers of two Muls
    reading both of the layer before) under 50 convs: each (tensor, depth) is looked at once, not
    2^17 times per conv (16 s for 100 convs before the memo)."""
    from edgeasc.runtime import onnx_proto

    calls = []
    real = onnx_proto._weight_shape
    monkeypatch.setattr(onnx_proto, "_weight_shape", lambda *args: calls.append(args[1]) or real(*args))
    convs = [node("Conv", ["x", "a"], [f"y{i}"], f"c{i}") for i in range(50)]
    assert conv_of(node("Mul", ["a", "a"], ["a"], "self"), *convs, weight="a") == \
        [(f"c{i}", None, None) for i in range(50)] + [("conv", None, None)]
    assert len(calls) == 18  # depths 0..17, the last one refused
    layers = [node("Mul", [f"a{i - 1}", f"b{i - 1}"], [f"{x}{i}"], f"m{x}{i}") for i in range(1, 40) for x in "ab"]
    calls.clear()
    assert conv_of(W, node("Identity", ["W"], ["a0"], "i"), node("Identity", ["W"], ["b0"], "j"), *layers,
                   weight="a39") == [("conv", None, None)]
    assert len(calls) == 1 + 2 * 17
    calls.clear()
    assert conv_of(W, node("Identity", ["W"], ["a0"], "i"), node("Identity", ["W"], ["b0"], "j"), *layers,
                   weight="a15") == [("conv", 4, 8)]  # 15 Muls and an Identity deep: read
    assert len(calls) == 1 + 2 * 15 + 1


@pytest.mark.parametrize("parts, weight, want", [
    ([], "graph_input", None),                                                  # no producer, no initializer
    ([node("Identity", [], ["w"], "bare")], "w", None),                          # a producer without inputs
    ([node("Identity", ["nowhere"], ["w"], "i")], "w", None),                    # no readable operand
    ([W, node("Relu", ["W"], ["w"], "r")], "w", None),                            # an op that may change shapes
    ([int64_tensor("s", [8, 4, 3, 3]), node("Reshape", ["v", "s"], ["w"], "r")], "w", (4, 8)),
    ([int64_tensor("s", [8, 4, 3, 3]), node("Reshape", ["s"], ["w"], "r")], "w", None),  # too few inputs
    ([node("Shape", ["x"], ["s"], "sh"), node("Reshape", ["v", "s"], ["w"], "r")], "w", None),  # computed shape
    ([int64_tensor("s", [8, 4, 3, 3]), node("ConstantOfShape", ["s"], ["w"], "c")], "w", (4, 8)),
    ([node("ConstantOfShape", [], ["w"], "c")], "w", None),
    ([tensor("s", [2], 1, b"\x00" * 16), node("Reshape", ["v", "s"], ["w"], "r")], "w", None),  # float shape
    ([tensor("s", [2], 7, b"\x00" * 12), node("Reshape", ["v", "s"], ["w"], "r")], "w", None),  # 12 bytes
    ([tensor("w", [8]), ], "w", None),                                            # a weight of rank 1
    ([tensor("w", [8, 4])], "w", (4, 8)),
    ([tensor("w", [])], "w", None),
])
def test_weights_that_cannot_be_read_leave_the_conv_unreadable(parts, weight, want):
    assert conv_of(*parts, weight=weight) == [("conv", *(want or (None, None)))]


def test_the_weight_is_the_mul_operand_of_highest_rank_not_the_largest():
    """A 16 -> 3 conv damped by a [16, 1, 1] mask: the mask sorts above the weight as a list, the
    weight is the operand of higher rank."""
    w, mask = tensor("W", [3, 16, 1, 1]), tensor("m", [16, 1, 1])
    for inputs in (["W", "m"], ["m", "W"]):
        assert conv_of(w, mask, node("Mul", inputs, ["w"], "damp")) == [("conv", 16, 3)]


@pytest.mark.parametrize("inputs", [["W", "m"], ["m", "W"]])
def test_a_damping_mul_gives_its_weight_operand_either_way_round(inputs):
    mask = tensor("m", [3, 3])  # a mask of lower rank, broadcast over the weight
    assert conv_of(W, mask, node("Mul", inputs, ["w"], "damp")) == [("conv", 4, 8)]
    assert conv_of(W, mask, node("Mul", inputs, ["w"], "damp"), node("Cast", ["w"], ["w16"], "cast"),
                   weight="w16") == [("conv", 4, 8)]


def test_dequantize_and_cast_read_their_first_input_only():
    scale = tensor("scale", [8])
    assert conv_of(W, scale, node("DequantizeLinear", ["W", "scale"], ["w"], "dq")) == [("conv", 4, 8)]
    # the scale first (a hostile order): rank 1, so unreadable, and W is not looked for
    assert conv_of(W, scale, node("DequantizeLinear", ["scale", "W"], ["w"], "dq")) == [("conv", None, None)]
    assert conv_of(W, node("Cast", ["W", "scale"], ["w"], "cast")) == [("conv", 4, 8)]


def test_a_conv_without_a_weight_input_or_a_group_attribute():
    assert conv_of(inputs=["x"]) == [("conv", None, None)]
    assert conv_of(W, weight="W") == [("conv", 4, 8)]  # no group attribute: one group
    assert conv_of(W, node("Conv", ["x", "W"], ["z"], "g3", attr_int("group", 3)), weight="W") == \
        [("g3", 12, 8), ("conv", 4, 8)]


def test_int64_values_reads_only_whole_int64_raw_data():
    m = read_model(graph(int64_tensor("s", [1, -2, 1 << 40]), tensor("f", [2], 1, b"\x00" * 8)))
    assert int64_values(m.initializers["s"]) == [1, -2, 1 << 40] and int64_values(m.initializers["f"]) is None


def test_the_pack_digest_covers_name_type_dims_and_bytes():
    base = [tensor("sp0.values", [2], 1, b"\x01" * 8), tensor("sp.shift", [1], 7, b"\x00" * 8), tensor("W", [1])]
    count, digest = packed_digest(read_model(graph(*base)))
    assert count == 2 and len(digest) == 64
    assert packed_digest(read_model(graph(*base[::-1]))) == (2, digest)  # sorted by name, not file order
    for changed in (tensor("sp0.values", [2], 10, b"\x01" * 8), tensor("sp0.values", [1, 2], 1, b"\x01" * 8),
                    tensor("sp0.values", [2], 1, b"\x01" * 7 + b"\x02"), tensor("sp0.valuez", [2], 1, b"\x01" * 8)):
        assert packed_digest(read_model(graph(changed, *base[1:])))[1] != digest
    assert packed_digest(read_model(graph(*base, tensor("W2", [3]))))[1] == digest  # not a pack's initializer
    # a data type of 64 bits (any varint the reader accepts) hashes too
    assert packed_digest(read_model(graph(tensor("sp0.x", [1], U64 - 1, b"\x00"))))[0] == 1


# ----------------------------------------------------------------------------- every wire-type check names its byte
BAD = b"\xea\xfe\xed"  # a varint where a string or message belongs: its key is found by searching for it


def wrong_wire(number: int) -> bytes:
    return vint(number, 0x7EADBEEF)


SITES = {
    "model": lambda bad: bad + graph(),
    "metadata": lambda bad: ld(14, bad) + graph(),
    "graph": lambda bad: bad,
    "node": lambda bad: graph(bad),
    "initializer": lambda bad: graph(bad),
    "input": lambda bad: graph(bad),
    "output": lambda bad: graph(bad),
    "node field": lambda bad: graph(ld(1, bad)),
    "attribute": lambda bad: graph(ld(1, bad)),
    "attribute field": lambda bad: graph(ld(1, ld(5, bad))),
    "tensor field": lambda bad: graph(ld(5, bad)),
    "value info field": lambda bad: graph(ld(11, bad)),
    "type field": lambda bad: graph(ld(11, ld(2, bad))),
    "tensor type field": lambda bad: graph(ld(11, ld(2, ld(1, bad)))),
    "shape field": lambda bad: graph(ld(11, ld(2, ld(1, ld(2, bad))))),
    "dim field": lambda bad: graph(ld(11, ld(2, ld(1, ld(2, ld(1, bad)))))),
}
CASES = [("model", wrong_wire(14), 0, 2), ("metadata", wrong_wire(1), 0, 2), ("metadata", wrong_wire(2), 0, 2), ("graph", wrong_wire(7), 0, 2),
         ("node", wrong_wire(1), 0, 2), ("initializer", wrong_wire(5), 0, 2), ("input", wrong_wire(11), 0, 2),
         ("output", wrong_wire(12), 0, 2), *[("node field", wrong_wire(n), 0, 2) for n in (1, 2, 3, 4)],
         ("attribute", wrong_wire(5), 0, 2), ("attribute field", wrong_wire(1), 0, 2),
         ("attribute field", ld(3, BAD), 2, 0), ("tensor field", ld(2, BAD), 2, 0),
         ("tensor field", wrong_wire(8), 0, 2), ("tensor field", wrong_wire(9), 0, 2),
         ("value info field", wrong_wire(1), 0, 2), ("value info field", wrong_wire(2), 0, 2),
         ("type field", wrong_wire(1), 0, 2), ("tensor type field", wrong_wire(2), 0, 2),
         ("shape field", wrong_wire(1), 0, 2), ("dim field", ld(1, BAD), 2, 0), ("dim field", wrong_wire(2), 0, 2)]


@pytest.mark.parametrize("site, bad, wire, want", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_a_field_of_the_wrong_wire_type_names_its_byte(site, bad, wire, want):
    data = b"\x08\x07" + SITES[site](bad)  # ir_version first: no offset is 0 by accident
    assert data.count(bad) == 1
    at = data.index(bad)
    assert proto_error(data) == f"malformed ONNX protobuf: the field at byte {at} has wire type {wire}, ONNX says {want}"


# ----------------------------------------------------------------------------- the property: agree with onnx
names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6)
int64s = st.integers(-(1 << 63), (1 << 63) - 1)
noise = st.lists(st.sampled_from([vint(99, 1), vint(99, (1 << 64) - 1), fixed32(98), fixed64(97), ld(96, "zz"),
                                  ld(95, b"")]), max_size=2).map(b"".join)


@st.composite
def models(draw):
    """A ModelProto of random metadata, nodes with integer and other attributes, initializers
    with packed or plain dims and inputs with valued, named or empty dims; unknown fields of
    every wire type between the fields read."""
    def dim(v):
        kind = draw(st.sampled_from(["value", "param", "none"]))
        return draw(noise) + (vint(1, v) if kind == "value" else ld(2, draw(names)) if kind == "param" else b"")

    meta = b"".join(ld(14, draw(noise), ld(1, k), ld(2, draw(names)))
                    for k in draw(st.lists(names, unique=True, max_size=3)))
    nodes = []
    for _ in range(draw(st.integers(0, 3))):
        attrs = [ld(5, draw(noise), ld(1, a), vint(3, draw(int64s)), vint(20, 2))
                 for a in draw(st.lists(names, unique=True, max_size=3))]
        attrs.append(ld(5, ld(1, "f"), fixed32(2), vint(20, 1)))
        nodes.append(node(draw(names), draw(st.lists(names, max_size=3)), draw(st.lists(names, max_size=2)),
                          draw(names), draw(noise), *attrs))
    inits = [tensor(n, draw(st.lists(int64s, max_size=5)), draw(st.integers(0, 16)), draw(st.binary(max_size=16)),
                    draw(st.booleans())) for n in draw(st.lists(names, unique=True, max_size=3))]
    inputs = [ld(11, draw(noise), ld(1, draw(names)), ld(2, ld(1, ld(2, *[ld(1, dim(v)) for v in draw(
        st.lists(int64s, max_size=4))])))) for _ in range(draw(st.integers(0, 2)))]
    parts = [*nodes, *inits, *inputs]
    order = draw(st.permutations(range(len(parts))))
    return draw(noise) + meta + graph(*[parts[i] for i in order], draw(noise)) + draw(noise)


@settings(max_examples=150, deadline=None)
@given(models())
def test_the_reader_agrees_with_the_onnx_package_on_any_encoding(data):
    assert reader_view(data) == onnx_view(data)
    m = read_model(data)
    conv_widths(m), packed_digest(m)  # never raises


@settings(max_examples=150, deadline=None)
@given(models(), st.data())
def test_any_damage_is_a_proto_error_or_a_model(data, pick):
    """Cut or overwrite the encoded bytes anywhere: the reader answers with a model or one ProtoError line."""
    blob = bytearray(data)
    if pick.draw(st.booleans()) or not blob:
        blob = blob[:pick.draw(st.integers(0, len(blob)))]
    else:
        for _ in range(pick.draw(st.integers(1, 4))):
            blob[pick.draw(st.integers(0, len(blob) - 1))] = pick.draw(st.integers(0, 255))
    try:
        m = read_model(bytes(blob))
    except ProtoError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(("malformed ONNX protobuf: ", "not an ONNX model: "))
        return
    conv_widths(m), packed_digest(m)
