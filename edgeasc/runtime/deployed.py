"""An exported model as the device sees it: an onnxruntime session plus the edgeasc metadata
the file carries (labels, frontend parameters, normalisation). torch-free and free of the
`onnx` package: the device install has numpy, onnxruntime, soundfile and soxr only."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeasc.console import ort_log_severity
from edgeasc.errors import ConfigError, EdgeascError
from edgeasc.runtime.features import FeatureParams
from edgeasc.runtime.metadata import (
    MAX_INPUT_BYTES,
    check_against_graph,
    check_conv_plan,
    parse_metadata,
)
from edgeasc.runtime.metadata import PREFIX as METADATA_PREFIX
from edgeasc.runtime.onnx_proto import (
    PACKED,
    Model,
    ProtoError,
    conv_widths,
    packed_digest,
    read_model,
)

REQUIRED_FOR_PREDICT = ("labels", "feature_params", "input", "channels")


class ModelError(EdgeascError):
    """A model file that cannot be used (missing, not ONNX, not an edgeasc export)."""

    exit_code = 2


def session_options(threads: int = 1, arena: bool = True):
    import onnxruntime as ort

    cores = os.cpu_count() or 1
    if not 1 <= threads <= cores:
        raise ConfigError(f"thread count must be between 1 and {cores} (this machine's logical cores), got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = arena
    return quiet_options(options)


def quiet_options(options):
    """onnxruntime logs at edgeasc's level (console.ort_log_severity): its warnings (unused
    initializers, in terminal colours) are not the user's business unless --verbose."""
    import onnxruntime as ort

    level = ort_log_severity()
    ort.set_default_logger_severity(level)  # the environment's logger, used before a session has its own
    options.log_severity_level = level
    return options


def open_session(path: str | Path, threads: int = 1, arena: bool = True, data: bytes | None = None):
    """An onnxruntime session of the file at `path` (of its bytes `data` when given, already read)."""
    import onnxruntime as ort

    path = Path(path)
    options = session_options(threads, arena)  # validates threads before touching the file
    if data is None and not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        return ort.InferenceSession(str(path) if data is None else data, sess_options=options,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises InvalidProtobuf, Fail, InvalidGraph...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a usable ONNX model ({reason[:200]})") from None


@dataclass
class DeployedModel:
    path: Path
    session: object
    metadata: dict = field(default_factory=dict)

    @property
    def is_edgeasc(self) -> bool:
        return all(key in self.metadata for key in REQUIRED_FOR_PREDICT)

    def require_metadata(self, what: str = "predict") -> None:
        missing = [key for key in REQUIRED_FOR_PREDICT if key not in self.metadata]
        if missing:
            raise ModelError(f"{self.path}: not an edgeasc export ({what} needs the metadata "
                             f"{', '.join(METADATA_PREFIX + k for k in missing)}; `edgeasc export` writes it)")

    @property
    def labels(self) -> list[str]:
        return list(self.metadata["labels"])

    @property
    def feature_params(self) -> FeatureParams:
        return FeatureParams(**self.metadata.get("feature_params", {}))

    @property
    def takes_waveform(self) -> bool:
        return self.metadata.get("input", {}).get("name") == "waveform"

    @property
    def channels(self) -> int:
        return int(self.metadata["channels"])

    @property
    def clip_seconds(self) -> float:
        return float(self.metadata.get("clip_seconds") or self.feature_params.clip_seconds)

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    def normalize(self, features: np.ndarray) -> np.ndarray:
        """(…, n_mels, frames) un-normalised features -> what the graph's `features` input takes."""
        norm = self.metadata.get("normalization")
        if not norm:
            return features
        mean = np.asarray(norm["mean"], dtype=np.float32)[:, None]
        std = np.asarray(norm["std"], dtype=np.float32)[:, None]
        return (features - mean) / std

    def example_input(self, batch: int = 1, seconds: float | None = None, seed: int = 0) -> np.ndarray:
        """A random input of the shape one clip of `seconds` gives (the model's clip length by
        default). Works for files without edgeasc metadata too: their dynamic time axis is
        sized with the default frontend (22.05 kHz, hop 512)."""
        seconds = self.clip_seconds if seconds is None else seconds
        params = self.feature_params if self.metadata.get("feature_params") else FeatureParams()
        rng = np.random.default_rng(seed)
        spec = self.session.get_inputs()[0]
        shape = list(spec.shape)
        time_size = params.n_samples(seconds) if self.takes_waveform else params.n_frames(seconds)
        dims = []
        for axis, dim in enumerate(shape):
            if isinstance(dim, int) and dim > 0:
                dims.append(dim)
            elif axis == 0:
                dims.append(batch)
            elif axis == len(shape) - 1:
                dims.append(time_size)
            else:
                raise ModelError(f"{self.path}: cannot size input axis {axis} ({dim!r}) of {spec.name!r}")
        dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16}.get(spec.type)
        if dtype is None:
            raise ModelError(f"{self.path}: input {spec.name!r} is {spec.type}; edgeasc benchmarks float inputs")
        size = float(np.prod(dims, dtype=np.float64)) * np.dtype(dtype).itemsize
        if size > batch * MAX_INPUT_BYTES:
            raise ModelError(f"{self.path}: the graph declares an input of {dims} ({size / 2**30:.1f} GiB): "
                             "more than edgeasc will allocate")
        scale = 0.1 if self.takes_waveform else 1.0
        return (scale * rng.standard_normal(dims)).astype(dtype)

    def run(self, x: np.ndarray) -> np.ndarray:
        """The graph's first output for input `x`; onnxruntime's refusals become one ModelError."""
        try:
            return self.session.run(None, {self.input_name: x})[0]
        except MemoryError:
            raise
        except Exception as exc:  # InvalidArgument, Fail, RuntimeException...: the file does not fit its input
            first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise ModelError(f"{self.path}: onnxruntime cannot run it on an input of shape "
                             f"{list(x.shape)} ({first[:200]})") from None


def check_sparse_pack(meta: dict, model: Model, where: str) -> None:
    """The sparse pack's initializers must be the bytes the exporter packed: a flipped bit in a
    bitmask or a value would otherwise rebuild other weights, silently. The SHA-256 is
    recomputed over the packed initializers' raw bytes as stored (onnx_proto.packed_digest):
    nothing is decoded or rebuilt, so it costs one pass of hashing over the pack."""
    sparse = meta.get("sparse")
    if sparse is None:
        # an edgeasc export whose sparse key was removed: the graph still says whether it holds a
        # pack (a file without edgeasc metadata is foreign and runs as it is)
        count = sum(1 for name in model.initializers if PACKED.match(name)) if meta else 0
        if count:
            raise ModelError(f"{where}: the graph holds {count} sparse-pack initializers but the metadata has no "
                             f"{METADATA_PREFIX}sparse with their sha256 (the file changed after export)")
        return
    want = sparse.get("sha256")
    if want is None:
        if sparse.get("packed_tensors"):
            raise ModelError(f"{where}: metadata {METADATA_PREFIX}sparse packs {sparse['packed_tensors']} "
                             "tensors but carries no sha256 of them")
        return
    count, got = packed_digest(model)
    if got != want:
        raise ModelError(f"{where}: the sparse pack is damaged: its {count} initializers hash to "
                         f"sha256 {got[:12]}…, the metadata says {want[:12]}… (the file changed after export)")


def load_model(path: str | Path, threads: int = 1, arena: bool = True) -> DeployedModel:
    """The model at `path`, checked before onnxruntime sees it, from the file's bytes read
    with onnx_proto (a damaged pack could otherwise fail inside onnxruntime with a message
    about a Gather): the graph's declared input and output, the sparse pack against its
    checksum, the convs against the channel plan."""
    path = Path(path)
    session_options(threads, arena)  # validates threads before touching the file
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        model = read_model(data)
    except ProtoError as exc:
        raise ModelError(f"{path}: not a usable ONNX model ({exc})") from None
    meta = parse_metadata(model.metadata, str(path))
    check_against_graph(meta, model.inputs, model.outputs, str(path))  # the declared input and output first
    check_sparse_pack(meta, model, str(path))
    check_conv_plan(meta, conv_widths(model), str(path))
    return DeployedModel(path, open_session(path, threads, arena, data), meta)


def describe_model(path: str | Path) -> dict:
    """What `edgeasc info MODEL.onnx` shows: the metadata, the graph's inputs and outputs, the file size."""
    model = load_model(path)
    meta = model.session.get_modelmeta()
    return {
        "path": str(path), "file_bytes": Path(path).stat().st_size, "edgeasc_export": model.is_edgeasc,
        "producer": meta.producer_name,
        "inputs": [{"name": i.name, "shape": list(i.shape), "type": i.type} for i in model.session.get_inputs()],
        "outputs": [{"name": o.name, "shape": list(o.shape), "type": o.type} for o in model.session.get_outputs()],
        "metadata": model.metadata,
    }
