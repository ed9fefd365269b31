"""Checker-valid sparse storage of pruned weights, rebuilt to dense inside the graph.

onnxruntime densifies standard sparse initializers at load and the checker only accepts
them with int64 indices (8 bytes per non-zero). Instead a pruned weight is stored as its
non-zero values plus compact positions as ordinary initializers, and rebuilt in the graph.
Every input of that subgraph is constant and every op in it is one onnxruntime constant-folds
(no NonZero), so it is rebuilt once when the session starts and inference runs on dense,
pre-packed weights (tested on the optimised graph). Each tensor gets the cheapest coding:

- `bitmask`: 1 bit per weight (BitShift/BitwiseAnd, CumSum, Gather): best from about 12 %
  density up;
- `gaps`: one uint8 per non-zero, the distance to the previous one (CumSum, ScatterND); a gap
  over 255 costs a filler entry whose value is 0: best for very sparse tensors;
- `zeros`: a tensor pruned away entirely is a ConstantOfShape.

Packing happens after simplification (a simplifier would fold the pack back to dense).
Intermediate names are short (`sp<i>.<step>`): with ~10 nodes per tensor, long layer paths
would cost kilobytes.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MODES = ("auto", "pack", "none")
CODINGS = ("bitmask", "gaps", "zeros")
# bytes a packed tensor costs in nodes, names and shapes (measured, rounded up)
_NODE_OVERHEAD = {"bitmask": 450, "gaps": 300, "zeros": 120}


def gap_code(nz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (sorted) -> uint8 gaps, plus the index into the gap list of every real entry
    (the rest are fillers for gaps over 255)."""
    gaps = np.diff(np.concatenate([[-1], nz]))
    fillers = (gaps - 1) // 255
    out = np.full(int(gaps.size + fillers.sum()), 255, dtype=np.uint8)
    real = np.cumsum(fillers + 1) - 1
    out[real] = gaps - fillers * 255
    return out, real


def coding_bytes(n: int, nz: np.ndarray, bytes_per_value: int) -> dict[str, int]:
    """Stored bytes of each coding of one tensor (initializers plus node overhead)."""
    k = int(nz.size)
    if k == 0:
        return {"zeros": _NODE_OVERHEAD["zeros"]}
    fillers = int(((np.diff(np.concatenate([[-1], nz])) - 1) // 255).sum())
    return {"bitmask": (n + 7) // 8 + (k + 1) * bytes_per_value + _NODE_OVERHEAD["bitmask"],
            "gaps": (k + fillers) * (1 + bytes_per_value) + _NODE_OVERHEAD["gaps"]}


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def _rebuild(p: str, coding: str, values: str, out: str, zero_dtype=np.float32) -> list[onnx.NodeProto]:
    """Nodes that turn the stored pieces of tensor prefix `p` into the dense weight `out`."""
    node = helper.make_node
    zero = numpy_helper.from_array(np.zeros(1, zero_dtype))
    if coding == "zeros":
        return [node("ConstantOfShape", [f"{p}.shape"], [out], value=zero, name=f"{p}.z")]
    if coding == "bitmask":
        # value index of every weight = running count of set bits, 0 where the bit is clear (the
        # stored values start with a 0.0). CumSum/Gather, not NonZero/ScatterND:
        # onnxruntime never constant-folds NonZero (its output shape depends on the data), so a
        # NonZero pack would be rebuilt at every run and its convs could not pre-pack weights.
        return [
            node("Unsqueeze", [f"{p}.bits", "sp.axis1"], [f"{p}.1"], name=f"{p}.1"),
            node("BitShift", [f"{p}.1", "sp.shifts"], [f"{p}.2"], direction="RIGHT", name=f"{p}.2"),
            node("BitwiseAnd", [f"{p}.2", "sp.one"], [f"{p}.3"], name=f"{p}.3"),
            node("Reshape", [f"{p}.3", "sp.flat"], [f"{p}.4"], name=f"{p}.4"),
            node("Slice", [f"{p}.4", "sp.zero", f"{p}.n"], [f"{p}.5"], name=f"{p}.5"),
            node("Cast", [f"{p}.5"], [f"{p}.6"], to=TensorProto.INT64, name=f"{p}.6"),
            node("CumSum", [f"{p}.6", "sp.axis0"], [f"{p}.7"], name=f"{p}.7"),
            node("Mul", [f"{p}.7", f"{p}.6"], [f"{p}.idx"], name=f"{p}.8"),
            node("Gather", [values, f"{p}.idx"], [f"{p}.dense"], axis=0, name=f"{p}.10"),
            node("Reshape", [f"{p}.dense", f"{p}.shape"], [out], name=f"{p}.11"),
        ]
    # gaps: position = cumulative sum of the gaps - 1
    return [
        node("Cast", [f"{p}.gaps"], [f"{p}.1"], to=TensorProto.INT64, name=f"{p}.1"),
        node("CumSum", [f"{p}.1", "sp.axis0"], [f"{p}.2"], name=f"{p}.2"),
        node("Sub", [f"{p}.2", "sp.one64"], [f"{p}.3"], name=f"{p}.3"),
        node("Unsqueeze", [f"{p}.3", "sp.axis1"], [f"{p}.idx"], name=f"{p}.4"),
        node("ConstantOfShape", [f"{p}.n"], [f"{p}.zeros"], value=zero, name=f"{p}.9"),
        node("ScatterND", [f"{p}.zeros", f"{p}.idx", values], [f"{p}.dense"], name=f"{p}.10"),
        node("Reshape", [f"{p}.dense", f"{p}.shape"], [out], name=f"{p}.11"),
    ]


def pack_weights(proto: onnx.ModelProto, mode: str = "auto", value_dtype=np.float32) -> dict:
    """Pack the Conv weights (and constant MatMul matrices) that have zeros, each in its
    cheapest coding (auto: only where that saves bytes over dense). Conv values are stored as
    `value_dtype` (float16 gets a Cast to float32); other matrices stay float32. In an int8 (QDQ)
    graph the int8 weights feeding a Conv's DequantizeLinear are packed as int8 (zero point 0:
    a pruned weight is the int8 value 0). Returns what was packed."""
    if mode == "none":
        return {"packed": [], "mode": mode}
    graph = proto.graph
    conv = {n.input[1] for n in graph.node if n.op_type == "Conv" and len(n.input) > 1}
    # the constant matrices of MatMuls too (the frontend's mel filterbank: > 99 % zeros)
    candidates = conv | {name for n in graph.node if n.op_type == "MatMul" for name in n.input}
    quantized = {n.input[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] in conv}
    packed, keep, nodes, used = [], [], [], set()
    for init in graph.initializer:
        is_int8 = init.name in quantized and init.data_type == TensorProto.INT8
        if not is_int8 and (init.name not in candidates or init.data_type != TensorProto.FLOAT):
            keep.append(init)
            continue
        w = numpy_helper.to_array(init)
        flat = w.reshape(-1)
        nz = np.flatnonzero(flat)
        n, k = flat.size, nz.size
        dtype = np.dtype(np.int8 if is_int8 else value_dtype if init.name in conv else np.float32)
        dense_bytes = n * dtype.itemsize
        costs = coding_bytes(n, nz, dtype.itemsize)
        coding = min(costs, key=costs.get)
        if k == n or (mode == "auto" and costs[coding] >= dense_bytes):
            keep.append(init)
            continue
        p = f"sp{len(packed)}"
        keep.append(_const(f"{p}.shape", np.array(list(w.shape), dtype=np.int64)))
        values = f"{p}.values"
        if coding == "bitmask":
            bits = np.zeros(((n + 7) // 8) * 8, dtype=np.uint8)
            bits[nz] = 1
            keep += [_const(f"{p}.bits", np.packbits(bits)), _const(f"{p}.n", np.array([n], dtype=np.int64))]
            stored_values = np.concatenate([np.zeros(1, flat.dtype), flat[nz]])
            used |= {"shifts", "one", "axis1", "flat", "zero", "axis0"}
        elif coding == "gaps":
            gaps, real = gap_code(nz)
            stored_values = np.zeros(gaps.size, dtype=flat.dtype)
            stored_values[real] = flat[nz]
            keep += [_const(f"{p}.gaps", gaps), _const(f"{p}.n", np.array([n], dtype=np.int64))]
            used |= {"axis0", "one64", "axis1"}
        if coding != "zeros":
            keep.append(_const(values, stored_values.astype(dtype)))
            if dtype == np.float16:
                nodes.append(helper.make_node("Cast", [values], [f"{p}.values32"], to=TensorProto.FLOAT,
                                              name=f"{p}.cast"))
                values = f"{p}.values32"
        nodes += _rebuild(p, coding, values, init.name, np.int8 if is_int8 else np.float32)
        stored = costs[coding] - _NODE_OVERHEAD[coding]
        packed.append({"name": init.name, "prefix": p, "coding": coding, "shape": list(w.shape), "params": int(n),
                       "nonzero": int(k), "dense_bytes": int(dense_bytes), "packed_bytes": int(stored)})
    if packed:
        shared = {"shifts": np.arange(7, -1, -1, dtype=np.uint8).reshape(1, 8), "one": np.array([1], dtype=np.uint8),
                  "one64": np.array([1], dtype=np.int64), "axis0": np.array(0, dtype=np.int64),
                  "axis1": np.array([1], dtype=np.int64),
                  "flat": np.array([-1], dtype=np.int64), "zero": np.array([0], dtype=np.int64)}
        keep += [_const(f"sp.{key}", shared[key]) for key in sorted(used)]
        del graph.initializer[:]
        graph.initializer.extend(keep)
        rest = list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes + rest)
    return {"packed": packed, "mode": mode}
