"""arm64 as a checked platform (slow, needs root and Debian's debootstrap/qemu-user-static):
scripts/arm64-check.sh builds a bookworm arm64 userland, installs the core wheels and compares
`predict` on emulated Cortex-A72 and A76 with x86 for fp32, fp16, int8 and waveform-in models."""

import json
import os
import shutil
import subprocess

import pytest

from conftest import ROOT


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("apt-get"), reason="needs root and apt (Debian)")
def test_arm64_check_matches_x86(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "arm64-check.sh"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["pass"] and {r["cpu"] for r in result["rows"]} == {"cortex-a72", "cortex-a76"}
    assert {r["model"] for r in result["rows"]} == {"fp32", "fp16", "int8", "waveform-in"}
    assert all(r["top1_equal"] and r["max_abs_dp"] <= 1e-4 for r in result["rows"])
