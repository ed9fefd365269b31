"""Packaging: the core install (and the device Docker image) brings no torch."""

import re
from importlib import metadata

import tomllib
from packaging.requirements import Requirement

from conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(req: str) -> str:
    return Requirement(req).name.lower().replace("_", "-")


def test_core_dependencies_are_the_device_runtime():
    core = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert core == {"numpy", "onnxruntime", "soundfile", "soxr", "typer", "rich"}
    train = {_name(r) for r in PYPROJECT["project"]["optional-dependencies"]["train"]}
    assert {"torch", "onnx"} <= train
    assert "torchaudio" not in core | train
    torch_req = next(Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["train"]
                     if _name(r) == "torch")
    assert torch_req.specifier.contains("2.4.0") and torch_req.specifier.contains("2.13.0")


def test_core_dependency_closure_has_no_torch():
    """Walk the installed metadata from the core requirements: torch is unreachable."""
    seen: set[str] = set()
    todo = [_name(r) for r in PYPROJECT["project"]["dependencies"]]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for r in requires:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name.lower().replace("_", "-"))
    assert "onnxruntime" in seen and "numpy" in seen
    assert not {"torch", "torchaudio", "torchvision"} & seen


def test_dockerfile_installs_the_core_package_only():
    text = (ROOT / "Dockerfile").read_text()
    run_lines = [line for line in text.splitlines() if line.startswith("RUN")]
    installs = [i.strip() for line in run_lines for i in re.findall(r"pip install ([^&]+)", line)]
    assert installs == ["."]  # the core package: no extras
    assert not any("torch" in line or "[train" in line for line in run_lines)
    assert re.search(r"^FROM python:3\.\d+-slim$", text, re.M)
    assert 'ENTRYPOINT ["edgeasc"]' in text
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")  # the runtime does not run as root
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "runs", ".edgeasc-cache", "build", "dist", "**/__pycache__", "*.onnx", "*.pt",
            "*.wav"} <= ignored


def test_readme_installs_from_a_checkout_while_unpublished():
    readme = (ROOT / "README.md").read_text()
    assert not re.search(r"pip install ['\"]?edgeasc\b", readme)  # not on PyPI: no promise it is
    assert "pip install ." in readme and "python -m build" in readme
    assert 'docker run --rm -v "$PWD:/data" edgeasc-runtime predict model.onnx rec.wav' in readme


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in readme and "bash scripts/test.sh" in ci
    assert "bash scripts/demo.sh" in readme
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "torch==2.13.0" in setup  # pinned before the package, never an unpinned torch
    assert setup.index("TORCH_SPEC\"") < setup.index('-e ".[train,dev]"')


def test_license_is_an_spdx_string_with_its_file_and_tomli_comes_on_python_3_10():
    assert PYPROJECT["project"]["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    tomli = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["train"] if _name(r) == "tomli"]
    assert len(tomli) == 1
    assert tomli[0].marker.evaluate({"python_version": "3.10"})
    assert not tomli[0].marker.evaluate({"python_version": "3.11"})
