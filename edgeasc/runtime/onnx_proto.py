"""A small, strict reader of the parts of an ONNX ModelProto the device runtime checks, without
the `onnx` package (the device install has numpy, onnxruntime, soundfile and soxr only).

It reads the metadata_props, the graph's inputs and outputs (names and dims), its nodes
(op_type, name, inputs, outputs, integer attributes) and its initializers (name, dims,
data_type, raw_data as a slice of the file: never copied, never decoded). Everything else
(functions, sub-graphs, doc strings, typed data fields) is skipped by its wire type, so a file
from a newer ONNX still reads. The file is untrusted: every length is checked against the
bytes left, varints are at most 10 bytes, only wire types 0, 1, 2 and 5 exist, nesting is
bounded (the reader descends only through the fixed message types above, at most 7 deep), and
any malformation is one ProtoError line naming the byte offset.

What the runtime does with it (edgeasc.runtime.metadata.check_integrity):

- conv widths: the (in, out) channel count of every Conv, from its weight's dims (followed
  through the Cast of an fp16 file, the DequantizeLinear of an int8 one, the damping Mul of
  an unfolded one, and the Reshape / ConstantOfShape of a sparse pack, whose `.shape` constant
  holds the dims). Conv names and weight names are not used: the exporter may dedupe equal
  weights, prefix them (`model.` under a frontend) or compute them (`mul`), so names say
  nothing reliable about which conv is which. The metadata's `conv_plan` lists every conv as
  a pair of channel groups instead, and the graph must hold exactly that multiset of
  (in, out) widths (see metadata.py).
- the sparse pack: a SHA-256 over the packed initializers' name, data type, dims and raw
  bytes (`packed_digest`), recomputed from the raw bytes read here (no decoding, no
  rebuilding of dense tensors: cheap), compared with the one the exporter wrote.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass, field

from edgeasc.errors import EdgeascError

MAX_DEPTH = 8  # the deepest path read is model > graph > input > type > tensor > shape > dim
# ops that hand a conv its weight unchanged in shape: fp16 Cast, int8 DequantizeLinear, the
# damping Mul of an --no-fold-damping export (weight * mask, same shape), Identity
_SAME_SHAPE = ("Cast", "DequantizeLinear", "Identity", "Mul")
# the sparse pack's initializers: `sp<i>.<piece>` per packed tensor and the shared `sp.<name>`
PACKED = re.compile(r"sp\d*\.")
INT64 = 7  # TensorProto.INT64


class ProtoError(EdgeascError):
    """Bytes that are not a well-formed ONNX ModelProto."""

    exit_code = 2


@dataclass
class ValueInfo:
    name: str = ""
    shape: list = field(default_factory=list)  # int (dim_value), str (dim_param) or None per axis


@dataclass
class Node:
    op_type: str = ""
    name: str = ""
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    ints: dict[str, int] = field(default_factory=dict)  # the node's integer attributes


@dataclass
class Tensor:
    name: str = ""
    dims: list[int] = field(default_factory=list)
    data_type: int = 0
    raw: bytes | memoryview = b""


@dataclass
class Model:
    metadata: dict[str, str] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    initializers: dict[str, Tensor] = field(default_factory=dict)
    inputs: list[ValueInfo] = field(default_factory=list)
    outputs: list[ValueInfo] = field(default_factory=list)


# ----------------------------------------------------------------------------- wire format
def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    start = pos
    while True:
        if pos >= end:
            raise ProtoError(f"malformed ONNX protobuf: a number at byte {start} runs past the end")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift >= 70:
            raise ProtoError(f"malformed ONNX protobuf: a number at byte {start} is longer than 10 bytes")
    if value >= 1 << 64:
        raise ProtoError(f"malformed ONNX protobuf: a number at byte {start} exceeds 64 bits")
    return value, pos


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _fields(buf: memoryview, pos: int, end: int):
    """(field number, wire type, value, offset) of each field in buf[pos:end]; a length-delimited
    value is the (start, end) of its bytes."""
    while pos < end:
        at = pos
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtoError(f"malformed ONNX protobuf: field number 0 at byte {at}")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if length > end - pos:
                raise ProtoError(f"malformed ONNX protobuf: a field at byte {at} claims {length:,} bytes, "
                                 f"{end - pos:,} are left (a truncated file?)")
            value, pos = (pos, pos + length), pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if size > end - pos:
                raise ProtoError(f"malformed ONNX protobuf: a fixed-size field at byte {at} runs past the end")
            value, pos = None, pos + size
        else:
            raise ProtoError(f"malformed ONNX protobuf: wire type {wire} at byte {at} (not 0, 1, 2 or 5)")
        yield number, wire, value, at


def _text(buf: memoryview, span: tuple[int, int]) -> str:
    try:
        return bytes(buf[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtoError(f"malformed ONNX protobuf: the string at byte {span[0]} is not UTF-8") from None


def _expect(wire: int, want: int, at: int) -> None:
    if wire != want:
        raise ProtoError(f"malformed ONNX protobuf: the field at byte {at} has wire type {wire}, ONNX says {want}")


def _ints(buf: memoryview, wire: int, value, at: int) -> list[int]:
    """A repeated int64: one varint, or a packed run of them."""
    if wire == 0:
        return [_signed(value)]
    _expect(wire, 2, at)
    out, pos = [], value[0]
    while pos < value[1]:
        v, pos = _varint(buf, pos, value[1])
        out.append(_signed(v))
    return out


# ----------------------------------------------------------------------------- messages
def _dims(buf: memoryview, span: tuple[int, int], depth: int) -> list:
    """TypeProto -> the dims of its tensor_type's shape (empty for other types)."""
    if depth > MAX_DEPTH:  # pragma: no cover - the fixed descent never gets here
        raise ProtoError("malformed ONNX protobuf: nested too deeply")
    shape: list = []
    for number, wire, value, at in _fields(buf, *span):
        if number != 1:  # tensor_type; sequence/map/optional types are not read
            continue
        _expect(wire, 2, at)
        for n2, w2, v2, at2 in _fields(buf, *value):
            if n2 != 2:  # shape
                continue
            _expect(w2, 2, at2)
            for n3, w3, v3, at3 in _fields(buf, *v2):
                if n3 != 1:  # dim
                    continue
                _expect(w3, 2, at3)
                dim = None
                for n4, w4, v4, at4 in _fields(buf, *v3):
                    if n4 == 1:
                        _expect(w4, 0, at4)
                        dim = _signed(v4)
                    elif n4 == 2:
                        _expect(w4, 2, at4)
                        dim = _text(buf, v4)
                shape.append(dim)
    return shape


def _value_info(buf: memoryview, span: tuple[int, int], depth: int) -> ValueInfo:
    info = ValueInfo()
    for number, wire, value, at in _fields(buf, *span):
        if number == 1:
            _expect(wire, 2, at)
            info.name = _text(buf, value)
        elif number == 2:
            _expect(wire, 2, at)
            info.shape = _dims(buf, value, depth + 1)
    return info


def _node(buf: memoryview, span: tuple[int, int]) -> Node:
    node = Node()
    for number, wire, value, at in _fields(buf, *span):
        if number in (1, 2, 3, 4):
            _expect(wire, 2, at)
            text = _text(buf, value)
            if number == 1:
                node.inputs.append(text)
            elif number == 2:
                node.outputs.append(text)
            elif number == 3:
                node.name = text
            else:
                node.op_type = text
        elif number == 5:  # AttributeProto: name (1), i (3); tensors, graphs and lists are skipped
            _expect(wire, 2, at)
            name, integer = None, None
            for n2, w2, v2, at2 in _fields(buf, *value):
                if n2 == 1:
                    _expect(w2, 2, at2)
                    name = _text(buf, v2)
                elif n2 == 3:
                    _expect(w2, 0, at2)
                    integer = _signed(v2)
            if name is not None and integer is not None:
                node.ints[name] = integer
    return node


def _tensor(buf: memoryview, span: tuple[int, int]) -> Tensor:
    tensor = Tensor()
    for number, wire, value, at in _fields(buf, *span):
        if number == 1:
            tensor.dims += _ints(buf, wire, value, at)
        elif number == 2:
            _expect(wire, 0, at)
            tensor.data_type = value
        elif number == 8:
            _expect(wire, 2, at)
            tensor.name = _text(buf, value)
        elif number == 9:
            _expect(wire, 2, at)
            tensor.raw = buf[value[0]:value[1]]
    return tensor


def read_model(data: bytes | memoryview) -> Model:
    """The parts of a serialized ModelProto described above. Raises ProtoError (one line)."""
    buf = memoryview(data)
    if buf.ndim != 1 or buf.itemsize != 1:  # pragma: no cover - callers pass bytes
        buf = buf.cast("B")
    model = Model()
    graphs = 0
    for number, wire, value, at in _fields(buf, 0, len(buf)):
        if number == 14:  # metadata_props: StringStringEntryProto key (1), value (2)
            _expect(wire, 2, at)
            key, text = "", ""
            for n2, w2, v2, at2 in _fields(buf, *value):
                if n2 in (1, 2):
                    _expect(w2, 2, at2)
                    if n2 == 1:
                        key = _text(buf, v2)
                    else:
                        text = _text(buf, v2)
            model.metadata[key] = text
        elif number == 7:  # the graph
            _expect(wire, 2, at)
            graphs += 1
            for n2, w2, v2, at2 in _fields(buf, *value):
                if n2 == 1:
                    _expect(w2, 2, at2)
                    model.nodes.append(_node(buf, v2))
                elif n2 == 5:
                    _expect(w2, 2, at2)
                    tensor = _tensor(buf, v2)
                    model.initializers[tensor.name] = tensor
                elif n2 in (11, 12):
                    _expect(w2, 2, at2)
                    (model.inputs if n2 == 11 else model.outputs).append(_value_info(buf, v2, 3))
    if graphs == 0:
        raise ProtoError("not an ONNX model: the protobuf holds no graph")
    return model


# ----------------------------------------------------------------------------- what is checked
def int64_values(tensor: Tensor) -> list[int] | None:
    """The values of an int64 initializer stored as raw bytes (little-endian), else None."""
    if tensor.data_type != INT64 or len(tensor.raw) % 8:
        return None
    return list(struct.unpack(f"<{len(tensor.raw) // 8}q", tensor.raw))


def weight_shape(model: Model, name: str, producers: dict[str, Node] | None = None, depth: int = 0,
                 memo: dict[tuple[str, int], list[int] | None] | None = None) -> list[int] | None:
    """The dims of tensor `name`: an initializer's, or followed back through the ops that keep a
    weight's shape and the sparse pack's Reshape / ConstantOfShape. None when not readable.
    `memo` (by name and depth, shared by the calls for one graph): a hostile graph of Muls that
    each read the one before twice costs linear time, not 2^16 calls per conv."""
    if producers is None:
        producers = {out: n for n in model.nodes for out in n.outputs}
    memo = {} if memo is None else memo
    if (name, depth) not in memo:
        memo[name, depth] = _weight_shape(model, name, producers, depth, memo)
    return memo[name, depth]


def _weight_shape(model: Model, name: str, producers: dict[str, Node], depth: int,
                  memo: dict[tuple[str, int], list[int] | None]) -> list[int] | None:
    if name in model.initializers:
        return list(model.initializers[name].dims)
    node = producers.get(name)
    if node is None or depth > 16 or not node.inputs:  # 16: longer chains are not an exporter's
        return None
    if node.op_type in _SAME_SHAPE:  # Mul: the weight is the operand of highest rank (the mask broadcasts)
        shapes = [weight_shape(model, i, producers, depth + 1, memo)
                  for i in node.inputs[:1 + (node.op_type == "Mul")]]
        return max((s for s in shapes if s is not None), key=len, default=None)
    source = {"Reshape": 1, "ConstantOfShape": 0}.get(node.op_type)
    if source is None or source >= len(node.inputs) or node.inputs[source] not in model.initializers:
        return None
    return int64_values(model.initializers[node.inputs[source]])


def conv_widths(model: Model) -> list[tuple[str, int | None, int | None]]:
    """(node name, in channels, out channels) of every Conv; None where the weight is unreadable.
    In channels = the weight's second dim times the conv's group count."""
    producers = {out: n for n in model.nodes for out in n.outputs}
    memo: dict[tuple[str, int], list[int] | None] = {}
    out = []
    for node in model.nodes:
        if node.op_type != "Conv":
            continue
        dims = weight_shape(model, node.inputs[1], producers, 0, memo) if len(node.inputs) > 1 else None
        if not dims or len(dims) < 2:
            out.append((node.name, None, None))
        else:
            out.append((node.name, dims[1] * node.ints.get("group", 1), dims[0]))
    return out


def packed_digest(model: Model) -> tuple[int, str]:
    """(number of packed initializers, SHA-256 hex) over the sparse pack's initializers, sorted
    by name: each one's name, data type, dims and raw bytes, length-prefixed so that no two
    different packs hash the same stream."""
    digest = hashlib.sha256()
    names = sorted(name for name in model.initializers if PACKED.match(name))
    for name in names:
        t = model.initializers[name]
        encoded = name.encode("utf-8")
        digest.update(struct.pack("<QQQ", len(encoded), t.data_type, len(t.dims)))
        digest.update(encoded)
        digest.update(struct.pack(f"<{len(t.dims)}q", *t.dims))
        digest.update(struct.pack("<Q", len(t.raw)))
        digest.update(t.raw)
    return len(names), digest.hexdigest()
