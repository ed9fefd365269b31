import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None,
            timeout: float = 300, python_prelude: str | None = None) -> subprocess.CompletedProcess:
    """Run `edgeasc ARGS` in a real subprocess (the installed entry point's code path)."""
    code = "from edgeasc.cli import main; main()"
    if python_prelude:
        code = python_prelude + "\n" + code
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)


# Importing torch raises ImportError, as on a device install without the train extra.
HIDE_TORCH = "import sys; sys.modules['torch'] = None"


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def cli():
    return run_cli
