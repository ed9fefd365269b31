"""The suite's memo of ONNX exports: the dynamo exporter takes 2-3 s per call (symbolic shapes in
sympy), and the suite exports the same folded network many times over (fp32, fp16 and int8 of one
checkpoint all start from the same float graph; the hostile and CLI tests export one fixture again
and again). `export_proto` is a pure function of the module and the shapes, so within one pytest
process a second call with an identical module returns the bytes the exporter produced for the
first, parsed afresh (callers mutate the proto).

Why this stays faithful:
- The key hashes everything a forward pass can read: every submodule's type, training flag,
  parameters and buffers (values, dtype, shape) and its public attributes (a config dataclass, a
  frontend's parameters). An attribute whose repr carries an address makes the key unique, so such
  a module is never reused (a miss is only slower).
- The memo lives in this process and is filled by the code under test, so a mutant of the exporter
  or of anything upstream of it is exported by the mutant.
- Side effects are replayed: `export_proto` puts the module in eval mode and draws its example
  input from torch's global generator. On a miss the memo checks that the draw is all it takes from
  the generator; if not, that key is never reused.
- `--verbose` runs (the exporter's own output is the point) and tests marked `real_export` (the
  determinism check: two exports, same bytes) always run the exporter.

Networks of one structure with other weights (the suite trains many tiny runs of one preset)
reuse the exporter's graph with their own weights put in, where that is provably all it takes:
each initializer of the first graph that holds the module's tensors byte for byte gets the new
ones; the new tensors are equal among themselves exactly where the first network's were (onnxslim
merges equal initializers, as a fresh network's zero biases); every tensor the graph does not hold
as it is (folded, unused) has the first network's values; and the result computes what the module
computes (onnxruntime against torch on a random input, 1e-4), which a graph holding a folded copy
of a weight would not. The last few graphs of each structure are kept and tried in turn (a fresh
network's graph holds its zero biases merged or not at all, a trained one's serves other trained
ones). Otherwise the exporter runs. test_export pins such a graph, byte for byte, to the
exporter's own for that network.
"""

from __future__ import annotations

import hashlib
import sys

STATS = {"hits": 0, "misses": 0, "substituted": 0}
_MEMO: dict[str, bytes | None] = {}  # None: seen, not reusable
enabled = True


def _feed(h, value) -> None:
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, np.ndarray):
        h.update(f"A{value.dtype}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (list, tuple)):
        h.update(f"L{type(value).__name__}{len(value)}".encode())
        for item in value:
            _feed(h, item)
    elif isinstance(value, dict):
        h.update(f"D{len(value)}".encode())
        for k in sorted(value, key=repr):
            _feed(h, k)
            _feed(h, value[k])
    else:
        h.update(f"R{type(value).__qualname__}:{value!r}".encode())


def module_key(model, args: tuple, tensors: bool = True) -> str:
    """A hash of everything a forward pass can read; `tensors=False`: parameters and buffers by
    dtype and shape only (the structure that one exported graph serves)."""
    h = hashlib.sha256()
    _feed(h, args)
    for name, module in model.named_modules():
        cls = type(module)
        h.update(f"M{name}|{cls.__module__}.{cls.__qualname__}|{module.training}".encode())
        for kind, named in (("P", module.named_parameters(recurse=False)), ("B", module.named_buffers(recurse=False))):
            for tname, value in named:
                h.update(f"{kind}{tname}".encode())
                if tensors:
                    _feed(h, value)
                else:
                    h.update(f"{value.dtype}{tuple(value.shape)}".encode())
        for attr, value in sorted(vars(module).items()):
            if not attr.startswith("_") and attr != "training":
                h.update(f"V{attr}".encode())
                _feed(h, value)
    return h.hexdigest()


def example_shape(in_channels, n_mels, frames, waveform_samples):
    """The shape of the example input export_proto draws."""
    return (2, in_channels, waveform_samples) if waveform_samples else (2, in_channels, n_mels, frames)


# per structure, the graphs the exporter made for it (a few: the first network of a structure is often
# a fresh one whose zero biases the graph merges or drops, which a trained network's would not be)
_STRUCTURES: dict[str, list[tuple[bytes, dict[str, list[str]], dict[str, bytes]]]] = {}
GRAPHS_PER_STRUCTURE = 4


def _tensor_bytes(t) -> bytes:
    import torch

    return t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _remember_structure(skey: str, model, proto) -> None:
    """Keep a graph for other weights: which of the module's tensors each initializer holds, byte
    for byte (the exporter and onnxslim rename and reshape them, and merge equal ones into one)."""
    from onnx import numpy_helper

    state = {k: _tensor_bytes(v) for k, v in model.state_dict().items()}
    owners: dict[bytes, list[str]] = {}
    for k, v in state.items():
        owners.setdefault(v, []).append(k)
    sources = {}  # initializer -> the tensors it holds (several: equal tensors merged)
    for init in proto.graph.initializer:
        names = owners.get(numpy_helper.to_array(init).tobytes())
        if names:
            sources[init.name] = names
    held = {k for names in sources.values() for k in names}
    # tensors the graph does not hold as they are (folded, unused) must not change
    fixed = {k: v for k, v in state.items() if k not in held}
    if sources:
        graphs = _STRUCTURES.setdefault(skey, [])
        graphs.insert(0, (proto.SerializeToString(), sources, fixed))  # the latest first
        del graphs[GRAPHS_PER_STRUCTURE:]


def _with_weights(skey: str, model, args: tuple):
    """One of the structure's graphs with this module's weights, or None where none is provably it."""
    state = model.state_dict()
    for entry in _STRUCTURES.get(skey, []):
        proto = _graph_with_weights(entry, model, state, args)
        if proto is not None:
            return proto
    return None


def _graph_with_weights(entry, model, state, args: tuple):
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import numpy_helper

    stored, sources, fixed = entry
    if any(_tensor_bytes(state[k]) != v for k, v in fixed.items()):
        return None
    # the same tensors equal as in that graph's network: the exporter would merge the same ones
    values = [{_tensor_bytes(state[k]) for k in names} for names in sources.values()]
    if any(len(v) != 1 for v in values) or len(set().union(*values)) != len(values):
        return None
    proto = onnx.load_from_string(stored)
    for init in proto.graph.initializer:
        if init.name in sources:
            old = numpy_helper.to_array(init)
            value = state[sources[init.name][0]].detach().cpu().numpy().reshape(old.shape)
            if value.dtype != old.dtype:
                return None
            init.CopyFrom(numpy_helper.from_array(value, init.name))
    # and it must compute what the module computes (a folded copy of a weight would not)
    x = torch.randn(*example_shape(*args), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        want = model(x).numpy()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    if got.shape != want.shape or np.abs(got - want).max() > 1e-4 * (1 + np.abs(want).max()):
        return None
    return proto


def install() -> None:
    """Wrap edgeasc.export.onnx.export_proto (and the name pipeline imported) once."""
    import onnx
    import torch

    import edgeasc.export.onnx as onnx_mod
    import edgeasc.export.pipeline as pipeline
    from edgeasc.console import verbose

    real = onnx_mod.export_proto
    if getattr(real, "__wrapped_by_memo__", False):
        return

    def memo_export_proto(model, in_channels, n_mels, frames, waveform_samples=None):
        args = (in_channels, n_mels, frames, waveform_samples)
        if not enabled or verbose():
            return real(model, *args)
        key = module_key(model.eval(), args)
        stored = _MEMO.get(key)
        if stored is not None:
            STATS["hits"] += 1
            torch.randn(*example_shape(*args))  # the draw export_proto makes
            return onnx.load_from_string(stored)
        skey = module_key(model, args, tensors=False)
        proto = _with_weights(skey, model, args)
        if proto is not None:
            STATS["substituted"] += 1
            torch.randn(*example_shape(*args))  # the draw export_proto makes
            _MEMO[key] = proto.SerializeToString()  # the same network again: a plain hit
            return proto
        STATS["misses"] += 1
        before = torch.get_rng_state()
        proto = real(model, *args)
        after = torch.get_rng_state()
        torch.set_rng_state(before)
        torch.randn(*example_shape(*args))
        replayable = torch.equal(torch.get_rng_state(), after)
        torch.set_rng_state(after)
        if key not in _MEMO:
            _MEMO[key] = proto.SerializeToString() if replayable else None
        if replayable:  # another graph of the structure: for networks whose equal tensors the others lack
            _remember_structure(skey, model, proto)
        return proto

    memo_export_proto.__wrapped_by_memo__ = True
    onnx_mod.export_proto = memo_export_proto
    pipeline.export_proto = memo_export_proto


def install_if_loaded() -> None:
    """Wrap the exporter once torch is in this process (a test that exports through the CLI imports
    the pipeline only during the test, after this ran); a process without torch exports nothing."""
    if "edgeasc.export.pipeline" in sys.modules or "torch" in sys.modules:
        install()
