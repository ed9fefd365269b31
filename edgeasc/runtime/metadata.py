"""The one schema of an exported model's `edgeasc.*` metadata, checked once, when the file is
opened. An .onnx file is untrusted input: every field that the device runtime reads is typed
and bounded here, so that predict, bench and info never meet a zero sample rate, a
negative hop, a label list shorter than the logits or a zero standard deviation. torch-free.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from edgeasc.errors import ConfigError, EdgeascError
from edgeasc.runtime.features import FeatureParams

PREFIX = "edgeasc."
# what a device may be asked to hold for one clip's input; far above any real model
MAX_INPUT_BYTES = 1 << 30


class MetadataError(EdgeascError):
    exit_code = 2


class _Bad(Exception):
    """A field's problem, in words; the caller adds the file and the field."""


# ----------------------------------------------------------------------------- value checks
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def integer(low: int, high: int) -> Callable[[Any], int]:
    def check(v):
        if not _is_int(v) or not low <= v <= high:
            raise _Bad(f"must be an integer in {low:,}..{high:,}, got {v!r:.60}")
        return v
    return check


def number(low: float, high: float, low_open: bool = False) -> Callable[[Any], float]:
    def check(v):
        if not _is_number(v) or not (low < v if low_open else low <= v) or v > high:
            bound = f"({low:g}, {high:g}]" if low_open else f"[{low:g}, {high:g}]"
            raise _Bad(f"must be a finite number in {bound}, got {v!r:.60}")
        return float(v)
    return check


def text(v: Any) -> str:
    if not isinstance(v, str) or len(v) > 200:
        raise _Bad(f"must be a short string, got {v!r:.60}")
    return v


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad(f"must be true or false, got {v!r:.60}")
    return v


def one_of(*allowed: str) -> Callable[[Any], str]:
    def check(v):
        if v not in allowed:
            raise _Bad(f"must be one of {', '.join(allowed)}, got {v!r:.60}")
        return v
    return check


def mapping(schema: dict[str, Callable[[Any], Any]], required: tuple[str, ...] = (), closed: bool = True
            ) -> Callable[[Any], dict]:
    def check(v):
        if not isinstance(v, dict):
            raise _Bad(f"must be a JSON object, got {type(v).__name__}")
        unknown = sorted(set(v) - set(schema))
        if closed and unknown:
            raise _Bad(f"unknown key {unknown[0]!r}")
        missing = [k for k in required if k not in v]
        if missing:
            raise _Bad(f"lacks {missing[0]!r}")
        out = dict(v)
        for key, value in v.items():
            if key in schema:
                try:
                    out[key] = schema[key](value)
                except _Bad as exc:
                    raise _Bad(f"{key} {exc}") from None
        return out
    return check


def labels(v: Any) -> list[str]:
    if not isinstance(v, list) or not 1 <= len(v) <= 10_000:
        raise _Bad("must be a list of 1 to 10,000 class names")
    if not all(isinstance(x, str) and 0 < len(x) <= 200 for x in v):
        raise _Bad("must hold non-empty strings only")
    if len(set(v)) != len(v):
        raise _Bad("names a class twice")
    return v


def float_list(v: Any) -> list[float]:
    if not isinstance(v, list) or not all(_is_number(x) for x in v):
        raise _Bad("must be a list of finite numbers")
    return [float(x) for x in v]


def feature_params(v: Any) -> dict:
    schema = {"sample_rate": integer(1000, 384_000), "n_fft": integer(16, 65_536),
              "hop_length": integer(1, 65_536), "n_mels": integer(1, 2048), "fmin": number(0, 192_000),
              "fmax": number(0, 192_000, low_open=True), "top_db": number(0, 1000, low_open=True),
              "amin": number(0, 1, low_open=True), "clip_seconds": number(0, 3600, low_open=True)}
    assert set(schema) == {f.name for f in fields(FeatureParams)}
    d = mapping(schema)(v)
    p = FeatureParams(**d)
    if p.hop_length > p.n_fft:
        raise _Bad(f"hop_length {p.hop_length} is longer than n_fft {p.n_fft}")
    if not p.fmin < p.fmax <= p.sample_rate / 2:
        raise _Bad(f"needs fmin < fmax <= sample_rate / 2, got {p.fmin:g}, {p.fmax:g}, {p.sample_rate}")
    return d


def model_config(v: Any) -> dict:
    from edgeasc.models.config import ModelConfig

    try:
        ModelConfig.from_dict(v)
    except (ConfigError, TypeError, ValueError) as exc:
        raise _Bad(str(exc).splitlines()[0][:160]) from None
    return v


size_report = mapping({"params": integer(0, 10**12), "nonzero_params": integer(0, 10**12),
                       "counted_bytes": integer(0, 10**15), "budget_bytes": integer(0, 10**15),
                       "verdict": one_of("PASS", "FAIL"), "rules": text},
                      required=("params", "nonzero_params", "counted_bytes", "budget_bytes", "verdict", "rules"),
                      closed=False)

# field -> (check, stored as JSON?). Strings are stored as they are, everything else as JSON.
SCHEMA: dict[str, tuple[Callable[[Any], Any], bool]] = {
    "version": (text, False),
    "variant": (text, False),
    "precision": (one_of("fp32", "fp16", "int8"), False),
    "labels": (labels, True),
    "feature_params": (feature_params, True),
    "normalization": (mapping({"mean": float_list, "std": float_list}, required=("mean", "std")), True),
    "model_config": (model_config, True),
    "channels": (integer(1, 2), True),
    "input": (mapping({"name": one_of("features", "waveform"), "layout": text, "normalized": boolean,
                       "sample_rate": integer(1000, 384_000)}, required=("name",)), True),
    "frontend": (boolean, True),
    "folded": (mapping({"damping": boolean, "batchnorm": boolean}), True),
    "sparse": (mapping({"mode": text, "packed_tensors": integer(0, 10**6)}), True),
    "macs_per_clip": (integer(0, 10**15), True),
    "clip_seconds": (number(0, 3600, low_open=True), True),
    "size_report": (size_report, True),
}


def parse_metadata(custom: dict[str, str], where: str = "model") -> dict:
    """The `edgeasc.*` entries of an ONNX file's metadata_props, decoded and checked against
    SCHEMA, each on its own and against each other. Raises MetadataError naming the field.
    Unknown `edgeasc.*` keys (a newer edgeasc) are kept as text and never read."""
    meta: dict[str, Any] = {}
    for key, raw in custom.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX):]
        if name not in SCHEMA:
            meta[name] = raw
            continue
        check, is_json = SCHEMA[name]
        value = raw
        if is_json:
            try:
                value = json.loads(raw)
            except (json.JSONDecodeError, RecursionError):
                raise MetadataError(f"{where}: metadata {key} is not valid JSON") from None
        try:
            meta[name] = check(value)
        except _Bad as exc:
            raise MetadataError(f"{where}: metadata {key}: {exc}") from None
    _cross_check(meta, where)
    return meta


def _cross_check(meta: dict, where: str) -> None:
    params = FeatureParams(**meta.get("feature_params", {}))
    seconds = meta.get("clip_seconds", params.clip_seconds)
    channels = meta.get("channels", 1)
    waveform = (meta.get("input") or {}).get("name") == "waveform"
    values = params.n_samples(seconds) if waveform else params.n_mels * params.n_frames(seconds)
    if 4 * channels * values > MAX_INPUT_BYTES:
        raise MetadataError(f"{where}: one {seconds:g}-s clip of this model's input would take "
                            f"{4 * channels * values / 2**30:.1f} GiB (the metadata's frontend is implausible)")
    norm = meta.get("normalization")
    if norm is not None:
        if len(norm["mean"]) != params.n_mels or len(norm["std"]) != params.n_mels:
            raise MetadataError(f"{where}: metadata {PREFIX}normalization has {len(norm['mean'])} means and "
                                f"{len(norm['std'])} standard deviations for {params.n_mels} mel bands")
        if min(norm["std"], default=1.0) <= 0:
            raise MetadataError(f"{where}: metadata {PREFIX}normalization has a standard deviation <= 0")
    config = meta.get("model_config")
    if config is not None:
        n = config.get("n_classes")
        if "labels" in meta and n is not None and n != len(meta["labels"]):
            raise MetadataError(f"{where}: the metadata names {len(meta['labels'])} labels for a network of "
                                f"{n} classes")
        for key, field, want in (("in_channels", "channels", meta.get("channels")),
                                 ("n_mels", "feature_params", params.n_mels if "feature_params" in meta else None)):
            if want is not None and config.get(key) is not None and config[key] != want:
                raise MetadataError(f"{where}: metadata {PREFIX}model_config has {key} {config[key]}, "
                                    f"{PREFIX}{field} says {want}")


def check_against_graph(meta: dict, inputs: list, outputs: list, where: str) -> None:
    """The metadata must describe the graph: output width = classes, input rank and static
    sizes = the declared input. `inputs` / `outputs` are onnxruntime NodeArg lists."""
    if "labels" in meta and outputs:
        shape = outputs[0].shape
        width = shape[-1] if shape else None
        if _is_int(width) and width != len(meta["labels"]):
            raise MetadataError(f"{where}: the graph outputs {width} classes, the metadata names "
                                f"{len(meta['labels'])} labels")
    if "input" in meta and inputs:
        shape = inputs[0].shape
        waveform = meta["input"]["name"] == "waveform"
        want_rank = 3 if waveform else 4
        if len(shape) != want_rank:
            raise MetadataError(f"{where}: the graph's input has rank {len(shape)}, a {meta['input']['name']} "
                                f"input has rank {want_rank}")
        fixed = {1: meta.get("channels")}
        if not waveform and "feature_params" in meta:
            fixed[2] = meta["feature_params"].get("n_mels", FeatureParams.n_mels)
        for axis, want in fixed.items():
            if want is not None and _is_int(shape[axis]) and shape[axis] != want:
                raise MetadataError(f"{where}: the graph's input axis {axis} is {shape[axis]}, the metadata "
                                    f"says {want}")
