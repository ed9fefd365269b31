"""Model size under the DCASE challenge rules (docs/method.md §6) and budget strings.

Counting is done on the model as trained (BatchNorm separate from the convs), which is
what the challenges count; the deployed form (BatchNorm folded into conv biases) is
reported beside it.
"""

from __future__ import annotations

import re

from edgeasc.compress.rules import RULES, Rules  # noqa: F401  (re-exported)
from edgeasc.errors import ConfigError
from edgeasc.models.describe import BYTES_PER_VALUE

PRECISION_DTYPE = {"fp32": "float32", "fp16": "float16", "int8": "int8"}


def parse_budget(text: str) -> int:
    """'500KB' and '500KiB' = 500 x 1024, '500kB' = 500 x 1000, '0.5MB' = 0.5 x 1024^2,
    '512000' = bytes. KB/KiB/MB/MiB are binary, kB decimal (docs/method.md §6)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    if not m:
        raise ConfigError(f"malformed budget {text!r}: use e.g. 500KB, 500KiB, 500kB, 0.5MB or 512000")
    value, unit = float(m.group(1)), m.group(2)
    if unit == "kB":
        scale = 1000
    elif unit.lower() in ("", "b", "bytes"):
        scale = 1
    elif unit.lower() in ("kb", "kib"):
        scale = 1024
    elif unit.lower() in ("mb", "mib"):
        scale = 1024 ** 2
    else:
        raise ConfigError(f"malformed budget {text!r}: unknown unit {unit!r} (B, kB, KB, KiB, MB, MiB)")
    n = value * scale
    if n <= 0 or n != int(n):
        raise ConfigError(f"budget {text!r} must be a positive whole number of bytes, got {n:g}")
    return int(n)


def size_report(stats, precision: str, rules: Rules, budget_bytes: int | None = None,
                count_bn: bool | None = None, deployed: dict | None = None, file_bytes: int | None = None) -> dict:
    """stats: ModelStats of the trained model (non-zeros from its weights)."""
    dtype = PRECISION_DTYPE[precision]
    per_value = BYTES_PER_VALUE[dtype]
    count_bn = rules.count_bn if count_bn is None else count_bn
    budget = rules.budget_bytes if budget_bytes is None else budget_bytes
    layers, counted_values = [], 0
    for layer in stats.layers:
        if not layer.params:
            continue
        is_bn = layer.kind == "batchnorm"
        values = layer.params if (rules.count == "all" or is_bn) else layer.nonzero_params
        # a row's BatchNorm: all of a BatchNorm row, the part inside a conv's row (CP-Mobile's table)
        bn_values = values if is_bn else getattr(layer, "bn_params", 0)
        counted_here = values if count_bn else values - bn_values
        counted_values += counted_here
        layers.append({"name": layer.name, "kind": layer.kind, "kernel": layer.kernel, "params": layer.params,
                       "nonzero": layer.nonzero_params, "counted_bytes": counted_here * per_value,
                       "channels": layer.channels, "dense_channels": layer.dense_channels})
    counted = counted_values * per_value
    macs_per_second = stats.macs / stats.seconds
    macs_ok = rules.macs_per_second is None or macs_per_second <= rules.macs_per_second
    return {
        "rules": rules.name, "rules_description": rules.description, "precision": precision,
        "bytes_per_value": per_value, "counts": rules.count, "count_bn": count_bn,
        "counted_on": "the model as trained (BatchNorm separate from the convs)",
        "params": stats.params, "nonzero_params": stats.nonzero_params, "bn_params": stats.bn_params,
        "counted_values": counted_values, "counted_bytes": counted,
        "macs_per_clip": stats.macs, "clip_seconds": stats.seconds, "macs_per_second": macs_per_second,
        "dense": {"params": stats.dense_params, "macs_per_clip": stats.dense_macs},
        "channel_plan": stats.channel_plan,
        "macs_limit_per_second": rules.macs_per_second, "macs_ok": macs_ok,
        "budget_bytes": budget, "bytes_ok": counted <= budget,
        "verdict": "PASS" if counted <= budget and macs_ok else "FAIL",
        "deployed": deployed, "file_bytes": file_bytes, "layers": layers,
    }


def budget_failures(r: dict) -> list[str]:
    """What fails in a size report, each with how far it is over ([] when it passes)."""
    fails = []
    if r["counted_bytes"] > r["budget_bytes"]:
        fails.append(f"bytes: {r['counted_bytes']:,} counted > budget {r['budget_bytes']:,}, "
                     f"{r['counted_bytes'] - r['budget_bytes']:,} over")
    if not r["macs_ok"]:
        limit = r["macs_limit_per_second"]
        fails.append(f"MACs: {r['macs_per_second'] / 1e6:,.3f} M per second > limit {limit / 1e6:g} M, "
                     f"{(r['macs_per_second'] - limit) / 1e6:,.3f} M ({100 * (r['macs_per_second'] / limit - 1):.1f} %) over")
    return fails


def precisions_that_fit(r: dict) -> list[str]:
    """The precisions under which this report's counted values fit its budget, smallest saving
    first ([] when the MACs are over: no precision changes them)."""
    if not r["macs_ok"]:
        return []
    return [p for p in ("fp32", "fp16", "int8")
            if r["counted_values"] * BYTES_PER_VALUE[PRECISION_DTYPE[p]] <= r["budget_bytes"]]


def report_markdown(r: dict) -> str:
    lines = [f"# Size report: {r['verdict']}", "",
             f"Rules: {r['rules']} — {r['rules_description']}.",
             f"Counted on {r['counted_on']}: {'non-zero' if r['counts'] == 'nonzero' else 'all'} parameters, "
             f"BatchNorm {'in' if r['count_bn'] else 'out'}, {r['bytes_per_value']} bytes per value ({r['precision']}).",
             "", "| | value |", "|---|---:|",
             f"| parameters | {r['params']:,} |", f"| non-zero parameters | {r['nonzero_params']:,} |",
             f"| BatchNorm parameters | {r['bn_params']:,} |",
             f"| MACs per {r['clip_seconds']:g} s clip | {r['macs_per_clip']:,} |",
             *([f"| before channel pruning: parameters / MACs per clip | {r['dense']['params']:,} / "
                f"{r['dense']['macs_per_clip']:,} |"] if r.get("channel_plan") else []),
             *([f"| MACs counted on the ONNX graph | {r['macs_onnx_graph']:,} |"]
               if r.get("macs_onnx_graph") is not None else []),
             f"| MACs per second of audio | {r['macs_per_second']:,.0f} |",
             *([f"| MAC limit per second | {r['macs_limit_per_second']:,.0f} "
                f"({'met' if r['macs_ok'] else 'over'}) |"] if r.get("macs_limit_per_second") else []),
             f"| counted bytes | {r['counted_bytes']:,} |", f"| budget bytes | {r['budget_bytes']:,} |"]
    if r["file_bytes"] is not None:
        lines.append(f"| ONNX file bytes | {r['file_bytes']:,} |")
    if r["deployed"]:
        d = r["deployed"]
        lines.append(f"| deployed (BatchNorm folded): parameters / non-zero | {d['params']:,} / {d['nonzero_params']:,} |")
    lines += ["", "| layer | kind | kernel | channels (dense) | params | non-zero | counted bytes |",
              "|---|---|---|---|---:|---:|---:|"]
    lines += [f"| {x['name']} | {x['kind']} | {x['kernel']} | {_channels(x)} | {x['params']:,} | {x['nonzero']:,} | "
              f"{x['counted_bytes']:,} |" for x in r["layers"]]
    return "\n".join(lines) + "\n"


def _channels(layer: dict) -> str:
    now, dense = layer.get("channels") or [], layer.get("dense_channels") or []
    text = "→".join(map(str, now))
    return f"{text} ({'→'.join(map(str, dense))})" if dense and dense != now else text
