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
    # it ends with the command to run on one's own recording, with the model's path
    last = proc.stdout.rstrip().splitlines()[-1]
    assert " predict " in last and str(tmp_path / "run" / "model.onnx") in last, last


def test_next_command_names_the_model_and_a_typable_executable(tmp_path, monkeypatch):
    from edgeasc.cli.demo import next_command

    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    cmd = next_command(tmp_path / "run" / "model.onnx")
    exe, verb, model, wav = cmd.split()
    assert (verb, model, wav) == ("predict", "run/model.onnx", "my-recording.wav")
    assert exe == "edgeasc" or exe.endswith("/bin/edgeasc")
