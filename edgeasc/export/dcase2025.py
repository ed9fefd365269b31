"""Checks of a DCASE 2025 Task 1 inference package, as the organisers run them, written from
their description (the inference package's README and test_complexity): import
`<Label>.<Label>_<i>`, load_model(), load_inputs() of resources/dummy.wav once per device id,
and for every id the network get_model_for_device() returns: torchinfo's total_mult_adds on a
float32 copy for that input shape, and its parameters' bytes by dtype. Plus the fidelity of a
module's predict() against `edgeasc predict` on the run's own ONNX export.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import re
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from edgeasc.errors import EdgeascError

DEVICE_IDS = ("a", "b", "c", *(f"s{i}" for i in range(1, 11)))  # what test_complexity checks
SEEN_DEVICES = ("a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6")  # in the TAU 2022 development set
MAX_MACS = 30_000_000
MAX_PARAMS_BYTES = 128_000
DTYPE_BYTES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2, torch.int8: 1, torch.uint8: 1}
MANIFEST = "edgeasc-package.json"


class PackageError(EdgeascError):
    exit_code = 2


def module_name(label: str, index: int) -> str:
    return f"{label}_{index}"


@contextlib.contextmanager
def imported_submission(root: Path, label: str, index: int) -> Iterator:
    """`<label>.<label>_<index>` imported from the folder `root` (not from wherever a package of
    that name may be installed), and forgotten again afterwards."""
    def forget() -> None:
        for name in [n for n in sys.modules if n == label or n.startswith(label + ".")]:
            del sys.modules[name]

    forget()
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in the package
    try:
        module = importlib.import_module(f"{label}.{module_name(label, index)}")
        yield module
    finally:
        sys.dont_write_bytecode = bytecode
        sys.path.remove(str(root))
        forget()


def parameter_bytes(model: torch.nn.Module) -> int:
    total = 0
    for p in model.parameters():
        if p.dtype not in DTYPE_BYTES:
            raise PackageError(f"a parameter of dtype {p.dtype} has no byte count in the organisers' table")
        total += p.numel() * DTYPE_BYTES[p.dtype]
    return total


def total_mult_adds(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """torchinfo's count on a float32 copy, as the organisers measure (torchinfo needs float32)."""
    try:
        import torchinfo
    except ImportError:
        from edgeasc.errors import MissingExtraError

        raise MissingExtraError("`edgeasc package` (the organisers' MAC counter, torchinfo)", "train") from None
    summary = torchinfo.summary(copy.deepcopy(model).float(), input_size=tuple(shape), verbose=0)
    return int(summary.total_mult_adds)


def complexity(module, dummy: str, device_ids: tuple[str, ...] = DEVICE_IDS) -> dict:
    """The organisers' complexity.json of one submission module."""
    model = module.load_model()
    inputs = module.load_inputs([dummy] * len(device_ids), list(device_ids), model)
    per_device, max_macs, max_params = {}, 0, 0
    for x, device_id in zip(inputs, device_ids, strict=True):
        net = module.get_model_for_device(model, device_id)
        macs, params = total_mult_adds(net, tuple(x.shape)), parameter_bytes(net)
        per_device[device_id] = {"MACs": macs, "Params": params}
        max_macs, max_params = max(max_macs, macs), max(max_params, params)
    return {"per_device": per_device, "max_MACs": max_macs, "max_Params": max_params}


def over_limits(result: dict) -> list[str]:
    """What is over a limit, each with the devices whose network it is ([] when all pass)."""
    over: dict[str, list[str]] = {}
    for device_id, c in result["per_device"].items():
        if c["MACs"] > MAX_MACS:
            over.setdefault(f"{c['MACs']:,} MACs > {MAX_MACS:,}", []).append(device_id)
        if c["Params"] > MAX_PARAMS_BYTES:
            over.setdefault(f"{c['Params']:,} parameter bytes > {MAX_PARAMS_BYTES:,}", []).append(device_id)
    n = len(result["per_device"])
    return [f"{what} ({'all ' + str(n) + ' devices' if len(ids) == n else 'devices ' + ', '.join(ids)})"
            for what, ids in over.items()]


def dummy_path(label: str) -> contextlib.AbstractContextManager:
    """resources/dummy.wav of the imported package `label`, found as test_complexity finds it."""
    return resources.as_file(resources.files(f"{label}.resources") / "dummy.wav")


def device_of(path: str | Path) -> str:
    """The device id of a TAU 2022 file name (`...-s3.wav`), else "unknown"."""
    found = re.search(r"-([a-z]+[0-9]*)\.wav$", Path(path).name)
    return found.group(1) if found and found.group(1) in DEVICE_IDS else "unknown"


def fidelity(module, onnx_path: Path | dict[str, Path], files: list[Path]) -> dict:
    """The module's predict() against `edgeasc predict` on the run's ONNX export, file by file:
    max |Δ probability| (softmax of the logits) and whether every top-1 class is the same.
    `onnx_path` may map submodel names to exports: each file is then predicted by the export of
    the submodel its device id maps to (the module's DEVICE_MAP; any other id: "general")."""
    from edgeasc.runtime.deployed import load_model
    from edgeasc.runtime.inputs import softmax
    from edgeasc.runtime.predict import predict_files

    paths = onnx_path if isinstance(onnx_path, dict) else {"general": onnx_path}
    device_ids = [device_of(f) for f in files]
    routed = [module.DEVICE_MAP.get(d, "general") if isinstance(onnx_path, dict) else "general" for d in device_ids]
    missing = sorted(set(routed) - set(paths))
    if missing:
        raise PackageError(f"no export of the submodel(s) {', '.join(missing)} to compare with")
    models = {name: load_model(path) for name, path in paths.items()}
    deployed = next(iter(models.values()))  # every export of a run has the run's class order
    want = []
    for f, name in zip(files, routed, strict=True):
        for p in predict_files(models[name], [f]):
            if p.error:
                raise PackageError(f"edgeasc predict: {p.error}")
            want.append(p.probabilities)
    logits, class_order = module.predict([str(f) for f in files], device_ids, use_cuda=False)
    if list(class_order) != list(deployed.labels):
        raise PackageError(f"the package's class order {class_order} is not the ONNX model's {deployed.labels}")
    got = softmax(np.stack([t.double().numpy() for t in logits]))
    want = np.stack(want)
    return {"files": len(files), "max_abs_probability_difference": float(np.abs(got - want).max()),
            "top1_identical": bool((got.argmax(1) == want.argmax(1)).all()),
            "devices": sorted(set(device_ids)), "submodels": sorted(set(routed))}
