"""Checker-valid sparse storage of pruned weights, rebuilt to dense inside the graph.

onnxruntime densifies standard sparse initializers at load and the checker only accepts
them with int64 indices (8 bytes per non-zero). Instead a pruned weight is stored as its
non-zero values plus a bitmask (1 bit per weight) as ordinary initializers, and rebuilt with
BitShift/BitwiseAnd/NonZero/ScatterND. Every input of that subgraph is constant, so
onnxruntime folds it once when the session starts: inference runs on dense weights.
Packing happens after simplification (a simplifier would fold the pack back to dense).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MODES = ("auto", "pack", "none")
_NODE_OVERHEAD = 600  # bytes a packed tensor costs in nodes, names and shapes (measured, rounded up)


def packed_bytes(n: int, nnz: int, bytes_per_value: int) -> int:
    return (n + 7) // 8 + nnz * bytes_per_value + _NODE_OVERHEAD


def pack_weights(proto: onnx.ModelProto, mode: str = "auto", value_dtype=np.float32) -> dict:
    """Pack the Conv weights (and constant MatMul matrices) that have zeros (auto: only where that
    saves bytes). Conv values are stored as `value_dtype` (float16 gets a Cast to float32);
    other matrices stay float32. Returns what was packed."""
    if mode == "none":
        return {"packed": [], "mode": mode}
    graph = proto.graph
    # conv weights, and the constant matrices of MatMuls (the frontend's mel filterbank: > 99 % zeros)
    conv_weights = {n.input[1] for n in graph.node if n.op_type == "Conv" and len(n.input) > 1}
    conv_weights |= {name for n in graph.node if n.op_type == "MatMul" for name in n.input}
    per_value = np.dtype(value_dtype).itemsize
    packed, keep, nodes = [], [], []
    shifts_name = "edgeasc_pack_shifts"
    for init in graph.initializer:
        if init.name not in conv_weights or init.data_type != TensorProto.FLOAT:
            keep.append(init)
            continue
        w = numpy_helper.to_array(init)
        flat = w.reshape(-1)
        nz = np.flatnonzero(flat)
        n, nnz = flat.size, nz.size
        dense_bytes = n * per_value
        if nnz == n or (mode == "auto" and packed_bytes(n, nnz, per_value) >= dense_bytes):
            keep.append(init)
            continue
        is_conv = any(nd.op_type == "Conv" and nd.input[1] == init.name for nd in graph.node)
        dtype = value_dtype if is_conv else np.float32
        mask = np.zeros(((n + 7) // 8) * 8, dtype=np.uint8)
        mask[nz] = 1
        base = init.name
        keep.append(numpy_helper.from_array(np.packbits(mask), f"{base}__bits"))
        keep.append(numpy_helper.from_array(flat[nz].astype(dtype), f"{base}__values"))
        keep.append(numpy_helper.from_array(np.array(list(w.shape), dtype=np.int64), f"{base}__shape"))
        keep.append(numpy_helper.from_array(np.array([n], dtype=np.int64), f"{base}__n"))
        values = f"{base}__values"
        if dtype != np.float32:
            nodes.append(helper.make_node("Cast", [values], [f"{base}__values_f32"], to=TensorProto.FLOAT,
                                          name=f"{base}__cast"))
            values = f"{base}__values_f32"
        nodes += [
            helper.make_node("Unsqueeze", [f"{base}__bits", "edgeasc_pack_axis1"], [f"{base}__b2"], name=f"{base}__u"),
            helper.make_node("BitShift", [f"{base}__b2", shifts_name], [f"{base}__b3"], direction="RIGHT",
                             name=f"{base}__shift"),
            helper.make_node("BitwiseAnd", [f"{base}__b3", "edgeasc_pack_one"], [f"{base}__b4"], name=f"{base}__and"),
            helper.make_node("Reshape", [f"{base}__b4", "edgeasc_pack_flat"], [f"{base}__b5"], name=f"{base}__flat"),
            helper.make_node("Slice", [f"{base}__b5", "edgeasc_pack_zero", f"{base}__n"], [f"{base}__b6"],
                             name=f"{base}__slice"),
            helper.make_node("Cast", [f"{base}__b6"], [f"{base}__keep"], to=TensorProto.BOOL, name=f"{base}__bool"),
            helper.make_node("NonZero", [f"{base}__keep"], [f"{base}__idx"], name=f"{base}__nonzero"),
            helper.make_node("Transpose", [f"{base}__idx"], [f"{base}__idxT"], perm=[1, 0], name=f"{base}__t"),
            helper.make_node("ConstantOfShape", [f"{base}__n"], [f"{base}__zeros"],
                             value=numpy_helper.from_array(np.zeros(1, np.float32)), name=f"{base}__z"),
            helper.make_node("ScatterND", [f"{base}__zeros", f"{base}__idxT", values], [f"{base}__dense"],
                             name=f"{base}__scatter"),
            helper.make_node("Reshape", [f"{base}__dense", f"{base}__shape"], [base], name=f"{base}__reshape"),
        ]
        packed.append({"name": base, "shape": list(w.shape), "params": int(n), "nonzero": int(nnz),
                       "dense_bytes": int(dense_bytes), "packed_bytes": int((n + 7) // 8 + nnz * per_value)})
    if packed:
        keep += [numpy_helper.from_array(np.arange(7, -1, -1, dtype=np.uint8).reshape(1, 8), shifts_name),
                 numpy_helper.from_array(np.array([1], dtype=np.uint8), "edgeasc_pack_one"),
                 numpy_helper.from_array(np.array([1], dtype=np.int64), "edgeasc_pack_axis1"),
                 numpy_helper.from_array(np.array([-1], dtype=np.int64), "edgeasc_pack_flat"),
                 numpy_helper.from_array(np.array([0], dtype=np.int64), "edgeasc_pack_zero")]
        del graph.initializer[:]
        graph.initializer.extend(keep)
        rest = list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes + rest)
    return {"packed": packed, "mode": mode}
