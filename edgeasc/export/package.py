"""`edgeasc package`: finished runs -> a DCASE 2025 Task 1 inference package (the organisers'
API, one submission module per run), checked as the organisers check it before it is written.

The folder written:

    OUT/pyproject.toml                       `pip install -e OUT` next to edgeasc
    OUT/<Label>/<Label>_<i>.py               one module per run, from submission.py.tmpl
    OUT/<Label>/resources/<Label>_<i>.safetensors, dummy.wav
    OUT/predictions/<Label>_<i>/complexity.json   the organisers' format
    OUT/edgeasc-package.json                 what `package --check` needs (local paths: git-ignored)

Everything is written into a temporary folder beside OUT, imported from there and measured;
only a package within the limits is renamed onto OUT.
"""

from __future__ import annotations

import json
import keyword
import shutil
import string
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from edgeasc import __version__
from edgeasc.errors import ConfigError
from edgeasc.export.dcase2025 import (
    DEVICE_IDS,
    MANIFEST,
    MAX_MACS,
    MAX_PARAMS_BYTES,
    SEEN_DEVICES,
    PackageError,
    complexity,
    dummy_path,
    imported_submission,
    module_name,
    over_limits,
)
from edgeasc.io import file_sha256, refuse_input_as_output, write_error
from edgeasc.train.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from edgeasc.train.devices import device_checkpoints, same_network

PRECISIONS = {"fp16": torch.float16, "fp32": torch.float32}
MAX_MODULES = 4  # the organisers take up to four submissions per label
GENERAL = "general"
DUMMY_RATE, DUMMY_SECONDS = 44_100, 1.0  # a TAU 2022 clip: 1 s, mono, 44.1 kHz


def check_label(label: str) -> None:
    if not (label.isascii() and label.isidentifier()) or keyword.iskeyword(label):
        raise ConfigError(f"--label {label!r} must be a Python identifier (letters, digits, underscores; "
                          "e.g. Surname_LAB_task1): it names the package and its modules")
    if not label.endswith("_task1"):
        raise ConfigError(f"--label {label!r} must end in _task1 (a DCASE task 1 label: Surname_LAB_task1)")


def device_mapping(submodels) -> dict[str, str]:
    """Every official device id to the submodel that classifies it: a device seen in training
    (a, b, c, s1..s6) with a submodel of its own gets it; every other id goes to the general
    model, and so does any id not in the table (the module's lookup falls back to it)."""
    return {d: d if d in submodels and d in SEEN_DEVICES else GENERAL for d in DEVICE_IDS}


def device_submodels(ckpt: dict) -> dict[str, dict]:
    """The run's per-device checkpoints (`edgeasc finetune-devices`) for the devices a package can
    route (SEEN_DEVICES), loaded; each must be the general network's architecture, since the
    module builds every submodel from the one config it stores."""
    run = Path(ckpt["path"]).parent
    try:
        found = {d: load_checkpoint(p) for d, p in device_checkpoints(run).items() if d in SEEN_DEVICES}
    except CheckpointError as exc:
        raise ConfigError(str(exc)) from None
    for d, dckpt in found.items():
        if not same_network(ckpt, dckpt) or dckpt["labels"] != ckpt["labels"]:
            raise ConfigError(f"{dckpt['path']}: the model of device {d!r} is not the network of {run}'s "
                              "model-final.pt: run `edgeasc finetune-devices --force` again")
    return found


def finished_checkpoint(run: Path) -> dict:
    if not run.is_dir():
        raise ConfigError(f"{run}: no such run directory")
    if not (run / "model-final.pt").is_file():
        raise ConfigError(f"{run}: the run has not finished (no model-final.pt); package finished runs only")
    try:
        return load_checkpoint(run / "model-final.pt")
    except CheckpointError as exc:
        raise ConfigError(str(exc)) from None


def deployed_state(ckpt: dict, precision: str, name: str = GENERAL) -> dict[str, torch.Tensor]:
    """The run's network as trained (BatchNorm as its own layers: see the template for why it is
    not folded), its floating-point weights in `precision`, keyed `<name>.<tensor>`: `general.` for
    the run's model, `<device>.` for a per-device model (`edgeasc finetune-devices`);
    device_mapping sends devices to them."""
    model = model_from_checkpoint(ckpt)
    return {f"{name}.{k}": (v.detach().to(PRECISIONS[precision]) if v.is_floating_point() else v.detach()).contiguous()
            for k, v in model.state_dict().items()}


def render_module(label: str, index: int, ckpt: dict, device_map: dict, precision: str) -> str:
    template = resources.files("edgeasc.export").joinpath("submission.py.tmpl").read_text(encoding="utf-8")
    note = ("computed in float32 (the float16 values exactly), as an edgeasc fp16 ONNX export computes."
            if precision == "fp16" else "computed in float32.")
    return string.Template(template).substitute(
        module=module_name(label, index), label=label, version=__version__, precision=precision,
        sample_rate=ckpt["feature_params"]["sample_rate"], compute_note=note,
        class_order=json.dumps(ckpt["labels"]), device_map=json.dumps(device_map, indent=4).replace("\n}", ",\n}"))


def write_dummy(path: Path) -> None:
    """resources/dummy.wav: one TAU 2022-shaped clip (noise, fixed seed) for the complexity check."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    sf.write(str(path), (0.1 * rng.standard_normal(int(DUMMY_RATE * DUMMY_SECONDS))).astype(np.float32),
             DUMMY_RATE, subtype="PCM_16")


PYPROJECT = """[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "{label}"
version = "1.0.0"
description = "DCASE 2025 Task 1 inference package {label} (made with edgeasc {version})"
requires-python = ">=3.10"
# and edgeasc {version} with its train extra, installed beforehand (from its source: the modules
# import its frontend and network builder); not listed, so pip never looks for it on an index
dependencies = ["torch", "safetensors", "torchinfo", "numpy", "soundfile", "soxr"]

[tool.setuptools]
packages = ["{label}", "{label}.resources"]

[tool.setuptools.package-data]
"{label}.resources" = ["*.wav", "*.safetensors"]
"""


def write_tree(root: Path, label: str, ckpts: list[dict], precision: str) -> list[dict]:
    """The package's files under `root`; returns one manifest entry per module."""
    pkg, res = root / label, root / label / "resources"
    res.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f'"""DCASE 2025 Task 1 inference package {label} (edgeasc {__version__})."""\n')
    (res / "__init__.py").write_text("")
    write_dummy(res / "dummy.wav")
    (root / "pyproject.toml").write_text(PYPROJECT.format(label=label, version=__version__))
    (root / ".gitignore").write_text(f"{MANIFEST}\n__pycache__/\n*.egg-info/\n")
    from safetensors.torch import save_file

    entries = []
    for index, ckpt in enumerate(ckpts, start=1):
        name = module_name(label, index)
        tensors = deployed_state(ckpt, precision)
        device_sums = {}
        for device_id, dckpt in device_submodels(ckpt).items():
            tensors.update(deployed_state(dckpt, precision, device_id))
            device_sums[device_id] = file_sha256(dckpt["path"])
        submodels = {k.split(".", 1)[0] for k in tensors}
        device_map = device_mapping(submodels)
        norm = ckpt["normalization"]
        tensors["normalization.mean"] = torch.tensor(norm["mean"], dtype=torch.float32)
        tensors["normalization.std"] = torch.tensor(norm["std"], dtype=torch.float32)
        meta = {"labels": json.dumps(ckpt["labels"]), "device_map": json.dumps(device_map),
                "channels": str(ckpt["channels"]), "feature_params": json.dumps(ckpt["feature_params"]),
                "model_config": json.dumps(ckpt["model_config"]), "precision": precision,
                "edgeasc_version": __version__}
        save_file(tensors, str(res / f"{name}.safetensors"), metadata=meta)
        (pkg / f"{name}.py").write_text(render_module(label, index, ckpt, device_map, precision), encoding="utf-8")
        entries.append({"module": name, "run": str(Path(ckpt["path"]).parent.resolve()),
                        "checkpoint_sha256": file_sha256(ckpt["path"]), "device_map": device_map,
                        "submodels": sorted(submodels), "device_checkpoint_sha256": device_sums})
    return entries


def measure(root: Path, label: str, count: int) -> list[dict]:
    """The organisers' complexity check of every module, imported from `root`."""
    results = []
    for index in range(1, count + 1):
        with imported_submission(root, label, index) as module, dummy_path(label) as dummy:
            results.append(complexity(module, str(dummy)))
    return results


def check_inputs(runs: list[Path], label: str, output: Path, precision: str, force: bool) -> None:
    if not 1 <= len(runs) <= MAX_MODULES:
        raise ConfigError(f"give 1 to {MAX_MODULES} runs (one submission module each), got {len(runs)}")
    check_label(label)
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    refuse_input_as_output(output, runs, "-o")
    out = output.resolve()
    for run in runs:  # --force would remove the folder: never one that holds an input
        if run.resolve().is_relative_to(out):
            raise ConfigError(f"-o {output} holds the run {run}: choose another folder")
    if output.exists() and not force:
        raise ConfigError(f"{output} exists (use --force to replace it)")
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{output} exists and is not a folder")
    if not output.parent.is_dir():
        raise ConfigError(f"{output.parent}: no such folder")


BYTES_PER_PARAMETER = {"fp32": 4, "fp16": 2, "int8": 1}


def precision_that_fits(modules: list[dict], precision: str) -> str | None:
    """The smaller precision under which every module's parameter bytes would fit (fp16, else
    int8), None when the MACs are over (no precision changes those) or none would."""
    if max(m["complexity"]["max_MACs"] for m in modules) > MAX_MACS:
        return None
    worst = max(max(c["Params"] for c in m["complexity"]["per_device"].values()) for m in modules)
    parameters = worst // BYTES_PER_PARAMETER[precision]
    for smaller in ("fp16", "int8"):
        if BYTES_PER_PARAMETER[smaller] < BYTES_PER_PARAMETER[precision] and \
                parameters * BYTES_PER_PARAMETER[smaller] <= MAX_PARAMS_BYTES:
            return smaller
    return None


def refusal_hint(fits_at: str | None) -> str:
    """What to do about a package over the limits, given precision_that_fits."""
    if fits_at == "fp16":
        return "--precision fp16 would fit"
    if fits_at == "int8":
        return ("only int8 weights would fit, and a package stores fp16 or fp32 (what the organisers' "
                "torch modules run): train it smaller (--params-target, --fit) and package again")
    return "train it smaller (--params-target, --macs-target, --fit) and package again"


def package_runs(runs: list[str | Path], label: str, output: str | Path, precision: str = "fp16",
                 force: bool = False) -> dict:
    """Write the package, or nothing: `written` is False when a module is over the limits
    (the per-device measurements are returned either way)."""
    runs, output = [Path(r) for r in runs], Path(output)
    check_inputs(runs, label, output, precision, force)
    ckpts = [finished_checkpoint(run) for run in runs]
    for run, ckpt in zip(runs[1:], ckpts[1:], strict=True):
        if ckpt["labels"] != ckpts[0]["labels"]:
            raise ConfigError(f"{run}: its class order {ckpt['labels']} differs from {runs[0]}'s "
                              f"{ckpts[0]['labels']}; one package has one class order")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent))
    except OSError as exc:
        raise write_error(output, exc) from None
    try:
        entries = write_tree(tmp, label, ckpts, precision)
        results = measure(tmp, label, len(ckpts))
        modules = [{**entry, "complexity": result, "over": over_limits(result)}
                   for entry, result in zip(entries, results, strict=True)]
        summary = {"label": label, "precision": precision, "edgeasc_version": __version__,
                   "limits": {"MACs": MAX_MACS, "Params": MAX_PARAMS_BYTES}, "output": str(output),
                   "modules": modules, "written": False}
        if any(m["over"] for m in modules):
            summary["fits_at"] = precision_that_fits(modules, precision)
            summary["hint"] = refusal_hint(summary["fits_at"])
            return summary
        for m in modules:
            folder = tmp / "predictions" / m["module"]
            folder.mkdir(parents=True)
            (folder / "complexity.json").write_text(json.dumps(m["complexity"], indent=2) + "\n")
        manifest = {k: v for k, v in summary.items() if k not in ("output", "written")}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _replace(tmp, output)
    finally:  # over the limits, or a failure: nothing stays behind (after the rename it is gone already)
        shutil.rmtree(tmp, ignore_errors=True)
    return {**summary, "written": True}


def _replace(tmp: Path, output: Path) -> None:
    """Rename the finished folder onto `output`; an old one (--force) is removed only after."""
    old = None
    try:
        if output.exists():
            old = output.with_name(f".{output.name}.previous.partial")
            shutil.rmtree(old, ignore_errors=True)
            output.rename(old)
        tmp.rename(output)
    except OSError as exc:
        if old is not None and not output.exists():
            old.rename(output)
        raise write_error(output, exc) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


FIDELITY_TOLERANCE = {"fp16": 1e-3, "fp32": 1e-4}  # max |Δ probability| against `edgeasc predict`


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{folder}: not a package written by `edgeasc package` (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        label, precision, modules = manifest["label"], manifest["precision"], manifest["modules"]
        runs = [(m["module"], m["run"], m["checkpoint_sha256"]) for m in modules]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path}: not a valid package manifest") from None
    check_label(str(label))
    if precision not in PRECISIONS or not 1 <= len(runs) <= MAX_MODULES:
        raise ConfigError(f"{path}: not a valid package manifest")
    return manifest


def check_package(folder: str | Path, audio: list[str | Path] | None = None) -> dict:
    """The organisers' complexity check again, on all 13 device ids, and each module's predict()
    against `edgeasc predict` on a fresh ONNX export of its run (same precision), on `audio`
    (files or folders; default: the package's dummy.wav)."""
    from edgeasc.export.dcase2025 import device_of, fidelity
    from edgeasc.export.pipeline import export_checkpoint
    from edgeasc.runtime.predict import expand_inputs

    folder = Path(folder)
    manifest = read_manifest(folder)
    label, precision = manifest["label"], manifest["precision"]
    files = expand_inputs(audio) if audio else None
    if audio and not files:
        raise ConfigError("--audio: no audio files found")
    modules = []
    for index, entry in enumerate(manifest["modules"], start=1):
        name, run = module_name(label, index), Path(entry["run"])
        ckpt = run / "model-final.pt"
        if not ckpt.is_file():
            raise PackageError(f"{name}: its run {run} is gone; the fidelity check exports it again")
        if file_sha256(ckpt) != entry["checkpoint_sha256"]:
            raise PackageError(f"{name}: {ckpt} changed since the package was written (retrained?); package it again")
        device_sources = {}
        for device_id, digest in (entry.get("device_checkpoint_sha256") or {}).items():
            source = run / "devices" / str(device_id) / "model-final.pt"
            if not source.is_file() or file_sha256(source) != digest:
                raise PackageError(f"{name}: {source} is gone or changed since the package was written; "
                                   "package it again")
            device_sources[str(device_id)] = source
        stored_path = folder / "predictions" / name / "complexity.json"
        try:
            stored = json.loads(stored_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = None
        with imported_submission(folder, label, index) as module, dummy_path(label) as dummy:
            result = complexity(module, str(dummy))
            with tempfile.TemporaryDirectory(prefix="edgeasc-package-check-") as tmp:
                # each submodel against an export of its own checkpoint: the general model, and
                # each per-device model for the files of its device (only the submodels the files
                # reach are exported: each export costs seconds)
                checked = files or [Path(dummy)]
                reached = {module.DEVICE_MAP.get(device_of(f), GENERAL) for f in checked}
                onnx_paths = {}
                for sub, source in {GENERAL: ckpt, **device_sources}.items():
                    if sub not in reached:
                        continue
                    onnx_paths[sub] = Path(tmp) / f"model-{sub}.onnx"
                    export_checkpoint(source, onnx_paths[sub], precision=precision, rules="dcase2024")
                fid = fidelity(module, onnx_paths, checked)
        tolerance = FIDELITY_TOLERANCE[precision]
        fid["tolerance"] = tolerance
        problems = over_limits(result)
        if stored != result:
            problems.append(f"{stored_path.relative_to(folder)} does not match the measurement")
        if not fid["top1_identical"]:
            problems.append("a top-1 class differs from edgeasc predict")
        if not fid["max_abs_probability_difference"] <= tolerance:
            problems.append(f"probabilities differ from edgeasc predict by {fid['max_abs_probability_difference']:.2e} "
                            f"(> {tolerance:g})")
        modules.append({"module": name, "complexity": result, "fidelity": fid, "problems": problems,
                        "device_map": entry.get("device_map")})
    return {"label": label, "precision": precision, "folder": str(folder), "modules": modules,
            "limits": {"MACs": MAX_MACS, "Params": MAX_PARAMS_BYTES},
            "passed": not any(m["problems"] for m in modules)}
