"""MACs counted on an exported ONNX graph: the shapes come from ONNX shape inference (and, where
it cannot follow, e.g. through an in-graph STFT, from one onnxruntime run of the graph), not from
edgeasc's own model description, so the count checks the size report independently."""

from __future__ import annotations

import math

import onnx
from onnx import numpy_helper, shape_inference


def graph_macs(proto: onnx.ModelProto, input_shape: tuple[int, ...]) -> int:
    """Σ over Conv and Gemm nodes of output elements x input channels per group x kernel size,
    for one input of `input_shape` (batch included; give batch 1 for MACs per clip)."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    inputs = [i for i in model.graph.input if i.name not in {init.name for init in model.graph.initializer}]
    for dim, value in zip(inputs[0].type.tensor_type.shape.dim, input_shape, strict=True):
        dim.Clear()
        dim.dim_value = int(value)
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int]] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    for node in inferred.graph.node:  # Constant nodes carry their tensor as an attribute
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = list(numpy_helper.to_array(attr.t).shape)
    needed = [name for node in inferred.graph.node if node.op_type in ("Conv", "Gemm")
              for name in (node.input[0], node.input[1], node.output[0])]
    missing = sorted({name for name in needed if name not in shapes})
    if missing:
        shapes.update(_run_shapes(inferred, missing, input_shape))
    total = 0
    for node in inferred.graph.node:
        if node.op_type == "Conv":
            w, y = _shape(shapes, node.input[1], node), _shape(shapes, node.output[0], node)
            total += math.prod(y[1:]) * w[1] * math.prod(w[2:])
        elif node.op_type == "Gemm":
            a, y = _shape(shapes, node.input[0], node), _shape(shapes, node.output[0], node)
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            total += math.prod(y) * (a[0] if trans_a else a[1]) // max(1, input_shape[0])
    return total


def _shape(shapes: dict, name: str, node) -> list[int]:
    if name not in shapes:
        raise ValueError(f"ONNX shape inference left {name!r} of {node.op_type} node {node.name!r} unknown")
    return shapes[name]


def _run_shapes(model: onnx.ModelProto, names: list[str], input_shape: tuple[int, ...]) -> dict[str, list[int]]:
    """The shapes of `names` in one onnxruntime run on zeros (a copy of the graph with them as outputs)."""
    import numpy as np
    import onnxruntime as ort

    types = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.value_info}
    m = onnx.ModelProto()
    m.CopyFrom(model)
    existing = {o.name for o in m.graph.output}
    for name in names:
        if name not in existing:
            m.graph.output.append(onnx.helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT),
                                                                     None))
    from edgeasc.runtime.deployed import quiet_options

    options = quiet_options(ort.SessionOptions())
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.zeros(input_shape, np.float32)}
    values = session.run(names, feed)
    return {name: list(v.shape) for name, v in zip(names, values, strict=True)}
