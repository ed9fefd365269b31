"""The one schema of an exported model's `edgeasc.*` metadata, checked once, when the file is
opened. An .onnx file is untrusted input: every field that the device runtime reads is typed
and bounded here, so that predict, bench and info never meet a zero sample rate, a
negative hop, a label list shorter than the logits or a zero standard deviation. torch-free.
Kept in one file (about 440 lines) on purpose: every bound an exported file must meet is read
in one place, next to the cross-checks between fields and against the graph.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import numpy as np

from edgeasc.errors import EdgeascError
from edgeasc.runtime.features import (
    KINDS,
    LOGMEL_ONLY,
    MEL_SCALES,
    RESAMPLERS,
    FeatureParams,
    fft_frequencies,
    hz_to_mel,
    mel_to_hz,
)

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


def optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def maybe(v):
        return None if v is None else check(v)
    return maybe


def feature_params(v: Any) -> dict:
    """A frontend: each field bounded, then whether its filterbank can be built. Without `kind`
    (every file written before kinds existed) the perceptual frontend, as before."""
    schema = {"sample_rate": integer(1000, 384_000), "n_fft": integer(16, 65_536),
              "hop_length": integer(1, 65_536), "n_mels": integer(1, 2048), "fmin": number(0, 192_000),
              "fmax": number(0, 192_000, low_open=True), "top_db": number(0, 1000, low_open=True),
              "amin": number(0, 1, low_open=True), "clip_seconds": number(0, 3600, low_open=True),
              "kind": one_of(*KINDS), "win_length": optional(integer(1, 65_536)), "mel_scale": one_of(*MEL_SCALES),
              "log_offset": number(0, 1, low_open=True), "resampler": one_of(*RESAMPLERS)}
    assert set(schema) == {f.name for f in fields(FeatureParams)}
    d = mapping(schema)(v)
    p = FeatureParams(**d)
    if p.hop_length > p.n_fft:
        raise _Bad(f"hop_length {p.hop_length} is longer than n_fft {p.n_fft}")
    if p.window_length > p.n_fft:
        raise _Bad(f"win_length {p.window_length} is longer than n_fft {p.n_fft}")
    if not p.fmin < p.fmax <= p.sample_rate / 2:
        raise _Bad(f"needs fmin < fmax <= sample_rate / 2, got {p.fmin:g}, {p.fmax:g}, {p.sample_rate}")
    if p.kind == "perceptual":
        odd = [k for k in LOGMEL_ONLY[1:] if getattr(p, k) != getattr(FeatureParams, k)
               and not (k == "win_length" and p.win_length == p.n_fft)]
        if odd:  # the perceptual frontend is the paper's: a full window, Slaney's scale, no log offset
            raise _Bad(f"{odd[0]} {getattr(p, odd[0])!r} is a setting of kind logmel, not of kind perceptual")
    return d


def empty_mel_band(p: FeatureParams) -> tuple[int, float, float] | None:
    """The first mel filter of features.mel_filterbank that would be all zeros, as (index, lower
    edge, upper edge), else None. A filter is non-zero exactly where an FFT bin lies strictly
    between its outer edges: the same edges, computed the same way, without building the
    (n_mels, bins) matrix (up to 2048 x 32769 float64 for a hostile file)."""
    freqs = fft_frequencies(p.sample_rate, p.n_fft)
    htk = p.kind == "logmel" and p.mel_scale == "htk"
    edges = mel_to_hz(np.linspace(hz_to_mel(p.fmin, htk), hz_to_mel(p.fmax, htk), p.n_mels + 2), htk)
    first = np.searchsorted(freqs, edges[:-2], side="right")  # the first bin above each lower edge
    inside = freqs[np.minimum(first, freqs.size - 1)] < edges[2:]
    empty = np.flatnonzero((first >= freqs.size) | ~inside)
    if empty.size == 0:
        return None
    band = int(empty[0])
    return band, float(edges[band]), float(edges[band + 2])


MAX_WIDTH = 65_536  # channels of one group: far above any real network
MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH = 65_536, 8


def _depth(v: Any) -> int:
    """Nesting depth of a decoded JSON value (iterative: the value is untrusted)."""
    deepest, stack = 0, [(v, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack += [(c, depth + 1) for c in children if isinstance(c, dict | list)]
    return deepest


def channel_plan(v: Any) -> dict | None:
    """A channel plan: group name -> the channels it keeps; null: the dense network."""
    if v is None:
        return None
    if not isinstance(v, dict) or not 1 <= len(v) <= 10_000:
        raise _Bad("must be a channel plan: a JSON object of 1 to 10,000 groups, or null")
    for name, width in v.items():
        if not 0 < len(name) <= 200:
            raise _Bad(f"channel plan: group name {name!r:.60} must be 1 to 200 characters")
        if not _is_int(width) or not 1 <= width <= MAX_WIDTH:
            raise _Bad(f"channel plan: group {name!r:.60} must keep 1..{MAX_WIDTH:,} channels, got {width!r:.60}")
    return v


def model_config(v: Any) -> dict:
    """The network's description, family-agnostic: the runtime reads n_classes, in_channels,
    n_mels and the channel plan, each typed and bounded; every other key (a family's own:
    rho and width here, others for CP-Mobile) is kept unread, the whole object bounded. Whether
    the plan fits the network is not asked of the family's code (the runtime may not import
    it) but of the graph: check_conv_plan."""
    if not isinstance(v, dict):
        raise _Bad(f"must be a JSON object, got {type(v).__name__}")
    size = len(json.dumps(v))
    if size > MAX_CONFIG_BYTES:
        raise _Bad(f"is {size:,} bytes of JSON, more than {MAX_CONFIG_BYTES:,}")
    if _depth(v) > MAX_CONFIG_DEPTH:
        raise _Bad(f"is nested deeper than {MAX_CONFIG_DEPTH} levels")
    return mapping({"n_classes": integer(1, 10_000), "in_channels": integer(1, 64), "n_mels": integer(1, 2048),
                    "channels": channel_plan}, closed=False)(v)


def conv_plan(v: Any) -> dict:
    """What the exporter knows of the graph's convs: `groups`, every channel group with its
    width, and `convs`, every conv as the [in, out] indices of its groups (-1: the network's
    input channels on the in side, its classes on the out side)."""
    d = mapping({"groups": _groups, "convs": _pairs}, required=("groups", "convs"))(v)
    n = len(d["groups"])
    for pair in d["convs"]:
        if not all(-1 <= i < n for i in pair):
            raise _Bad(f"convs names group {max(pair, key=abs)} of {n}")
    return d


def _groups(v: Any) -> list:
    if not isinstance(v, list) or len(v) > 10_000:
        raise _Bad("must be a list of at most 10,000 [name, width] pairs")
    for item in v:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                and 0 < len(item[0]) <= 200 and _is_int(item[1]) and 1 <= item[1] <= MAX_WIDTH):
            raise _Bad(f"must hold [name, width] pairs with a width of 1..{MAX_WIDTH:,}, got {item!r:.60}")
    if len({name for name, _ in v}) != len(v):
        raise _Bad("names a group twice")
    return v


def _pairs(v: Any) -> list:
    if not isinstance(v, list) or not 1 <= len(v) <= 100_000:
        raise _Bad("must be a list of 1 to 100,000 [in, out] pairs")
    if not all(isinstance(p, list) and len(p) == 2 and all(_is_int(i) for i in p) for p in v):
        raise _Bad("must hold [in, out] pairs of group indices")
    return v


def sha256(v: Any) -> str:
    if not isinstance(v, str) or len(v) != 64 or set(v) - set("0123456789abcdef"):
        raise _Bad(f"must be 64 lowercase hex digits, got {v!r:.60}")
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
    "sparse": (mapping({"mode": text, "packed_tensors": integer(0, 10**6), "sha256": sha256}), True),
    "conv_plan": (conv_plan, True),
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
    # after the size check: an absurd frontend is refused for its size before its bands are counted
    bins = params.n_fft // 2 + 1
    if "feature_params" in meta and params.n_mels > bins:
        raise MetadataError(f"{where}: metadata {PREFIX}feature_params: {params.n_mels} mel bands from the {bins} "
                            f"FFT bins of n_fft {params.n_fft}: fewer mel bands or a longer n_fft")
    empty = empty_mel_band(params) if "feature_params" in meta else None
    if empty is not None:
        band, low, high = empty
        raise MetadataError(f"{where}: metadata {PREFIX}feature_params: mel band {band} of {params.n_mels} "
                            f"({low:.1f}-{high:.1f} Hz) holds no FFT bin (bins are "
                            f"{params.sample_rate / params.n_fft:.2f} Hz apart): fewer mel bands or a longer n_fft")
    norm = meta.get("normalization")
    if norm is not None:
        if len(norm["mean"]) != params.n_mels or len(norm["std"]) != params.n_mels:
            raise MetadataError(f"{where}: metadata {PREFIX}normalization has {len(norm['mean'])} means and "
                                f"{len(norm['std'])} standard deviations for {params.n_mels} mel bands")
        if min(norm["std"], default=1.0) <= 0:
            raise MetadataError(f"{where}: metadata {PREFIX}normalization has a standard deviation <= 0")
    rate = (meta.get("input") or {}).get("sample_rate")
    if rate is not None and "feature_params" in meta and rate != params.sample_rate:
        raise MetadataError(f"{where}: metadata {PREFIX}input takes {rate} Hz audio, {PREFIX}feature_params "
                            f"says {params.sample_rate} Hz")
    if "conv_plan" in meta and not {"channels", "labels"} <= set(meta):
        raise MetadataError(f"{where}: metadata {PREFIX}conv_plan needs {PREFIX}channels and {PREFIX}labels "
                            "(the widths of the network's input and output)")
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
        if "feature_params" in meta:
            params = FeatureParams(**meta["feature_params"])
            seconds = meta.get("clip_seconds", params.clip_seconds)
            # the time axis is dynamic in an edgeasc export; fixed, it must take one clip
            fixed[want_rank - 1] = params.n_samples(seconds) if waveform else params.n_frames(seconds)
            if not waveform:
                fixed[2] = params.n_mels
        for axis, want in fixed.items():
            if want is not None and _is_int(shape[axis]) and shape[axis] != want:
                raise MetadataError(f"{where}: the graph's input axis {axis} is {shape[axis]}, the metadata "
                                    f"says {want}")


def check_conv_plan(meta: dict, convs: list[tuple[str, int | None, int | None]], where: str) -> None:
    """The metadata's channel plan must be the graph's. `convs`: (node name, in, out channels) of
    every Conv of the graph (onnx_proto.conv_widths). First the exporter's conv_plan against
    the graph, as multisets of (in, out) widths (names and order of convs are not reliable,
    see onnx_proto), then model_config's channel plan against the conv_plan's groups. Files
    without a conv_plan (no exporter wrote one) are not checked."""
    plan = meta.get("conv_plan")
    if plan is None:
        return
    unreadable = [name for name, cin, cout in convs if cin is None]
    if unreadable:
        raise MetadataError(f"{where}: the weight shape of conv {unreadable[0]!r} cannot be read, so the graph "
                            f"cannot be checked against {PREFIX}conv_plan")
    groups = plan["groups"]
    ends = (meta["channels"], len(meta["labels"]))

    def width(index: int, side: int) -> int:
        return groups[index][1] if index >= 0 else ends[side]

    def name(index: int, side: int) -> str:
        return groups[index][0] if index >= 0 else ("input", "logits")[side]

    want = Counter((width(i, 0), width(o, 1)) for i, o in plan["convs"])
    got = Counter((cin, cout) for _, cin, cout in convs)
    for i, o in plan["convs"]:
        pair = (width(i, 0), width(o, 1))
        if got[pair] < want[pair]:
            raise MetadataError(f"{where}: the graph does not follow the channel plan: {PREFIX}conv_plan has "
                                f"{want[pair]} conv(s) {name(i, 0)} -> {name(o, 1)} of {pair[0]} -> {pair[1]} "
                                f"channels, the graph {got[pair]}")
    for node, cin, cout in convs:
        if got[(cin, cout)] > want[(cin, cout)]:
            raise MetadataError(f"{where}: the graph's conv {node!r} ({cin} -> {cout} channels) is not in the "
                                f"channel plan of {PREFIX}conv_plan")
    config_plan = (meta.get("model_config") or {}).get("channels")
    if config_plan is None:
        return
    widths = dict(groups)
    for group, kept in config_plan.items():
        if group not in widths:
            raise MetadataError(f"{where}: metadata {PREFIX}model_config: the channel plan names group {group!r}, "
                                "which no conv of the graph has")
        if kept != widths[group]:
            raise MetadataError(f"{where}: metadata {PREFIX}model_config: the channel plan keeps {kept} channels "
                                f"in group {group!r}, the graph's convs {widths[group]}")
    missing = [group for group in widths if group not in config_plan]
    if missing:
        raise MetadataError(f"{where}: metadata {PREFIX}model_config: the channel plan lacks group "
                            f"{missing[0]!r} ({widths[missing[0]]} channels in the graph)")
