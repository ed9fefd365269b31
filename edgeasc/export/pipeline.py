"""`edgeasc export`: checkpoint -> folded network -> verified ONNX + size report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import torch

from edgeasc import __version__
from edgeasc.errors import ConfigError, EdgeascError
from edgeasc.export.clips import cached_evaluate_clips, spread
from edgeasc.export.fold import WaveformClassifier, fold_model, max_abs_difference
from edgeasc.export.graph import graph_macs
from edgeasc.export.onnx import (
    export_proto,
    set_metadata,
    strip_debug_info,
    to_float16_weights,
    verify,
)
from edgeasc.export.report import RULES, parse_budget, report_markdown, size_report
from edgeasc.export.sparse import MODES, pack_weights
from edgeasc.io import atomic_write_group, refuse_input_as_output
from edgeasc.models.complexity import analyse, count_nonzero, count_params
from edgeasc.runtime.features import FeatureParams, compute_features
from edgeasc.runtime.metadata import parse_metadata
from edgeasc.train.checkpoint import load_checkpoint, model_from_checkpoint
from edgeasc.train.devices import device_checkpoints

PRECISIONS = ("fp32", "fp16", "int8")
FOLD_TOLERANCE = 1e-4  # of the logit scale: float32 noise through ~20 folded layers reaches ~1e-5 on networks
                       # whose logits depend on their input; a fold bug (a lost eps, a wrong bias) is far above
FP32_TOLERANCE = 1e-4


def float32_list(values) -> list[float]:
    """Values as the shortest decimals that are the same float32 (the device reads float32): half the
    bytes of float64 text in the metadata, not one bit lost."""
    out = []
    for v in np.asarray(values, dtype=np.float32).reshape(-1):
        short = float(np.format_float_positional(v, unique=True, trim="-")) if np.isfinite(v) else float(v)
        out.append(short if np.float32(short) == v else float(v))
    return out


class ExportError(EdgeascError):
    exit_code = 1


def check_output(path: Path, force: bool) -> None:
    if path.suffix != ".onnx":
        raise ConfigError(f"{path}: the output must be a .onnx file")
    if not path.parent.is_dir():
        raise ConfigError(f"{path.parent}: no such folder")
    if not os.access(path.parent, os.W_OK):
        raise ConfigError(f"{path.parent}: folder is not writable")
    if path.exists() and not force and not failed_own_export(path):
        raise ConfigError(f"{path} exists (use --force to replace it)")
    for report in (path.with_suffix(".size.json"), path.with_suffix(".size.md")):
        if report.exists() and not force and not own_size_report(report):
            raise ConfigError(f"{report} exists and is not a size report that export wrote "
                              "(use --force to replace it)")


def own_size_report(path: Path) -> bool:
    """Whether `path` is a size report export wrote (beside a model, it is replaced with it): the
    JSON one holds a verdict and the counted bytes, the Markdown one starts with its title."""
    try:
        if path.suffix == ".json":
            report = json.loads(path.read_text(encoding="utf-8"))
            return isinstance(report, dict) and "verdict" in report and "file_bytes" in report
        with open(path, "rb") as f:
            return f.read(len(b"# Size report: ")) == b"# Size report: "
    except (OSError, ValueError):
        return False


def failed_own_export(path: Path) -> bool:
    """True when `path` is an export of edgeasc's own that failed its budget check: its size report
    beside it says FAIL and describes this very file. Exporting again to the same path is the
    obvious next step after a failure, so it needs no --force; any other file does."""
    try:
        report = json.loads(path.with_suffix(".size.json").read_text(encoding="utf-8"))
        return (isinstance(report, dict) and report.get("verdict") == "FAIL"
                and report.get("file_bytes") == path.stat().st_size and path.is_file())
    except (OSError, ValueError):
        return False


def export_checkpoint(source: str | Path, output: str | Path | None = None, fold_damping: bool = True,
                      fold_bn: bool = True, precision: str | None = None, budget: str | None = None,
                      rules: str | None = None, count_bn: bool | None = None, force: bool = False,
                      sparse: str = "auto", calibration: str | Path | None = None,
                      cache_dir: str | Path | None = None, with_frontend: bool = False) -> dict:
    # every check on the user's input comes before any work and any write
    """precision and rules None: the run's --fit rule set and int8 when it was fitted, else fp32
    and dcase2020."""
    if sparse not in MODES:
        raise ConfigError(f"--sparse must be one of {', '.join(MODES)}, got {sparse!r}")
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if calibration is not None and precision not in (None, "int8"):
        raise ConfigError("--calibration only applies to --precision int8")
    if calibration is not None and not Path(calibration).exists():
        raise ConfigError(f"--calibration {calibration}: no such dataset")
    if calibration is not None and cache_dir is not None:  # before any work, not when calibrating
        from edgeasc.data.cache import refuse_cache_in_dataset
        from edgeasc.data.dcase import open_dataset

        refuse_cache_in_dataset(Path(cache_dir), open_dataset(calibration))
    if rules is not None and rules not in RULES:
        raise ConfigError(f"--rules must be one of {', '.join(RULES)}, got {rules!r}")
    budget_bytes = parse_budget(budget) if budget is not None else None
    ckpt = load_checkpoint(source)
    try:  # the frontend travels into the metadata: validated here, before it is read, in one line
        parse_metadata({"edgeasc.feature_params": json.dumps(ckpt["feature_params"])}, str(ckpt["path"]))
    except (TypeError, ValueError):
        raise ConfigError(f"{ckpt['path']}: the checkpoint's feature parameters are not a JSON object") from None
    # every field its kind reads (FeatureParams.to_dict); a dict without `kind` is a perceptual one
    kind = ckpt["feature_params"].get("kind", "perceptual")
    missing = [k for k in FeatureParams(kind=kind).to_dict() if k not in ckpt["feature_params"]]
    if missing:
        raise ConfigError(f"{ckpt['path']}: metadata edgeasc.feature_params lacks {missing[0]!r}")
    rules_given = rules is not None
    fitted = ckpt.get("fit") if isinstance(ckpt.get("fit"), dict) else None
    fit_rules = fitted.get("rules") if fitted and fitted.get("rules") in RULES else None
    mc = ckpt["model_config"]
    family_rules = "dcase2024" if isinstance(mc, dict) and mc.get("family") == "cp-mobile" else "dcase2020"
    rules = rules or fit_rules or family_rules  # CP-Mobile is the DCASE'24 baseline: its rules by default
    precision = precision or ("int8" if fit_rules else "fp32")
    if calibration is not None and precision != "int8":
        raise ConfigError("--calibration only applies to --precision int8")
    out = Path(output) if output else Path(ckpt["path"]).parent / "model.onnx"
    inputs = [ckpt["path"], *([calibration] if calibration else [])]
    refuse_input_as_output(out, inputs, "-o")
    for report_path in (out.with_suffix(".size.json"), out.with_suffix(".size.md")):
        refuse_input_as_output(report_path, inputs, "the size report")
    check_output(out, force)

    model = model_from_checkpoint(ckpt)
    config = model.config
    seconds = ckpt["feature_params"].get("clip_seconds", 10.0)
    frames = 1 + int(round(seconds * ckpt["feature_params"]["sample_rate"])) // ckpt["feature_params"]["hop_length"]
    folded = fold_model(model, fold_damping=fold_damping, fold_bn=fold_bn)
    torch.manual_seed(0)
    probe = torch.randn(2, config.in_channels, config.n_mels, frames)
    with torch.no_grad():
        logits = model(probe)
    if not torch.isfinite(logits).all():
        raise ExportError(f"the network outputs non-finite values (NaN or inf): the checkpoint {ckpt['path']} is "
                          "broken (did training diverge?); not exporting")
    scale = max(1.0, float(logits.abs().max()))
    fold_diff = max_abs_difference(model, folded, probe)
    if not fold_diff <= FOLD_TOLERANCE * scale:  # NaN-safe
        raise ExportError(f"folding changed the outputs by {fold_diff:.2e} (> {FOLD_TOLERANCE:g} of the logit scale "
                          f"{scale:.3g}): not exporting")

    params = FeatureParams(**ckpt["feature_params"])
    frontend = None
    if with_frontend:
        if precision == "int8":
            raise ConfigError("--with-frontend is available for fp32 and fp16, not int8")
        mean, std = ckpt["normalization"]["mean"], ckpt["normalization"]["std"]
        exported = WaveformClassifier(folded, params, mean, std).eval()
        proto = export_proto(exported, config.in_channels, config.n_mels, frames, params.n_samples())
        norm_mean = np.asarray(mean, np.float32)[:, None]
        norm_std = np.asarray(std, np.float32)[:, None]

        def frontend(clip):
            return (compute_features(clip, params) - norm_mean) / norm_std
    else:
        proto = export_proto(folded, config.in_channels, config.n_mels, frames)
    int8, real_clips = None, []
    if precision == "int8":
        from edgeasc.export.clips import calibration_features
        from edgeasc.export.quantize import accuracy, quantize_int8

        calib, eval_x, eval_y = calibration_features(ckpt, Path(calibration) if calibration else None,
                                                     Path(cache_dir) if cache_dir else None)
        fp32_bytes = proto.SerializeToString()
        proto = strip_debug_info(quantize_int8(proto, calib))
        int8 = {"calibration_clips": len(calib)}
        if eval_x is not None:
            int8["accuracy_fp32"] = accuracy(fp32_bytes, eval_x, eval_y)
            int8["accuracy_int8"] = accuracy(proto.SerializeToString(), eval_x, eval_y)
            int8["evaluate_clips"] = len(eval_y)
            real_clips = [eval_x[spread(len(eval_x), 16)]]
        packing = pack_weights(proto, sparse)  # int8 weights stay int8, values and positions alike
    else:
        packing = pack_weights(proto, sparse, np.float16 if precision == "fp16" else np.float32)
        if not with_frontend:  # the run's own evaluate clips, when their features are cached already
            clips = cached_evaluate_clips(ckpt, Path(cache_dir) if cache_dir else None)
            real_clips = [] if clips is None else [clips]
    if precision == "fp16":
        proto = to_float16_weights(proto)
    stats = analyse(model, seconds=seconds, features=params)
    deployed = {"params": count_params(folded), "nonzero_params": count_nonzero(folded)}
    report = size_report(stats, precision, RULES[rules], budget_bytes, count_bn, deployed)
    # the MACs again, from the exported graph's own shapes: the report must describe this file
    input_shape = (1, config.in_channels, params.n_samples()) if with_frontend else \
        (1, config.in_channels, config.n_mels, frames)
    report["macs_onnx_graph"] = graph_macs(proto, input_shape)
    # the graph's count is its convs': BatchNorm's MACs, where the family counts them, are folded away
    if report["macs_onnx_graph"] != stats.macs - stats.bn_macs:
        raise ExportError(f"the exported graph computes {report['macs_onnx_graph']:,} MACs per clip, the model "
                          f"{stats.macs - stats.bn_macs:,}: not exporting")
    set_metadata(proto, {
        "version": __version__, "labels": ckpt["labels"], "feature_params": ckpt["feature_params"],
        "normalization": {k: float32_list(v) for k, v in ckpt["normalization"].items()},
        "model_config": config.to_dict(), "variant": config.variant,
        "channels": ckpt["channels"],
        "input": ({"name": "waveform", "layout": "batch, channels, samples", "sample_rate": params.sample_rate}
                  if with_frontend else
                  {"name": "features", "layout": "batch, channels, mels, frames", "normalized": True}),
        "frontend": with_frontend,
        "precision": precision, "folded": {"damping": fold_damping, "batchnorm": fold_bn},
        "sparse": {"mode": sparse, "packed_tensors": len(packing["packed"])},
        "macs_per_clip": stats.macs, "clip_seconds": seconds,
        "size_report": {k: v for k, v in report.items() if k not in ("layers", "file_bytes")},
    })
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    if with_frontend:
        n = params.n_samples()
        check = verify(data, model, config.in_channels, config.n_mels, frames=(n, max(24 * params.hop_length, n // 2)),
                       frontend=frontend)
    else:
        check = verify(data, model, config.in_channels, config.n_mels, frames=(frames, max(24, frames // 3)),
                       inputs=real_clips)
    if not check["finite"]:
        raise ExportError(f"the exported network outputs non-finite values (NaN or inf) on {check['clips']} test "
                          f"clips: the checkpoint {ckpt['path']} is broken (did training diverge?); not writing {out}")
    if precision == "fp32" and not with_frontend and check["max_abs_logit_difference"] > FP32_TOLERANCE * scale:
        raise ExportError(f"onnxruntime disagrees with PyTorch by {check['max_abs_logit_difference']:.2e} "
                          f"(> {FP32_TOLERANCE:g}): not writing {out}")
    report["file_bytes"] = len(data)
    report_json = json.dumps(report, indent=2) + "\n"
    atomic_write_group({  # the model and its reports land together, or none of them does
        out: lambda tmp: tmp.write_bytes(data),
        out.with_suffix(".size.json"): lambda tmp: tmp.write_text(report_json, encoding="utf-8"),
        out.with_suffix(".size.md"): lambda tmp: tmp.write_text(report_markdown(report), encoding="utf-8")})
    return {"onnx": str(out), "bytes": len(data), "fold_max_abs_difference": fold_diff, "verification": check,
            "report": report, "checkpoint": ckpt["path"], "sparse": packing, "int8": int8,
            # the budget is a promise to keep only when someone asked for it: --check-budget, --rules, or --fit
            "budget_asked": budget is not None or rules_given or fit_rules is not None}


def export_run(source: str | Path, output: str | Path | None = None, force: bool = False, **options) -> dict:
    """export_checkpoint of `source`, and, when it is a run directory with per-device models
    (`edgeasc finetune-devices`), of each of them too, with the same options, to
    `<output stem>-<device>.onnx` beside the general model (default RUN/model-<device>.onnx), each
    with its own size report. result["devices"]: device -> that export's result."""
    source = Path(source)
    devices = device_checkpoints(source) if source.is_dir() else {}
    general_out = Path(output) if output else source / "model.onnx"
    outputs = {d: general_out.with_name(f"{general_out.stem}-{d}.onnx") for d in devices}
    for path in outputs.values():  # every output is checked before the first one is written
        check_output(path, force)
    result = export_checkpoint(source, output, force=force, **options)
    result["devices"] = {d: export_checkpoint(devices[d], path, force=force, **options) for d, path in outputs.items()}
    return result
