"""The quickstart command end to end (about 2.5 minutes on 2 cores): `pytest -m slow`."""

import pytest

from conftest import run_cli


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path):
    proc = run_cli("demo", "--workdir", str(tmp_path), timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for stage in ("1. synthesise", "2. features", "3. train", "4. export", "5. bench", "6. predict", "7. models"):
        assert stage in proc.stdout
    assert "PASS" in proc.stdout and "RTF" in proc.stdout and "right (true classes" in proc.stdout
    assert (tmp_path / "run" / "model.onnx").is_file() and (tmp_path / "run" / "model.size.md").is_file()
